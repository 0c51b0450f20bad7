"""FiLM (Perez et al., AAAI 2018): features gated channel-wise by a conditioning vector."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """features * (1 + gamma) + beta, with (gamma, beta) from a small MLP of the metadata.

    The last layer starts tiny (not zero, which would block the first layer's gradient), so an
    untrained FiLM is nearly the identity.
    """

    def __init__(self, feature_dim: int, metadata_dim: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(metadata_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * feature_dim))
        nn.init.normal_(self.mlp[-1].weight, std=1e-4)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(metadata).chunk(2, dim=-1)  # [B, C] each
        shape = (features.shape[0], features.shape[1]) + (1,) * (features.dim() - 2)
        return features * (1 + gamma.view(shape)) + beta.view(shape)
