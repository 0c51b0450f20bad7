"""Do the modules earn their cost? The held-out weighted AUC of the stage-2 heads alone, of the stacker, and
of the stacker trained without each feature group, each module's effect as the PAIRED difference (the same
held-out series scored by both predictors, resampled together) with its 95 % interval and a verdict:
"pays" (interval above 0), "costs" (below), "undecided" (it spans 0). Independent intervals of two
predictors of the same series overlap even when one is better on nearly every resample.

The interpretability read-outs (the AKOrN order parameter, the PINN loss) are judged the same way: the
AUROC with which each separates the heads' correct 'Aneurysm Present' calls from the wrong ones, at a
threshold chosen on the OUT-OF-FOLD table (so "correct" is not simply "has an aneurysm": the heads'
probabilities lay in 0.51-0.93 on every held-out series of one run, and "correct at 0.5" was the label),
and aneurysm from none; with a bootstrap interval and a verdict against 0.5.

Every stacker here is trained on the out-of-fold table only and applied to the held-out series' per-fold
features (averaged over fold models), exactly as the pipeline does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nnunet_aneurysm.evaluation.metric import align, column_aucs, evaluate, paired_bootstrap
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.postprocessing.features import FEATURE_GROUPS, feature_columns
from nnunet_aneurysm.postprocessing.stacker import fold_relative, fold_statistics, train_stacker

ABLATED_GROUPS = {"akorn": "AKOrN read-out", "pinn": "PINN read-out", "gat": "GAT", "metadata": "metadata"}
FULL = "stacker (all features)"
HEADS = "stage-2 heads alone"
READOUTS = ("order_parameter", "pinn_loss")


def _per_series(heldout_features: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame(values, columns=list(SUBMISSION_COLUMNS))
    table[ID_COLUMN] = heldout_features[ID_COLUMN].to_numpy()
    return table.groupby(ID_COLUMN, as_index=False).mean()


def heads_submission(features: pd.DataFrame) -> pd.DataFrame:
    """The stage-2 heads' 14 probabilities per series (the mean over its fold models' rows of a features table)."""
    return _per_series(features, features[FEATURE_GROUPS["head"]].to_numpy(float))


def variant_predictions(oof: pd.DataFrame, heldout_features: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Held-out submissions of the heads alone, the full stacker and the stacker without each feature group."""
    variants = {HEADS: heads_submission(heldout_features)}
    for name, without in [(FULL, ())] + [(f"stacker without {g}", (g,)) for g in ABLATED_GROUPS]:
        stacker = train_stacker(oof, feature_columns(without))
        variants[name] = _per_series(heldout_features, stacker.predict(heldout_features))
    return variants


def verdict_row(name: str, module: str, better: pd.DataFrame, worse: pd.DataFrame, labels: pd.DataFrame,
                bootstrap: int) -> dict:
    """A module's paired effect: ``better`` (with it) minus ``worse`` (without it), weighted and Present."""
    truth, scores_a, _, _ = align(labels, better.sort_values(ID_COLUMN))
    _, scores_b, _, _ = align(labels, worse.sort_values(ID_COLUMN))
    paired = paired_bootstrap(truth, scores_a, scores_b, bootstrap)
    row = {"variant": name, "module": module}
    for key, short in (("weighted_auc", "weighted"), (PRESENT_COLUMN, "present")):
        d = paired.get(key)
        row.update({f"{short}_gain": d.difference if d else np.nan, f"{short}_gain_low": d.low if d else np.nan,
                    f"{short}_gain_high": d.high if d else np.nan})
    row["verdict"] = paired["weighted_auc"].verdict if "weighted_auc" in paired else "undefined"
    return row


def ablation_table(oof: pd.DataFrame, heldout_features: pd.DataFrame, labels: pd.DataFrame,
                   bootstrap: int = 1000) -> pd.DataFrame:
    """One row per variant: its weighted and Present AUCs with 95 % intervals; for the module rows, the paired
    gain of the module (the full stacker minus the stacker without it; the stacker minus the heads alone) with
    its interval and verdict."""
    variants = variant_predictions(oof, heldout_features)
    effects = {f"stacker without {g}": verdict_row(f"stacker without {g}", module, variants[FULL],
                                                   variants[f"stacker without {g}"], labels, bootstrap)
               for g, module in ABLATED_GROUPS.items()}
    effects[HEADS] = verdict_row(HEADS, "stacker over heads", variants[FULL], variants[HEADS], labels, bootstrap)
    rows = []
    for name, predictions in variants.items():
        result = evaluate(labels, predictions, bootstrap=bootstrap)
        ci, ci_present = result.intervals.get("weighted_auc", (np.nan, np.nan)), \
            result.intervals.get(PRESENT_COLUMN, (np.nan, np.nan))
        row = {"variant": name, "weighted_auc": result.score, "weighted_ci_low": ci[0], "weighted_ci_high": ci[1],
               "present_auc": result.aucs[PRESENT_COLUMN], "present_ci_low": ci_present[0],
               "present_ci_high": ci_present[1]}
        rows.append({**row, **{k: v for k, v in effects.get(name, {}).items() if k != "variant"}})
    return pd.DataFrame(rows)


