"""PINN head: one velocity/pressure field per patch, a smooth function of position conditioned on
a patch code from the backbone.

    (u, v, w, p)(x*) = MLP([x*, sin(2 pi B x*), cos(2 pi B x*), z]),    z = tanh(A mean(bottleneck))

x* are non-dimensional coordinates (millimetres over one isotropic length, see
``losses/collocation.py``), z the patch code. The Navier-Stokes residual differentiates the
field through x* only, and because z is the same at every point of a patch the field is a true
function of position: a field that ignores position is a constant, which the no-slip and flow
conditions of the physics loss reject. The physics gradient reaches the backbone through z.
(An earlier design sampled backbone features per collocation point at detached coordinates; its
fields were free per point, so any position-independent field had zero residual.)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PINNHead(nn.Module):
    def __init__(self, feature_dim: int, code_dim: int = 32, hidden: int = 64, depth: int = 3,
                 fourier_features: int = 16, fourier_scale: float = 1.0):
        super().__init__()
        self.encode = nn.Linear(feature_dim, code_dim)
        self.register_buffer("fourier_basis", torch.randn(3, fourier_features) * fourier_scale)
        widths = [3 + 2 * fourier_features + code_dim] + [hidden] * depth + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def patch_code(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, *spatial] backbone features -> [B, code_dim] code, one per patch."""
        return torch.tanh(self.encode(features.float().flatten(2).mean(dim=2)))

    def field(self, coords: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """(u, v, w, p) [B, N, 4] at non-dimensional ``coords`` [B, N, 3] of the patch with ``code`` [B, code_dim].

        Runs in the dtype of ``coords`` (weights are cast, gradients flow back to them), which
        is how the physics path gets float64 without a second copy of the head.
        """
        dtype = coords.dtype
        inputs = [coords]
        if self.fourier_basis.shape[1]:
            proj = 2 * math.pi * coords @ self.fourier_basis.to(dtype)
            inputs += [torch.sin(proj), torch.cos(proj)]
        inputs.append(code.to(dtype)[:, None, :].expand(-1, coords.shape[1], -1))
        h = torch.cat(inputs, dim=-1)
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight.to(dtype), layer.bias.to(dtype))
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h

    def field_with_derivatives(self, coords: torch.Tensor, code: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The field [B, N, 4], its Jacobian d(u, v, w, p)/dx* [B, N, 4, 3] and Laplacian [B, N, 4], in one pass.

        Value, gradient and Laplacian are carried forward through the layers together (the
        "forward Laplacian": for a = tanh(z), grad a = (1 - a^2) grad z and
        lap a = (1 - a^2) lap z - 2 a (1 - a^2) |grad z|^2), so the physics loss needs no second
        autograd pass; about 4x faster than 13 nested ``autograd.grad`` calls, and the same numbers
        (a test compares them).
        """
        dtype, (b, n, _) = coords.dtype, coords.shape
        # value [B, N, W], gradient [B, N, 3, W] (d/dx_k of every unit), Laplacian [B, N, W]
        eye = torch.eye(3, dtype=dtype, device=coords.device).expand(b, n, 3, 3)
        values, grads, laps = [coords], [eye], [torch.zeros_like(coords)]
        if self.fourier_basis.shape[1]:
            basis = 2 * math.pi * self.fourier_basis.to(dtype)  # [3, F]
            proj = coords @ basis
            sin, cos = torch.sin(proj), torch.cos(proj)
            values += [sin, cos]
            grads += [cos[..., None, :] * basis, -sin[..., None, :] * basis]  # [B, N, 3, F]
            square = basis.pow(2).sum(0)  # |2 pi b_f|^2
            laps += [-sin * square, -cos * square]
        code = code.to(dtype)[:, None, :].expand(-1, n, -1)
        values.append(code)
        grads.append(torch.zeros(b, n, 3, code.shape[-1], dtype=dtype, device=coords.device))
        laps.append(torch.zeros_like(code))
        h, dh, lap = torch.cat(values, -1), torch.cat(grads, -1), torch.cat(laps, -1)
        for i, layer in enumerate(self.layers):
            weight, bias = layer.weight.to(dtype), layer.bias.to(dtype)
            z, dz, lap_z = F.linear(h, weight, bias), F.linear(dh, weight), F.linear(lap, weight)
            if i == len(self.layers) - 1:
                return z, dz.transpose(-1, -2), lap_z
            h = torch.tanh(z)
            slope = 1 - h.pow(2)
            dh, lap = slope[..., None, :] * dz, slope * lap_z - 2 * h * slope * dz.pow(2).sum(-2)
        raise AssertionError("unreachable: the head has at least one layer")

    def forward(self, coords: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.field(coords, self.patch_code(features))
