"""Balancing several loss terms: uncertainty weighting (Kendall et al., CVPR 2018) and UW-SO."""

from __future__ import annotations

import torch
from torch import nn


class UncertaintyWeighting(nn.Module):
    """total = sum_i exp(-s_i) L_i + s_i with learnt log-variances s_i (optimised with the network)."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.log_vars = nn.Parameter(torch.zeros(len(names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total, weights = 0.0, {}
        for i, name in enumerate(self.names):
            precision = torch.exp(-self.log_vars[i])
            total = total + precision * losses[name] + self.log_vars[i]
            weights[name] = float(precision.detach())
        return total, weights


class SoftOptimalUncertaintyWeighting(nn.Module):
    """UW-SO: weights = n * softmax((1 / max(L_i, floor)) / T) of the *detached* losses; no parameters.

    Small losses get large weights (the analytic optimum of uncertainty weighting is 1 / L_i);
    the softmax over a temperature T keeps the weights bounded and summing to n (T = 10 keeps
    losses between 0.1 and 3 within a factor of about 3 of each other; T = 1 lets one term take all).
    The floor matters: an easy term whose loss tends to zero would otherwise take all the weight
    (seen on an H100 run: the classification loss fell to 1e-6 and the other weights to 1e-44).
    """

    def __init__(self, names: list[str], temperature: float = 10.0, floor: float = 0.05):
        super().__init__()
        self.names, self.temperature, self.floor = list(names), temperature, floor

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        values = torch.stack([losses[n].detach().float() for n in self.names])
        w = len(self.names) * torch.softmax(1.0 / (values.clamp(min=self.floor) * self.temperature), dim=0)
        total = sum(w[i] * losses[n] for i, n in enumerate(self.names))
        return total, {n: float(w[i]) for i, n in enumerate(self.names)}


BALANCERS = {"uw": UncertaintyWeighting, "uwso": SoftOptimalUncertaintyWeighting}
