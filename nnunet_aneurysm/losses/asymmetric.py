"""Asymmetric loss (Ridnik et al., ICCV 2021) for the 14 multi-label series outputs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AsymmetricLoss(nn.Module):
    """Focusing gamma_neg on negatives (most labels are 0), gamma_pos on positives, and a
    probability margin ``clip`` that discards easy negatives.

    Logarithms come from ``logsigmoid`` (never ``log(p.clamp(eps))``, whose gradient is zero for a
    confidently wrong positive: at logit -20 it would stop learning exactly where it is most wrong).
    The value is summed over labels and averaged over the batch: the reference sums over both, so
    its scale grows with the batch; a mean over 14 mostly easy labels would sit two orders of
    magnitude below the segmentation loss it is balanced with.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        p = torch.sigmoid(logits)
        loss_pos = targets * F.logsigmoid(logits) * (1 - p) ** self.gamma_pos
        if self.clip > 0:  # shifted probability of negatives; 1 - p_m >= clip keeps log1p finite
            p_neg = (p - self.clip).clamp(min=0)
            log_not_neg = torch.log1p(-p_neg)
        else:
            p_neg, log_not_neg = p, F.logsigmoid(-logits)
        loss_neg = (1 - targets) * log_not_neg * p_neg**self.gamma_neg
        return -(loss_pos + loss_neg).sum(dim=1).mean()
