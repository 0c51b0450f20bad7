"""The main job at its smoke size, end to end: every artefact a user gets, and the report in a real browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.stages import STAGE1, STAGE2

pytestmark = pytest.mark.integration


def test_submission_has_a_row_per_heldout_series_and_the_competition_columns(quick_demo):
    submission = pd.read_csv(quick_demo / "submission.csv", dtype={ID_COLUMN: str})
    heldout = pd.read_csv(quick_demo / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    assert list(submission.columns) == [ID_COLUMN, *SUBMISSION_COLUMNS]
    assert sorted(submission[ID_COLUMN]) == sorted(heldout[ID_COLUMN])
    values = submission[list(SUBMISSION_COLUMNS)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()


def test_metrics_json_holds_the_scores_and_how_one_class_columns_are_handled(quick_demo):
    metrics = json.loads((quick_demo / "evaluation" / "metrics.json").read_text())
    assert {"weighted_auc", "column_auc", "positives", "n_series", "ci95", "one_class_columns",
            "one_class_handling", "missing_series", "extra_series"} <= set(metrics)
    assert set(metrics["column_auc"]) == set(SUBMISSION_COLUMNS) and metrics["missing_series"] == []


def test_the_pipeline_file_loads_and_names_every_model(quick_demo):
    pipeline = read_pipeline(quick_demo / "pipeline" / "pipeline.json")
    assert pipeline.stage1.folds == [0, 1] and pipeline.stage2.folds == [0, 1]
    assert pipeline.gat and pipeline.stacker and pipeline.plugin_version
    assert (pipeline.resolve(pipeline.stacker) / "stacker.json").is_file()
    for fold in (0, 1):
        config = json.loads((pipeline.resolve(pipeline.gat) / f"fold_{fold}" / "config.json").read_text())
        assert config["edge_features"] and config["plugin_version"]


def test_the_out_of_fold_table_only_holds_out_of_fold_rows(quick_demo):
    table = pd.read_csv(quick_demo / "postprocessing" / "features.csv", dtype={"case_id": str})
    assert (table["fold"] == table["source_fold"]).all()
    assert {"order_parameter", "pinn_loss", "gat_max", "head_13", "map_max_13", "metadata_0"} <= set(table.columns)


def test_report_files_exist(quick_demo):
    report = quick_demo / "report"
    page = (report / "index.html").read_text()
    for name in ("roc_present.png", "roc_locations.png", "vessel_threshold.png"):
        assert (report / "images" / name).stat().st_size > 0 and f"images/{name}" in page
    assert "Do the modules earn their cost?" in page and (report / "ablation.csv").is_file()
    ablation = pd.read_csv(report / "ablation.csv")
    assert ablation["variant"].tolist()[:2] == ["stage-2 heads alone", "stacker (all features)"]
    assert {"stacker without akorn", "stacker without pinn", "stacker without gat",
            "stacker without metadata"} <= set(ablation["variant"])
    assert "Training curves" in page and any((report / "images").glob("*progress.png"))


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed: ./scripts/bootstrap.sh --test"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def test_the_report_renders_in_a_real_browser_and_every_image_resolves(quick_demo, browser, tmp_path):
    browser.get((quick_demo / "report" / "index.html").as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script("return Array.from(document.images).map(i => [i.src, i.complete && "
                                    "i.naturalWidth > 0])")
    assert len(images) >= 3 and all(ok for _, ok in images), [src for src, ok in images if not ok]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    assert "weighted AUC" in browser.find_element("tag name", "body").text
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 0
    Path(quick_demo / "report" / "screenshot.png").write_bytes((tmp_path / "report.png").read_bytes())


def test_step_times_survive_a_resumed_run(quick_demo):
    """timing.json keeps every step's seconds, so a resumed demo's report still shows the whole run."""
    seconds = json.loads((quick_demo / "timing.json").read_text())
    assert {"synth", "convert", STAGE1.trainer, "roi-dataset", STAGE2.trainer, "features", "predict-series"} <= set(
        seconds), seconds
    assert all(v > 0 for v in seconds.values())
    assert "Wall time per step" in (quick_demo / "report" / "index.html").read_text()


def test_stage2_training_silenced_no_loss_term_and_logged_the_physics_equations_share(quick_demo):
    """Every term kept at least half its even share on every step of training, and none sat at the balancer's
    floor (before: 40 % of the demo's steps weighted the series heads and the physics 0.0); the share of the
    Navier-Stokes terms is logged."""
    import torch

    folder = quick_demo / "nnUNet_results" / "Dataset103_RSNAAneurysmsROI" / \
        f"{STAGE2.trainer}__{STAGE2.plans}__3d_cpu"
    for fold in (0, 1):
        logged = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)["logging"]
        assert logged["min_term_weight"] and min(logged["min_term_weight"]) > 0.5  # weights sum to 3 over 3 terms
        assert max(logged["floored_fraction"]) == 0.0
        assert "physics_navier_stokes_share" in logged
