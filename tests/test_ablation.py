"""The ablation's read-out AUROCs judge the right target: calls at a threshold chosen out of fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnunet_aneurysm.evaluation.ablation import auroc_with_interval, call_threshold, confidence_aurocs
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS

PRESENT_HEAD = f"head_{len(SUBMISSION_COLUMNS) - 1}"


def _rows(n: int, seed: int, fold_offset: float = 0.0) -> pd.DataFrame:
    """Heads whose 'Present' probability lies in 0.51-0.93 (as in one demo run) and ranks the label well."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.4).astype(int)
    table = pd.DataFrame({PRESENT_HEAD: np.clip(0.65 + 0.15 * truth + rng.normal(0, 0.06, n), 0.51, 0.93),
                          PRESENT_COLUMN: truth, "source_fold": rng.integers(0, 2, n)})
    table["fold"] = table["source_fold"]
    table["pinn_loss"] = rng.normal(size=n)
    table[ID_COLUMN] = [f"1.{seed}.{i}" for i in range(n)]
    return table


def test_the_call_threshold_comes_from_the_out_of_fold_table_not_0_5():
    oof = _rows(400, 0)
    threshold = call_threshold(oof)
    assert 0.65 < threshold < 0.85  # at 0.5 every series would be called positive: 'correct' = 'has an aneurysm'


def test_a_read_out_that_knows_the_wrong_calls_is_informative_and_noise_is_not():
    oof, heldout = _rows(400, 0), _rows(300, 1)
    threshold = call_threshold(oof)
    wrong = ((heldout[PRESENT_HEAD] >= threshold).astype(int) != heldout[PRESENT_COLUMN]).to_numpy()
    heldout["order_parameter"] = wrong + np.random.default_rng(2).normal(0, 0.3, len(heldout))
    oof["order_parameter"] = 0.0
    result = confidence_aurocs(oof, heldout.drop(columns=PRESENT_COLUMN), heldout[[ID_COLUMN, PRESENT_COLUMN]],
                               bootstrap=200)
    assert result["threshold"] == threshold and result["wrong_calls"] == int(wrong.sum())
    order = result["order_parameter"]["correct_vs_wrong"]
    assert order["auroc"] < 0.2 and order["verdict"] == "informative"  # larger on wrong calls
    assert result["pinn_loss"]["correct_vs_wrong"]["verdict"] == "no information"
    assert auroc_with_interval(np.zeros(5), np.ones(5))["verdict"] == "undefined"


def test_the_read_out_interval_is_scikit_learns_on_the_same_resamples():
    """The resamples ranked at once (``column_aucs``) give scikit-learn's AUROC resample by resample: ties, rare
    positives, resamples with one class left out."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    target = np.zeros(40, int)
    target[[3, 17]] = 1  # two positives: about one resample in eight holds none
    values = np.round(rng.normal(size=40) + target, 1)  # a 0.1 grid: many ties
    draws, samples = np.random.default_rng(0), []
    for _ in range(300):
        index = draws.integers(0, len(target), len(target))
        if len(np.unique(target[index])) == 2:
            samples.append(roc_auc_score(target[index], values[index]))
    result = auroc_with_interval(target, values, bootstrap=300)
    assert len(samples) < 300  # some resamples held no positive
    assert result["auroc"] == pytest.approx(roc_auc_score(target, values), rel=1e-12)
    assert [result["low"], result["high"]] == pytest.approx(np.percentile(samples, [2.5, 97.5]), rel=1e-12)
