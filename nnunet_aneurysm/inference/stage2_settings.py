"""What a pipeline file takes from stage 2's training data, recorded where it travels with the trained model.

A pipeline needs the ROI box stage 2 was trained on (size and spacing in mm), stage 1's vessel threshold
(a probability) the ROIs were cut at, and the training prevalence of each submission column (the
fallback row). ``roi-dataset`` writes them into stage 2's raw ``dataset.json`` under ``SETTINGS_KEY``;
nnU-Net copies that file into the preprocessed folder and into every trained model folder (and thus into
``nnUNetv2_export_model_to_zip``'s zips), so ``pipeline init`` works from the model folders alone. Each
part is read from the first place that has it: the model folder's ``dataset.json``, the raw dataset's
``dataset.json``, then the raw dataset's files (``roi.csv``, ``vessel_operating_point.json``,
``metadata.csv``) for datasets written before the entry existed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from nnunet_aneurysm.inference.vessel_threshold import vessel_threshold_of
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.roi import RoiSettings
from nnunet_aneurysm.stages import ROI_FILE

SETTINGS_KEY = "nnunet_aneurysm_pipeline"  # stage 2's dataset.json entry (nnU-Net ignores it)
METADATA_FILE = "metadata.csv"


def training_prevalence(metadata: pd.DataFrame) -> dict[str, float]:
    """The share of positive training series per submission column: the fallback row of a pipeline."""
    return {c: float(metadata[c].mean()) for c in SUBMISSION_COLUMNS}


def settings_entry(settings: RoiSettings, metadata: pd.DataFrame) -> dict:
    """The ``dataset.json`` entry ``roi-dataset`` writes: the ROI settings the dataset was cut with and the
    training prevalence of its series."""
    roi = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
    return {SETTINGS_KEY: {"roi": roi, "fallback_probabilities": training_prevalence(metadata)}}


def _recorded(folder: Path | None, part: str):
    """One part of the entry in ``folder/dataset.json``, or None."""
    if folder is None or not (folder / "dataset.json").is_file():
        return None
    return json.loads((folder / "dataset.json").read_text()).get(SETTINGS_KEY, {}).get(part)


def roi_settings_from_roi_table(stage2_raw: Path) -> RoiSettings:
    """Shape and spacing of the ROIs in a raw stage-2 dataset's ``roi.csv``; stage 1's vessel threshold
    from its ``vessel_operating_point.json``."""
    rois = pd.read_csv(stage2_raw / ROI_FILE)
    shapes, spacings = set(rois["shape"]), set(rois["spacing_mm"].round(6))
    if len(shapes) != 1 or len(spacings) != 1:
        raise ValueError(f"{stage2_raw / ROI_FILE} holds ROIs of several shapes or spacings")
    spacing = float(spacings.pop())
    shape = [int(v) for v in shapes.pop().split("x")]
    return RoiSettings(tuple(s * spacing for s in shape), spacing, vessel_threshold_of(stage2_raw))


def stage2_roi_settings(model_folder: Path, stage2_raw: Path | None) -> RoiSettings:
    """The ROI settings stage 2 was trained on (see the module's docstring for where they are looked up)."""
    for folder in (model_folder, stage2_raw):
        recorded = _recorded(folder, "roi")
        if recorded is not None:
            return RoiSettings(tuple(float(v) for v in recorded["size_mm"]), float(recorded["spacing_mm"]),
                               float(recorded["vessel_threshold"]))
    if stage2_raw is not None and (stage2_raw / ROI_FILE).is_file():
        return roi_settings_from_roi_table(stage2_raw)
    raise _not_recorded(model_folder, stage2_raw, "ROI settings", ROI_FILE)


def stage2_fallback_probabilities(model_folder: Path, stage2_raw: Path | None) -> dict[str, float]:
    """The training prevalence of each submission column (the fallback row)."""
    for folder in (model_folder, stage2_raw):
        recorded = _recorded(folder, "fallback_probabilities")
        if recorded is not None:
            return {c: float(recorded[c]) for c in SUBMISSION_COLUMNS}
    if stage2_raw is not None and (stage2_raw / METADATA_FILE).is_file():
        return training_prevalence(pd.read_csv(stage2_raw / METADATA_FILE))
    raise _not_recorded(model_folder, stage2_raw, "training prevalence", METADATA_FILE)


def _not_recorded(model_folder: Path, stage2_raw: Path | None, what: str, raw_file: str) -> ValueError:
    raw = f"{stage2_raw / raw_file} does not exist" if stage2_raw is not None else \
        "$nnUNet_raw holds no raw stage-2 dataset of that name"
    return ValueError(f"{model_folder / 'dataset.json'} records no {what} and {raw}: set nnUNet_raw to the folder "
                      f"holding the raw dataset, or rebuild it with nnunet-aneurysm roi-dataset")
