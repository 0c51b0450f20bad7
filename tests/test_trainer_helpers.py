"""The stage-2 trainer's small pure pieces: patch targets, the physics NaN guard, loss choice rules."""

import torch

from nnunet_aneurysm.trainers.waveformer import finite_or_none, patch_targets


def test_patch_targets():
    label = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    label[0, 0, 0, 0, 0] = 7
    label[0, 0, 1, 1, 1] = 12
    t = patch_targets(label)
    assert t.shape == (2, 14)
    assert t[0].nonzero().flatten().tolist() == [6, 11, 13] and t[1].sum() == 0




def test_physics_guard_keeps_nan_from_the_optimiser():
    weight = torch.nn.Parameter(torch.ones(3))
    bad = (weight * torch.tensor([1.0, float("nan"), 2.0])).sum()
    assert finite_or_none(bad) is None
    fine = weight.sum()
    assert finite_or_none(fine) is fine


def _step_owner(scaler):
    """What backward_and_step reads from a trainer: its network, optimiser, scaler and gradient hook."""
    from types import SimpleNamespace

    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    return SimpleNamespace(network=network, optimizer=optimizer, grad_scaler=scaler, adjust_gradients=lambda: None)


def test_a_step_the_grad_scaler_skips_is_reported_so_dual_variables_skip_it_too():
    """PESG's alpha ascends only after a primal step that was taken; an overflow skips both."""
    from nnunet_aneurysm.trainers.base import AneurysmTrainerBase

    owner = _step_owner(torch.amp.GradScaler("cpu", init_scale=2.0**8))
    before = owner.network.weight.detach().clone()
    overflow = owner.network(torch.tensor([[float("inf"), 1.0]])).sum()
    assert AneurysmTrainerBase.backward_and_step(owner, overflow) is False
    torch.testing.assert_close(owner.network.weight, before)  # the optimiser did not step either
    owner.optimizer.zero_grad()
    fine = owner.network(torch.tensor([[1.0, 1.0]])).sum()
    assert AneurysmTrainerBase.backward_and_step(owner, fine) is True
    assert not torch.equal(owner.network.weight, before)
    plain = _step_owner(None)  # CPU training: no scaler, every step is taken
    assert AneurysmTrainerBase.backward_and_step(plain, plain.network(torch.ones(1, 2)).sum()) is True
