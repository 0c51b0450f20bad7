"""The stage-2 trainer's small pure pieces: patch targets, the physics NaN guard, loss choice rules."""

import torch

from nnunet_aneurysm.trainers.waveformer import finite_or_zero, patch_targets


def test_patch_targets():
    label = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    label[0, 0, 0, 0, 0] = 7
    label[0, 0, 1, 1, 1] = 12
    t = patch_targets(label)
    assert t.shape == (2, 14)
    assert t[0].nonzero().flatten().tolist() == [6, 11, 13] and t[1].sum() == 0




def test_physics_guard_keeps_nan_from_the_optimiser():
    weight = torch.nn.Parameter(torch.ones(3))
    bad = (weight * torch.tensor([1.0, float("nan"), 2.0])).sum()
    guarded, skipped = finite_or_zero(bad)
    assert skipped and guarded.item() == 0.0 and not guarded.requires_grad
    (guarded + weight.sum()).backward()
    assert torch.isfinite(weight.grad).all()
    fine, skipped = finite_or_zero(weight.sum())
    assert not skipped and fine.requires_grad


