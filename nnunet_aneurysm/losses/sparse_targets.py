"""Segmentation loss for a tiny target in a whole region of interest (stage 2's aneurysm spheres).

A 4 mm ball in a 72 x 72 x 96 mm ROI is 0.06 % of its voxels (0.02 % over all series, most of
which have none). Trained on whole ROIs (no foreground-centred patches to raise that share, as
nnU-Net does), plain CE is won by "background everywhere" and nnU-Net's Dice, averaged over the 13
location classes of which at most one or two are present, barely pulls. Measured on a demo's ROI
dataset (stage 2's network alone, AdamW): with CE + batch Dice the network predicted no foreground
voxel after 600 steps (map AUC 0.47); with this loss it segmented the balls by step 900 and the
held-out-fold map AUC rose to 0.72 by step 1,500.

    loss = CE(foreground classes weighted ``foreground_weight``)
           + (1 - Dice of the union foreground), per sample, over the samples that have a target
           + (1 - Dice of each location class), per sample, over the classes present in it

All terms are >= 0 (the balancers need that).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_aneurysm.losses.tversky import tversky_index


def _dice(probability: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Soft Dice per leading index of [N, V] tensors (the Tversky index with equal weights)."""
    return tversky_index(probability, truth, 0.5, 0.5, dims=1)


class SparseTargetLoss(nn.Module):
    def __init__(self, foreground_weight: float = 100.0, weight_dice: float = 1.0):
        super().__init__()
        self.foreground_weight, self.weight_dice = foreground_weight, weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` [B, K, ...] (K = background + classes), ``target`` [B, 1, ...] class ids."""
        logits, labels = logits.float(), target[:, 0].long()
        k = logits.shape[1]
        weight = torch.full((k,), self.foreground_weight, device=logits.device)
        weight[0] = 1.0
        ce = F.cross_entropy(logits, labels, weight=weight)
        probabilities = logits.softmax(1).flatten(2)  # [B, K, V]
        onehot = F.one_hot(labels.flatten(1), k).transpose(1, 2).float()  # [B, K, V]
        has_target = onehot[:, 1:].sum((1, 2)) > 0
        if not has_target.any():
            return ce
        union = _dice(1 - probabilities[has_target, 0], onehot[has_target, 1:].sum(1))
        present = onehot[:, 1:].sum(2) > 0  # [B, K-1]
        classes = _dice(probabilities[:, 1:][present], onehot[:, 1:][present])
        return ce + self.weight_dice * ((1 - union).mean() + (1 - classes).mean())
