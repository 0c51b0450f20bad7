"""Collocation points of the physics loss: inside the vessel, on its wall, and R3's retained population."""

import torch

from nnunet_aneurysm.losses.collocation import R3Sampler, sample_in, wall_mask


def test_collocation_points_lie_in_the_vessel_and_r3_keeps_high_residual_points():
    mask = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    mask[0, 1:7, 2:6, 1:7] = True
    points = sample_in(mask, 64)
    index = torch.round((points.flip(-1) + 1) / 2 * 7).long()[0]
    assert mask[0, index[:, 0], index[:, 1], index[:, 2]].all()
    walls = wall_mask(mask)
    assert walls.sum() > 0 and (walls <= mask).all() and walls.sum() < mask.sum()
    sampler = R3Sampler(64)
    residual = torch.arange(64.0)[None]
    sampler.update(points, residual)
    again = sampler.interior(mask)
    kept = points[0, residual[0] > residual.mean()]
    torch.testing.assert_close(again[0, : len(kept)], kept)


