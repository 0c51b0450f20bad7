"""The accuracy benchmark's own rules: the baseline's epochs reach our stage-2 seconds, and repeats keep their
seeds and keep a verdict only where every repeat gives it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from accuracy import equal_time_epochs, summarise  # noqa: E402


def test_the_baseline_gets_at_least_our_seconds():
    for ours, per_epoch in ((1100.0, 78.0), (1000.0, 100.0), (5.0, 60.0)):
        epochs = equal_time_epochs(ours, per_epoch)
        assert epochs * per_epoch >= ours and (epochs - 1) * per_epoch < ours and epochs >= 1


def _repeat(seed: int, gain: float, low: float) -> dict:
    score = {"weighted_auc": 0.6 + gain, "present_auc": 0.7}
    return {"training_seed": seed, "scores": {"ours": score},
            "paired": {"ours - nnU-Net baseline": {"weighted_auc": {"difference": gain, "low": low, "high": gain + 0.05,
                                                                    "verdict": "pays" if low > 0 else "undecided"}}},
            "ablation": []}


def test_repeats_record_their_seeds_and_keep_only_verdicts_they_agree_on():
    agreed = summarise([_repeat(0, 0.10, 0.02), _repeat(1, 0.12, 0.04)])
    verdict = agreed["paired"]["ours - nnU-Net baseline"]["weighted_auc"]["verdict"]
    assert agreed["seeds"] == [0, 1] and verdict == "pays"
    assert abs(agreed["seed_spread_weighted_auc"] - 0.02) < 1e-9
    split = summarise([_repeat(0, 0.10, 0.02), _repeat(1, 0.01, -0.03)])
    assert split["paired"]["ours - nnU-Net baseline"]["weighted_auc"]["verdict"] == "undecided (repeats disagree)"
