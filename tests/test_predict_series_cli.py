"""predict-series stops with one line on a systemic failure found before any series is read: a device that
cannot be used, input folders none of which holds DICOM, models that cannot be loaded, folds not trained.
A pipeline file with empty checkpoints is enough for these (no model is ever run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.fake_pipeline import write_fake_pipeline


@pytest.fixture
def pipeline_file(tmp_path) -> Path:
    return write_fake_pipeline(tmp_path / "models")


@pytest.fixture
def series(tmp_path) -> Path:
    """A folder of one (unreadable) DICOM file: input that looks like a series."""
    folder = tmp_path / "series" / "1.2.3"
    folder.mkdir(parents=True)
    (folder / "slice.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    return folder.parent


def _predict(args: list[str], pipeline_file: Path, tmp_path: Path):
    return run_cli(["nnunet-aneurysm", "predict-series", *args, "-o", str(tmp_path / "out" / "submission.csv"),
                    "--pipeline", str(pipeline_file)], dict(os.environ), check=False)


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnunet-aneurysm predict-series: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")
def test_cuda_asked_for_on_a_machine_without_one_is_one_line(pipeline_file, series, tmp_path):
    line = _one_line_error(_predict([str(series), "-device", "cuda"], pipeline_file, tmp_path))
    assert "-device cuda cannot be used: torch sees no CUDA device" in line and "-device cpu" in line
    assert not (tmp_path / "out" / "submission.csv").exists()  # no rows of fallback probabilities


def test_nnunet_raw_given_by_mistake_is_one_line(pipeline_file, tmp_path):
    raw = tmp_path / "nnUNet_raw"
    for dataset in ("Dataset101_RSNAVessels", "Dataset102_RSNAAneurysms"):
        (raw / dataset / "imagesTr").mkdir(parents=True)
        (raw / dataset / "dataset.json").write_text("{}")
        (raw / dataset / "imagesTr" / "case_0000.nii.gz").write_bytes(bytes(400))
    line = _one_line_error(_predict([str(raw), "-device", "cpu"], pipeline_file, tmp_path))
    assert "none of the 2 folder(s) found in" in line and "holds DICOM files" in line


def test_a_model_that_cannot_be_loaded_is_one_line_after_the_device_is_said(pipeline_file, series, tmp_path):
    proc = _predict([str(series)], pipeline_file, tmp_path)  # no -device: cuda where torch sees a GPU, else cpu
    line = _one_line_error(proc)
    assert "cannot load stage 1 (folds [0, 1], checkpoint_final.pth) from" in line, line
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert proc.stdout.splitlines()[0].startswith(f"device: {expected} ("), proc.stdout


@pytest.mark.parametrize("switches, expected", [
    (["-f", "0", "3"], "stage1.folds: fold 3 has no fold_3/checkpoint_final.pth"),
    (["-chk", "checkpoint_best.pth"], "stage1.folds: fold 0 has no fold_0/checkpoint_best.pth"),
    (["-step_size", "1.5"], "-step_size is a fraction of the patch in (0, 1], not 1.5"),
])
def test_switches_naming_what_is_not_there_are_one_line(pipeline_file, series, tmp_path, switches, expected):
    assert expected in _one_line_error(_predict([str(series), "-device", "cpu", *switches], pipeline_file, tmp_path))


def test_every_verb_with_a_device_switch_defaults_to_what_torch_can_use():
    """nnU-Net's default is cuda; ours is cuda where torch can use it, else cpu (not cpu everywhere)."""
    import argparse

    from nnunet_aneurysm.cli import build_parser
    from nnunet_aneurysm.device import choose_device

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    with_device = {name for name, parser in verbs.items() for action in parser._actions if action.dest == "device"}
    assert {"roi-dataset", "features", "predict-series", "demo"} <= with_device
    for name in with_device:
        assert verbs[name].get_default("device") is None, name  # resolved by choose_device, said in a line
    device, note = choose_device(None)
    assert device == ("cuda" if torch.cuda.is_available() else "cpu") and note.startswith(f"device: {device} (")
