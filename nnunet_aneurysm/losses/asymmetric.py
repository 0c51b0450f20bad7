"""Asymmetric loss (Ridnik et al., ICCV 2021) for the 14 multi-label series outputs."""

from __future__ import annotations

import torch
from torch import nn


class AsymmetricLoss(nn.Module):
    """Focusing gamma_neg on negatives (most labels are 0), gamma_pos on positives, and a
    probability margin ``clip`` that discards easy negatives.

    The reference implementation returns the *sum* over batch and labels, so its scale grows
    with both; we return the mean, so the loss sits beside Dice/CE at a comparable scale.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p  # shifted probability for negatives
        loss_pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p) ** self.gamma_pos
        loss_neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg**self.gamma_neg
        return -(loss_pos + loss_neg).mean()
