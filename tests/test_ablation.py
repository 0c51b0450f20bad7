"""The ablation's read-out AUROCs judge the right target: calls at a threshold chosen out of fold."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
