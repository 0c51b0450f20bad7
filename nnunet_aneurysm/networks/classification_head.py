"""Series-level head on the deepest features: ``num_outputs`` logits (the planner asks for 14)."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_aneurysm.networks.film import FiLM


class ClassificationHead(nn.Module):
    """Global average + max pool -> FiLM(metadata) -> MLP -> logits in submission column order."""

    def __init__(self, feature_dim: int, num_outputs: int, metadata_dim: int, hidden: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        self.film = FiLM(2 * feature_dim, metadata_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(2 * feature_dim), nn.Linear(2 * feature_dim, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, num_outputs))
        self.metadata_dim = metadata_dim

    def forward(self, features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        pooled = torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)
        if metadata is None:
            metadata = pooled.new_zeros(pooled.shape[0], self.metadata_dim)
        return self.mlp(self.film(pooled, metadata))
