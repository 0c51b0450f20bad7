"""What every trainer of ours changes in nnU-Net's trainer, factored once.

* The training schedule can come from the plans (``trainer_schedule`` of a configuration),
  so the CPU configuration trains for minutes without a ``_5epochs`` class per trainer.
* On ``-device cpu`` nnU-Net gives torch every core; we leave one per augmentation worker.
* Deep-supervision scales come from the network itself, not from PlainConvUNet's strides.
"""

from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from torch import nn

SCHEDULE_KEYS = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "save_every")


def cpu_training_threads() -> int:
    """Cores left for torch after nnU-Net's data-augmentation worker processes."""
    return max(1, (os.cpu_count() or 1) - get_allowed_n_proc_DA())


class AneurysmTrainerBase(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        schedule = self.configuration_manager.configuration.get("trainer_schedule", {})
        for key in SCHEDULE_KEYS:
            if key in schedule:
                setattr(self, key, int(schedule[key]))
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_training_threads())

    def plain_network(self) -> nn.Module:
        """The network without DDP / torch.compile wrappers."""
        mod = self.network.module if self.is_ddp else self.network
        return getattr(mod, "_orig_mod", mod)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        ndim = len(self.configuration_manager.patch_size)
        return [[s] * ndim for s in self.plain_network().deep_supervision_scales]
