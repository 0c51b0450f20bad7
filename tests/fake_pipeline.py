"""A pipeline file whose every path exists but whose models are empty checkpoint files: for the checks made
before any model is loaded (the file's keys, the command line), in seconds."""

from __future__ import annotations

from pathlib import Path

from nnunet_aneurysm.inference.pipeline_file import ModelEntry, Pipeline
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS


def fake_model(root: Path, name: str, folds=(0, 1), checkpoint: str = "checkpoint_final.pth") -> Path:
    """``root/name/fold_<f>/<checkpoint>``, empty files."""
    for fold in folds:
        (root / name / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        (root / name / f"fold_{fold}" / checkpoint).write_bytes(b"")
    return root / name


def write_fake_pipeline(root: Path) -> Path:
    """``root/pipeline/pipeline.json`` naming ``root/stage1``, ``root/stage2`` (folds 0 and 1), ``root/gat`` and
    ``root/stacker``."""
    fake_model(root, "stage1")
    fake_model(root, "stage2")
    for folder in ("gat", "stacker"):
        (root / folder).mkdir()
    pipeline = Pipeline(ModelEntry("../stage1", [0, 1]), ModelEntry("../stage2", [0, 1]),
                        roi={"size_mm": [72.0, 72.0, 96.0], "spacing_mm": 1.5, "vessel_threshold": 0.3},
                        gat="../gat", stacker="../stacker",
                        fallback_probabilities=dict.fromkeys(SUBMISSION_COLUMNS, 0.1))
    (root / "pipeline").mkdir()
    return pipeline.save(root / "pipeline" / "pipeline.json")
