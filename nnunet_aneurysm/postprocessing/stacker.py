"""The XGBoost stacker: meta-features of a series -> its 14 probabilities.

One binary ``XGBClassifier`` per output column (14 models): the columns differ in prevalence and
in which features matter (a location's own map maximum and GAT score), and a multi-output model
would share one tree budget among them. Each is trained on the OUT-OF-FOLD table only (one row
per training series, its features produced by the fold model that did not train on it), with an
internal 5-fold cross-validation that picks the number of trees by early stopping, then refit on
all rows. At inference it is applied to each fold model's features of a series and the outputs
are averaged (``architecture.md``: a layout concatenating five fold models' features per series
cannot be trained without leakage).

Read-outs whose scale belongs to one fold model (the AKOrN order parameter, the PINN loss:
``FOLD_RELATIVE``) enter as deviations from that fold model's own out-of-fold mean, in its standard
deviations (``fold_relative``): raw, the demo's order parameter was 0.901 in every series of fold 0 and
0.942 in fold 1, so the feature told the stacker the fold, not the series.

Leakage is refused by construction: every row says which fold the series is in (``fold``) and
which fold model produced its features (``source_fold``); a row whose model trained on it
(``source_fold != fold``) makes :func:`train_stacker` raise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_aneurysm import __version__
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS

FOLD_RELATIVE = ("order_parameter", "pinn_loss")  # read-outs on a fold model's own scale


class LeakageError(ValueError):
    """A training row's features came from a model that trained on that series."""


@dataclass
class StackerConfig:
    features: list[str] = field(default_factory=list)  # the table columns the models read
    max_trees: int = 300
    max_depth: int = 3
    learning_rate: float = 0.05
    subsample: float = 0.8
    internal_folds: int = 5
    early_stopping_rounds: int = 30
    seed: int = 0
    # FOLD_RELATIVE column -> {fold model (str) or "all": [mean, standard deviation]} over the out-of-fold rows
    fold_statistics: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def fold_statistics(table: pd.DataFrame, columns) -> dict[str, dict[str, list[float]]]:
    """Per fold model (``source_fold``) and pooled: mean and standard deviation of each ``FOLD_RELATIVE`` column."""
    stats = {}
    for column in [c for c in columns if c in FOLD_RELATIVE and c in table.columns]:
        values = table[column].astype(float)
        per = {"all": [float(values.mean()), float(values.std())]}
        for fold, group in values.groupby(table["source_fold"].astype(int)):
            per[str(fold)] = [float(group.mean()), float(group.std())]
        stats[column] = {k: [m, s if np.isfinite(s) and s > 1e-12 else 1.0] for k, (m, s) in per.items()}
    return stats


