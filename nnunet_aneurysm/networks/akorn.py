"""AKOrN: artificial Kuramoto oscillatory neurons (Miyato et al., ICLR 2025), 3-D port.

Channels are grouped into oscillators of ``n`` dimensions (unit vectors). On a coarse grid of
regional oscillators (adaptive average pool of the features, default 4^3) we run ``steps``
Euler steps of

    dx/dt = Omega x + Proj_x(c + J x),     Proj_x(y) = y - <y, x> x,

renormalising x after each step: c is the group-normed stimulus (the pooled features), J a
3-D convolution coupling neighbouring oscillators, Omega a 2x2 rotation (natural frequency)
per channel pair. The final oscillators are read out by a 1x1 conv, upsampled and returned,
to be added to the block's features ("sequential augmentation").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def group_normalise(x: torch.Tensor, n: int, eps: float = 1e-6) -> torch.Tensor:
    """Scale each group of ``n`` channels of [B, C, ...] to unit length."""
    g = x.unflatten(1, (-1, n))
    return (g / g.norm(dim=2, keepdim=True).clamp_min(eps)).flatten(1, 2)


def order_parameter(oscillators: torch.Tensor, n: int) -> torch.Tensor:
    """Kuramoto order parameter per sample: |mean of the unit oscillator vectors|, in [0, 1].

    ``oscillators`` is [B, C, ...] with C a multiple of ``n``; each group is one oscillator.
    """
    g = group_normalise(oscillators, n).unflatten(1, (-1, n))  # [B, C/n, n, ...]
    vectors = g.movedim(2, -1).reshape(g.shape[0], -1, n)  # [B, oscillators, n]
    return vectors.mean(dim=1).norm(dim=-1)


class AKOrNLayer(nn.Module):
    def __init__(self, dim: int, n: int = 4, steps: int = 8, grid: int = 4, step_size: float = 0.5,
                 coupling_kernel: int = 3):
        super().__init__()
        if n % 2 or dim % n:
            raise ValueError(f"oscillator size n={n} must be even and divide the channels ({dim})")
        self.n, self.steps, self.grid, self.step_size = n, steps, grid, step_size
        self.stimulus_norm = nn.GroupNorm(dim // n, dim)
        self.coupling = nn.Conv3d(dim, dim, coupling_kernel, padding=coupling_kernel // 2)  # J
        self.omega = nn.Parameter(torch.zeros(dim // 2))  # natural frequency per channel pair
        self.initial = nn.Parameter(torch.randn(dim) * 0.1)  # deterministic start, broken symmetry
        self.readout = nn.Conv3d(dim, dim, 1)
        self.last_order_parameter: torch.Tensor | None = None

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Omega x: rotate every channel pair (x1, x2) -> omega * (-x2, x1)."""
        pairs = x.unflatten(1, (-1, 2))  # [B, C/2, 2, ...]
        w = self.omega.view(1, -1, *([1] * (x.dim() - 2)))
        return torch.stack((-w * pairs[:, :, 1], w * pairs[:, :, 0]), dim=2).flatten(1, 2)

    def _project(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Remove from y its component along x, per oscillator (the tangent-space projection)."""
        yg, xg = y.unflatten(1, (-1, self.n)), x.unflatten(1, (-1, self.n))
        return (yg - (yg * xg).sum(dim=2, keepdim=True) * xg).flatten(1, 2)

    def oscillate(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features -> final unit oscillators [B, C, g, g, g]."""
        stimulus = self.stimulus_norm(F.adaptive_avg_pool3d(features, self.grid))
        x = group_normalise(stimulus + self.initial.view(1, -1, 1, 1, 1), self.n)
        for _ in range(self.steps):
            drive = self._rotate(x) + self._project(stimulus + self.coupling(x), x)
            x = group_normalise(x + self.step_size * drive, self.n)
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.oscillate(features)
        self.last_order_parameter = order_parameter(x, self.n)
        return F.interpolate(self.readout(x), size=features.shape[2:], mode="trilinear", align_corners=False)
