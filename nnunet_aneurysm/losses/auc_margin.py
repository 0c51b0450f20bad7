"""AUC-margin loss (Yuan et al., ICCV 2021; LibAUC's AUCMLoss, version 'v1') for the 14 outputs,
with the dual step of its PESG optimiser.

Per label, with scores h = sigmoid(logit) in [0, 1], positive share p of the batch, margin m:

    F(h, a, b, alpha) = (1-p) E[(h-a)^2 1{y=1}] + p E[(h-b)^2 1{y=0}]
                        + 2 alpha (p(1-p) m + E[p h 1{y=0} - (1-p) h 1{y=1}]) - p(1-p) alpha^2

a min over (network, a, b) and a max over alpha >= 0. At the saddle point a and b are the class
means, alpha = (m - (mean_pos - mean_neg))_+ and F = p(1-p) (Var_pos + Var_neg + alpha^2): a
squared hinge on the gap between positive and negative scores, which is what AUC ranks.

p from the batch alone (LibAUC's default) is useless at nnU-Net's batch of two patches: a label
with no positive (or no negative) in the batch has F = 0 and no gradient. We use a running
estimate of p instead (LibAUC's fixed ``imratio``, learnt): ``prior_momentum`` = None gives the
batch estimate.

The trainer's optimiser (AdamW, our stage-2 recipe; not PESG's own primal step) descends the network
and (a, b); alpha must *ascend*, which is PESG's dual step, ``ascend()``: alpha_k <- max(0, alpha_k +
``dual_step`` dF_k/dalpha_k) per label, with a step size of its own. Tied to AdamW's learning rate and
divided by the 14 labels of the mean (as before), alpha had reached 0.01 after the demo's 1,000 steps where
the saddle point is ~0.8 (alpha* = margin - the gap between positive and negative mean scores), i.e. the
loss was barely an AUC loss. The gradient is taken in closed form at each forward, so alpha is a buffer
(saved with the trainer's extra state, not by the optimiser). The caller ascends only after an optimiser
step that was taken: a step the GradScaler skipped (an overflow) must not move alpha either.

PESG's other half is its proximal ("epoch decay") term, :class:`ProximalTerm`: every primal
gradient gets ``weight * (w - w_ref)`` added, with ``w_ref`` the weights at the start of the epoch,
which keeps the non-convex min-max problem's primal steps near a reference point (Guo et al.,
ICML 2020; LibAUC's ``epoch_decay``, default 2e-3).
LibAUC itself is not a dependency: its wheel requires transformers, ogb, medmnist and opencv.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class AUCMarginLoss(nn.Module):
    def __init__(self, num_labels: int, margin: float = 1.0, prior_momentum: float | None = 0.99,
                 initial_prior: float = 0.1, dual_step: float = 0.05):
        super().__init__()
        self.margin, self.prior_momentum, self.dual_step = margin, prior_momentum, dual_step
        self.a = nn.Parameter(torch.zeros(num_labels))
        self.b = nn.Parameter(torch.zeros(num_labels))
        self.register_buffer("alpha", torch.zeros(num_labels))
        self.register_buffer("prior", torch.full((num_labels,), initial_prior))
        self.alpha_grad: torch.Tensor | None = None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of F over labels; logits and 0/1 targets [B, num_labels]."""
        h, y = torch.sigmoid(logits.float()), targets.float()
        p = y.mean(0)
        if self.prior_momentum is not None:
            if self.training:
                self.prior.mul_(self.prior_momentum).add_((1 - self.prior_momentum) * p)
            p = self.prior.clamp(1e-3, 1 - 1e-3)
        pos, neg = y, 1 - y
        alpha = self.alpha
        inner = p * (1 - p) * self.margin + (p * h * neg - (1 - p) * h * pos).mean(0)
        value = ((1 - p) * ((h - self.a) ** 2 * pos).mean(0) + p * ((h - self.b) ** 2 * neg).mean(0)
                 + 2 * alpha * inner - p * (1 - p) * alpha**2)
        self.alpha_grad = (2 * inner - 2 * p * (1 - p) * alpha).detach()
        return value.mean()

    @torch.no_grad()
    def ascend(self, step: float | None = None) -> None:
        """PESG's dual step with each label's own gradient of the last forward (``step``: default ``dual_step``)."""
        if self.alpha_grad is not None:
            self.alpha.add_((self.dual_step if step is None else step) * self.alpha_grad).clamp_(min=0)
            self.alpha_grad = None


class ProximalTerm:
    """Adds ``weight * (w - w_ref)`` to the gradients of ``parameters``; ``reset()`` sets ``w_ref = w``."""

    def __init__(self, parameters: Iterable[torch.Tensor], weight: float = 2e-3):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.weight = weight
        self.reference: list[torch.Tensor] = []
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        self.reference = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def add_to_gradients(self) -> None:
        for p, ref in zip(self.parameters, self.reference):
            if p.grad is not None:
                p.grad.add_(p - ref, alpha=self.weight)