def call_threshold(oof: pd.DataFrame) -> float:
    """The heads' 'Aneurysm Present' threshold that maximises balanced accuracy on the out-of-fold table."""
    present = f"head_{len(SUBMISSION_COLUMNS) - 1}"
    scores, truth = oof[present].to_numpy(float), oof[PRESENT_COLUMN].to_numpy(int)
    candidates = np.unique(scores)
    if truth.min() == truth.max():
        return 0.5
    balanced = [((scores >= t) & (truth == 1)).sum() / max(truth.sum(), 1)
                + ((scores < t) & (truth == 0)).sum() / max((1 - truth).sum(), 1) for t in candidates]
    return float(candidates[int(np.argmax(balanced))])


def auroc_with_interval(target: np.ndarray, values: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> dict:
    """AUROC of ``values`` for a 0/1 ``target`` (one entry per series), its bootstrap 95 % interval over series
    and a verdict against 0.5. The resamples are the columns of one [series, bootstrap] matrix, ranked at once
    by the metric's ``column_aucs``, ~100 at a time (a resample with one class has no AUC and is left out)."""
    usable = np.isfinite(values)
    target, values = target[usable], values[usable]
    undefined = {"auroc": None, "low": None, "high": None, "n": int(len(target)), "verdict": "undefined"}
    if len(np.unique(target)) < 2:
        return undefined
    auroc = column_aucs(target[:, None], values[:, None])[0]
    index = np.random.default_rng(seed).integers(0, len(target), (bootstrap, len(target))).T
    samples = [a for chunk in np.array_split(index, max(1, bootstrap // 100), axis=1)  # ~100 resamples at a time
               for a in column_aucs(target[chunk], values[chunk]) if a is not None]
    if not samples:
        return {**undefined, "auroc": auroc}
    low, high = (float(np.percentile(samples, q)) for q in (2.5, 97.5))
    verdict = "informative" if low > 0.5 or high < 0.5 else "no information"
    return {"auroc": auroc, "low": low, "high": high, "n": int(len(target)), "verdict": verdict}


def confidence_aurocs(oof: pd.DataFrame, heldout_features: pd.DataFrame, labels: pd.DataFrame,
                      bootstrap: int = 1000) -> dict:
    """Per read-out, per held-out SERIES (the fold models' rows averaged: the heads' probability, and each
    read-out relative to its fold model's out-of-fold scale): AUROC for the heads' correct vs wrong 'Aneurysm
    Present' calls at the out-of-fold threshold, and for aneurysm vs none, each with interval and verdict.
    Resampling fold rows instead would count each series once per fold model and narrow the intervals."""
    threshold = call_threshold(oof)
    present = f"head_{len(SUBMISSION_COLUMNS) - 1}"
    relative = fold_relative(heldout_features, fold_statistics(oof, READOUTS))
    columns = [present, *[c for c in READOUTS if c in relative]]
    series = relative.groupby(ID_COLUMN, as_index=False)[columns].mean()
    merged = series.merge(labels[[ID_COLUMN, PRESENT_COLUMN]], on=ID_COLUMN)
    called = (merged[present].to_numpy(float) >= threshold).astype(int)
    truth = merged[PRESENT_COLUMN].to_numpy(int)
    correct = (called == truth).astype(int)
    out = {"threshold": threshold, "threshold_from": "out-of-fold table (balanced accuracy)",
           "calls": int(len(merged)), "wrong_calls": int((1 - correct).sum())}
    for name in READOUTS:
        values = merged[name].to_numpy(float) if name in merged else np.full(len(merged), np.nan)
        out[name] = {"correct_vs_wrong": auroc_with_interval(correct, values, bootstrap),
                     "aneurysm_vs_none": auroc_with_interval(truth, values, bootstrap)}
    return out
