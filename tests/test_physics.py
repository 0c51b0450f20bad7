"""The PINN's physics against exact solutions, and the properties that make it more than a constant:
one field per patch, isotropic non-dimensional coordinates, lumen and wall kept apart."""

import math

import numpy as np
import pytest
import torch

from nnunet_aneurysm.losses.collocation import (
    interior_mask,
    outlet_mask,
    residual_adaptive_points,
    sample_in,
    surface_mask,
    to_nondimensional,
    wall_mask,
)
from nnunet_aneurysm.losses.physics import (
    LENGTH_SCALE_MM,
    derivatives_by_autograd,
    navier_stokes_residual,
    physics_loss,
    residual_from_derivatives,
    reynolds_number,
)
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


def tube(shape=(32, 24, 24), radius=2.5, bulge=None, ends_at=None) -> torch.Tensor:
    """A straight tube along axis 0 (1 mm voxels), optionally with a spherical sac of radius ``bulge`` on its side,
    optionally ending (a flat cap) at index ``ends_at`` of axis 0 inside the patch."""
    d, h, w = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    mask = (h - c[1]) ** 2 + (w - c[2]) ** 2 <= radius**2
    if ends_at is not None:
        mask &= d < ends_at
    if bulge:
        mask |= (d - c[0]) ** 2 + (h - c[1]) ** 2 + (w - c[2] - radius - 0.4 * bulge) ** 2 <= bulge**2
    return torch.from_numpy(mask)


