"""AKOrN: artificial Kuramoto oscillatory neurons (Miyato et al., ICLR 2025), 3-D port.

Channels are grouped into G = dim / n oscillators of n dimensions (unit vectors). On a coarse
grid of M regions (adaptive mean and max pools of the features, default 4^3 = 64) every region
holds one oscillator of each group, and ``steps`` Euler steps of

    dx/dt = Omega_g x + Proj_x(c + J x),     Proj_x(y) = y - <y, x> x,

move them, renormalising after each step (the paper's update). The design:

* x starts from the series' own features (the seed's ``proj_x``: a learnt 1x1 projection of the
  pooled features, normalised), not from the stimulus: started at the stimulus, a fixed point of its
  own drive, the oscillators barely moved (cos(x_0, x_T) = 0.96 at initialisation); started from one
  fixed random draw for every series (the paper's code), every series ended in the same state after
  training (cosine 0.975-1.000 between series, order parameter varying by 4e-5 between series);
* c, the stimulus, is a learnt 1x1 projection (no bias) of each region's mean AND maximum features (a
  2-3 mm aneurysm is a local maximum that a region's mean all but erases), normalised per channel over
  the regions WITHOUT a learnt scale and shift: c is how this region differs from the rest of this
  series. Group-normed with a learnt shift, the trained stimulus was a constant (norm ~2) plus a series
  part of 0.01-0.11 of it, every series drove the oscillators alike and they synchronised fully (order
  parameter 0.99 for every series); in a short training (600 steps, 40 generated ROIs, seed 0) the
  order parameter's spread between series fell from 0.014 to 3e-6 that way, and stays at 3e-3 (mean
  0.47) this way, with final states whose cosine between series is 0.53 instead of 0.89;
* Omega_g is a learnt anti-symmetric n x n matrix per oscillator group (its natural frequency);
* J couples each oscillator with the same group's oscillators in the 3x3x3 neighbourhood
  (a grouped conv, n x n per offset) plus a pointwise dense mix across groups at the same
  region: dim*n*27 + dim^2 weights instead of a dense 3x3x3 conv's dim^2*27 (at dim 256, n 4:
  93 k instead of 1.77 M). Spatial binding is within a feature group, where the paper's
  synchrony lives; cross-feature binding needs no neighbourhood;
* the readout is phase-invariant: ||W x||, the norm over each of ``dim`` output groups of a
  linear map, plus a bias (the paper's ReadOutConv), so rotating all oscillators together
  changes nothing downstream.

The order parameter is the synchrony the seed describes, per oscillator group over space:
r_g = |mean over regions of x_g|, 1 for identical oscillators and about 1/sqrt(M) for
independent random ones; the layer reports the mean over groups, per sample.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_aneurysm.networks.fast_conv import PointwiseConv3d


def group_normalise(x: torch.Tensor, n: int, eps: float = 1e-6) -> torch.Tensor:
    """Scale each group of ``n`` channels of [B, C, ...] to unit length.

    Written as x * rsqrt(sum of squares): ``norm`` over the strided group axis took 7x longer on the
    CPU (1.08 vs 0.15 ms forward + backward at 256 channels on 4^3), and it runs at every Euler step."""
    g = x.unflatten(1, (-1, n))
    return (g * (g * g).sum(dim=2, keepdim=True).clamp_min(eps * eps).rsqrt()).flatten(1, 2)


def _linear_weights(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_out, n_in]: 1-D linear interpolation as ``F.interpolate(align_corners=False)`` does it."""
    eye = torch.eye(n_in, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T


def upsample_trilinear(x: torch.Tensor, size) -> torch.Tensor:
    """``F.interpolate(x, size, mode="trilinear", align_corners=False)`` of [B, C, d, h, w], as three
    matrix products (trilinear interpolation is separable). Same values to round-off; on the CPU its
    forward + backward from 4^3 to 32^3 at 32 channels took 1.4 ms instead of 9.3 ms."""
    batch, channels, d = x.shape[:3]
    depth, height, width = (_linear_weights(i, o, x) for i, o in zip(x.shape[2:], size))
    y = height @ (x @ width.T)  # [B, C, d, H, W]
    return (depth @ y.reshape(batch, channels, d, -1)).reshape(batch, channels, *size)


def order_parameter(oscillators: torch.Tensor, n: int) -> torch.Tensor:
    """Kuramoto order parameter per sample and oscillator group, in [0, 1]: [B, C / n].

    ``oscillators`` is [B, C, *regions]; group g (channels g*n..g*n+n-1) has one oscillator per
    region, and r_g is the length of their mean unit vector.
    """
    g = group_normalise(oscillators, n).unflatten(1, (-1, n)).flatten(3)  # [B, G, n, M]
    return g.mean(dim=3).norm(dim=2)


class AKOrNLayer(nn.Module):
    def __init__(self, dim: int, n: int = 4, steps: int = 8, grid: int = 4, step_size: float = 1.0,
                 coupling_kernel: int = 3):
        super().__init__()
        if n % 2 or dim % n:
            raise ValueError(f"oscillator size n={n} must be even and divide the channels ({dim})")
        self.n, self.steps, self.grid, self.step_size = n, steps, grid, step_size
        groups = dim // n
        self.stimulus = nn.Sequential(PointwiseConv3d(2 * dim, dim, bias=False), nn.InstanceNorm3d(dim))  # c
        self.start = PointwiseConv3d(2 * dim, dim)  # x_0, normalised per oscillator
        self.coupling_space = nn.Conv3d(dim, dim, coupling_kernel, padding=coupling_kernel // 2, groups=groups,
                                        bias=False)  # J within a group, across neighbouring regions
        self.coupling_mix = PointwiseConv3d(dim, dim, bias=False)  # J across groups, same region (its weight)
        self.omega = nn.Parameter(torch.randn(groups, n, n) * 0.1)  # Omega_g = W - W^T
        self.readout = PointwiseConv3d(dim, dim * n)  # |W x| over each of dim groups of n
        self.readout_bias = nn.Parameter(torch.zeros(dim))
        self.last_order_parameter: torch.Tensor | None = None
        self.last_trajectory: tuple[torch.Tensor, torch.Tensor] | None = None  # (x_0, x_T), for diagnostics

    def rotation_matrix(self) -> torch.Tensor:
        """[C, C] block-diagonal: Omega_g = W_g - W_g^T (anti-symmetric, a pure rotation rate) per group."""
        omega = self.omega - self.omega.transpose(1, 2)  # [G, n, n]
        groups = omega.shape[0]
        eye = torch.eye(groups, dtype=omega.dtype, device=omega.device)
        return (eye[:, None, :, None] * omega[:, :, None, :]).reshape(groups * self.n, groups * self.n)

    def oscillate(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features -> final unit oscillators [B, C, g, g, g].

        One Euler step is x <- normalise(x + h (Omega x + Proj_x(c + J x))), written in few kernels
        (on a GPU this small-tensor loop costs launches, not FLOPs):
        * Omega x + J_mix (J_space x) is one batched product of [Omega | W_mix] with [x; J_space x],
          with c added by the same call;
        * Proj_x(Omega x) = Omega x, as <Omega x, x> = 0 for an anti-symmetric Omega, so the whole
          drive is Proj_x(y) with y = Omega x + c + J x;
        * x + h Proj_x(y) = h (y + (1/h - <y, x>) x): one fused multiply-add, and the factor h goes
          with the renormalisation.
        """
        pooled = torch.cat([F.adaptive_avg_pool3d(features, self.grid), F.adaptive_max_pool3d(features, self.grid)], 1)
        c = self.stimulus(pooled)
        batch, dim, *regions = c.shape
        x = group_normalise(self.start(pooled), self.n)
        start = x
        weights = torch.cat([self.rotation_matrix(), self.coupling_mix.weight.flatten(1)], dim=1)  # [C, 2C]
        weights, stimulus = weights.to(c.dtype).expand(batch, -1, -1), c.flatten(2)
        for _ in range(self.steps):
            y = torch.baddbmm(stimulus, weights, torch.cat([x, self.coupling_space(x)], dim=1).flatten(2))
            yg, xg = y.unflatten(1, (-1, self.n)), x.flatten(2).unflatten(1, (-1, self.n))  # [B, G, n, M]
            z = torch.addcmul(yg, (1.0 / self.step_size) - (yg * xg).sum(dim=2, keepdim=True), xg)
            x = group_normalise(z.reshape(batch, dim, *regions), self.n)
        self.last_trajectory = (start.detach(), x.detach())
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.oscillate(features)
        self.last_order_parameter = order_parameter(x, self.n).mean(dim=1)
        out = self.readout(x).unflatten(1, (-1, self.n)).norm(dim=2) + self.readout_bias.view(1, -1, 1, 1, 1)
        return upsample_trilinear(out, features.shape[2:])
