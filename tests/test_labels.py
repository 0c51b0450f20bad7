"""labels.py is pinned to the tables of shared/docs/rsna-data.md."""

import numpy as np

from nnunet_aneurysm import labels

CSV_ORDER = [
    "Left Infraclinoid Internal Carotid Artery", "Right Infraclinoid Internal Carotid Artery",
    "Left Supraclinoid Internal Carotid Artery", "Right Supraclinoid Internal Carotid Artery",
    "Left Middle Cerebral Artery", "Right Middle Cerebral Artery", "Anterior Communicating Artery",
    "Left Anterior Cerebral Artery", "Right Anterior Cerebral Artery",
    "Left Posterior Communicating Artery", "Right Posterior Communicating Artery", "Basilar Tip",
    "Other Posterior Circulation",
]
COWSEG = {
    1: "Other Posterior Circulation", 2: "Basilar Tip", 3: "Right Posterior Communicating Artery",
    4: "Left Posterior Communicating Artery", 5: "Right Infraclinoid Internal Carotid Artery",
    6: "Left Infraclinoid Internal Carotid Artery", 7: "Right Supraclinoid Internal Carotid Artery",
    8: "Left Supraclinoid Internal Carotid Artery", 9: "Right Middle Cerebral Artery",
    10: "Left Middle Cerebral Artery", 11: "Right Anterior Cerebral Artery",
    12: "Left Anterior Cerebral Artery", 13: "Anterior Communicating Artery",
}


def test_csv_and_submission_order():
    assert list(labels.LOCATION_COLUMNS) == CSV_ORDER
    assert list(labels.SUBMISSION_COLUMNS) == CSV_ORDER + ["Aneurysm Present"]
    assert list(labels.TRAIN_CSV_COLUMNS[:4]) == ["SeriesInstanceUID", "PatientAge", "PatientSex", "Modality"]
    assert [loc.class_id for loc in labels.LOCATIONS] == list(range(1, 14))


def test_cowseg_values():
    assert {v: labels.BY_COWSEG[v].name for v in range(1, 14)} == COWSEG
    volume = np.arange(14, dtype=np.uint8)
    as_class = labels.COWSEG_TO_CLASS[volume]
    assert as_class[0] == 0
    for value, name in COWSEG.items():
        assert as_class[value] == CSV_ORDER.index(name) + 1
    np.testing.assert_array_equal(labels.CLASS_TO_COWSEG[as_class], volume)


def test_flip_partners_swap_left_and_right():
    for loc in labels.LOCATIONS:
        partner = labels.BY_CLASS_ID[loc.partner_id]
        if loc.name.startswith(("Left", "Right")):
            side, other = ("Left", "Right") if loc.name.startswith("Left") else ("Right", "Left")
            assert partner.name == other + loc.name[len(side):]
        else:
            assert partner is loc
    ids = np.arange(14)
    np.testing.assert_array_equal(labels.FLIP_CLASS[labels.FLIP_CLASS[ids]], ids)


def test_dataset_labels():
    table = labels.dataset_labels()
    assert table["background"] == 0 and len(table) == 14
    assert table["Basilar Tip"] == 12
