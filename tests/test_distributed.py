"""Our trainers' steps under nnU-Net's multi-GPU training: two CPU processes (gloo), each trainer's network in
``DistributedDataParallel(find_unused_parameters=False)`` as nnU-Net wraps it, several of the trainer's own
``train_step``s, one of them without a vessel lumen and one whose physics loss is not finite, and MiM's
pretraining steps (two forwards through DDP, the alignment projector outside it). Before: a two-process run
crashed at the forward after a skipped physics term ("Expected to have finished reduction"). Afterwards every
rank must hold the same network and the same loss state."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch.nn.parallel import DistributedDataParallel

from nnunet_aneurysm.losses.auc_margin import AUCMarginLoss
from nnunet_aneurysm.losses.balancing import BALANCERS
from nnunet_aneurysm.losses.sparse_targets import SparseTargetLoss
from nnunet_aneurysm.losses.tversky import TverskyCELoss
from nnunet_aneurysm.metadata import METADATA_DIM, MetadataTable
from nnunet_aneurysm.networks.masking import MaskedWaveFormer
from nnunet_aneurysm.networks.segformer3d import SegFormer3D
from nnunet_aneurysm.networks.waveformer import WaveFormer, cpu_config
from nnunet_aneurysm.trainers import waveformer as stage2_trainers
from nnunet_aneurysm.trainers.distributed import sum_across_ranks
from nnunet_aneurysm.trainers.pretraining import AneurysmWaveFormerMiMPretrainer
from nnunet_aneurysm.trainers.segformer3d import AneurysmSegFormer3DTrainer
from nnunet_aneurysm.trainers.waveformer import CLASS_LOSSES, AneurysmWaveFormerAUCMTrainer, AneurysmWaveFormerTrainer

PATCH = (16, 32, 32)


def _stage2_batch(rank: int, step: int) -> dict:
    """Two ROIs with a tube in the vessel channel (step 0), none (step 1: the physics term is skipped)."""
    g = torch.Generator().manual_seed(100 * rank + step)
    data = torch.randn(2, 3, *PATCH, generator=g)
    data[:, 1] = 0.0
    data[:, 2] = 0.0
    if step != 1:
        data[:, 1, :, 12:20, 12:20] = 0.9  # a vessel along the first axis
        data[:, 2, :, 12:20, 12:20] = 5.0
    target = torch.zeros(2, 1, *PATCH)
    target[0, 0, 6:9, 14:17, 20:23] = 3
    levels = [target[..., ::s, ::s, ::s] for s in (1, 2, 4, 8)]  # deep supervision, as nnU-Net's loader gives it
    return {"data": data, "target": levels, "keys": [f"case{rank}", f"other{rank}"]}


def _stage2_trainer(cls, network) -> object:
    trainer = object.__new__(cls)
    trainer.network, trainer.device, trainer.is_ddp, trainer.grad_scaler = network, torch.device("cpu"), True, None
    names = ["seg", "cls"] + (["physics"] if cls.use_pinn else [])
    trainer.balancer = BALANCERS["uwso"](names)
    trainer.class_loss = CLASS_LOSSES[cls.class_loss_name]()
    trainer.loss = DeepSupervisionWrapper(SparseTargetLoss(), [8 / 15, 4 / 15, 2 / 15, 1e-6])  # nnU-Net's, under DDP
    trainer.proximal = None
    trainer.metadata = MetadataTable({f"case{r}": np.ones(METADATA_DIM, np.float32) for r in range(2)})
    trainer.series_targets, trainer.whole_roi = {}, True
    trainer.configuration_manager = SimpleNamespace(spacing=[1.5, 1.5, 1.5])
    trainer.current_epoch, trainer.num_epochs, trainer.left_right_flip_probability = 5, 10, 0.0
    learnt = [p for m in (trainer.balancer, trainer.class_loss) for p in m.parameters()]
    trainer.optimizer = torch.optim.AdamW([{"params": network.parameters()}, {"params": learnt}], 1e-3)
    return trainer


REAL_PHYSICS_LOSS = stage2_trainers.physics_loss


def _not_finite(*args, **kwargs) -> dict:
    terms = REAL_PHYSICS_LOSS(*args, **kwargs)
    return {**terms, "total": terms["total"] * float("nan")}


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in tensors])


def _same_on_every_rank(values: torch.Tensor) -> bool:
    gathered = [torch.zeros_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, values)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _worker(rank: int, store: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial weights on both ranks, as nnU-Net's DDP broadcast gives
    try:
        for cls in (AneurysmWaveFormerTrainer, AneurysmWaveFormerAUCMTrainer):
            plain = WaveFormer(3, 14, True, **cpu_config(), akorn={"grid": 2} if cls.use_akorn else None,
                               pinn={} if cls.use_pinn else None, classification_outputs=14,
                               metadata_dim=METADATA_DIM, artery_channel=2)
            trainer = _stage2_trainer(cls, DistributedDataParallel(plain, find_unused_parameters=False))
            for step in range(4):  # step 1: no vessel lumen; step 2: the physics loss comes out NaN
                stage2_trainers.physics_loss = _not_finite if step == 2 else REAL_PHYSICS_LOSS
                out = trainer.train_step(_stage2_batch(rank, step))
                assert np.isfinite(out["loss"]) and (out["physics_skipped"] == 1.0) == (step in (1, 2) and cls.use_pinn)
            stage2_trainers.physics_loss = REAL_PHYSICS_LOSS
            state = [*plain.parameters(), *trainer.class_loss.parameters(),
                     *[b for b in trainer.balancer.buffers() if b.is_floating_point()]]
            if isinstance(trainer.class_loss, AUCMarginLoss):
                state.append(trainer.class_loss.alpha)
            results[f"{cls.__name__}:{rank}"] = _same_on_every_rank(_flat(state))
        plain = SegFormer3D(1, 14, True, embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                            decoder_dim=16,
                            refine_head=True, metadata_dim=METADATA_DIM)
        trainer = object.__new__(AneurysmSegFormer3DTrainer)
        trainer.network = DistributedDataParallel(plain, find_unused_parameters=False)
        trainer.device, trainer.is_ddp, trainer.grad_scaler = torch.device("cpu"), True, None
        scales = plain.deep_supervision_scales
        weights = [1 / 2**i for i in range(len(scales))]
        weights[-1] = 1e-6  # nnU-Net's deep-supervision weights under DDP: the lowest level barely, but present
        trainer.loss = DeepSupervisionWrapper(TverskyCELoss(0.7, 0.3, union=True), weights)
        trainer.left_right_flip_probability = 0.0
        trainer.metadata = MetadataTable({f"case{r}": np.ones(METADATA_DIM, np.float32) for r in range(2)})
        trainer.optimizer = torch.optim.AdamW(plain.parameters(), 1e-3)
        for step in range(3):
            g = torch.Generator().manual_seed(10 * rank + step)
            target = torch.randint(0, 14, (2, 1, 32, 32, 32), generator=g).float()
            batch = {"data": torch.randn(2, 1, 32, 32, 32, generator=g), "keys": [f"case{rank}", "missing"],
                     "target": [target[..., ::round(1 / s), ::round(1 / s), ::round(1 / s)] for s in scales]}
            trainer.train_step(batch)
        results[f"AneurysmSegFormer3DTrainer:{rank}"] = _same_on_every_rank(_flat(plain.parameters()))
        plain = MaskedWaveFormer(3, 14, True, alignment=True, **cpu_config(), akorn={"grid": 2}, pinn={},
                                 classification_outputs=14, metadata_dim=METADATA_DIM, artery_channel=2)
        trainer = _stage2_trainer(AneurysmWaveFormerMiMPretrainer,
                                  DistributedDataParallel(plain, find_unused_parameters=False))
        trainer.mask_generator = torch.Generator().manual_seed(rank)  # each rank its own masks
        trainer.optimizer = torch.optim.AdamW(plain.parameters(), 1e-3)
        for step in range(2):
            g = torch.Generator().manual_seed(10 * rank + step)
            out = trainer.train_step({"data": torch.randn(2, 3, 32, 32, 32, generator=g), "keys": [f"case{rank}", "x"]})
            assert np.isfinite(out["loss"]) and 0 <= out["alignment_accuracy"] <= 1
        results[f"AneurysmWaveFormerMiMPretrainer:{rank}"] = _same_on_every_rank(_flat(plain.parameters()))
        counted = sum_across_ranks(torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64))  # per-rank voxels
        results[f"sum_across_ranks:{rank}"] = counted.tolist() == [3.0, 10.0] and counted.dtype == torch.float64
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built into this torch")
def test_our_trainers_steps_run_under_ddp_and_keep_the_ranks_equal(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
        outcome = dict(results)
    assert len(outcome) == 10 and all(outcome.values()), outcome
