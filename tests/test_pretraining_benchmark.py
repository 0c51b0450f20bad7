"""The pretraining benchmark scores vessel pretraining's artery Dice as nnU-Net does, and only on the cases with
ground-truth vessels when asked (stage 1's labels would score the network against stage 1)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pretraining import artery_dice  # noqa: E402


def _case(name: str, dice_1: float, dice_2: float) -> dict:
    return {"reference_file": f"/gt/{name}.nii.gz", "prediction_file": f"/pred/{name}.nii.gz",
            "metrics": {"1": {"Dice": dice_1}, "2": {"Dice": dice_2}}}


def test_artery_dice_is_nnunets_foreground_mean_and_can_keep_ground_truth_cases_only(tmp_path):
    summary = tmp_path / "summary.json"
    cases = [_case("truth_a", 0.2, float("nan")), _case("truth_b", 0.4, 0.6), _case("stage1_c", 1.0, 1.0)]
    summary.write_text(json.dumps({"metric_per_case": cases}, allow_nan=True))
    # per artery: mean over cases ignoring NaN, then mean over arteries
    assert math.isclose(artery_dice(summary), ((0.2 + 0.4 + 1.0) / 3 + (0.6 + 1.0) / 2) / 2)
    assert math.isclose(artery_dice(summary, {"truth_a", "truth_b"}), ((0.2 + 0.4) / 2 + 0.6) / 2)


def test_stage1_labels_are_scored_against_the_ground_truth_of_the_ground_truth_cases_only(tmp_path):
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk
    from pretraining import STAGE2_DATASET, stage1_label_dice

    from nnunet_aneurysm.stages import ARTERY_CHANNEL, FILE_ENDING, channel_file

    raw, dataset = tmp_path, "Dataset105_RSNAVesselsROI"
    (raw / STAGE2_DATASET / "imagesTr").mkdir(parents=True)
    (raw / dataset / "labelsTr").mkdir(parents=True)
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0, :2], truth[1] = 1, 5
    stage1 = truth.copy()
    stage1[1, :, :2] = 0  # half of artery 5 missed: Dice 2/3 for it, 1 for artery 1
    small = np.zeros_like(truth)
    small[3, 0, 0] = 5  # one voxel of artery 5, found: Dice 1 in a case where artery 1 is absent from both
    for case, label, reference in (("a", stage1, truth), ("c", small, small), ("b", np.zeros_like(truth), truth)):
        sitk.WriteImage(sitk.GetImageFromArray(label), str(raw / STAGE2_DATASET / "imagesTr" /
                                                              channel_file(case, ARTERY_CHANNEL)))
        sitk.WriteImage(sitk.GetImageFromArray(reference), str(raw / dataset / "labelsTr" / f"{case}{FILE_ENDING}"))
    pd.DataFrame({"case_id": ["a", "c", "b"], "labels": ["ground truth", "ground truth", "stage 1"]}).to_csv(
        raw / dataset / "label_sources.csv", index=False)
    # artery 1: case a only (1.0); artery 5: mean of case a's 2/3 and case c's 1 (pooled voxels would give 9/13);
    # case b (labelled by stage 1 itself) left out
    assert np.isclose(stage1_label_dice(raw, dataset), (1 + (2 / 3 + 1) / 2) / 2)


def test_fine_tuning_configurations_are_folder_names_one_per_variant():
    from pretraining import STAGE1_VARIANT, finetune_configuration

    names = [finetune_configuration(v) for v in ("vessel", "masked", "both", STAGE1_VARIANT, "MiM")]
    assert len(set(names)) == 5 and all(" " not in n and "+" not in n for n in names)
