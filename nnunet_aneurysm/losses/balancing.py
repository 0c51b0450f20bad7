"""Balancing several loss terms: uncertainty weighting (Kendall et al., CVPR 2018) and UW-SO
(Kirchdorfer et al., 2024).

Both need every term bounded below by zero. Kendall's total exp(-s) L + s has no minimum in s
when L < 0 (the weight grows without bound: measured 276 by step 20, infinite by step 30 at
L = -0.5), and UW-SO's weights are a softmax of 1 / (T L), which means nothing for L <= 0. nnU-Net's
Dice + CE loss is CE *minus* soft Dice, so it is balanced as :class:`BoundedBelow` (loss + 1).
The balancers refuse a negative term instead of diverging on it.
"""

from __future__ import annotations

import torch
from torch import nn


class BoundedBelow(nn.Module):
    """``loss(...) - lower_bound``: a term >= 0 from a loss with a known lower bound (nnU-Net's CE - Dice: -1)."""

    def __init__(self, loss: nn.Module, lower_bound: float):
        super().__init__()
        self.loss, self.lower_bound = loss, lower_bound

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.loss(*args, **kwargs) - self.lower_bound


def _check_bounded(losses: dict[str, torch.Tensor]) -> None:
    negative = {name: float(value.detach()) for name, value in losses.items() if float(value.detach()) < -1e-6}
    if negative:
        raise ValueError(f"balanced loss terms must be >= 0; got {negative} (wrap them in BoundedBelow)")


class UncertaintyWeighting(nn.Module):
    """total = sum_i exp(-s_i) L_i + s_i with learnt log-variances s_i (optimised with the network).

    For a term L > 0 the optimum is s = log L, weight 1 / L. ``min_log_var`` keeps a term that
    reaches zero from taking an unbounded weight (exp(6) ~ 400 at most).
    """

    def __init__(self, names: list[str], min_log_var: float = -6.0):
        super().__init__()
        self.names, self.min_log_var = list(names), min_log_var
        self.log_vars = nn.Parameter(torch.zeros(len(names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted total of the terms given (a term left out, e.g. skipped this step, gets weight 0)."""
        _check_bounded(losses)
        log_vars = self.log_vars.clamp(min=self.min_log_var)
        total, weights = 0.0, {name: 0.0 for name in self.names}
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            precision = torch.exp(-log_vars[i])
            total = total + precision * losses[name] + log_vars[i]
            weights[name] = float(precision.detach())
        return total, weights


class SoftOptimalUncertaintyWeighting(nn.Module):
    """UW-SO: weights = n * softmax(1 / (T * L_i)), floored, of each term's RUNNING mean; no parameters.

    The analytic optimum of uncertainty weighting gives a term the weight 1 / L; UW-SO softens it with a
    softmax at temperature T so the weights stay bounded and sum to n. With T = 10 and terms of order 0.1-2
    (bounded Dice + CE, ASL summed over labels, the physics loss) the softmax is nearly flat: the weights
    lie within about 0.8-1.3 and a term whose loss falls gains weight mildly, not as 1 / L.

    Why running means, not the batch's losses: on a batch without an aneurysm the segmentation term is CE
    alone (0.0003-0.0014), 1 / (T L) ~ 100 and the batch softmax gave segmentation 3.0, classification 0.0,
    physics 0.0: the series heads, which carry the score, never learnt from about 40 % of the batches.
    Each term's loss is averaged over steps (exponential, ``momentum``) before the softmax, and no weight
    falls below ``floor``: w = floor + (1 - floor) n softmax(...), which still sums to n. The running means
    are buffers, saved with the trainer's checkpoint.
    """

    def __init__(self, names: list[str], temperature: float = 10.0, momentum: float = 0.98, floor: float = 0.1,
                 eps: float = 1e-4):
        super().__init__()
        self.names, self.temperature, self.momentum = list(names), temperature, momentum
        self.floor, self.eps = floor, eps
        self.register_buffer("running", torch.zeros(len(names)))
        self.register_buffer("seen", torch.zeros(len(names), dtype=torch.bool))

    @torch.no_grad()
    def _update(self, losses: dict[str, torch.Tensor]) -> None:
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            value = losses[name].detach().float().to(self.running.device)
            self.running[i] = torch.where(self.seen[i], self.momentum * self.running[i] + (1 - self.momentum) * value,
                                          value)
            self.seen[i] = True

    def weights_of(self, names: list[str]) -> torch.Tensor:
        """The weights of the terms ``names`` (in that order) from the running means."""
        index = torch.tensor([self.names.index(n) for n in names], device=self.running.device)
        values = self.running[index].clamp(min=self.eps)
        softmax = torch.softmax(1.0 / (values * self.temperature), dim=0)
        return self.floor + (1 - self.floor) * len(names) * softmax  # >= floor, sums to n

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted total of the terms given; weights sum to the number given (a term left out gets 0)."""
        _check_bounded(losses)
        if self.training:
            self._update(losses)
        names = [n for n in self.names if n in losses]
        w = self.weights_of(names)
        total = sum(w[i] * losses[n] for i, n in enumerate(names))
        weights = {n: 0.0 for n in self.names}
        weights.update({n: float(w[i]) for i, n in enumerate(names)})
        return total, weights


BALANCERS = {"uw": UncertaintyWeighting, "uwso": SoftOptimalUncertaintyWeighting}
