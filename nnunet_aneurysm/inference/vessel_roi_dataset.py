"""The vessel ROI dataset: stage 2's regions of interest labelled with the 13 arteries, for pretraining stage 2's
network on vessel segmentation (``trainers/pretraining.py``) before it learns aneurysms.

Each case of the stage-2 ROI dataset whose series has ground-truth vessel labels (the vessel dataset's
``labelsTr``: the competition's ``_cowseg`` files, our class ids) gets them resampled onto its ROI grid (nearest
neighbour); with ``stage1_labels`` every other case is labelled with stage 1's out-of-fold artery labels (the
ROI dataset's third channel). Stage 1's two channels are written blank: the target must not be in the input.
Same channels, labels, grid and plans as stage 2, so the pretrained network's keys are stage 2's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_aneurysm.geometry import geometry_of, write_nifti
from nnunet_aneurysm.roi import resample_to_roi, roi_from_row
from nnunet_aneurysm.stages import ARTERY_CHANNEL, FILE_ENDING, ROI_FILE, STAGE2_CHANNELS, channel_file


def build_vessel_roi_dataset(raw: Path, roi_dataset: str, vessels_dataset: str, output_dataset: str,
                             stage1_labels: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write ``output_dataset`` under ``raw``; returns one row per case: its label source ('ground truth',
    'stage 1', or skipped without one)."""
    src, vessels, dst = raw / roi_dataset, raw / vessels_dataset, raw / output_dataset
    rois = pd.read_csv(src / ROI_FILE, dtype={"case_id": str})
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for row in tqdm(rois.itertuples(), total=len(rois), disable=not progress, desc="vessel ROI dataset", unit="case"):
        case, roi = row.case_id, roi_from_row(row._asdict())
        truth_file = vessels / "labelsTr" / f"{case}{FILE_ENDING}"
        if truth_file.is_file():
            truth = sitk.ReadImage(str(truth_file))
            label, source = resample_to_roi(sitk.GetArrayFromImage(truth), geometry_of(truth), roi, labels=True), \
                "ground truth"
        elif stage1_labels:
            arteries = sitk.ReadImage(str(src / "imagesTr" / channel_file(case, ARTERY_CHANNEL)))
            label, source = sitk.GetArrayFromImage(arteries).astype(np.uint8), "stage 1"
        else:
            rows.append({"case_id": case, "labels": "none (skipped)"})
            continue
        shutil.copyfile(src / "imagesTr" / channel_file(case, 0), dst / "imagesTr" / channel_file(case, 0))
        blank = np.zeros(roi.shape, np.float32)
        for channel in range(1, len(STAGE2_CHANNELS)):
            write_nifti(blank, roi.geometry, dst / "imagesTr" / channel_file(case, channel))
        write_nifti(label.astype(np.uint8), roi.geometry, dst / "labelsTr" / f"{case}{FILE_ENDING}")
        rows.append({"case_id": case, "labels": source})
    table = pd.DataFrame(rows)
    kept = set(table.loc[~table["labels"].str.startswith("none"), "case_id"])
    if not kept:
        raise FileNotFoundError(f"no case of {src} has vessel labels in {vessels / 'labelsTr'}: pass --stage1-labels "
                                f"to label them with stage 1's out-of-fold arteries")
    dataset_json = json.loads((src / "dataset.json").read_text())
    dataset_json.update(numTraining=len(kept), name="stage-2 ROIs labelled with their arteries (vessel pretraining)")
    (dst / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    metadata = pd.read_csv(src / "metadata.csv", dtype={"case_id": str})
    metadata[metadata["case_id"].isin(kept)].to_csv(dst / "metadata.csv", index=False)
    splits = json.loads((src / "splits_final.json").read_text())
    (dst / "splits_final.json").write_text(json.dumps(
        [{k: [c for c in v if c in kept] for k, v in split.items()} for split in splits], indent=2))
    table.to_csv(dst / "label_sources.csv", index=False)
    return table
