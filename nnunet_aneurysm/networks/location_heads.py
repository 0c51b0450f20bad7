"""Series-level heads that know where each location is: one logit per artery territory, one for
'Aneurysm Present' from the whole vessel region.

Stage 1 labels every vessel voxel with one of the K locations (class ids 1..K). Territory k is
that label dilated by ``margin`` voxels (a saccular aneurysm sits beside its artery, not in it).
Location k's logit comes only from features pooled (masked max and mean) over territory k, so
evidence elsewhere in the scan cannot raise it; 'Aneurysm Present' pools over the union of all
territories. All locations share one small MLP, told apart by a learnt location embedding.
The winners of RSNA 2025 pooled per-location features over vessel masks the same way.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def dilate(masks: torch.Tensor, margin: int) -> torch.Tensor:
    """Binary dilation of [B, K, D, H, W] float masks by a (2 margin + 1)^3 cube, as three 1-D max pools."""
    if margin <= 0:
        return masks
    k = 2 * margin + 1
    for kernel in ((k, 1, 1), (1, k, 1), (1, 1, k)):
        masks = F.max_pool3d(masks, kernel, stride=1, padding=tuple(s // 2 for s in kernel))
    return masks


def territories(artery_labels: torch.Tensor, num_locations: int, margin: int) -> torch.Tensor:
    """[B, D, H, W] class ids (0 = no vessel) -> [B, K, D, H, W] float territory masks, dilated by ``margin``."""
    ids = torch.arange(1, num_locations + 1, device=artery_labels.device).view(1, -1, 1, 1, 1)
    return dilate((artery_labels.round().long()[:, None] == ids).float(), margin)


def masked_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked max and mean of [B, C, *S] features over each of [B, K, *S] masks -> [B, K, 2 C].

    An empty mask pools to zeros (its location has no artery in view).
    """
    f, m = features.flatten(2), masks.flatten(2).to(features.dtype)  # [B, C, V], [B, K, V]
    count = m.sum(-1, keepdim=True)  # [B, K, 1]
    mean = torch.einsum("bcv,bkv->bkc", f, m) / count.clamp(min=1)
    low = torch.finfo(f.dtype).min
    maxima = torch.stack([f.masked_fill(m[:, k, None] == 0, low).amax(-1) for k in range(m.shape[1])], dim=1)
    maxima = torch.where(count > 0, maxima, torch.zeros_like(maxima))
    return torch.cat([maxima, mean], dim=-1)


class LocationHeads(nn.Module):
    """features [B, C, *S] + territory masks [B, K, *S] -> logits [B, K + 1] (K locations, then 'present')."""

    def __init__(self, feature_dim: int, num_locations: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.num_locations = num_locations
        self.location_in = nn.Linear(2 * feature_dim, hidden)
        self.location_embedding = nn.Parameter(torch.zeros(num_locations, hidden))
        self.location_out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.present = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        per_location = masked_pool(features, masks)  # [B, K, 2C]
        location = self.location_out(self.location_in(per_location) + self.location_embedding)[..., 0]
        union = masked_pool(features, masks.amax(dim=1, keepdim=True))[:, 0]  # [B, 2C]
        return torch.cat([location, self.present(union)], dim=1)
