"""Which fold models may predict which training case: the rule that keeps every downstream input
out-of-fold, like nnU-Net's cascade.

A case in fold f is predicted by the model of fold f, which never saw it. Cases of a fold whose
model is missing get the ensemble of the trained folds, and are marked as not out-of-fold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FoldGroup:
    folds: tuple[int, ...]  # the models that predict these cases
    cases: tuple[str, ...]
    out_of_fold: bool  # False when the models trained on these cases


def fold_groups(case_folds: Mapping[str, int], trained: Sequence[int]) -> list[FoldGroup]:
    """Group cases by the model(s) that predict them; the groups cover every case exactly once."""
    if not trained:
        raise ValueError("no trained fold")
    groups = []
    for fold in sorted(trained):
        cases = tuple(sorted(c for c, f in case_folds.items() if f == fold))
        if cases:
            groups.append(FoldGroup((fold,), cases, True))
    rest = tuple(sorted(c for c, f in case_folds.items() if f not in trained))
    if rest:
        groups.append(FoldGroup(tuple(sorted(trained)), rest, False))
    return groups
