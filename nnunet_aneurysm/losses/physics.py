"""Steady incompressible Navier-Stokes residuals for the PINN head, in non-dimensional form.

Scales. With a length scale L (we use the patch half-extent, since coordinates are normalised
to [-1, 1] over the patch), a velocity scale U (typical arterial mean speed, 0.3 m/s), blood
density rho = 1060 kg/m^3 and dynamic viscosity mu = 0.0035 Pa s, the variables

    x* = x / L,   u* = u / U,   p* = p / (rho U^2),   Re = rho U L / mu

turn rho (u.grad)u + grad p - mu lap u = 0, div u = 0 into

    (u*.grad*)u* + grad* p* - (1/Re) lap* u* = 0,   div* u* = 0,

whose terms are all O(1) (in physical units on millimetre coordinates they differ by many
orders of magnitude). A 16 mm half-patch gives Re of about 1.5e3; training starts lower.

The trivial field u = 0, p = const solves these equations exactly, so :func:`physics_loss`
adds a no-slip term on vessel-wall points and a mean-speed term on interior points.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BLOOD_DENSITY = 1060.0  # kg / m^3
BLOOD_VISCOSITY = 0.0035  # Pa s
# Training raises Re from the first to the second value (viscous flow is easier to fit first);
# the residual read out at inference is taken at the final one.
REYNOLDS_CURRICULUM = (10.0, 200.0)


def reynolds_number(velocity_m_s: float, length_mm: float, density: float = BLOOD_DENSITY,
                    viscosity: float = BLOOD_VISCOSITY) -> float:
    """Re = rho U L / mu, with L given in millimetres."""
    return density * velocity_m_s * (length_mm * 1e-3) / viscosity


def _grad(outputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """d outputs / d coords per point (each point's output depends on its own coordinates only)."""
    if not outputs.requires_grad:  # a term constant in the coordinates (e.g. a linear field's slope)
        return torch.zeros_like(coords)
    (g,) = torch.autograd.grad(outputs.sum(), coords, create_graph=True)
    return g


def navier_stokes_residual(uvwp: torch.Tensor, coords: torch.Tensor, reynolds: float) -> torch.Tensor:
    """Residuals [..., 4]: continuity, then x/y/z momentum.

    ``uvwp`` [..., 4] must have been computed from ``coords`` [..., 3] (requires grad), point by
    point; derivatives are taken by autograd, so the result is differentiable for training.
    """
    if not coords.requires_grad:
        raise ValueError("coords must require grad and uvwp must be computed from them")
    velocity, pressure = uvwp[..., :3], uvwp[..., 3]
    jacobian = [_grad(velocity[..., i], coords) for i in range(3)]  # jacobian[i][..., j] = du_i/dx_j
    grad_p = _grad(pressure, coords)
    continuity = jacobian[0][..., 0] + jacobian[1][..., 1] + jacobian[2][..., 2]
    residuals = [continuity]
    for i in range(3):
        laplacian = sum(_grad(jacobian[i][..., j], coords)[..., j] for j in range(3))
        convection = (velocity * jacobian[i]).sum(dim=-1)
        residuals.append(convection + grad_p[..., i] - laplacian / reynolds)
    return torch.stack(residuals, dim=-1)


def physics_loss(field: Callable[[torch.Tensor], torch.Tensor], interior: torch.Tensor, wall: torch.Tensor,
                 reynolds: float, momentum_weight: float = 1.0, target_speed: float = 1.0,
                 dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Physics terms for a field ``coords -> uvwp``; coordinates are cast to ``dtype`` first.

    Returns the scalar terms (continuity, momentum, no_slip, flow, total) and the per-point
    residual norm of the interior points (for residual-based resampling).
    ``momentum_weight`` = 0 gives the continuity-only start of the curriculum.
    """
    interior = interior.detach().to(dtype).requires_grad_(True)
    residual = navier_stokes_residual(field(interior), interior, reynolds)
    continuity = residual[..., 0].pow(2).mean()
    momentum = residual[..., 1:].pow(2).sum(-1).mean()
    wall_velocity = field(wall.detach().to(dtype))[..., :3]
    no_slip = wall_velocity.pow(2).sum(-1).mean()
    speed = field(interior.detach())[..., :3].norm(dim=-1).mean()
    flow = (speed - target_speed).pow(2)  # penalises the trivial zero field
    total = continuity + momentum_weight * momentum + no_slip + flow
    return {"continuity": continuity, "momentum": momentum, "no_slip": no_slip, "flow": flow,
            "total": total, "point_residual": residual.detach().norm(dim=-1)}
