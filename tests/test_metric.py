"""The competition metric against scikit-learn, and its edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from nnunet_aneurysm.evaluation.metric import bootstrap_intervals, column_aucs, evaluate, paired_bootstrap
from nnunet_aneurysm.labels import ID_COLUMN, LOCATION_COLUMNS, PRESENT_COLUMN, SUBMISSION_COLUMNS


def _tables(n: int = 120, seed: int = 0, empty_column: str | None = None):
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({c: (rng.random(n) < 0.15).astype(int) for c in LOCATION_COLUMNS})
    if empty_column:
        labels[empty_column] = 0
    labels[PRESENT_COLUMN] = labels[list(LOCATION_COLUMNS)].max(axis=1)
    labels.insert(0, ID_COLUMN, [f"1.2.{i}" for i in range(n)])
    predictions = labels.copy()
    predictions[list(SUBMISSION_COLUMNS)] = np.clip(labels[list(SUBMISSION_COLUMNS)] * 0.4 + rng.random((n, 14)) * 0.7,
                                                    0, 1)
    return labels, predictions


def test_weighted_auc_is_13_times_present_plus_the_locations_over_26():
    labels, predictions = _tables()
    result = evaluate(labels, predictions, bootstrap=0)
    expected = [roc_auc_score(labels[c], predictions[c]) for c in SUBMISSION_COLUMNS]
    assert result.score == pytest.approx((13 * expected[-1] + sum(expected[:-1])) / 26, rel=1e-12)
    assert list(result.aucs.values()) == pytest.approx(expected, rel=1e-12)
    assert result.positives[PRESENT_COLUMN] == int(labels[PRESENT_COLUMN].sum())


def test_column_aucs_equal_scikit_learn_with_ties_and_other_class_values():
    """Scores on a 0.1 grid (many ties, counted half) and truth given as 0/2: each column's AUC is scikit-learn's."""
    rng = np.random.default_rng(3)
    truth = 2.0 * (rng.random((250, 14)) < 0.2)
    scores = np.round(rng.random((250, 14)) + 0.3 * truth, 1)
    expected = [roc_auc_score(truth[:, j] > 0, scores[:, j]) for j in range(14)]
    assert column_aucs(truth, scores) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_a_nan_score_is_refused_not_ranked():
    """A NaN ranks as NaN: without the check a paired bootstrap would read 'undecided' from NaN intervals."""
    truth, scores = _labels_and_scores()
    scores[5, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(truth, scores, scores.copy(), n=10)


def test_row_order_does_not_matter_and_ids_are_matched():
    labels, predictions = _tables()
    shuffled = predictions.sample(frac=1.0, random_state=1)
    assert evaluate(labels, shuffled, bootstrap=0).score == evaluate(labels, predictions, bootstrap=0).score


def test_a_column_with_one_class_is_reported_and_left_out_with_its_weight():
    labels, predictions = _tables(empty_column=LOCATION_COLUMNS[6])
    result = evaluate(labels, predictions, bootstrap=0)
    assert result.aucs[LOCATION_COLUMNS[6]] is None
    others = [roc_auc_score(labels[c], predictions[c]) for c in SUBMISSION_COLUMNS if c != LOCATION_COLUMNS[6]]
    assert result.score == pytest.approx((13 * others[-1] + sum(others[:-1])) / 25, rel=1e-12)
    assert LOCATION_COLUMNS[6] in result.as_dict()["one_class_columns"]


def test_missing_and_extra_series_are_reported():
    labels, predictions = _tables()
    predictions = pd.concat([predictions.iloc[3:], predictions.iloc[:1].assign(**{ID_COLUMN: "9.9.9"})])
    result = evaluate(labels, predictions, bootstrap=0)
    assert result.missing == sorted(labels[ID_COLUMN].iloc[:3]) and result.extra == ["9.9.9"]
    assert result.n_series == len(labels) - 3


def test_bootstrap_interval_holds_the_estimate():
    labels, predictions = _tables(n=200)
    result = evaluate(labels, predictions, bootstrap=200)
    low, high = result.intervals["weighted_auc"]
    assert low < result.score < high and high - low < 0.2
    low, high = result.intervals[PRESENT_COLUMN]
    assert low < result.aucs[PRESENT_COLUMN] < high


def test_bad_tables_are_one_clear_error():
    labels, predictions = _tables()
    with pytest.raises(ValueError, match="lack the columns"):
        evaluate(labels, predictions.drop(columns=PRESENT_COLUMN))
    with pytest.raises(ValueError, match="more than once"):
        evaluate(labels, pd.concat([predictions, predictions.iloc[:1]]))


def _labels_and_scores(n: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, len(SUBMISSION_COLUMNS))) < 0.3).astype(float)
    truth[:, -1] = truth[:, :-1].max(1)
    return truth, rng.random(truth.shape)


def test_paired_interval_of_a_predictor_against_itself_is_exactly_zero():
    truth, scores = _labels_and_scores()
    for difference in paired_bootstrap(truth, scores, scores.copy(), n=200).values():
        assert (difference.difference, difference.low, difference.high) == (0.0, 0.0, 0.0)
        assert difference.verdict == "undecided"


def test_paired_interval_excludes_zero_for_a_predictor_better_on_every_series():
    """b is noise; a ranks every series right in every column: 'pays', and the paired interval is narrower than
    the two independent intervals side by side."""
    truth, noise = _labels_and_scores(seed=1)
    better = truth + 0.2 * noise  # positives above negatives in every column
    paired = paired_bootstrap(truth, better, noise, n=300)
    assert paired["weighted_auc"].low > 0 and paired["weighted_auc"].verdict == "pays"
    assert paired[PRESENT_COLUMN].verdict == "pays"
    worse = paired_bootstrap(truth, noise, better, n=300)["weighted_auc"]
    assert worse.verdict == "costs" and worse.difference == pytest.approx(-paired["weighted_auc"].difference)


def test_paired_interval_is_narrower_than_independent_ones_for_correlated_predictors():
    truth, noise = _labels_and_scores(n=200, seed=2)
    base = truth[:, -1:] * 0.6 + noise
    slightly = base + 0.15 * truth[:, -1:]
    paired = paired_bootstrap(truth, slightly, base, n=300)["weighted_auc"]
    one, two = bootstrap_intervals(truth, slightly, 300), bootstrap_intervals(truth, base, 300)
    assert paired.high - paired.low < 0.5 * min(one["weighted_auc"][1] - one["weighted_auc"][0],
                                                two["weighted_auc"][1] - two["weighted_auc"][0])
