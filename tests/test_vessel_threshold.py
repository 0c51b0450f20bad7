"""Stage 1's recall-first operating point: counts and choice checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, fbeta_score, precision_score, recall_score

from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.stage1 import VesselPrediction
from nnunet_aneurysm.inference.vessel_threshold import BINS, OperatingPoint, VesselCounts, choose_threshold


def _underconfident_scans(seed: int = 0, n: int = 3):
    """Vessel probabilities of a stage 1 that is right but shy: vessels mostly 0.2-0.7, background 0-0.35."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        truth = rng.random((12, 16, 20)) < 0.1
        probability = np.where(truth, rng.beta(4, 4, truth.shape) * 0.9, rng.beta(1, 8, truth.shape) * 0.8)
        yield probability.astype(np.float32), truth


def test_counts_give_sklearns_recall_precision_and_dice_at_every_edge():
    counts, probabilities, truths = VesselCounts.empty(), [], []
    for probability, truth in _underconfident_scans():
        counts.add(probability, truth)
        probabilities.append(probability.ravel())
        truths.append(truth.ravel())
    p, t = np.concatenate(probabilities), np.concatenate(truths)
    assert counts.scans == 3 and counts.vessel.sum() + counts.background.sum() == p.size
    for edge in (0.1, 0.27, 0.5, 0.83):
        mask = p >= edge
        got = counts.at(edge)
        assert got["recall"] == pytest.approx(recall_score(t, mask), abs=1e-12)
        assert got["precision"] == pytest.approx(precision_score(t, mask), abs=1e-12)
        assert got["dice"] == pytest.approx(f1_score(t, mask), abs=1e-12)


def test_the_chosen_threshold_maximises_f2_and_is_recall_first():
    counts, probabilities, truths = VesselCounts.empty(), [], []
    for probability, truth in _underconfident_scans(seed=1):
        counts.add(probability, truth)
        probabilities.append(probability.ravel())
        truths.append(truth.ravel())
    p, t = np.concatenate(probabilities), np.concatenate(truths)
    f2 = {k / BINS: fbeta_score(t, p >= k / BINS, beta=2.0) for k in range(1, BINS)}
    chosen = choose_threshold(counts)
    assert f2[chosen] == pytest.approx(max(f2.values()), abs=1e-12)
    assert chosen < 0.5  # these scans' F2 peaks well below 0.5 (a fixed 0.5 fails here)
    point = OperatingPoint.from_counts(counts)
    assert point.threshold == chosen and point.chosen["recall"] > point.at_half["recall"] + 0.1
    # F1 (beta 1) weighs precision more: its threshold is never below F2's
    assert choose_threshold(counts, beta=1.0) >= chosen


def test_operating_point_round_trips_and_refuses_bad_input(tmp_path):
    counts = VesselCounts.empty()
    for probability, truth in _underconfident_scans(n=1):
        counts.add(probability, truth)
    point = OperatingPoint.from_counts(counts)
    point.save(tmp_path)
    assert OperatingPoint.read(tmp_path) == point and OperatingPoint.read(tmp_path / "absent") is None
    again = point.counts()  # the saved counts give back the same curves
    assert again.at(0.3) == counts.at(0.3) and again.scans == counts.scans
    assert "out-of-fold" in point.describe()
    with pytest.raises(ValueError, match="differ in shape"):
        counts.add(np.zeros((2, 2, 2)), np.zeros((2, 2, 3), bool))
    with pytest.raises(ValueError, match="no vessel voxel"):
        empty = VesselCounts.empty()
        empty.add(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool))
        choose_threshold(empty)


def test_artery_labels_cover_the_mask_at_the_operating_point():
    """A voxel whose single most probable class is background but whose vessel probability (0.6) is above
    the threshold keeps its most probable artery; below the threshold it is 0."""
    probabilities = np.zeros((14, 1, 1, 3), np.float32)
    probabilities[0, ..., 0], probabilities[3, ..., 0], probabilities[7, ..., 0] = 0.4, 0.35, 0.25  # vessel 0.6
    probabilities[0, ..., 1], probabilities[5, ..., 1] = 0.8, 0.2  # vessel 0.2
    probabilities[0, ..., 2], probabilities[9, ..., 2] = 0.1, 0.9  # vessel 0.9
    prediction = VesselPrediction(probabilities, Geometry(np.zeros(3), np.eye(3)[0], np.eye(3)[1], (1.0, 1.0, 1.0)))
    assert prediction.artery_labels(0.5).ravel().tolist() == [3, 0, 9]  # argmax would say [0, 0, 9]
    assert prediction.artery_labels(0.15).ravel().tolist() == [3, 5, 9]
    assert prediction.artery_labels(0.7).ravel().tolist() == [0, 0, 9]


def test_roi_dataset_refuses_a_threshold_outside_0_1_in_one_line(capsys):
    from nnunet_aneurysm.cli import main

    code = main(["roi-dataset", "--vessels", "101", "--aneurysms", "102", "--output-id", "103",
                 "--vessel-threshold", "1.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "nnunet-aneurysm roi-dataset: error: --vessel-threshold must lie in (0, 1), not 1.5"
