"""``nnunet-aneurysm pipeline init``: a pipeline file from trained models.

The ROI settings are read from the stage-2 dataset's ``roi.csv`` (shape and spacing of the ROIs
stage 2 was trained on) and ``vessel_operating_point.json`` (stage 1's vessel threshold), so
inference crops and labels arteries exactly as training did; the fallback row is the
training prevalence of each column (``metadata.csv``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nnunet_aneurysm.inference.pipeline_file import ModelEntry, Pipeline, relative_to
from nnunet_aneurysm.inference.vessel_threshold import vessel_threshold_of
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.nnunet_env import dataset_name, model_folder, require_env, trained_folds
from nnunet_aneurysm.roi import RoiSettings
from nnunet_aneurysm.stages import ROI_FILE


def _entry(dataset: str, trainer: str, plans: str, configuration: str, folds, pipeline_file: Path) -> ModelEntry:
    folder = model_folder(dataset, trainer, plans, configuration)
    trained = trained_folds(folder)
    folds = list(folds) if folds else trained
    absent = sorted(set(folds) - set(trained))
    if not folds or absent:
        raise ValueError(f"{folder} has no trained fold {absent or ''}".strip())
    return ModelEntry(relative_to(folder, pipeline_file), folds)


def roi_settings_of(stage2_raw: Path) -> RoiSettings:
    """Shape and spacing of the ROIs stage 2 was trained on; stage 1's vessel threshold chosen for them."""
    rois = pd.read_csv(stage2_raw / ROI_FILE)
    shapes, spacings = set(rois["shape"]), set(rois["spacing_mm"].round(6))
    if len(shapes) != 1 or len(spacings) != 1:
        raise ValueError(f"{stage2_raw / ROI_FILE} holds ROIs of several shapes or spacings")
    spacing = float(spacings.pop())
    shape = [int(v) for v in shapes.pop().split("x")]
    return RoiSettings(tuple(s * spacing for s in shape), spacing, vessel_threshold_of(stage2_raw))


def init_pipeline(output: Path, stage1: str, stage2: str, stage1_trainer: str, stage2_trainer: str,
                  stage1_plans: str, stage2_plans: str, configuration: str, folds=None, gat: Path | None = None,
                  stacker: Path | None = None, flip_tta: bool = True) -> Path:
    raw = require_env("nnUNet_raw", "nnUNet_results")["nnUNet_raw"]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage2_raw = raw / dataset_name(stage2)
    if not (stage2_raw / ROI_FILE).is_file():
        raise ValueError(f"{stage2_raw} has no {ROI_FILE}: stage 2 must be trained on a roi-dataset")
    metadata = pd.read_csv(stage2_raw / "metadata.csv")
    prevalence = {c: float(metadata[c].mean()) for c in SUBMISSION_COLUMNS}
    settings = roi_settings_of(stage2_raw)
    pipeline = Pipeline(
        stage1=_entry(stage1, stage1_trainer, stage1_plans, configuration, folds, output),
        stage2=_entry(stage2, stage2_trainer, stage2_plans, configuration, folds, output),
        roi={"size_mm": list(settings.size_mm), "spacing_mm": settings.spacing_mm,
             "vessel_threshold": settings.vessel_threshold},
        flip_tta=flip_tta, gat=relative_to(gat, output) if gat else None,
        stacker=relative_to(stacker, output) if stacker else None, fallback_probabilities=prevalence)
    return pipeline.save(output)
