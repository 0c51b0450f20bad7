"""FiLM (Perez et al., AAAI 2018): features gated channel-wise by a conditioning vector."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """features * (1 + gamma) + beta, with (gamma, beta) from a small MLP of the metadata.

    The last layer starts small (std 0.02, zero bias): an untrained FiLM changes features by a few
    per cent, enough that different metadata give different outputs from the first step (a
    zero start would block the first layer's gradient; 1e-4 left the outputs equal to 1e-6).
    Applied where no normalisation follows that would remove a channel-wise gain and offset.
    """

    def __init__(self, feature_dim: int, metadata_dim: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(metadata_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * feature_dim))
        nn.init.normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(metadata).chunk(2, dim=-1)  # [B, C] each
        shape = (features.shape[0], features.shape[1]) + (1,) * (features.dim() - 2)
        return features * (1 + gamma.view(shape)) + beta.view(shape)
