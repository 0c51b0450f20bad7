"""The vessel-learning benchmark's crops are normalised as nnU-Net's ZScoreNormalization does, and its two Dice
figures are scikit-learn's F1 (union: per crop, then the mean; arteries: pooled over the crops)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from sklearn.metrics import f1_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from vessel_learning import N_CLASSES, held_out_dice, read_crop  # noqa: E402


def test_a_crop_is_z_scored_over_its_own_voxels_and_padded_to_the_patch(tmp_path):
    rng = np.random.default_rng(0)
    image, labels = rng.normal(300, 50, (6, 5, 7)).astype(np.float32), rng.integers(0, 14, (6, 5, 7)).astype(np.uint8)
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / "imagesTr" / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "labelsTr" / "case.nii.gz"))
    crop, truth = read_crop(tmp_path, "case", (8, 8, 8))
    assert crop.shape == truth.shape == (8, 8, 8)
    assert crop[:6, :5, :7].mean() == pytest.approx(0, abs=1e-5) and crop[:6, :5, :7].std() == pytest.approx(1, 1e-4)
    assert np.array_equal(truth[:6, :5, :7], labels) and not truth[6:].any() and not crop[6:].any()


class _Says(nn.Module):
    """A 'network' whose argmax is the prediction it was given for each crop, in turn."""

    def __init__(self, predictions: list[np.ndarray]):
        super().__init__()
        self.predictions = iter(predictions)

    def forward(self, data, metadata):
        labels = torch.from_numpy(next(self.predictions)).long()
        return nn.functional.one_hot(labels, N_CLASSES).permute(3, 0, 1, 2)[None].float()


def test_union_and_artery_dice_are_scikit_learns_f1():
    rng = np.random.default_rng(1)
    crops = [(np.zeros((4, 4, 4), np.float32), rng.integers(0, 4, (4, 4, 4))) for _ in range(3)]
    predictions = [np.where(rng.random((4, 4, 4)) < 0.3, rng.integers(0, 5, (4, 4, 4)), t) for _, t in crops]
    union, arteries = held_out_dice(_Says(predictions), crops)
    assert union == pytest.approx(np.mean([f1_score(t.ravel() > 0, p.ravel() > 0) for (_, t), p in zip(crops,
                                                                                                      predictions)]))
    truth, predicted = np.concatenate([t.ravel() for _, t in crops]), np.concatenate([p.ravel() for p in predictions])
    per_artery = f1_score(truth, predicted, labels=list(range(1, N_CLASSES)), average=None, zero_division=0)
    assert arteries == pytest.approx(per_artery.mean())  # arteries in neither count 0, as the benchmark counts them
