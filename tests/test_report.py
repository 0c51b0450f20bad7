"""nnunet-aneurysm report for any run: a submission and its labels give the scores and ROC curves; each other
input adds its section, and one named but absent is a one-line error. (The demo's full report: test_demo.)"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from nnunet_aneurysm.cli import main
from nnunet_aneurysm.evaluation.metric import evaluate
from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS


@pytest.fixture
def run(tmp_path) -> tuple[Path, Path]:
    """Labels of 40 series and a submission that is right more often than not."""
    rng = np.random.default_rng(0)
    uids = [f"1.2.{i}" for i in range(40)]
    truth = (rng.random((40, len(SUBMISSION_COLUMNS))) < 0.3).astype(int)
    labels = pd.DataFrame(truth, columns=list(SUBMISSION_COLUMNS)).assign(**{ID_COLUMN: uids})
    scores = np.clip(0.6 * truth + 0.5 * rng.random(truth.shape), 0, 1)
    submission = pd.DataFrame(scores, columns=list(SUBMISSION_COLUMNS)).assign(**{ID_COLUMN: uids})
    labels[[ID_COLUMN, *SUBMISSION_COLUMNS]].to_csv(tmp_path / "labels.csv", index=False)
    submission[[ID_COLUMN, *SUBMISSION_COLUMNS]].to_csv(tmp_path / "submission.csv", index=False)
    return tmp_path / "submission.csv", tmp_path / "labels.csv"


def test_a_submission_and_its_labels_make_a_report(run, tmp_path, capsys):
    submission, labels = run
    models = tmp_path / "results" / "Trainer__Plans__3d_fullres"
    (models / "fold_0").mkdir(parents=True)
    matplotlib.image.imsave(models / "fold_0" / "progress.png", np.ones((4, 4)))
    (tmp_path / "timing.json").write_text(json.dumps({"train": 60.0, "predict": 30.0}))
    assert main(["report", "--submission", str(submission), "--labels", str(labels), "-o", str(tmp_path / "report"),
                 "--bootstrap", "50", "--models", str(tmp_path / "results"), "--timing",
                 str(tmp_path / "timing.json")]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'report' / 'index.html'}"
    page = (tmp_path / "report" / "index.html").read_text()
    expected = evaluate(pd.read_csv(labels, dtype={ID_COLUMN: str}), pd.read_csv(submission, dtype={ID_COLUMN: str}),
                        bootstrap=50)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == json.loads(
        json.dumps(expected.as_dict()))
    assert f"weighted AUC {expected.score:.3f}" in page and "40 series of submission.csv" in page
    for image in ("roc_present.png", "roc_locations.png", "results_Trainer_Plans_3d_fullres_fold_0_progress.png"):
        assert (tmp_path / "report" / "images" / image).stat().st_size > 0 and f"images/{image}" in page
    assert "Wall time per step" in page and "<td>90</td>" in page  # the steps and their sum, seconds
    for absent in ("Do the modules earn their cost?", "vessel threshold", "<h2>Series</h2>"):
        assert absent not in page  # no input given for these sections


@pytest.mark.parametrize("switch", ["--features", "--outputs", "--operating-point", "--models"])
def test_an_input_named_but_absent_is_one_line(run, tmp_path, capsys, switch):
    submission, labels = run
    assert main(["report", "--submission", str(submission), "--labels", str(labels), "-o", str(tmp_path / "report"),
                 switch, str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(f"nnunet-aneurysm report: error: no {tmp_path}/nowhere")
    assert not (tmp_path / "report" / "index.html").exists()
