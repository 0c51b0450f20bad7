"""Pretraining of stage 2's network, run by stock ``nnUNetv2_train`` and loaded into the stage-2 trainer with
stock ``nnUNetv2_train ... -pretrained_weights FILE`` (nnU-Net 2.8.1 demands every key of the network with the
same shape: both trainers build the plans' WaveFormer, AKOrN and PINN head included, so every key matches).

* ``AneurysmWaveFormerVesselPretrainer``: the network segments the 13 arteries of the vessel ROI dataset
  (``inference/vessel_roi_dataset.py``: the stage-2 ROIs, labelled with the arteries, stage 1's channels
  blanked so the target is not in the input) before it learns aneurysms. The 1st place of RSNA 2025 scored
  0.902 with its ROI classifier's backbone pretrained on vessel segmentation and 0.794 without (their
  ablation). The artery classes have the location classes' ids, so even the segmentation heads start where
  the aneurysm locations are.
* ``AneurysmWaveFormerMaskedPretrainer``: masked-volume pretraining (``networks/masking.py``, SparK for
  WaveFormer) on the ROI dataset's images; no label is read.
* ``AneurysmWaveFormerMiMPretrainer``: the same with MiM's two levels (a hidden cell zoomed in and masked
  again) and its cross-level alignment (``networks/masking.py``).

Under DDP every parameter gets a gradient on every step (parts the pretext task does not use enter with
weight zero), as the stage-2 trainer's steps do.
"""

from __future__ import annotations

import numpy as np
import torch

from nnunet_aneurysm.networks.masking import (
    MaskedWaveFormer,
    block_visibility,
    mask_in_mask_loss,
    masked_reconstruction_loss,
)
from nnunet_aneurysm.stages import ARTERY_CHANNEL, VESSEL_CHANNEL
from nnunet_aneurysm.trainers.distributed import zero_term
from nnunet_aneurysm.trainers.waveformer import AneurysmWaveFormerTrainer

STAGE1_CHANNELS = (VESSEL_CHANNEL, ARTERY_CHANNEL)


class AneurysmWaveFormerVesselPretrainer(AneurysmWaveFormerTrainer):
    """Stage 2's network segments arteries (vessel ROI dataset); the series heads and physics are not trained.

    The learning rate stays at its peak after the warm-up: a pretraining is a starting point (the fine-tuning
    decays its own), and at the pretraining benchmark's 375 steps nnU-Net's poly decay to zero was what kept
    the network from the arteries (artery Dice on the folds' held-out crops: 0.075 with the decay, 0.174
    without; the fine-tuned stage 2's AUC did not follow: README)."""

    lr_decay_exponent = 0.0

    def compute_losses(self, data: torch.Tensor, target, keys, flipped) -> tuple[dict, dict, bool]:
        data = data.clone()
        data[:, list(STAGE1_CHANNELS)] = 0  # the vessel ROI dataset has them blank; a stray value must not leak
        metadata = self.dropped_out(torch.from_numpy(self.metadata.lookup(keys)).to(self.device))
        seg, aux = self.network(data, metadata=metadata, return_aux=True)
        unused = zero_term(self.plain_network()).to(data.device)  # heads, PINN: zero gradients (DDP)
        return {"seg": self.loss(seg, target) + unused}, aux, False


class AneurysmWaveFormerMaskedPretrainer(AneurysmWaveFormerTrainer):
    """Stage 2's network fills in hidden blocks of the ROI image (SparK); the labels are never read."""

    mask_ratio = 0.6  # SparK's
    mask_block = 16  # voxels: the backbone's total stride
    extra_metrics = ("loss_seg", "metadata_missing")

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        return MaskedWaveFormer(num_input_channels, num_output_channels, enable_deep_supervision,
                                **cls.network_kwargs(configuration_manager))

    def initialize(self):
        super().initialize()
        seed = int(self.configuration_manager.configuration.get("trainer_schedule", {}).get("seed", 0))
        fold = int(self.fold) if str(self.fold).isdigit() else 0
        self.mask_generator = torch.Generator().manual_seed(seed * 1000 + fold)  # the same run, the same masks

    def _masked_loss(self, data: torch.Tensor, keys) -> torch.Tensor:
        data = data.clone()
        data[:, list(STAGE1_CHANNELS)] = 0
        visible = block_visibility(len(data), data.shape[2:], self.mask_block, self.mask_ratio,
                                   self.mask_generator).to(data.device)
        metadata = torch.from_numpy(self.metadata.lookup(keys)).to(self.device)
        reconstruction = self.network(data, metadata=metadata, visible=visible)
        return masked_reconstruction_loss(reconstruction, data[:, :1], visible) \
            + zero_term(self.plain_network()).to(data.device)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._masked_loss(data, batch.get("keys", [""] * len(data)))
        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy(), "loss_seg": float(loss.detach()), **(self._parts or {})}

    _parts: dict[str, float] | None = None  # the last step's loss terms, for subclasses that log them

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        return {"loss": self._masked_loss(data, batch.get("keys", [""] * len(data))).cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs):
        self.logger.log("val_losses", float(np.mean([o["loss"] for o in val_outputs])), self.current_epoch)
        self.logger.log("mean_fg_dice", float("nan"), self.current_epoch)
        self.logger.log("dice_per_class_or_region", [], self.current_epoch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("masked-volume pretraining: no segmentation to validate (the reconstruction loss "
                               "of the validation cases is logged per epoch)")


class AneurysmWaveFormerMiMPretrainer(AneurysmWaveFormerMaskedPretrainer):
    """MiM (Mask in Mask): level 1 the ROI patch with half its 16-voxel cells hidden; level 2 one of those hidden
    cells zoomed in to a cube of the patch's shortest side, 60 % of its blocks hidden (MiM's level ratios 0.5 and
    0.6); loss = both levels' hidden-voxel reconstruction + 0.1 x the cross-level alignment (MiM's weights).
    Each step runs the network twice (level 2 at 48^3 in the demo): 1.6x the masked pretrainer's seconds."""

    mask_ratio, level2_mask_ratio = 0.5, 0.6
    alignment_weight = 0.1
    alignment_temperature = 0.1  # ours: cosine logits over the cells (MiM's CE mode divides by 1)
    extra_metrics = ("loss_seg", "loss_level1", "loss_level2", "loss_alignment", "alignment_accuracy",
                     "metadata_missing")

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        return MaskedWaveFormer(num_input_channels, num_output_channels, enable_deep_supervision, alignment=True,
                                **cls.network_kwargs(configuration_manager))

    def _masked_loss(self, data: torch.Tensor, keys) -> torch.Tensor:
        data = data.clone()
        data[:, list(STAGE1_CHANNELS)] = 0  # zero before zooming: the artery ids are not interpolated
        metadata = torch.from_numpy(self.metadata.lookup(keys)).to(self.device)
        loss, self._parts = mask_in_mask_loss(
            self.network, data, metadata, self.mask_generator, self.mask_block,
            (self.mask_ratio, self.level2_mask_ratio), self.alignment_weight, self.alignment_temperature,
            self.plain_network().masked_pretraining.alignment)
        return loss + zero_term(self.plain_network()).to(data.device)
