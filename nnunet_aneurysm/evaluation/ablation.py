"""Do the exotic modules earn their cost? The held-out weighted AUC of the stage-2 head alone, of the
stacker, and of the stacker trained without each feature group; and how well the AKOrN order
parameter and the PINN loss tell the head's right calls from its wrong ones.

Every stacker here is trained on the out-of-fold table only and applied to the held-out series'
per-fold features (averaged over fold models), exactly as the pipeline does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from nnunet_aneurysm.evaluation.metric import evaluate
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.postprocessing.features import FEATURE_GROUPS, feature_columns
from nnunet_aneurysm.postprocessing.stacker import train_stacker

ABLATED_GROUPS = ("akorn", "pinn", "gat", "metadata")


def _per_series(heldout_features: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame(values, columns=list(SUBMISSION_COLUMNS))
    table[ID_COLUMN] = heldout_features[ID_COLUMN].to_numpy()
    return table.groupby(ID_COLUMN, as_index=False).mean()


def ablation_table(oof: pd.DataFrame, heldout_features: pd.DataFrame, labels: pd.DataFrame,
                   bootstrap: int = 500) -> pd.DataFrame:
    """One row per variant: weighted AUC and 'Aneurysm Present' AUC on the held-out set, with 95 % intervals."""
    variants = {"stage-2 head alone": _per_series(heldout_features,
                                                   heldout_features[FEATURE_GROUPS["head"]].to_numpy(float))}
    for name, without in [("stacker (all features)", ())] + [(f"stacker without {g}", (g,)) for g in ABLATED_GROUPS]:
        stacker = train_stacker(oof, feature_columns(without))
        variants[name] = _per_series(heldout_features, stacker.predict(heldout_features))
    rows = []
    for name, predictions in variants.items():
        result = evaluate(labels, predictions, bootstrap=bootstrap)
        ci, ci_present = result.intervals.get("weighted_auc", (np.nan, np.nan)), \
            result.intervals.get(PRESENT_COLUMN, (np.nan, np.nan))
        rows.append({"variant": name, "weighted_auc": result.score, "weighted_ci_low": ci[0],
                     "weighted_ci_high": ci[1], "present_auc": result.aucs[PRESENT_COLUMN],
                     "present_ci_low": ci_present[0], "present_ci_high": ci_present[1]})
    return pd.DataFrame(rows)


def confidence_aurocs(heldout_features: pd.DataFrame, labels: pd.DataFrame, threshold: float = 0.5) -> dict:
    """AUROC with which each interpretability read-out separates the head's correct 'Aneurysm Present' calls
    (probability above ``threshold`` = positive) from its wrong ones, per fold model and series. 0.5: no
    information; below 0.5: the read-out is larger on wrong calls."""
    present = f"head_{len(SUBMISSION_COLUMNS) - 1}"
    merged = heldout_features.merge(labels[[ID_COLUMN, PRESENT_COLUMN]], on=ID_COLUMN)
    correct = ((merged[present] > threshold).astype(int) == merged[PRESENT_COLUMN]).astype(int)
    out = {"calls": int(len(merged)), "wrong_calls": int((1 - correct).sum())}
    for name in ("order_parameter", "pinn_loss"):
        values = merged[name]
        usable = values.notna()
        if correct[usable].nunique() == 2:
            out[name] = float(roc_auc_score(correct[usable], values[usable]))
        else:
            out[name] = None
    return out
