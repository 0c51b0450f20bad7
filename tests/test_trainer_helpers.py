"""The trainers' small pure pieces: patch targets, the physics NaN guard, loss choice rules, modality-balanced
sampling, per-case metadata in stage 1's validation."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from nnunet_aneurysm.metadata import MetadataTable, encode_metadata, modality_balanced_probabilities
from nnunet_aneurysm.trainers.base import AneurysmTrainerBase
from nnunet_aneurysm.trainers.segformer3d import conditioning_dataset
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


def test_modality_balanced_probabilities_give_every_modality_the_same_share():
    modalities = ["CTA"] * 6 + ["MRI T2"] * 2 + [None] + ["MRA"]
    p = modality_balanced_probabilities(modalities)
    assert p.shape == (10,) and np.isclose(p.sum(), 1.0)
    shares = pd.Series(p).groupby([m or "unknown" for m in modalities]).sum()
    assert np.allclose(shares.to_numpy(), 0.25)  # 4 groups, each drawn a quarter of the time
    assert np.isclose(p[6], 3 * p[0])  # a T2 case is drawn three times as often as a CTA case


def test_the_trainer_gives_each_training_case_its_modality_balanced_probability(tmp_path, monkeypatch):
    dataset = tmp_path / "Dataset901_X"
    dataset.mkdir()
    pd.DataFrame({"case_id": ["a", "b", "c", "d"], "Modality": ["CTA", "CTA", "CTA", "MRI T2"]}).to_csv(
        dataset / "metadata.csv", index=False)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    logged = []
    trainer = SimpleNamespace(plans_manager=SimpleNamespace(dataset_name="Dataset901_X"),
                              print_to_log_file=logged.append)
    trainer.raw_metadata_path = lambda: AneurysmTrainerBase.raw_metadata_path(trainer)
    probabilities = AneurysmTrainerBase.modality_probabilities(trainer, ["d", "a", "b", "c"])  # the loader's order
    assert np.allclose(probabilities, [0.5, 1 / 6, 1 / 6, 1 / 6])
    assert "{'CTA': 3, 'MRI T2': 1}" in logged[0]
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "elsewhere"))
    assert AneurysmTrainerBase.modality_probabilities(trainer, ["a"]) is None and "drawn uniformly" in logged[1]


def test_stage1_validation_conditions_the_network_on_each_case_it_loads():
    # nnU-Net's validation loads a case, then its predictor calls the network with the image alone
    table = MetadataTable({"t2": encode_metadata(60, "Female", "MRI T2"), "cta": encode_metadata(40, "Male", "CTA")})
    network = SimpleNamespace(condition=None)

    class Dataset:
        def load_case(self, identifier):
            return f"image of {identifier}"

    dataset = conditioning_dataset(Dataset, network, table)()
    for case in ("t2", "cta", "t2"):
        assert dataset.load_case(case) == f"image of {case}"
        assert np.array_equal(network.condition.numpy(), table.vectors[case])
    dataset.load_case("unknown")
    assert not network.condition.any() and table.take_missing() == 1  # zeros, and counted
