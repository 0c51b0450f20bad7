"""What a pipeline needs from stage 2's training travels with the trained model: ``pipeline init`` works from
nnU-Net model folders alone (as installed from nnU-Net's zips), and older models fall back to the raw dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nnunet_aneurysm.cli import main
from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from nnunet_aneurysm.inference.pipeline_init import init_pipeline
from nnunet_aneurysm.inference.roi_dataset import finish_roi_dataset
from nnunet_aneurysm.inference.stage2_settings import SETTINGS_KEY, settings_entry, stage2_roi_settings
from nnunet_aneurysm.inference.vessel_threshold import OperatingPoint, VesselCounts
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.roi import RoiSettings
from nnunet_aneurysm.stages import STAGE1, STAGE2

SETTINGS = RoiSettings((60.0, 60.0, 90.0), 1.5, 0.3)
STAGE1_DATASET, STAGE2_DATASET = "Dataset201_RSNAVessels", "Dataset203_RSNAAneurysmsROI"


def _metadata(n: int = 4) -> pd.DataFrame:
    """n series; column j is positive in the first j % n series, so every column has its own prevalence."""
    return pd.DataFrame({"case_id": [f"case{i}" for i in range(n)],
                         **{c: [int(i < j % n) for i in range(n)] for j, c in enumerate(SUBMISSION_COLUMNS)}})


def _model(results: Path, dataset: str, stage, dataset_json: dict) -> Path:
    """A trained nnU-Net model folder as nnU-Net's zips install it: dataset.json and fold_0's final checkpoint."""
    folder = results / dataset / f"{stage.trainer}__{stage.plans}__3d_cpu"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, **dataset_json}))
    return folder


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """nnU-Net's results folder holding both stages' models, and an empty raw folder (no training data here)."""
    results, raw = tmp_path / "nnUNet_results", tmp_path / "nnUNet_raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    return results, raw


def _init(tmp_path: Path) -> Path:
    return init_pipeline(tmp_path / "pipeline" / "pipeline.json", "201", "203", STAGE1.trainer, STAGE2.trainer,
                         STAGE1.plans, STAGE2.plans, "3d_cpu")


def test_pipeline_init_needs_only_the_model_folders(nnunet_folders, tmp_path):
    results, _ = nnunet_folders
    _model(results, STAGE1_DATASET, STAGE1, {})
    _model(results, STAGE2_DATASET, STAGE2, settings_entry(SETTINGS, _metadata()))
    pipeline = read_pipeline(_init(tmp_path))
    assert pipeline.roi_settings() == SETTINGS
    assert pipeline.fallback_probabilities == {c: (j % 4) / 4 for j, c in enumerate(SUBMISSION_COLUMNS)}


def test_models_without_the_record_read_the_raw_dataset(nnunet_folders, tmp_path):
    results, raw = nnunet_folders
    _model(results, STAGE1_DATASET, STAGE1, {})
    _model(results, STAGE2_DATASET, STAGE2, {})
    stage2_raw = raw / STAGE2_DATASET
    stage2_raw.mkdir()
    _metadata().to_csv(stage2_raw / "metadata.csv", index=False)
    pd.DataFrame({"case_id": ["case0", "case1"], "shape": ["40x40x60"] * 2, "spacing_mm": [1.5, 1.5]}).to_csv(
        stage2_raw / "roi.csv", index=False)
    counts = VesselCounts.empty()
    counts.vessel[30:] = 10
    counts.background[:30] = 10
    OperatingPoint.from_counts(counts).save(stage2_raw)
    pipeline = read_pipeline(_init(tmp_path))
    assert pipeline.roi_settings() == SETTINGS
    assert pipeline.fallback_probabilities["Aneurysm Present"] == (13 % 4) / 4


def test_neither_the_model_nor_the_raw_dataset_is_one_line_and_exit_status_2(nnunet_folders, tmp_path, capsys):
    results, _ = nnunet_folders
    _model(results, STAGE1_DATASET, STAGE1, {})
    stage2 = _model(results, STAGE2_DATASET, STAGE2, {})
    status = main(["pipeline", "init", "-o", str(tmp_path / "p.json"), "--stage1", "201", "--stage2", "203",
                   "-c", "3d_cpu"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert str(stage2 / "dataset.json") in error and "records no ROI settings" in error and "roi-dataset" in error


def test_roi_dataset_records_its_settings_in_the_dataset_json_that_nnunet_copies(tmp_path):
    src, dst = tmp_path / "Dataset202_RSNAAneurysms", tmp_path / STAGE2_DATASET
    (dst / "rois").mkdir(parents=True)
    src.mkdir()
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    _metadata().to_csv(src / "metadata.csv", index=False)
    for case in ("case0", "case1"):
        (dst / "rois" / f"{case}.json").write_text(json.dumps({"case_id": case, "shape": "40x40x60",
                                                                 "spacing_mm": 1.5}))
    finish_roi_dataset(src, dst, ["case0", "case1"], SETTINGS)
    recorded = json.loads((dst / "dataset.json").read_text())[SETTINGS_KEY]
    assert recorded["roi"] == {"size_mm": [60.0, 60.0, 90.0], "spacing_mm": 1.5, "vessel_threshold": 0.3}
    assert stage2_roi_settings(dst, None) == SETTINGS
