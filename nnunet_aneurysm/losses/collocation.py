"""Collocation points for the PINN loss, drawn inside the vessel channel of a training patch.

R3 sampling (retain-resample-release, Daw et al. 2023) keeps the points whose residual is above
the mean and resamples the rest. Its points live in one fixed domain; ours change every
iteration (a new patch). Our adaptation keeps the *normalised patch coordinates* of the
high-residual points of the previous step, retains those that fall inside the new patch's
vessel mask, and draws the rest uniformly from that mask.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def vessel_mask(data: torch.Tensor, channel: int | None, threshold: float = 0.5) -> torch.Tensor:
    """[B, D, H, W] bool: the vessel-probability ``channel`` of the input above ``threshold``;
    all True when there is no such channel (then points spread over the whole patch)."""
    if channel is None or data.shape[1] <= channel:
        return torch.ones_like(data[:, 0], dtype=torch.bool)
    return data[:, channel] > threshold


def wall_mask(mask: torch.Tensor) -> torch.Tensor:
    """Vessel voxels with a non-vessel voxel among their 26 neighbours."""
    outside = (~mask).float()[:, None]
    near_outside = F.max_pool3d(outside, 3, stride=1, padding=1)[:, 0] > 0
    return mask & near_outside


def _normalise(index: torch.Tensor, shape) -> torch.Tensor:
    """(d, h, w) voxel indices -> grid_sample coordinates (x, y, z) in [-1, 1]."""
    size = torch.tensor(shape, device=index.device, dtype=torch.float32) - 1
    return (2 * index.float() / size.clamp(min=1) - 1).flip(-1)


def sample_in(mask: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, n, 3] normalised coordinates drawn uniformly from each sample's mask (whole patch if empty)."""
    out = []
    for m in mask:
        index = torch.nonzero(m)
        if len(index) == 0:
            index = torch.nonzero(torch.ones_like(m))
        pick = torch.randint(len(index), (n,), device=m.device, generator=generator)
        out.append(_normalise(index[pick], m.shape))
    return torch.stack(out)


def _inside(mask: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """[N] bool: which normalised coordinates fall on a True voxel of one sample's mask [D, H, W]."""
    size = torch.tensor(mask.shape, device=coords.device, dtype=torch.float32) - 1
    index = torch.round((coords.flip(-1) + 1) / 2 * size).long()
    return mask[index[:, 0], index[:, 1], index[:, 2]]


class R3Sampler:
    def __init__(self, n_points: int):
        self.n_points = n_points
        self.retained: list[torch.Tensor] | None = None

    def interior(self, mask: torch.Tensor) -> torch.Tensor:
        fresh = sample_in(mask, self.n_points)
        if self.retained is None or len(self.retained) != len(mask):
            return fresh
        for b, kept in enumerate(self.retained):
            kept = kept[_inside(mask[b], kept)][: self.n_points]
            fresh[b, : len(kept)] = kept
        return fresh

    def update(self, coords: torch.Tensor, residual: torch.Tensor) -> None:
        """Remember the points whose residual norm is above the per-sample mean."""
        above = residual > residual.mean(dim=1, keepdim=True)
        self.retained = [c[a].detach() for c, a in zip(coords, above)]
