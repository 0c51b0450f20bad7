"""What every trainer of ours changes in nnU-Net's trainer, factored once.

* The training schedule can come from the plans (``trainer_schedule`` of a configuration),
  so the CPU configuration trains for minutes without a ``_5epochs`` class per trainer; a
  ``seed`` there makes runs repeatable.
* On ``-device cpu`` nnU-Net gives torch every core; we leave one per augmentation worker.
* Deep-supervision scales come from the network itself, not from PlainConvUNet's strides,
  and the deep-supervision weighting of a loss is written once (:meth:`deep_supervised`).
* torch.compile is off unless ``nnUNet_compile`` asks for it explicitly: nnU-Net turns it on by
  default on CUDA, and our networks' Python-level loops (wavelet levels, oscillator steps)
  made WaveFormer's first epoch compile for over five minutes on an H100.
* Extra per-epoch metrics are registered with nnU-Net's logger (so they survive ``--c``) and
  drawn in ``progress_extra.png`` beside nnU-Net's ``progress.png``.
"""

from __future__ import annotations

import os
import random

import matplotlib
import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from torch import nn

SCHEDULE_KEYS = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "save_every", "seed")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs: with nnUNet_n_proc_DA=0 a CPU run then repeats itself exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_training_threads() -> int:
    """Cores left for torch after nnU-Net's data-augmentation worker processes."""
    return max(1, (os.cpu_count() or 1) - get_allowed_n_proc_DA())


def apply_trainer_schedule(trainer: nnUNetTrainer, fold) -> None:
    """Epochs, iterations, save interval and seed from the configuration's ``trainer_schedule``;
    CPU threads left over by the augmentation workers."""
    schedule = trainer.configuration_manager.configuration.get("trainer_schedule", {})
    unknown = sorted(set(schedule) - set(SCHEDULE_KEYS))
    if unknown:
        raise ValueError(f"trainer_schedule holds only {list(SCHEDULE_KEYS)}; got {unknown} "
                         f"(loss choices go in the configuration's 'losses' entry)")
    for key in SCHEDULE_KEYS[:-1]:
        if key in schedule:
            setattr(trainer, key, int(schedule[key]))
    if "seed" in schedule:
        seed_everything(int(schedule["seed"]) + int(fold if str(fold).isdigit() else 0))
    if trainer.device.type == "cpu":
        torch.set_num_threads(cpu_training_threads())


class AneurysmScheduledNNUNetTrainer(nnUNetTrainer):
    """nnU-Net's default trainer, unchanged but for reading ``trainer_schedule`` from the plans:
    the baseline of our ablations and benchmarks on the short CPU configurations (stock
    ``nnUNetTrainer`` would run 1000 epochs of 250 iterations there)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_trainer_schedule(self, fold)


class AneurysmTrainerBase(AneurysmScheduledNNUNetTrainer):
    """What all our own trainers share on top of the scheduled baseline (see the module docstring)."""

    extra_metrics: tuple[str, ...] = ()  # logged once per epoch by subclasses

    def initialize(self):
        super().initialize()
        for key in self.extra_metrics:  # after __init__, where subclasses may still add metrics
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])

    def _do_i_compile(self) -> bool:
        if os.environ.get("nnUNet_compile", "").lower() not in ("true", "1", "t"):
            return False
        return super()._do_i_compile()

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net writes checkpoints in place, so a kill mid-write leaves a torn checkpoint_latest that
        `--c` cannot load. Write beside it and rename: the old checkpoint stays whole until the new one is."""
        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        if not os.path.exists(partial):
            return
        extra = self.extra_checkpoint_state()
        if extra:  # nnU-Net's checkpoint has no slot for loss modules; add one (a re-write, only then)
            checkpoint = torch.load(partial, map_location="cpu", weights_only=False)
            checkpoint["aneurysm_extra_state"] = extra
            torch.save(checkpoint, partial)
        os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)  # nnU-Net 2.8.1 accepts a file name only
        if not self.extra_checkpoint_state():
            return
        checkpoint = torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        self.restore_extra_checkpoint_state(checkpoint.get("aneurysm_extra_state", {}))

    def extra_checkpoint_state(self) -> dict:
        """State outside the network and optimiser that ``--c`` must restore (learnt loss weights...);
        empty when there is none, so that checkpoints are written once."""
        return {}

    def restore_extra_checkpoint_state(self, state: dict) -> None:
        pass

    def backward_and_step(self, total: torch.Tensor) -> bool:
        """nnU-Net's backward, gradient clipping (norm 12) and optimiser step, with or without its GradScaler.

        Returns whether the step was taken: the GradScaler skips steps whose gradients overflowed
        (its scale then drops), and state that ascends with the optimiser must skip them too.
        """
        if self.grad_scaler is None:
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
            return True
        scale = self.grad_scaler.get_scale()
        self.grad_scaler.scale(total).backward()
        self.grad_scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        return self.grad_scaler.get_scale() >= scale

    def plain_network(self) -> nn.Module:
        """The network without DDP / torch.compile wrappers."""
        mod = self.network.module if self.is_ddp else self.network
        return getattr(mod, "_orig_mod", mod)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        ndim = len(self.configuration_manager.patch_size)
        return [[s] * ndim for s in self.plain_network().deep_supervision_scales]

    def deep_supervised(self, loss: nn.Module) -> nn.Module:
        """nnU-Net's weighting over deep-supervision outputs (halving per level, lowest level off)."""
        if not self.enable_deep_supervision:
            return loss
        weights = np.array([1 / (2**i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if self.is_ddp and not self._do_i_compile() else 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.extra_metrics and self.local_rank == 0:
            self.plot_extra_metrics()

    def plot_extra_metrics(self) -> None:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        logged = self.logger.local_logger.my_fantastic_logging
        fig, axes = plt.subplots(len(self.extra_metrics), 1, figsize=(8, 2.5 * len(self.extra_metrics)),
                                 squeeze=False)
        for ax, key in zip(axes[:, 0], self.extra_metrics):
            ax.plot(range(len(logged[key])), logged[key], marker="o")
            ax.set_ylabel(key)
        axes[-1, 0].set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(os.path.join(self.output_folder, "progress_extra.png"))
        plt.close(fig)
