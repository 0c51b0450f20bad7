"""Out-of-fold assignment: every case is predicted by a model that did not train on it, when one exists."""

import pytest

from nnunet_aneurysm.inference.out_of_fold import FoldGroup, fold_groups


def test_each_case_goes_to_its_own_folds_model():
    folds = {"a": 0, "b": 1, "c": 0, "d": 2}
    groups = fold_groups(folds, [0, 1, 2])
    assert groups == [FoldGroup((0,), ("a", "c"), True), FoldGroup((1,), ("b",), True), FoldGroup((2,), ("d",), True)]


def test_cases_of_untrained_folds_get_the_ensemble_and_are_marked():
    groups = fold_groups({"a": 0, "b": 3, "c": 4}, [0, 1])
    assert groups == [FoldGroup((0,), ("a",), True), FoldGroup((0, 1), ("b", "c"), False)]
    covered = [c for g in groups for c in g.cases]
    assert sorted(covered) == ["a", "b", "c"]


def test_no_model_is_an_error():
    with pytest.raises(ValueError):
        fold_groups({"a": 0}, [])
