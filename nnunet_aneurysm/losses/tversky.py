"""Recall-first segmentation loss: Tversky (false negatives weighted above false positives) + CE."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TverskyCELoss(nn.Module):
    """``weight_ce * CE + weight_tversky * (1 - mean foreground Tversky index)``.

    Tversky index per class: TP / (TP + alpha * FN + beta * FP), summed over the batch (batch
    Tversky, stable at batch size 2). alpha > beta favours recall: a missed vessel voxel costs
    more than a spurious one. alpha = beta = 0.5 is the Dice loss.
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, weight_ce: float = 1.0, weight_tversky: float = 1.0,
                 smooth: float = 1e-5):
        super().__init__()
        self.alpha, self.beta, self.smooth = alpha, beta, smooth
        self.weight_ce, self.weight_tversky = weight_ce, weight_tversky

    def tversky_index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-class index [K] for logits [B, K, ...] and integer labels [B, 1, ...]."""
        probs = logits.float().softmax(1)
        onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1.0)
        dims = (0,) + tuple(range(2, logits.dim()))
        tp = (probs * onehot).sum(dims)
        fn = ((1 - probs) * onehot).sum(dims)
        fp = (probs * (1 - onehot)).sum(dims)
        return (tp + self.smooth) / (tp + self.alpha * fn + self.beta * fp + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target[:, 0].long())
        tversky = 1 - self.tversky_index(logits, target)[1:].mean()
        return self.weight_ce * ce + self.weight_tversky * tversky
