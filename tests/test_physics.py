"""Navier-Stokes residual against an exact solution, and the physics loss's guards."""

import math

import pytest
import torch

from nnunet_aneurysm.losses.physics import navier_stokes_residual, physics_loss, reynolds_number
from nnunet_aneurysm.networks.pinn_head import PINNHead

RE = 50.0


def poiseuille(coords, reynolds=RE, radius=1.0, perturb=0.0):
    """Steady pipe flow along z: u_z = 1 - r^2/R^2, p = -4 z / (Re R^2) (non-dimensional)."""
    x, y, z = coords.unbind(-1)
    w = 1 - (x**2 + y**2) / radius**2 + perturb * torch.sin(3 * x) * torch.cos(2 * z)
    zero = torch.zeros_like(w)
    p = -4 * z / (reynolds * radius**2)
    return torch.stack([zero + perturb * y * z, zero, w, p], dim=-1)


def random_points(n=256, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 3, generator=g, dtype=dtype) * 1.6 - 0.8).requires_grad_(True)


def test_poiseuille_is_an_exact_solution():
    coords = random_points()
    residual = navier_stokes_residual(poiseuille(coords), coords, RE)
    assert residual.shape == (256, 4)
    assert residual.abs().max().item() < 1e-12


def test_perturbed_field_has_large_residual():
    coords = random_points()
    residual = navier_stokes_residual(poiseuille(coords, perturb=0.3), coords, RE)
    assert residual.abs().max().item() > 0.1


def test_wrong_pressure_gradient_shows_in_z_momentum_only():
    coords = random_points()
    field = poiseuille(coords)
    field = torch.cat([field[:, :3], field[:, 3:] * 2], dim=1)
    residual = navier_stokes_residual(field, coords, RE)
    assert residual[:, :3].abs().max() < 1e-12
    torch.testing.assert_close(residual[:, 3], torch.full_like(residual[:, 3], -4 / RE), rtol=0, atol=1e-12)


def test_zero_field_is_penalised_and_poiseuille_is_not():
    interior = random_points()
    angle = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)
    wall = torch.stack([torch.cos(angle), torch.sin(angle), torch.linspace(-1, 1, 64, dtype=torch.float64)], -1)
    zero = physics_loss(lambda c: 0 * c.sum(-1, keepdim=True).expand(*c.shape[:-1], 4),
                        interior, wall, RE)
    assert zero["continuity"] == 0 and zero["momentum"] == 0 and zero["no_slip"] == 0
    assert zero["flow"].item() == pytest.approx(1.0)
    good = physics_loss(lambda c: poiseuille(c), interior, wall, RE,
                        target_speed=poiseuille(interior)[:, 2].abs().mean().item())
    assert good["total"].item() < 1e-12


def test_float64_path_of_the_pinn_head_backpropagates_to_float32_weights():
    head = PINNHead(feature_dim=8, hidden=16, fourier_features=4)
    features = torch.randn(1, 8, 6, 6, 6)
    coords = torch.rand(1, 32, 3) * 2 - 1
    terms = physics_loss(lambda c: head(c, features), coords, coords[:, :4], reynolds=10.0)
    assert terms["total"].dtype == torch.float64
    terms["total"].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in head.parameters())


def test_reynolds_number_of_a_typical_artery():
    # 0.3 m/s through a 4 mm vessel: Re = 1060 * 0.3 * 0.004 / 0.0035
    assert reynolds_number(0.3, 4.0) == pytest.approx(363.43, rel=1e-3)