def tube_points(mask, n=512, seed=0, spacing=(1.0, 1.0, 1.0), continuous=True, wall=None):
    g = torch.Generator().manual_seed(seed)
    nd = lambda index: to_nondimensional(index, mask.shape, spacing, LENGTH_SCALE_MM)[None]  # noqa: E731
    wall = wall_mask(mask[None])[0] if wall is None else wall
    return nd(sample_in(interior_mask(mask[None])[0], n, g, continuous)), nd(sample_in(wall, n // 2, g))


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


def test_poiseuille_in_a_voxel_tube_solves_the_equations_and_vanishes_on_the_wall():
    """Flow along the tube's axis in the tube's own non-dimensional coordinates: PDE terms at float64
    round-off, no slip exactly on the wall r = R, and small on the voxel wall (voxels straddle r = R)."""
    mask = tube()
    interior, wall = tube_points(mask)
    radius = 2.5 / LENGTH_SCALE_MM

    def field(c):  # axis 0 of the patch is the tube's axis: (d, h, w) -> flow along d
        w_, x, y = c.unbind(-1)
        speed = 1 - (x**2 + y**2) / radius**2
        return torch.stack([speed, torch.zeros_like(speed), torch.zeros_like(speed),
                            -4 * w_ / (RE * radius**2)], dim=-1)

    terms = physics_loss(field, interior, wall, RE, target_speed=float(field(interior)[..., 0].mean()))
    assert terms["continuity"] < 1e-24 and terms["momentum"] < 1e-24 and terms["flow"] < 1e-24
    angle = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)
    exact_wall = torch.stack([torch.linspace(-3, 3, 64, dtype=torch.float64), radius * torch.cos(angle),
                              radius * torch.sin(angle)], -1)[None]
    assert field(exact_wall)[..., :3].abs().max() < 1e-12
    assert terms["no_slip"] < 0.2 * physics_loss(lambda c: torch.ones_like(field(c)), interior, wall, RE)["no_slip"]


def test_a_constant_field_and_a_field_blind_to_position_fail_on_a_tube():
    """Before, each collocation point had its own field (features sampled per point): a field that ignored
    position scored 0. Now one field per patch: without position it is a constant, which no-slip rejects."""
    interior, wall = tube_points(tube())
    constant = physics_loss(lambda c: torch.tensor([0.0, 0.0, 1.0, 0.3], dtype=c.dtype).expand(*c.shape[:-1], 4),
                            interior, wall, RE)
    assert constant["continuity"] == 0 and constant["no_slip"].item() == pytest.approx(1.0)
    head = PINNHead(8)
    code = torch.randn(1, 32)
    blind = physics_loss(lambda c: head.field(torch.zeros_like(c), code), interior, wall, RE)
    zero = physics_loss(lambda c: torch.zeros(*c.shape[:-1], 4, dtype=c.dtype), interior, wall, RE)
    assert blind["total"] > 0.1 and zero["total"].item() == pytest.approx(1.0)  # zero flow fails the flow term


def test_continuity_is_the_same_in_millimetres_and_in_scaled_coordinates():
    """On a non-cubic patch with anisotropic voxels. Per-axis scaling to [-1, 1] (before) gave sum_i A_ii h_i
    / 2 with h_i the half-extent per axis: not the divergence."""
    shape, spacing = (20, 40, 12), (2.0, 0.5, 1.0)
    a = torch.tensor([[0.3, 0.1, 0.0], [0.2, -0.5, 0.4], [0.0, 0.1, 0.9]], dtype=torch.float64)  # 1/s, on mm
    velocity_scale = 7.0  # mm/s
    index = sample_in(torch.ones(shape, dtype=torch.bool), 64, torch.Generator().manual_seed(0))
    nd = to_nondimensional(index, shape, spacing, LENGTH_SCALE_MM).requires_grad_(True)
    mm = nd * LENGTH_SCALE_MM  # millimetres from the patch centre
    field_nd = torch.cat([(mm @ a.T) / velocity_scale, torch.zeros(64, 1, dtype=torch.float64)], -1)
    jacobian, _ = derivatives_by_autograd(field_nd, nd)
    continuity_nd = jacobian[:, 0, 0] + jacobian[:, 1, 1] + jacobian[:, 2, 2]
    torch.testing.assert_close(continuity_nd, torch.full((64,), float(a.trace()) * LENGTH_SCALE_MM / velocity_scale,
                                                         dtype=torch.float64))


def test_forward_laplacian_of_the_head_equals_autograd():
    torch.manual_seed(0)
    head = PINNHead(8)
    code = torch.randn(2, 32, dtype=torch.float64)
    coords = (torch.randn(2, 64, 3, dtype=torch.float64) * 3).requires_grad_(True)
    uvwp = head.field(coords, code)
    jacobian, laplacian = derivatives_by_autograd(uvwp, coords)
    uvwp2, jacobian2, laplacian2 = head.field_with_derivatives(coords.detach(), code)
    torch.testing.assert_close(uvwp2, uvwp.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(jacobian2, jacobian.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(laplacian2[..., :3], laplacian[..., :3].detach(), rtol=0, atol=1e-10)


def _fit(mask, steps=300, seed=0):
    """Fit one field (head and code) to a vessel mask with a fixed budget; its final physics loss."""
    torch.manual_seed(seed)
    head, code = PINNHead(8), torch.zeros(1, 32, requires_grad=True)
    optimiser = torch.optim.Adam([*head.parameters(), code], lr=3e-3)
    for step in range(steps):
        interior, wall = tube_points(mask, seed=seed * 1000 + step)
        terms = physics_loss(lambda c: head.field(c, code), interior, wall, RE,
                             field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
    interior, wall = tube_points(mask, n=2048, seed=99)
    return float(physics_loss(lambda c: head.field(c, code), interior, wall, RE)["total"].detach())


def test_flow_through_a_saccular_bulge_is_harder_to_fit_than_through_a_straight_tube():
    """The residual is a meta-feature because plausible flow is harder to find around a sac: same field,
    same budget, the bulged tube ends at 1.8-2.5x the straight tube's loss (measured over seeds)."""
    straight, bulged = _fit(tube((40, 32, 32), 3.0)), _fit(tube((40, 32, 32), 3.0, bulge=5.0))
    assert bulged > 1.5 * straight


def test_the_patch_faces_and_a_vessels_end_are_outlets_not_walls():
    """A tube crossing the patch has walls on its sides only; one that ends inside the patch is open at its end
    too (the branch goes on). Walls on every boundary voxel left zero flow as the only steady solution."""
    crossing = tube()
    surface = surface_mask(crossing[None])[0]
    assert surface[0].sum() == surface[-1].sum() == surface[10].sum() > 0  # a ring at the faces: no cap
    ending = tube(ends_at=20)
    wall, surface = wall_mask(ending[None])[0], surface_mask(ending[None])[0]
    assert surface[19].any() and not wall[17:20].any()  # the cap and the rim next to it: an outlet
    assert wall[8].any() and wall[0].sum() == wall[8].sum()  # its side is wall; its other end (a face) is open
    assert not outlet_mask(np.zeros((5, 5, 5), bool)).any()


def test_continuous_points_fill_their_voxels():
    mask = tube()
    points = sample_in(interior_mask(mask[None])[0], 2000, torch.Generator().manual_seed(0), continuous=True)
    centres = torch.floor(points + 0.5).long()
    assert interior_mask(mask[None])[0][centres[:, 0], centres[:, 1], centres[:, 2]].all()
    offsets = points - centres
    assert offsets.abs().max() <= 0.5 and offsets.std() > 0.25  # uniform in the voxel (std 0.29), not centres


def test_residual_adaptive_points_keep_the_worst_half_and_draw_the_rest_afresh():
    mask = torch.ones(10, 10, 10, dtype=torch.bool)
    points = residual_adaptive_points(mask, 100, lambda p: p[:, 0], torch.Generator().manual_seed(0), pool=4)
    assert points.shape == (100, 3)
    assert points[:50, 0].min() > np.quantile(points[50:, 0].numpy(), 0.5)  # the kept half: largest residual


def _fit_field(mask, steps, wall=None, continuous=True, seed=0):
    """A head and code fitted to a vessel mask (the trainer's terms); the fitted field's function."""
    torch.manual_seed(seed)
    head, code = PINNHead(8), torch.zeros(1, 32, requires_grad=True)
    optimiser = torch.optim.Adam([*head.parameters(), code], lr=3e-3)
    for step in range(steps):
        interior, walls = tube_points(mask, seed=seed * 1000 + step, continuous=continuous, wall=wall)
        terms = physics_loss(lambda c: head.field(c, code), interior, walls, RE,
                             field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
    return head, code


def _residual_at(head, code, points):
    uvwp, jacobian, laplacian = head.field_with_derivatives(points, code.detach())
    return residual_from_derivatives(uvwp, jacobian, laplacian, RE).norm(dim=-1).mean().item()


def test_a_field_fitted_at_continuous_points_holds_between_voxel_centres():
    """Fitted at voxel centres only, the residual inside the same voxels was 89-294x that at the centres."""
    mask = tube((32, 24, 24), 3.0)
    head, code = _fit_field(mask, 250, continuous=True)
    g = torch.Generator().manual_seed(7)
    centres = sample_in(interior_mask(mask[None])[0], 2048, g)
    jittered = centres.double() + torch.rand(2048, 3, generator=g, dtype=torch.float64) - 0.5
    nd = lambda index: to_nondimensional(index, mask.shape, (1.0, 1.0, 1.0), LENGTH_SCALE_MM)[None]  # noqa: E731
    assert _residual_at(head, code, nd(jittered)) < 1.5 * _residual_at(head, code, nd(centres))  # 3.3 at centres


def test_float64_path_of_the_pinn_head_backpropagates_to_float32_weights():
    head = PINNHead(feature_dim=8, hidden=16, fourier_features=4)
    code = head.patch_code(torch.randn(1, 8, 6, 6, 6))
    coords = torch.rand(1, 32, 3, dtype=torch.float64) * 2 - 1
    terms = physics_loss(lambda c: head.field(c, code), coords, coords[:, :4], reynolds=10.0,
                         field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
    assert terms["total"].dtype == torch.float64
    terms["total"].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in head.parameters())


def test_reynolds_number_of_a_typical_artery():
    # 0.3 m/s through a 4 mm vessel: Re = 1060 * 0.3 * 0.004 / 0.0035
    assert reynolds_number(0.3, 4.0) == pytest.approx(363.43, rel=1e-3)
