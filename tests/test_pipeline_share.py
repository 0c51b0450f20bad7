"""``pipeline export`` packs exactly what a pipeline file names; ``pipeline install`` unpacks it elsewhere, checks
versions, and the installed pipeline predicts the same rows without any raw data."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnunet_aneurysm.cli import main
from nnunet_aneurysm.inference import pipeline_share
from nnunet_aneurysm.inference.pipeline_file import ModelEntry, Pipeline, read_pipeline, relative_to
from nnunet_aneurysm.inference.pipeline_share import export_pipeline, install_pipeline
from nnunet_aneurysm.stages import STAGE1, STAGE2
from tests.conftest import run_cli

MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")


def _model_folder(results: Path, dataset: str, stage) -> Path:
    """A trained two-fold nnU-Net model folder with everything training leaves (logs, best checkpoints)."""
    folder = results / dataset / f"{stage.trainer}__{stage.plans}__3d_cpu"
    for fold in (0, 1):
        (folder / f"fold_{fold}" / "validation").mkdir(parents=True)
        for name in ("checkpoint_final.pth", "checkpoint_best.pth", "training_log.txt"):
            (folder / f"fold_{fold}" / name).write_bytes(os.urandom(64))
    for name in MODEL_FILES:
        (folder / name).write_text(json.dumps({"name": name}))
    return folder


@pytest.fixture
def fold_0_pipeline(tmp_path) -> Path:
    """A pipeline file that uses fold 0 of two-fold models, the GATs of both folds and a stacker."""
    results, post = tmp_path / "trained" / "nnUNet_results", tmp_path / "trained" / "postprocessing"
    stage1 = _model_folder(results, "Dataset101_RSNAVessels", STAGE1)
    stage2 = _model_folder(results, "Dataset103_RSNAAneurysmsROI", STAGE2)
    for fold in (0, 1):
        (post / "gat" / f"fold_{fold}").mkdir(parents=True)
        (post / "gat" / f"fold_{fold}" / "model.pt").write_bytes(os.urandom(32))
        (post / "gat" / f"fold_{fold}" / "config.json").write_text("{}")
    (post / "stacker").mkdir()
    (post / "stacker" / "stacker.json").write_text("{}")
    file = tmp_path / "trained" / "pipeline" / "pipeline.json"
    file.parent.mkdir()
    return Pipeline(ModelEntry(relative_to(stage1, file), [0]), ModelEntry(relative_to(stage2, file), [0]),
                    gat=relative_to(post / "gat", file), stacker=relative_to(post / "stacker", file)).save(file)


def test_the_zip_holds_only_the_folds_and_checkpoints_the_pipeline_uses(fold_0_pipeline, tmp_path):
    names = set(zipfile.ZipFile(export_pipeline(fold_0_pipeline, tmp_path / "model.zip")).namelist())
    models = {f"nnUNet_results/Dataset101_RSNAVessels/{STAGE1.trainer}__{STAGE1.plans}__3d_cpu",
              f"nnUNet_results/Dataset103_RSNAAneurysmsROI/{STAGE2.trainer}__{STAGE2.plans}__3d_cpu"}
    assert names == {"manifest.json", "pipeline.json", "postprocessing/gat/fold_0/model.pt",
                     "postprocessing/gat/fold_0/config.json", "postprocessing/stacker/stacker.json",
                     *(f"{m}/{name}" for m in models for name in (*MODEL_FILES, "fold_0/checkpoint_final.pth"))}


def test_installed_elsewhere_the_pipeline_file_points_inside_and_the_files_are_the_same(fold_0_pipeline, tmp_path):
    archive = export_pipeline(fold_0_pipeline, tmp_path / "model.zip")
    installed = install_pipeline(archive, tmp_path / "elsewhere" / "models")
    original, copy = read_pipeline(fold_0_pipeline), read_pipeline(installed)
    assert installed == (tmp_path / "elsewhere" / "models" / "pipeline.json").resolve()
    for entry in ("stage1", "stage2"):
        a, b = getattr(original, entry), getattr(copy, entry)
        assert b.folds == [0] and not Path(b.folder).is_absolute()
        assert (copy.resolve(b.folder) / "fold_0" / b.checkpoint).read_bytes() == \
            (original.resolve(a.folder) / "fold_0" / a.checkpoint).read_bytes()
    assert (copy.resolve(copy.gat) / "fold_0" / "model.pt").read_bytes() == \
        (original.resolve(original.gat) / "fold_0" / "model.pt").read_bytes()
    assert copy.roi == original.roi and copy.fallback_probabilities == original.fallback_probabilities


@pytest.mark.parametrize("key, name", [("plugin_version", "nnunet-aneurysm"), ("nnunetv2_version", "nnunetv2")])
def test_install_refuses_another_version_in_one_line(fold_0_pipeline, tmp_path, monkeypatch, capsys, key, name):
    archive = export_pipeline(fold_0_pipeline, tmp_path / "model.zip")
    exported = json.loads(zipfile.ZipFile(archive).read("manifest.json"))[key]
    here = {**pipeline_share.installed_versions(), key: "9.9.9"}
    monkeypatch.setattr(pipeline_share, "installed_versions", lambda: here)
    assert main(["pipeline", "install", str(archive), str(tmp_path / "target")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"exported with {name} {exported}" in error and f"{name} 9.9.9" in error
    assert not (tmp_path / "target").exists()


def test_install_refuses_a_zip_that_is_not_a_shared_pipeline_or_escapes_its_folder(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("pipeline.json", "{}")
    with pytest.raises(ValueError, match="not a shared nnunet-aneurysm pipeline"):
        install_pipeline(plain, tmp_path / "a")
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": pipeline_share.FORMAT, "version": pipeline_share.VERSION,
                                                 **pipeline_share.installed_versions(), "files": []}))
        zf.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="outside its folder"):
        install_pipeline(escaping, tmp_path / "b")
    assert not (tmp_path / "outside.txt").exists()


def test_install_into_a_folder_that_holds_files_is_refused(fold_0_pipeline, tmp_path):
    archive = export_pipeline(fold_0_pipeline, tmp_path / "model.zip")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        install_pipeline(archive, tmp_path / "busy")


@pytest.mark.integration
def test_a_shared_demo_pipeline_predicts_the_same_rows_and_inits_without_raw_data(quick_demo, tmp_path, nnunet_env):
    """The quick demo's pipeline through the command line: export, install elsewhere, predict the same held-out
    series with both; then ``pipeline init`` on the installed nnU-Net folders with an empty nnUNet_raw."""
    from nnunet_aneurysm.inference import load_pipeline

    original = quick_demo / "pipeline" / "pipeline.json"
    run_cli(["nnunet-aneurysm", "pipeline", "export", str(original), "-o", str(tmp_path / "model.zip")], nnunet_env)
    shown = run_cli(["nnunet-aneurysm", "pipeline", "install", str(tmp_path / "model.zip"),
                     str(tmp_path / "elsewhere")], nnunet_env).stdout.strip()
    installed = Path(shown)
    assert installed == (tmp_path / "elsewhere" / "pipeline.json").resolve()
    series = sorted((quick_demo / "rsna_heldout" / "series").iterdir())[:2]
    rows = [[pipeline.run(s) for s in series] for pipeline in (load_pipeline(original), load_pipeline(installed))]
    for a, b in zip(*rows):
        assert a.series_uid == b.series_uid and a.source == b.source == "stacker"
        np.testing.assert_array_equal(a.probabilities, b.probabilities)

    empty_raw = tmp_path / "no_raw_data"
    empty_raw.mkdir()
    env = {**nnunet_env, "nnUNet_results": str(installed.parent / "nnUNet_results"), "nnUNet_raw": str(empty_raw)}
    run_cli(["nnunet-aneurysm", "pipeline", "init", "-o", str(tmp_path / "init" / "pipeline.json"), "--stage1", "101",
             "--stage2", "103", "-c", "3d_cpu"], env)
    made, demo = read_pipeline(tmp_path / "init" / "pipeline.json"), read_pipeline(original)
    assert made.roi == demo.roi and made.fallback_probabilities == demo.fallback_probabilities