def fold_relative(features: pd.DataFrame, statistics: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """``features`` with each ``FOLD_RELATIVE`` column in standard deviations from its fold model's mean (the
    pooled statistics for a row without ``source_fold`` or from a fold the table did not have)."""
    out = features.copy()
    folds = features["source_fold"].astype(int).astype(str) if "source_fold" in features else None
    for column, per in statistics.items():
        if column not in out:
            continue
        keys = folds.where(folds.isin(list(per)), "all") if folds is not None else pd.Series("all", index=out.index)
        mean = keys.map({k: v[0] for k, v in per.items()}).to_numpy(float)
        std = keys.map({k: v[1] for k, v in per.items()}).to_numpy(float)
        out[column] = (out[column].to_numpy(float) - mean) / std
    return out


def check_out_of_fold(table: pd.DataFrame) -> None:
    """Refuse any row whose features were produced by a model that trained on its series."""
    for column in ("fold", "source_fold"):
        if column not in table.columns:
            raise LeakageError(f"the feature table has no '{column}' column: cannot prove it is out-of-fold")
    leaking = table[table["source_fold"].astype(int) != table["fold"].astype(int)]
    if len(leaking):
        raise LeakageError(f"{len(leaking)} rows have features from a fold model that trained on them "
                           f"(e.g. series {leaking.iloc[0].get('case_id', leaking.index[0])}: fold "
                           f"{leaking.iloc[0]['fold']}, features from fold {leaking.iloc[0]['source_fold']})")


def _trees_by_internal_cv(x: np.ndarray, y: np.ndarray, config: StackerConfig) -> int:
    """The number of trees where the internal cross-validation's log-loss stops improving."""
    from sklearn.model_selection import StratifiedKFold
    from xgboost import XGBClassifier

    splits = min(config.internal_folds, int(y.sum()), int(len(y) - y.sum()))
    if splits < 2:
        return 50  # too few positives to validate: a small, fixed forest
    best = []
    for train, val in StratifiedKFold(splits, shuffle=True, random_state=config.seed).split(x, y):
        model = XGBClassifier(n_estimators=config.max_trees, max_depth=config.max_depth,
                              learning_rate=config.learning_rate, subsample=config.subsample,
                              early_stopping_rounds=config.early_stopping_rounds, eval_metric="logloss",
                              random_state=config.seed, n_jobs=1, verbosity=0)
        model.fit(x[train], y[train], eval_set=[(x[val], y[val])], verbose=False)
        best.append(model.best_iteration + 1)
    return max(1, int(np.median(best)))


@dataclass
class Stacker:
    config: StackerConfig
    models: dict[str, object]  # column -> fitted XGBClassifier, or a constant probability (one class in training)
    trees: dict[str, int]

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """[rows, 14] probabilities in submission column order (rows: one per series and fold model)."""
        x = fold_relative(features, self.config.fold_statistics)[self.config.features].to_numpy(np.float32)
        out = np.zeros((len(x), len(SUBMISSION_COLUMNS)))
        for j, column in enumerate(SUBMISSION_COLUMNS):
            model = self.models[column]
            out[:, j] = model.predict_proba(x)[:, 1] if hasattr(model, "predict_proba") else float(model)
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        constants = {}
        for j, (column, model) in enumerate(self.models.items()):
            if hasattr(model, "save_model"):
                model.save_model(folder / f"column_{j:02d}.json")
            else:
                constants[column] = float(model)
        (folder / "stacker.json").write_text(json.dumps({"config": asdict(self.config), "trees": self.trees,
                                                         "constants": constants, "columns": list(self.models),
                                                         "plugin_version": __version__}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Stacker:
        from xgboost import XGBClassifier

        body = json.loads((folder / "stacker.json").read_text())
        models = {}
        for j, column in enumerate(body["columns"]):
            if column in body["constants"]:
                models[column] = body["constants"][column]
            else:
                models[column] = XGBClassifier()
                models[column].load_model(folder / f"column_{j:02d}.json")
        return cls(StackerConfig(**body["config"]), models, body["trees"])


def train_stacker(table: pd.DataFrame, features: list[str], config: StackerConfig | None = None) -> Stacker:
    """One model per submission column on an out-of-fold table (refused if any row leaks)."""
    from xgboost import XGBClassifier

    check_out_of_fold(table)
    config = config or StackerConfig()
    config.features = list(features)
    config.fold_statistics = fold_statistics(table, config.features)
    x = fold_relative(table, config.fold_statistics)[config.features].to_numpy(np.float32)
    models, trees = {}, {}
    for column in SUBMISSION_COLUMNS:
        y = table[column].to_numpy(int)
        if y.min() == y.max():
            models[column], trees[column] = float(y.mean()), 0  # one class: its rate, nothing to learn
            continue
        trees[column] = _trees_by_internal_cv(x, y, config)
        model = XGBClassifier(n_estimators=trees[column], max_depth=config.max_depth,
                              learning_rate=config.learning_rate, subsample=config.subsample,
                              random_state=config.seed, n_jobs=1, verbosity=0)
        models[column] = model.fit(x, y)
    return Stacker(config, models, trees)
