"""Stage 2: WaveFormer (+ AKOrN, + PINN head) on the aneurysm dataset.

Loss = balance(seg: nnU-Net's Dice + CE with deep supervision,
               cls: asymmetric loss of the 14 series-level logits against patch-level targets,
               physics: Navier-Stokes residual + no-slip + flow terms at collocation points).
Targets of the classification head come from the label patch: location k is present if any
voxel of the patch carries label k; 'Aneurysm Present' if any does. Metadata (age, sex,
modality) come from the converter's ``metadata.csv`` by case id and enter through FiLM.

nnU-Net's mirroring is switched off in augmentation and test-time augmentation: flipping a head
swaps left and right, and a mirrored image with unswapped location labels would teach the network
wrong sides. In its place, ``left_right.py`` flips along each case's own left-right axis and swaps
the location labels to their partners (probability ``left_right_flip_probability``).

Variants are one ``-tr`` apart: ``AneurysmWaveFormerBaselineTrainer`` (neither AKOrN nor PINN),
``AneurysmWaveFormerAKOrNTrainer``, ``AneurysmWaveFormerPINNTrainer``, ``AneurysmWaveFormerTrainer``
(both). All read the same plans (``WaveFormerPlanner``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_aneurysm.labels import NUM_LOCATIONS
from nnunet_aneurysm.losses.asymmetric import AsymmetricLoss
from nnunet_aneurysm.losses.auc_margin import AUCMarginLoss
from nnunet_aneurysm.losses.balancing import BALANCERS
from nnunet_aneurysm.losses.collocation import R3Sampler, sample_in, vessel_mask, wall_mask
from nnunet_aneurysm.losses.physics import REYNOLDS_CURRICULUM, physics_loss
from nnunet_aneurysm.metadata import MetadataTable
from nnunet_aneurysm.stages import VESSEL_CHANNEL
from nnunet_aneurysm.trainers.base import AneurysmTrainerBase
from nnunet_aneurysm.trainers.left_right import flip_left_right, left_right_axis

CLASS_LOSSES = {"asl": AsymmetricLoss, "aucm": lambda: AUCMarginLoss(NUM_LOCATIONS + 1)}


def finite_or_zero(loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The guard between the physics head and the optimiser: a non-finite loss becomes a fresh zero
    (no graph, so no NaN gradient either) and is reported as skipped."""
    if torch.isfinite(loss).all():
        return loss, False
    return torch.zeros((), device=loss.device, dtype=loss.dtype), True


def patch_targets(label: torch.Tensor) -> torch.Tensor:
    """[B, 1, ...] location labels -> [B, 14] float: 13 locations present in the patch + any."""
    flat = label.flatten(1).long()
    present = torch.stack([(flat == k).any(1) for k in range(1, NUM_LOCATIONS + 1)], dim=1)
    return torch.cat([present, present.any(1, keepdim=True)], dim=1).float()


