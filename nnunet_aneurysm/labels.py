"""The one table of the 13 aneurysm locations, imported everywhere else.

Three numberings meet in this project and are easy to confuse:

* the CSV column order of ``train.csv`` (also the submission order); our class ids are
  that order, 1-based, in *both* nnU-Net datasets (vessels and aneurysms);
* the label values of the RSNA ``*_cowseg.nii`` vessel segmentations, which follow a
  different order;
* the left/right partner of each location, used to swap labels under a left-right flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Location:
    name: str  # exact train.csv column name
    class_id: int  # 1-based CSV column order; the label value in our nnU-Net datasets
    cowseg_value: int  # label value in the RSNA *_cowseg.nii files
    partner_id: int  # class id of the mirror-image location (itself on the midline)


LOCATIONS: tuple[Location, ...] = (
    Location("Left Infraclinoid Internal Carotid Artery", 1, 6, 2),
    Location("Right Infraclinoid Internal Carotid Artery", 2, 5, 1),
    Location("Left Supraclinoid Internal Carotid Artery", 3, 8, 4),
    Location("Right Supraclinoid Internal Carotid Artery", 4, 7, 3),
    Location("Left Middle Cerebral Artery", 5, 10, 6),
    Location("Right Middle Cerebral Artery", 6, 9, 5),
    Location("Anterior Communicating Artery", 7, 13, 7),
    Location("Left Anterior Cerebral Artery", 8, 12, 9),
    Location("Right Anterior Cerebral Artery", 9, 11, 8),
    Location("Left Posterior Communicating Artery", 10, 4, 11),
    Location("Right Posterior Communicating Artery", 11, 3, 10),
    Location("Basilar Tip", 12, 2, 12),
    Location("Other Posterior Circulation", 13, 1, 13),
)

NUM_LOCATIONS = len(LOCATIONS)
LOCATION_COLUMNS: tuple[str, ...] = tuple(loc.name for loc in LOCATIONS)
PRESENT_COLUMN = "Aneurysm Present"
SUBMISSION_COLUMNS: tuple[str, ...] = LOCATION_COLUMNS + (PRESENT_COLUMN,)
ID_COLUMN = "SeriesInstanceUID"
TRAIN_CSV_COLUMNS: tuple[str, ...] = (
    (ID_COLUMN, "PatientAge", "PatientSex", "Modality") + LOCATION_COLUMNS + (PRESENT_COLUMN,)
)
LOCALIZER_COLUMNS: tuple[str, ...] = (ID_COLUMN, "SOPInstanceUID", "coordinates", "location")
# the converter's localizers.csv: each localizer point in patient coordinates (mm, DICOM LPS)
LOCALIZER_POINTS_COLUMNS: tuple[str, ...] = ("case_id", "location", "class_id", "x_mm", "y_mm", "z_mm")
MODALITIES: tuple[str, ...] = ("CTA", "MRA", "MRI T2", "MRI T1post")

BY_NAME: dict[str, Location] = {loc.name: loc for loc in LOCATIONS}
BY_CLASS_ID: dict[int, Location] = {loc.class_id: loc for loc in LOCATIONS}
BY_COWSEG: dict[int, Location] = {loc.cowseg_value: loc for loc in LOCATIONS}


def _lookup(pairs: dict[int, int]) -> np.ndarray:
    table = np.zeros(NUM_LOCATIONS + 1, dtype=np.uint8)
    for src, dst in pairs.items():
        table[src] = dst
    return table


# Index with a label volume: COWSEG_TO_CLASS[cowseg_volume] -> class-id volume (0 stays 0).
COWSEG_TO_CLASS = _lookup({loc.cowseg_value: loc.class_id for loc in LOCATIONS})
CLASS_TO_COWSEG = _lookup({loc.class_id: loc.cowseg_value for loc in LOCATIONS})
# Index with a class-id volume to swap left and right after mirroring the image.
FLIP_CLASS = _lookup({loc.class_id: loc.partner_id for loc in LOCATIONS})


def dataset_labels() -> dict[str, int]:
    """The ``labels`` entry of both our nnU-Net ``dataset.json`` files."""
    return {"background": 0, **{loc.name: loc.class_id for loc in LOCATIONS}}
