"""Collocation points of the physics loss: where in a patch the flow equations are enforced.

Points are voxel indices of the patch, split by the vessel mask into

* interior: vessel voxels whose 6 face neighbours are all vessel (the lumen strictly inside the
  wall), where the Navier-Stokes residual and the flow condition are taken;
* wall: vessel voxels with a non-vessel face neighbour, where the same field must vanish (no slip).
  (With the 26-neighbourhood an artery three voxels across, common at 1.5 mm, had no lumen at all.)

They enter the field as non-dimensional coordinates: millimetres from the patch centre divided
by ONE length (:func:`to_nondimensional`), the same on every axis, so that derivatives in these
coordinates are the physical ones times that length whatever the voxel spacing or patch shape.

R3 sampling (retain-resample-release, Daw et al., ICML 2023) keeps a persistent population of
points per case: after each evaluation the points whose residual is above the population's mean
are retained for that case's next visit and the rest are resampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def vessel_mask(data: torch.Tensor, channel: int | None, threshold: float = 0.5) -> torch.Tensor:
    """[B, D, H, W] bool: the vessel-probability ``channel`` of the input above ``threshold``
    (all False when the input has no such channel: no vessel, no flow)."""
    if channel is None or data.shape[1] <= channel:
        return torch.zeros_like(data[:, 0], dtype=torch.bool)
    return data[:, channel] > threshold


def wall_mask(mask: torch.Tensor) -> torch.Tensor:
    """Vessel voxels with a non-vessel face neighbour (outside the patch counts as non-vessel)."""
    outside = F.pad((~mask).float()[:, None], (1,) * 6, value=1.0)
    neighbours = (outside[:, :, :-2, 1:-1, 1:-1], outside[:, :, 2:, 1:-1, 1:-1], outside[:, :, 1:-1, :-2, 1:-1],
                  outside[:, :, 1:-1, 2:, 1:-1], outside[:, :, 1:-1, 1:-1, :-2], outside[:, :, 1:-1, 1:-1, 2:])
    near_outside = torch.stack(neighbours).amax(0)
    return mask & (near_outside[:, 0] > 0)


def interior_mask(mask: torch.Tensor) -> torch.Tensor:
    """Vessel voxels all of whose face neighbours are vessel: the lumen strictly inside the wall."""
    return mask & ~wall_mask(mask)


def sample_in(mask: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 3] voxel indices drawn uniformly (with replacement) from one sample's mask [D, H, W] (not empty)."""
    index = torch.nonzero(mask)
    if len(index) == 0:
        raise ValueError("cannot sample collocation points from an empty mask")
    pick = torch.randint(len(index), (n,), device=mask.device, generator=generator)
    return index[pick]


def to_nondimensional(index: torch.Tensor, shape: Sequence[int], spacing_mm: Sequence[float],
                      length_mm: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Voxel indices [..., 3] of a patch of ``shape`` -> (index - centre) * spacing / length, isotropic."""
    centre = (torch.tensor(shape, dtype=dtype, device=index.device) - 1) / 2
    spacing = torch.tensor(spacing_mm, dtype=dtype, device=index.device)
    return (index.to(dtype) - centre) * spacing / length_mm


class R3Population:
    """A persistent population of ``n_points`` interior points per case (retain above the mean, resample the rest)."""

    def __init__(self, n_points: int):
        self.n_points = n_points
        self.retained: dict[str, torch.Tensor] = {}  # case -> [k, 3] voxel indices, k < n_points

    def points(self, case: str, interior: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n_points, 3] for one case: its retained points still inside ``interior``, then fresh ones."""
        kept = self.retained.get(case)
        if kept is not None:
            kept = kept.to(interior.device)
            kept = kept[interior[kept[:, 0], kept[:, 1], kept[:, 2]]][: self.n_points]
        else:
            kept = torch.zeros(0, 3, dtype=torch.long, device=interior.device)
        fresh = sample_in(interior, self.n_points - len(kept), generator)
        return torch.cat([kept, fresh])

    def update(self, case: str, points: torch.Tensor, residual: torch.Tensor) -> None:
        """Retain the points whose residual norm is above this evaluation's mean."""
        self.retained[case] = points[residual > residual.mean()].detach().cpu()