class AneurysmWaveFormerTrainer(AneurysmTrainerBase):
    use_akorn = True
    use_pinn = True
    # Loss choices: these defaults, or the configuration's "losses" entry of the plans
    # ({"balancer": "uw" | "uwso", "class_loss": "asl" | "aucm"}), except those a variant class fixes.
    balancer_name = "uwso"
    class_loss_name = "asl"
    fixed_losses: tuple[str, ...] = ()
    collocation_points = 2048
    wall_points = 256
    reynolds_start, reynolds_end = REYNOLDS_CURRICULUM
    continuity_only_fraction = 0.2  # of the epochs, before the momentum terms switch on
    physics_dtype = torch.float64
    left_right_flip_probability = 0.5
    extra_metrics = ("loss_seg", "loss_cls", "loss_physics", "weight_seg", "weight_cls", "weight_physics",
                     "order_parameter", "physics_skipped", "metadata_missing")

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["akorn"] = (kwargs.get("akorn") or {}) if cls.use_akorn else None
        kwargs["pinn"] = (kwargs.get("pinn") or {}) if cls.use_pinn else None
        return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._choose_losses(self.configuration_manager.configuration.get("losses", {}))
        if self.class_loss_name == "aucm":
            self.extra_metrics = (*self.extra_metrics, "aucm_alpha")

    def _choose_losses(self, chosen: dict) -> None:
        """Apply the plans' loss choices; refuse unknown keys and any that contradict what this class fixes."""
        unknown = sorted(set(chosen) - {"balancer", "class_loss"})
        if unknown:
            raise ValueError(f"the plans' 'losses' entry takes 'balancer' and 'class_loss'; got {unknown}")
        for key, value in chosen.items():
            if key in self.fixed_losses and value != getattr(self, f"{key}_name"):
                raise ValueError(f"{type(self).__name__} trains with {key} {getattr(self, f'{key}_name')!r}; "
                                 f"the plans ask for {value!r}: use AneurysmWaveFormerTrainer for that")
            setattr(self, f"{key}_name", value)
        if self.balancer_name not in BALANCERS or self.class_loss_name not in CLASS_LOSSES:
            raise ValueError(f"balancer must be one of {sorted(BALANCERS)} (got {self.balancer_name!r}), "
                             f"class_loss one of {sorted(CLASS_LOSSES)} (got {self.class_loss_name!r})")
        if (self.balancer_name, self.class_loss_name) == ("uw", "aucm"):
            raise ValueError("uncertainty weighting ('uw') needs losses bounded below; the AUC-margin loss is a "
                             "min-max objective that can go negative: use balancer 'uwso' with it")

    def initialize(self):
        # before super(), which builds the optimiser: learnt loss parameters must be in it
        names = ["seg", "cls"] + (["physics"] if self.use_pinn else [])
        self.balancer = BALANCERS[self.balancer_name](names).to(self.device)
        self.class_loss = CLASS_LOSSES[self.class_loss_name]().to(self.device)
        super().initialize()
        self.sampler = R3Sampler(self.collocation_points)
        self.metadata = self._load_metadata()
        self._left_right_axes: dict[str, int] = {}

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        learnt = [p for module in (self.balancer, self.class_loss) for p in module.parameters()]
        if learnt:
            optimizer.add_param_group({"params": learnt, "weight_decay": 0.0})
        return optimizer, scheduler

    def _loss_modules(self) -> dict:
        return {"balancer": self.balancer, "class_loss": self.class_loss}

    def extra_checkpoint_state(self) -> dict:
        """Only modules with learnt state: UW-SO and ASL have none, and then nothing is added."""
        states = {name: module.state_dict() for name, module in self._loss_modules().items()}
        return {name: state for name, state in states.items() if state}

    def restore_extra_checkpoint_state(self, state: dict) -> None:
        for name, module in self._loss_modules().items():
            if not module.state_dict():
                continue
            if name not in state:
                raise RuntimeError(f"the checkpoint holds no learnt state for the {name} "
                                   f"({type(module).__name__}); was it trained with other loss settings?")
            module.load_state_dict(state[name])

    def _load_metadata(self) -> MetadataTable:
        path = Path(os.environ.get("nnUNet_raw", "")) / self.plans_manager.dataset_name / "metadata.csv"
        if not path.is_file():
            self.print_to_log_file(f"no {path}: every case's metadata enters FiLM as zeros (counted per epoch)")
            return MetadataTable()
        return MetadataTable.read(path)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None

    def left_right_axis(self, key: str) -> int:
        if key not in self._left_right_axes:
            properties = load_pickle(os.path.join(self.preprocessed_dataset_folder, f"{key}.pkl"))
            self._left_right_axes[key] = left_right_axis(properties["sitk_stuff"]["direction"],
                                                         self.plans_manager.transpose_forward)
        return self._left_right_axes[key]

    def _maybe_flip_left_right(self, data, target, keys):
        flip = [bool(f) for f in np.random.random_sample(len(keys)) < self.left_right_flip_probability]
        if not any(flip):
            return data, target
        targets = target if isinstance(target, list) else [target]
        data, targets = flip_left_right(data, targets, [self.left_right_axis(str(k)) for k in keys], flip)
        return data, targets if isinstance(target, list) else targets[0]

    def _metadata_tensor(self, keys) -> torch.Tensor:
        return torch.from_numpy(self.metadata.lookup(keys)).to(self.device)

    def _reynolds_and_momentum(self) -> tuple[float, float]:
        progress = self.current_epoch / max(self.num_epochs - 1, 1)
        reynolds = self.reynolds_start + (self.reynolds_end - self.reynolds_start) * min(1.0, 2 * progress)
        momentum = 0.0 if progress < self.continuity_only_fraction else 1.0
        return reynolds, momentum

    def _physics(self, data: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, bool]:
        mask = vessel_mask(data, VESSEL_CHANNEL)
        interior = self.sampler.interior(mask)
        wall = sample_in(wall_mask(mask), self.wall_points)
        reynolds, momentum = self._reynolds_and_momentum()
        head = self.plain_network().pinn_head
        features = features.float()
        terms = physics_loss(lambda c: head(c, features), interior, wall, reynolds, momentum,
                             dtype=self.physics_dtype)
        total, skipped = finite_or_zero(terms["total"].float())
        if not skipped:
            self.sampler.update(interior, terms["point_residual"])
        return total, skipped

    def compute_losses(self, data: torch.Tensor, target, keys) -> tuple[dict, dict, bool]:
        """The unweighted loss terms of one batch (seg, cls[, physics]), the network's auxiliary outputs,
        and whether the physics term was skipped as non-finite."""
        full_target = target[0] if isinstance(target, list) else target
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            seg, aux = self.network(data, metadata=self._metadata_tensor(keys), return_aux=True)
            losses = {"seg": self.loss(seg, target),
                      "cls": self.class_loss(aux["class_logits"], patch_targets(full_target))}
        skipped = False
        if self.use_pinn:
            losses["physics"], skipped = self._physics(data, aux["pinn_features"])
        return losses, aux, skipped

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        keys = batch.get("keys", [""] * data.shape[0])
        if self.left_right_flip_probability > 0 and "keys" in batch:
            data, target = self._maybe_flip_left_right(data, target, keys)
        self.optimizer.zero_grad(set_to_none=True)
        losses, aux, skipped = self.compute_losses(data, target, keys)
        total, weights = self.balancer({k: v.float() for k, v in losses.items()})
        stepped = self.backward_and_step(total)
        if isinstance(self.class_loss, AUCMarginLoss) and stepped:
            self.class_loss.ascend(self.optimizer.param_groups[0]["lr"])
        out = {"loss": total.detach().cpu().numpy(), "physics_skipped": float(skipped)}
        for name, value in losses.items():
            out[f"loss_{name}"] = float(value.detach())
            out[f"weight_{name}"] = weights[name]
        if isinstance(self.class_loss, AUCMarginLoss):
            out["aucm_alpha"] = float(self.class_loss.alpha.mean())
        order = aux.get("order_parameter")
        out["order_parameter"] = float(order.mean().detach()) if order is not None else float("nan")
        return out

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        out = collate_outputs(train_outputs)
        out["metadata_missing"] = [self.metadata.take_missing()]  # a count per epoch, not a mean
        for key in self.extra_metrics:
            value = float(np.nanmean(out[key])) if key in out and not np.all(np.isnan(out[key])) else float("nan")
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file(", ".join(f"{k} {self.logger.get_value(k, self.current_epoch):.4g}"
                                         for k in self.extra_metrics))


class AneurysmWaveFormerBaselineTrainer(AneurysmWaveFormerTrainer):
    """WaveFormer alone: no AKOrN layers, no PINN head."""

    use_akorn = False
    use_pinn = False


class AneurysmWaveFormerAKOrNTrainer(AneurysmWaveFormerTrainer):
    """WaveFormer + AKOrN layers, no PINN head."""

    use_pinn = False


class AneurysmWaveFormerAUCMTrainer(AneurysmWaveFormerTrainer):
    """The full model with the AUC-margin classification loss in place of ASL."""

    class_loss_name = "aucm"
    fixed_losses = ("class_loss",)


class AneurysmWaveFormerPINNTrainer(AneurysmWaveFormerTrainer):
    """WaveFormer + PINN head, no AKOrN layers."""

    use_akorn = False
