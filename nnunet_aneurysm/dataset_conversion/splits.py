"""Five folds stratified on (Aneurysm Present, Modality), shared by both datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd


def stratified_folds(table: pd.DataFrame, key_columns: list[str], n_folds: int = 5, seed: int = 0) -> pd.Series:
    """Fold index per row: within each stratum, a seeded shuffle dealt round-robin over the folds
    (the offset carries over between strata so fold sizes stay within one of each other)."""
    rng = np.random.default_rng(seed)
    folds = pd.Series(-1, index=table.index, dtype=int)
    offset = 0
    for _, group in table.groupby(key_columns, sort=True):
        order = rng.permutation(group.index.to_numpy())
        folds.loc[order] = (np.arange(len(order)) + offset) % n_folds
        offset += len(order)
    return folds


def nnunet_splits(case_ids: pd.Series, folds: pd.Series, n_folds: int = 5) -> list[dict]:
    """nnU-Net's ``splits_final.json`` content."""
    return [{"train": sorted(case_ids[folds != f]), "val": sorted(case_ids[folds == f])} for f in range(n_folds)]
