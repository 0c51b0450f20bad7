"""Steady incompressible Navier-Stokes residuals for the PINN head, in non-dimensional form.

Scales. ONE length L for all three axes (``LENGTH_SCALE_MM``, about an artery's radius) and one
velocity U (typical arterial mean speed, 0.3 m/s), blood density rho = 1060 kg/m^3 and dynamic
viscosity mu = 0.0035 Pa s:

    x* = x / L,   u* = u / U,   p* = p / (rho U^2),   Re = rho U L / mu

turn rho (u.grad)u + grad p - mu lap u = 0, div u = 0 into

    (u*.grad*)u* + grad* p* - (1/Re) lap* u* = 0,   div* u* = 0,

whose terms are all O(1). Because L is isotropic, div* u* = (L / U) div u exactly, on any voxel
spacing and patch shape (per-axis scaling to [-1, 1] would not be a divergence at all). With
L = 2 mm, Re = 182; training raises Re from 10 (viscous flow is easier to fit) to 200.

The trivial field u = 0, p = const solves these equations, so :func:`physics_loss` adds a no-slip
term on vessel-wall points and a flow condition (mean interior speed = 1, i.e. U) that rejects it;
a constant field, and any field that ignores position, fail the no-slip term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BLOOD_DENSITY = 1060.0  # kg / m^3
BLOOD_VISCOSITY = 0.0035  # Pa s
LENGTH_SCALE_MM = 2.0  # L: non-dimensional coordinates are millimetres / L on every axis
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
    (g,) = torch.autograd.grad(outputs.sum(), coords, create_graph=True, allow_unused=True)
    return torch.zeros_like(coords) if g is None else g  # None: the field does not depend on position


def derivatives_by_autograd(uvwp: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobian [..., 4, 3] and Laplacian [..., 4] of a field computed point by point from ``coords``."""
    if not coords.requires_grad:
        raise ValueError("coords must require grad and uvwp must be computed from them")
    jacobian = torch.stack([_grad(uvwp[..., i], coords) for i in range(4)], dim=-2)
    laplacian = torch.stack([sum(_grad(jacobian[..., i, j], coords)[..., j] for j in range(3)) for i in range(3)]
                            + [torch.zeros_like(uvwp[..., 3])], dim=-1)  # the pressure's is never used
    return jacobian, laplacian


def residual_from_derivatives(uvwp: torch.Tensor, jacobian: torch.Tensor, laplacian: torch.Tensor,
                              reynolds: float) -> torch.Tensor:
    """Residuals [..., 4]: continuity, then x/y/z momentum; ``jacobian[..., i, j]`` = d uvwp_i / dx_j."""
    velocity = uvwp[..., :3]
    continuity = jacobian[..., 0, 0] + jacobian[..., 1, 1] + jacobian[..., 2, 2]
    convection = (velocity[..., None, :] * jacobian[..., :3, :]).sum(-1)  # (u . grad) u_i
    momentum = convection + jacobian[..., 3, :] - laplacian[..., :3] / reynolds
    return torch.cat([continuity[..., None], momentum], dim=-1)


def navier_stokes_residual(uvwp: torch.Tensor, coords: torch.Tensor, reynolds: float) -> torch.Tensor:
    """Residuals [..., 4] by autograd: ``uvwp`` [..., 4] must have been computed from ``coords`` [..., 3]
    (requires grad), point by point; the result is differentiable for training."""
    return residual_from_derivatives(uvwp, *derivatives_by_autograd(uvwp, coords), reynolds)


FieldDerivatives = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def physics_loss(field: Callable[[torch.Tensor], torch.Tensor], interior: torch.Tensor, wall: torch.Tensor,
                 reynolds: float, momentum_weight: float = 1.0, target_speed: float = 1.0,
                 dtype: torch.dtype = torch.float64,
                 field_with_derivatives: FieldDerivatives | None = None) -> dict[str, torch.Tensor]:
    """Physics terms for a field ``coords -> uvwp`` at non-dimensional points; coordinates are cast to ``dtype``.

    ``interior`` [B, N, 3] are lumen points (residual and flow condition), ``wall`` [B, M, 3] wall
    points (no slip) of the same field. ``field_with_derivatives`` (``coords -> (uvwp, jacobian,
    laplacian)``) replaces autograd's nested derivatives when the field can give its own.
    Returns the scalar terms (continuity, momentum, no_slip, flow, total) and the per-point
    residual norm of the interior points (for R3 resampling). ``momentum_weight`` = 0 gives the
    continuity-only start of the curriculum.
    """
    interior = interior.detach().to(dtype)
    if field_with_derivatives is not None:
        uvwp, jacobian, laplacian = field_with_derivatives(interior)
    else:
        interior = interior.requires_grad_(True)
        uvwp = field(interior)
        jacobian, laplacian = derivatives_by_autograd(uvwp, interior)
    residual = residual_from_derivatives(uvwp, jacobian, laplacian, reynolds)
    continuity = residual[..., 0].pow(2).mean()
    momentum = residual[..., 1:].pow(2).sum(-1).mean()
    no_slip = field(wall.detach().to(dtype))[..., :3].pow(2).sum(-1).mean()
    speed = uvwp[..., :3].norm(dim=-1).mean(dim=-1)  # mean interior speed per patch
    flow = (speed - target_speed).pow(2).mean()  # rejects the trivial zero field
    total = continuity + momentum_weight * momentum + no_slip + flow
    return {"continuity": continuity, "momentum": momentum, "no_slip": no_slip, "flow": flow,
            "total": total, "point_residual": residual.detach().norm(dim=-1)}
