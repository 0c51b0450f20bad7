"""DICOM series in, 14 probabilities out: defects still give rows, the Python entry point equals the verb."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnunet_aneurysm.demo import demo_environment
from nnunet_aneurysm.inference import load_pipeline
from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS
from tests import defects
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(quick_demo):
    return load_pipeline(quick_demo / "pipeline" / "pipeline.json")


def _series(tmp_path: Path, multiframe: bool) -> Path:
    """A new generated CTA series like the demo's (one aneurysm), single- or multi-frame."""
    from nnunet_aneurysm.dataset_conversion.synthetic import make_series

    _, _, truth = make_series(tmp_path / "new", 0, 99, 48, 0.0, 0.0, "CTA", "axial", multiframe, 1)
    return tmp_path / "new" / "series" / truth.series_uid


def test_predict_returns_one_row_of_the_14_columns_in_competition_order(pipeline, tmp_path):
    row = pipeline.predict(str(_series(tmp_path, False)))
    assert list(row.columns) == list(SUBMISSION_COLUMNS) and len(row) == 1
    assert ((row.to_numpy() >= 0) & (row.to_numpy() <= 1)).all()


def test_predict_equals_the_row_predict_series_wrote(pipeline, quick_demo):
    submission = pd.read_csv(quick_demo / "submission.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN)
    folders = sorted((quick_demo / "rsna_heldout" / "series").iterdir())
    for folder in (folders[0], folders[-1]):  # in any order, each call on its own
        row = pipeline.predict(folder)
        np.testing.assert_allclose(row.to_numpy()[0], submission.loc[folder.name].to_numpy(float), atol=1e-6)


DEFECTS = {
    "multi-frame without orientation, spacing and positions": (True, defects.multiframe_without_geometry,
                                                               "fallback geometry"),
    "scout and MIP of other sizes mixed in": (False, defects.with_scout_and_mip, "dropped"),
    "all slices at one position": (False, defects.all_at_one_position, "one position"),
    "duplicated slices": (False, defects.duplicated_slices, "repeat a position"),
    "uneven spacing (a missing slice)": (False, defects.missing_slice, "uneven slice spacing"),
    "4-D series": (False, defects.four_dimensional, "repeat a position"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_still_gives_a_row_and_says_why(pipeline, tmp_path, defect):
    multiframe, damage, reason = DEFECTS[defect]
    folder = damage(_series(tmp_path, multiframe), tmp_path / "series")
    result = pipeline.run(folder)
    assert result.probabilities.shape == (14,) and ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
    assert any(reason in r for r in result.reasons), result.reasons


def test_a_folder_without_images_gets_the_fallback_row(pipeline, quick_demo, tmp_path):
    fallback = read_pipeline(quick_demo / "pipeline" / "pipeline.json").fallback_probabilities
    result = pipeline.run(defects.no_readable_image(tmp_path / "empty"))
    assert result.source == "fallback" and any("no DICOM image" in r for r in result.reasons), result.reasons
    np.testing.assert_allclose(result.probabilities, [fallback[c] for c in SUBMISSION_COLUMNS])


def test_a_scan_without_vessels_is_read_by_stage2_in_a_box_centred_on_the_scan(pipeline, tmp_path, monkeypatch):
    """As roi-dataset did in training: no vessel found is not a reason to stop reading the image.

    The quick demo's stage 1 is too briefly trained to promise nothing above threshold in flat noise
    (one CI run found voxels there), so its prediction is made all background: the test is about what
    the pipeline does when stage 1 finds no vessel, not about stage 1."""
    real_predict = pipeline.stage1.predict

    def finds_nothing(image, geometry, metadata=None):
        vessels = real_predict(image, geometry, metadata)
        vessels.probabilities[:] = 0.0
        vessels.probabilities[0] = 1.0
        return vessels

    monkeypatch.setattr(pipeline.stage1, "predict", finds_nothing)
    result = pipeline.run(defects.no_vessel(_series(tmp_path, False), tmp_path / "flat"))
    assert result.roi.fallback and any("no vessel" in r for r in result.reasons), result.reasons
    assert result.source in ("stage2", "stacker") and result.stage2 is not None
    middle_voxel = (np.array(result.volume.array.shape, float)[None] - 1) / 2
    volume_centre = result.volume.geometry.voxel_to_patient(middle_voxel)[0]
    np.testing.assert_allclose(result.roi.centre_mm, volume_centre, atol=1e-3)


def test_predict_series_takes_an_rsna_root_and_keeps_going(quick_demo, tmp_path):
    """A run with a broken series in the middle still writes every row, and its log says which. One series in
    three on the fallback row is more than a damaged series or two: exit 2 with one line, unless allowed."""
    root = tmp_path / "rsna" / "series"
    root.mkdir(parents=True)
    good = sorted((quick_demo / "rsna_heldout" / "series").iterdir())[:2]
    for folder in good:
        shutil.copytree(folder, root / folder.name)
    defects.no_readable_image(root / "broken")
    env = demo_environment(quick_demo)
    argv = ["nnunet-aneurysm", "predict-series", str(tmp_path / "rsna"), "-o", str(tmp_path / "out.csv"),
            "--pipeline", str(quick_demo / "pipeline" / "pipeline.json"), "-device", "cpu"]
    proc = run_cli(argv, env, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        "nnunet-aneurysm predict-series: error: 1 of 3 series (33%, more than 10%) got the fallback row; most often: "
        "read failed: SeriesError: no DICOM image"), proc.stderr[-2000:]
    submission = pd.read_csv(tmp_path / "out.csv", dtype={ID_COLUMN: str})
    assert list(submission.columns) == [ID_COLUMN, *SUBMISSION_COLUMNS] and len(submission) == 3
    log = pd.read_csv(tmp_path / "out_log.csv", dtype={ID_COLUMN: str})
    assert log.set_index(ID_COLUMN).loc["broken", "source"] == "fallback"
    allowed = run_cli([*argv, "--allow-fallback", "--continue"], env)  # nothing left to predict; accepted
    assert "0 series predicted" in allowed.stdout and "(3 kept from an earlier run)" in allowed.stdout
    assert pd.read_csv(tmp_path / "out.csv", dtype={ID_COLUMN: str}).equals(submission)


def test_a_killed_run_keeps_its_rows_and_the_next_predicts_only_the_rest(pipeline, quick_demo, tmp_path):
    from nnunet_aneurysm.inference.submission import predict_series

    folders = sorted((quick_demo / "rsna_heldout" / "series").iterdir())[:3]
    output, real_run, ran = tmp_path / "out.csv", pipeline.run, []

    def killed_at_the_second(folder):
        if len(ran) == 1:
            raise KeyboardInterrupt  # as a kill would stop it, between two series
        ran.append(folder.name)
        return real_run(folder)

    pipeline.run = killed_at_the_second
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_series(pipeline, folders, output, progress=False)
        kept = pd.read_csv(output, dtype={ID_COLUMN: str})
        assert kept[ID_COLUMN].tolist() == [folders[0].name]  # its row was on disk before the kill
        with open(output, "a") as f:
            f.write(folders[1].name + ",0.1,0.2")  # a row torn by a kill mid-write
        ran.clear()
        pipeline.run = lambda folder: ran.append(folder.name) or real_run(folder)
        summary = predict_series(pipeline, folders, output, progress=False, resume=True)
    finally:
        pipeline.run = real_run
    assert ran == [folders[1].name, folders[2].name] and (summary.resumed, summary.total) == (1, 3)
    submission = pd.read_csv(output, dtype={ID_COLUMN: str})
    assert submission[ID_COLUMN].tolist() == [f.name for f in folders] and not submission.isna().any().any()
    log = pd.read_csv(output.with_name("out_log.csv"), dtype={ID_COLUMN: str})
    assert log[ID_COLUMN].tolist() == submission[ID_COLUMN].tolist()
    assert sorted(set(pd.read_csv(output.with_name("out_features.csv"), dtype={ID_COLUMN: str})[ID_COLUMN])) == \
        sorted(f.name for f in folders)


def test_nnunet_switches_reach_both_stages_and_the_terminal_shows_only_progress(quick_demo, tmp_path):
    from nnunet_aneurysm.inference.series import SeriesPipeline

    folder = sorted((quick_demo / "rsna_heldout" / "series").iterdir())[0]
    pipeline_file = quick_demo / "pipeline" / "pipeline.json"
    proc = run_cli(["nnunet-aneurysm", "predict-series", str(folder), "-o", str(tmp_path / "out.csv"),
                    "--pipeline", str(pipeline_file), "-device", "cpu", "-f", "1", "-chk", "checkpoint_final.pth",
                    "--disable_tta", "-step_size", "0.75"], demo_environment(quick_demo))
    terminal = proc.stdout + proc.stderr
    for chatter in ("Searching in", "Using trainer", "not found in", "FutureWarning", "perform_everything_on_device"):
        assert chatter not in terminal, chatter
    assert proc.stdout.strip().splitlines()[-1].startswith("1 series predicted in ")
    assert "predicting series" in proc.stderr  # the progress bar
    messages = (tmp_path / "out.log").read_text()
    assert "Using trainer 'AneurysmSegFormer3DTrainer'" in messages and "FutureWarning" in messages

    chosen = SeriesPipeline(read_pipeline(pipeline_file).choose([1], "checkpoint_final.pth", flip_tta=False), "cpu",
                            tile_step_size=0.75)
    for model in (chosen.stage1, chosen.stage2):
        assert not model.flip_tta and model.predictor.tile_step_size == 0.75
        assert len(model.predictor.list_of_parameters) == 1  # fold 1 alone
    assert list(chosen.gats) == [1]
    row = pd.read_csv(tmp_path / "out.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN).loc[folder.name]
    np.testing.assert_allclose(row.to_numpy(float), chosen.predict(folder).to_numpy()[0], atol=1e-6)
    default = pd.read_csv(quick_demo / "submission.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN).loc[folder.name]
    assert np.abs(row.to_numpy(float) - default.to_numpy(float)).max() > 1e-6  # the switches changed the answer


def test_the_pipeline_folder_moves_as_a_whole(quick_demo, tmp_path):
    moved = tmp_path / "moved"
    for name in ("pipeline", "nnUNet_results", "postprocessing"):
        shutil.copytree(quick_demo / name, moved / name)
    pipeline = read_pipeline(moved / "pipeline" / "pipeline.json")
    assert pipeline.resolve(pipeline.stage2.folder).is_relative_to(moved)


def test_a_broken_pipeline_file_is_one_clear_error(quick_demo, tmp_path):
    body = json.loads((quick_demo / "pipeline" / "pipeline.json").read_text())
    for entry in (body["stage1"], body["stage2"]):  # the copy lies elsewhere: its model folders made absolute
        entry["folder"] = str((quick_demo / "pipeline" / entry["folder"]).resolve())
    body["gat"] = body["stacker"] = None
    body["stage2"]["folds"] = [7]
    (tmp_path / "bad.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match="stage2.folds: fold 7 has no fold_7/checkpoint_final.pth"):
        read_pipeline(tmp_path / "bad.json")


def test_stage1_sees_the_modality_read_from_the_dicom_header(pipeline, tmp_path):
    # T2 vessels are dark: stage 1's FiLM layers must be told the modality, which inference reads from DICOM
    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.dataset_conversion.synthetic import make_series
    from nnunet_aneurysm.metadata import encode_metadata

    _, _, truth = make_series(tmp_path / "t2", 0, 98, 48, 0.0, 0.0, "MRI T2", "axial", False, 0)
    folder = tmp_path / "t2" / "series" / truth.series_uid
    seen = []
    predict = pipeline.stage1.predict
    pipeline.stage1.predict = lambda image, geometry, metadata=None: seen.append(metadata) or predict(
        image, geometry, metadata)
    try:
        pipeline.predict(folder)
    finally:
        pipeline.stage1.predict = predict
    expected = encode_metadata(None, None, "MRI T2")
    assert len(seen) == 1 and np.array_equal(seen[0][3:], expected[3:])  # the modality one-hot, from the header
    volume = read_series(folder)
    as_t2 = predict(volume.array, volume.geometry, seen[0]).probabilities
    as_cta = predict(volume.array, volume.geometry, encode_metadata(None, None, "CTA")).probabilities
    assert np.abs(as_t2 - as_cta).max() > 1e-4  # and the fold models do condition on it


def test_predict_series_in_two_parts_merges_to_the_single_runs_rows(quick_demo, nnunet_env, tmp_path):
    """-num_parts 2 -part_id 0/1, as two cluster jobs would run them, merged: every held-out series exactly once,
    with the rows the demo's single run wrote."""
    heldout, pipeline_file = quick_demo / "rsna_heldout", quick_demo / "pipeline" / "pipeline.json"
    parts = []
    for part in (0, 1):
        parts.append(tmp_path / f"part{part}.csv")
        run_cli(["nnunet-aneurysm", "predict-series", str(heldout), "-o", str(parts[-1]), "--pipeline",
                 str(pipeline_file), "-device", "cpu", "-num_parts", "2", "-part_id", str(part), "--allow-fallback"],
                nnunet_env)
    run_cli(["nnunet-aneurysm", "merge-submissions", *map(str, parts), "-o", str(tmp_path / "all.csv"), "--inputs",
             str(heldout)], nnunet_env)
    merged = pd.read_csv(tmp_path / "all.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN).sort_index()
    single = pd.read_csv(quick_demo / "submission.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN).sort_index()
    assert list(merged.index) == list(single.index)
    np.testing.assert_allclose(merged.to_numpy(), single.to_numpy(), atol=1e-5)
    failed = run_cli(["nnunet-aneurysm", "merge-submissions", str(parts[0]), "-o", str(tmp_path / "half.csv"),
                      "--inputs", str(heldout)], nnunet_env, check=False)
    assert failed.returncode == 2 and "in no part" in failed.stderr.strip().splitlines()[-1]
