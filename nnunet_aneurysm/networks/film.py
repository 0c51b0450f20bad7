"""Series metadata (age, sex, modality) as a vector, and FiLM gating of features by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from nnunet_aneurysm.labels import MODALITIES

METADATA_DIM = 3 + len(MODALITIES)  # age / 100, female, male, modality one-hot


def encode_metadata(age: float | None, sex: str | None, modality: str | None) -> np.ndarray:
    """Unknown values encode as zeros (so a missing field adds nothing through FiLM)."""
    vec = np.zeros(METADATA_DIM, np.float32)
    if age is not None and np.isfinite(age):
        vec[0] = float(age) / 100.0
    vec[1], vec[2] = float(sex == "Female"), float(sex == "Male")
    if modality in MODALITIES:
        vec[3 + MODALITIES.index(modality)] = 1.0
    return vec


def read_metadata_table(path: Path) -> dict[str, np.ndarray]:
    """case_id -> metadata vector, from the converter's ``metadata.csv`` (or a table like it)."""
    table = pd.read_csv(path, dtype={"case_id": str})
    missing = {"case_id", "PatientAge", "PatientSex", "Modality"} - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    return {row.case_id: encode_metadata(row.PatientAge, row.PatientSex, row.Modality)
            for row in table.itertuples()}


class FiLM(nn.Module):
    """features * (1 + gamma) + beta, with (gamma, beta) from a small MLP of the metadata.

    The last layer starts tiny (not zero, which would block the first layer's gradient), so an
    untrained FiLM is nearly the identity.
    """

    def __init__(self, feature_dim: int, metadata_dim: int = METADATA_DIM, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(metadata_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * feature_dim))
        nn.init.normal_(self.mlp[-1].weight, std=1e-4)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(metadata).chunk(2, dim=-1)  # [B, C] each
        shape = (features.shape[0], features.shape[1]) + (1,) * (features.dim() - 2)
        return features * (1 + gamma.view(shape)) + beta.view(shape)
