"""PINN head: (coordinates, backbone features sampled there) -> (u, v, w, p).

Coordinates are the patch's normalised coordinates in [-1, 1], ordered (x, y, z) = (W, H, D)
as ``grid_sample`` wants them. The sampled features act as a per-point conditioning code and
are sampled at *detached* coordinates: trilinear sampling has no second derivative, so the
derivatives of the Navier-Stokes residual are taken through the coordinate path of the MLP only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PINNHead(nn.Module):
    def __init__(self, feature_dim: int, hidden: int = 64, depth: int = 3, fourier_features: int = 16,
                 fourier_scale: float = 2.0):
        super().__init__()
        self.register_buffer("fourier_basis", torch.randn(3, fourier_features) * fourier_scale)
        widths = [3 + 2 * fourier_features + feature_dim] + [hidden] * depth + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def sample_features(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """features [B, C, D, H, W], coords [B, N, 3] -> [B, N, C] (no gradient to coords)."""
        grid = coords.detach().to(features.dtype)[:, :, None, None, :]  # [B, N, 1, 1, 3]
        sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=True)  # [B, C, N, 1, 1]
        return sampled.flatten(2).transpose(1, 2)

    def field(self, coords: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(u, v, w, p) [B, N, 4] at ``coords`` [B, N, 3] given per-point codes [B, N, C].

        Runs in the dtype of ``coords`` (weights are cast, gradients flow back to them), which
        is how the physics path gets float64 without a second copy of the head.
        """
        dtype = coords.dtype
        inputs = [coords]
        if self.fourier_basis.shape[1]:
            proj = 2 * math.pi * coords @ self.fourier_basis.to(dtype)
            inputs += [torch.sin(proj), torch.cos(proj)]
        h = torch.cat(inputs + [codes.to(dtype)], dim=-1)
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight.to(dtype), layer.bias.to(dtype))
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h

    def forward(self, coords: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.field(coords, self.sample_features(features, coords))
