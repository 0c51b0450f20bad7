"""``nnunet-aneurysm pipeline init``: a pipeline file from trained models.

The ROI settings (the box stage 2 was trained on and stage 1's vessel threshold), so that inference
crops and labels arteries exactly as training did, and the fallback row (the training prevalence of
each column) come with the trained stage-2 model (its ``dataset.json``, ``stage2_settings.py``); only
a model trained on an older ROI dataset needs its raw dataset (``$nnUNet_raw``).
"""

from __future__ import annotations

import os
from pathlib import Path

from nnunet_aneurysm.inference.pipeline_file import ModelEntry, Pipeline, relative_to
from nnunet_aneurysm.inference.stage2_settings import stage2_fallback_probabilities, stage2_roi_settings
from nnunet_aneurysm.nnunet_env import model_folder, require_env, trained_folds


def _entry(folder: Path, folds, pipeline_file: Path) -> ModelEntry:
    trained = trained_folds(folder)
    folds = list(folds) if folds else trained
    absent = sorted(set(folds) - set(trained))
    if not folds or absent:
        raise ValueError(f"{folder} has no trained fold {absent or ''}".strip())
    return ModelEntry(relative_to(folder, pipeline_file), folds)


def _raw_dataset(model: Path) -> Path | None:
    """The raw dataset a model folder was trained on, where ``$nnUNet_raw`` holds it (older models' fallback)."""
    raw = os.environ.get("nnUNet_raw")
    folder = Path(raw) / model.parent.name if raw else None  # model: $nnUNet_results/<dataset>/<trainer__plans__c>
    return folder if folder is not None and folder.is_dir() else None


def init_pipeline(output: Path, stage1: str, stage2: str, stage1_trainer: str, stage2_trainer: str,
                  stage1_plans: str, stage2_plans: str, configuration: str, folds=None, gat: Path | None = None,
                  stacker: Path | None = None, flip_tta: bool = True) -> Path:
    """Write the pipeline file ``output`` from trained models in ``$nnUNet_results``; returns its path."""
    require_env("nnUNet_results")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage1_folder = model_folder(stage1, stage1_trainer, stage1_plans, configuration)
    stage2_folder = model_folder(stage2, stage2_trainer, stage2_plans, configuration)
    settings = stage2_roi_settings(stage2_folder, _raw_dataset(stage2_folder))
    pipeline = Pipeline(
        stage1=_entry(stage1_folder, folds, output), stage2=_entry(stage2_folder, folds, output),
        roi={"size_mm": list(settings.size_mm), "spacing_mm": settings.spacing_mm,
             "vessel_threshold": settings.vessel_threshold},
        flip_tta=flip_tta, gat=relative_to(gat, output) if gat else None,
        stacker=relative_to(stacker, output) if stacker else None,
        fallback_probabilities=stage2_fallback_probabilities(stage2_folder, _raw_dataset(stage2_folder)))
    return pipeline.save(output)
