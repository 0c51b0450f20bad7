"""Collocation points of the physics loss: where in a patch the flow equations are enforced.

The vessel mask of a patch splits into

* the lumen (interior): vessel voxels whose 6 face neighbours are all vessel, where the Navier-Stokes
  residual and the flow condition are taken; points are drawn *continuously* inside these voxels (a
  uniform offset within the voxel), so the field must hold between voxel centres, not only at them
  (at integer centres, a fitted tube's residual was 89-294x smaller than at points inside the same voxels);
* the wall: vessel voxels with a non-vessel face neighbour, where the field must vanish (no slip) -
  except where the flow leaves. A patch cuts its vessels open at its faces, and a vessel that ends
  inside the patch (a branch the segmentation follows no further) continues in reality: both are
  outlets, not walls. With no-slip on every boundary voxel the only steady solution was zero flow,
  which the flow condition forbids, and the trained physics loss was boundary terms (no-slip 58 %,
  flow 42 %, Navier-Stokes 0.2 %). Faces of the patch count as vessel here, and wall voxels within a
  vessel's radius of one of its skeleton's end points are outlets.

They enter the field as non-dimensional coordinates: millimetres from the patch centre divided by ONE
length (:func:`to_nondimensional`), the same on every axis, so derivatives in these coordinates are the
physical ones times that length whatever the voxel spacing or patch shape.

Residual-adaptive sampling. R3 (retain-resample-release, Daw et al., ICML 2023) keeps a case's
high-residual points for its next visit; here patches are rotated, scaled and flipped on every visit
(only 22 % of retained points landed on the same anatomy again), so points kept in patch coordinates
pointed elsewhere. The retain/resample choice is made within the step instead
(:func:`residual_adaptive_points`): a pool of candidates is drawn, the half with the largest residual
under the current field is kept and the other half is drawn afresh - R3's population of one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import skeletonize
from torch.nn import functional as F


def vessel_mask(data: torch.Tensor, channel: int | None, threshold: float = 0.5) -> torch.Tensor:
    """[B, D, H, W] bool: the vessel-probability ``channel`` of the input above ``threshold``
    (all False when the input has no such channel: no vessel, no flow)."""
    if channel is None or data.shape[1] <= channel:
        return torch.zeros_like(data[:, 0], dtype=torch.bool)
    return data[:, channel] > threshold


def surface_mask(mask: torch.Tensor) -> torch.Tensor:
    """Vessel voxels with a non-vessel face neighbour inside the patch (beyond the patch counts as vessel:
    the patch's faces are open)."""
    outside = F.pad((~mask).float()[:, None], (1,) * 6, value=0.0)
    neighbours = (outside[:, :, :-2, 1:-1, 1:-1], outside[:, :, 2:, 1:-1, 1:-1], outside[:, :, 1:-1, :-2, 1:-1],
                  outside[:, :, 1:-1, 2:, 1:-1], outside[:, :, 1:-1, 1:-1, :-2], outside[:, :, 1:-1, 1:-1, 2:])
    return mask & (torch.stack(neighbours).amax(0)[:, 0] > 0)


def outlet_mask(mask: np.ndarray) -> np.ndarray:
    """Voxels within a vessel's radius (+1.5 voxels) of its end points that do not lie on the patch's faces:
    where a vessel ends inside the patch, the flow goes on. End points: the skeleton's (voxels with one
    neighbour), and for a piece that thinning erased, the extremes of its principal axis. Computed on the
    mask's bounding box with one voxel of background around it (the same distances and skeleton: 8x faster)."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    where = np.argwhere(mask)
    lo, hi = np.maximum(where.min(0) - 1, 0), np.minimum(where.max(0) + 2, mask.shape)
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    radius = ndimage.distance_transform_edt(crop)
    skeleton = skeletonize(crop).astype(bool)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant") - 1
    ends = [(e + lo, radius[tuple(e)]) for e in np.argwhere(skeleton & (neighbours <= 1))
            if _off_faces((e + lo)[None], mask.shape)]
    ends += [(e + lo, r) for e, r in _ends_of_unskeletonised(crop, skeleton, radius, lo, mask.shape)]
    for end, r in ends:
        reach = r + 1.5
        a = np.maximum(np.floor(end - reach).astype(int), 0)
        b = np.minimum(np.ceil(end + reach).astype(int) + 1, mask.shape)
        grid = np.stack(np.meshgrid(*[np.arange(x, y) for x, y in zip(a, b)], indexing="ij"), -1)
        out[tuple(slice(x, y) for x, y in zip(a, b))] |= np.sqrt(((grid - end) ** 2).sum(-1)) <= reach
    return out


def _ends_of_unskeletonised(crop: np.ndarray, skeleton: np.ndarray, radius: np.ndarray, offset: np.ndarray,
                            shape) -> list:
    """(end point in ``crop``, the piece's radius) at both extremes of the principal axis of each vessel piece
    that thinning erased entirely (scikit-image's thinning leaves nothing of a tube an even number of voxels
    across); ends on the patch's faces (``offset`` places the crop in a patch of ``shape``) are left out."""
    labels, count = ndimage.label(crop)
    kept = set(np.unique(labels[skeleton]).tolist())
    ends = []
    for piece in range(1, count + 1):
        if piece in kept:
            continue
        inside = labels == piece
        points = np.argwhere(inside)
        centred = points - points.mean(0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(points) > 1 else np.zeros(3)
        along = centred @ axis
        r = float(radius[inside].max())
        for cap in (points[along <= along.min() + 1], points[along >= along.max() - 1]):
            if _off_faces(cap + offset, shape):
                ends.append((cap.mean(0), r))
    return ends


def _off_faces(points: np.ndarray, shape) -> bool:
    """No voxel of ``points`` [N, 3] lies on the patch's faces (an end there is open already)."""
    return bool(np.all(points > 0) and np.all(points < np.array(shape) - 1))


def wall_mask(mask: torch.Tensor) -> torch.Tensor:
    """No-slip voxels: the vessel surface inside the patch, less the outlets where vessels end."""
    surface = surface_mask(mask)
    outlets = np.stack([outlet_mask(m) for m in mask.cpu().numpy()])
    return surface & ~torch.from_numpy(outlets).to(mask.device)


def interior_mask(mask: torch.Tensor) -> torch.Tensor:
    """The lumen: vessel voxels all of whose face neighbours are vessel (the patch's faces count as vessel)."""
    return mask & ~surface_mask(mask)


def sample_in(mask: torch.Tensor, n: int, generator: torch.Generator | None = None,
              continuous: bool = False) -> torch.Tensor:
    """[n, 3] points drawn uniformly (with replacement) from one sample's mask [D, H, W] (not empty): voxel
    indices, or with ``continuous`` a uniform point inside each drawn voxel (index + [-0.5, 0.5))."""
    index = torch.nonzero(mask)
    if len(index) == 0:
        raise ValueError("cannot sample collocation points from an empty mask")
    pick = index[torch.randint(len(index), (n,), device=mask.device, generator=generator)]
    if not continuous:
        return pick
    jitter = torch.rand(n, 3, generator=generator).to(mask.device) - 0.5
    return pick.to(torch.float64) + jitter.to(torch.float64)


def residual_adaptive_points(mask: torch.Tensor, n: int, residual: Callable[[torch.Tensor], torch.Tensor],
                             generator: torch.Generator | None = None, pool: int = 4) -> torch.Tensor:
    """[n, 3] continuous points in ``mask``: the n/2 of ``pool * n`` candidates with the largest ``residual``
    (a per-point norm under the current field, [M] from [M, 3] points) and n/2 fresh uniform ones."""
    keep = n // 2
    candidates = sample_in(mask, pool * n, generator, continuous=True)
    with torch.no_grad():
        worst = torch.topk(residual(candidates), keep).indices
    return torch.cat([candidates[worst], sample_in(mask, n - keep, generator, continuous=True)])


def to_nondimensional(index: torch.Tensor, shape: Sequence[int], spacing_mm: Sequence[float],
                      length_mm: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Voxel positions [..., 3] of a patch of ``shape`` -> (index - centre) * spacing / length, isotropic."""
    centre = (torch.tensor(shape, dtype=dtype, device=index.device) - 1) / 2
    spacing = torch.tensor(spacing_mm, dtype=dtype, device=index.device)
    return (index.to(dtype) - centre) * spacing / length_mm
