"""Stage 2: WaveFormer (+ AKOrN, + PINN head) on the vessel region-of-interest dataset.

Loss = balance(seg: foreground-weighted CE + per-sample Dice of the union and of the present classes,
                    with deep supervision (``losses/sparse_targets.py``: a ball is 0.06 % of a whole ROI),
               cls: asymmetric loss (or AUC margin) of the 14 series logits against the SERIES'
                    labels (``metadata.csv``): the patch is the whole ROI, so the heads are
                    trained exactly as they are read,
               physics: Navier-Stokes residual + no-slip + flow condition of one field per patch).
Inputs: image, stage 1's vessel probability and artery labels (``stages.STAGE2_CHANNELS``); the
label channel is resampled as labels and only the image is intensity-augmented
(``augmentation.py``). Left/right flips swap the artery labels, the aneurysm labels and the
series targets to their partners. Metadata (age, sex, modality) enter through FiLM; a case
without a metadata row is counted per epoch (``metadata_missing``).

When the planner could not fit the whole ROI in one patch (large ROIs on small GPUs), the heads
are trained on patch targets (a location is present if the patch holds its label) and read as
the maximum over tiles; the trainer says so in its log.

Variants are one ``-tr`` apart: ``AneurysmWaveFormerBaselineTrainer`` (neither AKOrN nor PINN),
``AneurysmWaveFormerAKOrNTrainer``, ``AneurysmWaveFormerPINNTrainer``, ``AneurysmWaveFormerTrainer``
(both), ``AneurysmWaveFormerAUCMTrainer`` (both, AUC-margin class loss). All read the same plans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_aneurysm.labels import NUM_LOCATIONS
from nnunet_aneurysm.left_right import swap_series_columns
from nnunet_aneurysm.losses.asymmetric import AsymmetricLoss
from nnunet_aneurysm.losses.auc_margin import AUCMarginLoss, ProximalTerm
from nnunet_aneurysm.losses.balancing import BALANCERS
from nnunet_aneurysm.losses.collocation import (
    interior_mask,
    residual_adaptive_points,
    sample_in,
    to_nondimensional,
    vessel_mask,
    wall_mask,
)
from nnunet_aneurysm.losses.physics import (
    LENGTH_SCALE_MM,
    REYNOLDS_CURRICULUM,
    physics_loss,
    residual_from_derivatives,
)
from nnunet_aneurysm.losses.sparse_targets import SparseTargetLoss
from nnunet_aneurysm.metadata import MetadataTable, read_series_targets
from nnunet_aneurysm.stages import ARTERY_CHANNEL, STAGE2, VESSEL_CHANNEL
from nnunet_aneurysm.trainers.augmentation import for_mixed_channels
from nnunet_aneurysm.trainers.base import AneurysmTrainerBase
from nnunet_aneurysm.trainers.distributed import average_across_ranks, zero_term

CLASS_LOSSES = {"asl": AsymmetricLoss, "aucm": lambda: AUCMarginLoss(NUM_LOCATIONS + 1)}


def finite_or_none(loss: torch.Tensor) -> torch.Tensor | None:
    """The guard between the physics head and the optimiser: a non-finite loss is dropped (with its graph,
    so no NaN gradient reaches the network) and the step trains on the other terms."""
    return loss if torch.isfinite(loss).all() else None


def patch_targets(label: torch.Tensor) -> torch.Tensor:
    """[B, 1, ...] location labels -> [B, 14] float: 13 locations present in the patch + any."""
    flat = label.flatten(1).long()
    present = torch.stack([(flat == k).any(1) for k in range(1, NUM_LOCATIONS + 1)], dim=1)
    return torch.cat([present, present.any(1, keepdim=True)], dim=1).float()


class AneurysmWaveFormerTrainer(AneurysmTrainerBase):
    planner = STAGE2.planner
    use_akorn = True
    use_pinn = True
    # Loss choices: these defaults, or the configuration's "losses" entry of the plans
    # ({"balancer": "uw" | "uwso", "class_loss": "asl" | "aucm"}), except those a variant class fixes.
    balancer_name = "uwso"
    class_loss_name = "asl"
    fixed_losses: tuple[str, ...] = ()
    collocation_points = 1024  # interior points per case (half residual-adaptive, half uniform; continuous)
    wall_points = 256
    reynolds_start, reynolds_end = REYNOLDS_CURRICULUM
    continuity_only_fraction = 0.2  # of the epochs, before the momentum terms switch on
    physics_dtype = torch.float64
    proximal_weight = 2e-3  # PESG's epoch decay, with the AUC-margin loss
    adamw_lr = 2e-3
    label_input_channels = (ARTERY_CHANNEL,)
    extra_metrics = ("loss_seg", "loss_cls", "loss_physics", "weight_seg", "weight_cls", "weight_physics",
                     "min_term_weight", "floored_fraction", "order_parameter", "physics_skipped",
                     "physics_navier_stokes_share", "metadata_missing")
    metadata_dropout = 0.2  # share of training samples that see the unknown metadata vector (``dropped_out``)

    @classmethod
    def network_kwargs(cls, configuration_manager) -> dict:
        """The plans' network arguments with AKOrN and the PINN head on or off as this trainer class says."""
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["akorn"] = (kwargs.get("akorn") or {}) if cls.use_akorn else None
        kwargs["pinn"] = (kwargs.get("pinn") or {}) if cls.use_pinn else None
        return kwargs

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        kwargs = cls.network_kwargs(configuration_manager)
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
        patch = np.array(self.configuration_manager.patch_size)
        self.whole_roi = bool(np.all(patch >= np.array(self.configuration_manager.median_image_size_in_voxels)))

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
        raw = self.raw_metadata_path()
        self.metadata = self._read_table(raw, MetadataTable.read, MetadataTable())
        self.series_targets = self._read_table(raw, read_series_targets, {})
        self.proximal = ProximalTerm(self.network.parameters(), self.proximal_weight) \
            if self.class_loss_name == "aucm" else None
        if not self.whole_roi:
            self.print_to_log_file(f"patch {self.configuration_manager.patch_size} is smaller than the ROI "
                                   f"{self.configuration_manager.median_image_size_in_voxels}: series heads train on "
                                   f"patch targets and are read as the maximum over tiles")

    def _read_table(self, path: Path, read, empty):
        if not path.is_file():
            self.print_to_log_file(f"no {path}: metadata enter FiLM as zeros and series targets come from patches")
            return empty
        return read(path)

    def _build_loss(self):
        return self.deep_supervised(SparseTargetLoss())

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        learnt = [p for module in (self.balancer, self.class_loss) for p in module.parameters()]
        if learnt:
            optimizer.add_param_group({"params": learnt, "weight_decay": 0.0})
        return optimizer, scheduler

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training transforms (a static method there, called through ``self``), told which input
        channels are labels and which are intensities."""
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        return for_mixed_channels(transforms, self.label_input_channels, [0])

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

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.proximal is not None:
            self.proximal.reset()

    def adjust_gradients(self) -> None:
        """PESG's proximal term; under DDP, the learnt loss parameters' gradients averaged over the ranks."""
        average_across_ranks(p.grad for module in self._loss_modules().values() for p in module.parameters())
        if self.proximal is not None:
            self.proximal.add_to_gradients()

    def dropped_out(self, metadata: torch.Tensor) -> torch.Tensor:
        """Training batches: each sample's metadata replaced by the unknown (all-zero) vector with probability
        ``metadata_dropout``, so that "unknown" is a state the network was trained on. nnU-Net's own validation
        and stock ``nnUNetv2_predict`` call the network without metadata (zeros): without dropout, zeroing the
        metadata moved the demo model's 14 probabilities by up to 0.14 and its foreground voxels 108 -> 601."""
        if not self.network.training or self.metadata_dropout <= 0:
            return metadata
        keep = torch.rand(len(metadata), device=metadata.device) >= self.metadata_dropout
        return metadata * keep[:, None].to(metadata.dtype)

    def _series_targets(self, keys, flipped, full_target) -> torch.Tensor:
        """[B, 14]: the series' labels (partners swapped where the sample was flipped); patch targets where the
        patch is not the whole ROI or a case has no row in metadata.csv (counted there as missing metadata)."""
        from_patch = patch_targets(full_target)
        if not self.whole_roi:
            return from_patch
        rows = []
        for b, (key, flip) in enumerate(zip(keys, flipped)):
            row = self.series_targets.get(str(key))
            if row is None:
                rows.append(from_patch[b])
                continue
            row = torch.from_numpy(row).to(self.device)
            rows.append(swap_series_columns(row) if flip else row)
        return torch.stack(rows)

    def _reynolds_and_momentum(self) -> tuple[float, float]:
        progress = self.current_epoch / max(self.num_epochs - 1, 1)
        reynolds = self.reynolds_start + (self.reynolds_end - self.reynolds_start) * min(1.0, 2 * progress)
        momentum = 0.0 if progress < self.continuity_only_fraction else 1.0
        return reynolds, momentum

    def _physics(self, data: torch.Tensor, code: torch.Tensor, keys) -> torch.Tensor | None:
        """The physics loss of each sample's flow field at residual-adaptive lumen points and its wall
        (``losses/collocation.py``); None when no sample has a vessel lumen or the loss is not finite (the step
        then skips the term)."""
        mask = vessel_mask(data, VESSEL_CHANNEL)
        interior, wall = interior_mask(mask), wall_mask(mask)
        usable = [b for b in range(len(data)) if interior[b].any() and wall[b].any()]
        if not usable:
            return None
        shape, spacing = data.shape[2:], self.configuration_manager.spacing
        to_nd = lambda index: to_nondimensional(index, shape, spacing, LENGTH_SCALE_MM, self.physics_dtype)  # noqa: E731
        head, code = self.plain_network().pinn_head, code[usable]
        reynolds, momentum = self._reynolds_and_momentum()

        def residual_norm(i: int):  # per-point residual of sample i's current field (continuity-only early)
            def norm(points: torch.Tensor) -> torch.Tensor:
                uvwp, jacobian, laplacian = head.field_with_derivatives(to_nd(points)[None], code[i:i + 1].detach())
                r = residual_from_derivatives(uvwp, jacobian, laplacian, reynolds)[0]
                return (r[:, 0] ** 2 + momentum * r[:, 1:].pow(2).sum(-1)).sqrt()
            return norm

        points = [residual_adaptive_points(interior[b], self.collocation_points, residual_norm(i))
                  for i, b in enumerate(usable)]
        walls = [sample_in(wall[b], self.wall_points) for b in usable]
        terms = physics_loss(lambda c: head.field(c, code), to_nd(torch.stack(points)), to_nd(torch.stack(walls)),
                             reynolds, momentum, dtype=self.physics_dtype,
                             field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
        self.physics_terms = {k: float(terms[k].detach()) for k in ("continuity", "momentum", "no_slip", "flow")}
        return finite_or_none(terms["total"].float())

    def compute_losses(self, data: torch.Tensor, target, keys, flipped) -> tuple[dict, dict, bool]:
        """The unweighted loss terms of one batch (seg, cls[, physics]), the network's auxiliary outputs,
        and whether the physics term was skipped."""
        full_target = target[0] if isinstance(target, list) else target
        metadata = self.dropped_out(torch.from_numpy(self.metadata.lookup(keys)).to(self.device))
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            seg, aux = self.network(data, metadata=metadata, return_aux=True)
            losses = {"seg": self.loss(seg, target),
                      "cls": self.class_loss(aux["class_logits"], self._series_targets(keys, flipped, full_target))}
        skipped = False
        if self.use_pinn:
            physics = self._physics(data, aux["pinn_code"], keys)
            skipped = physics is None
            if not skipped:
                losses["physics"] = physics
        return losses, aux, skipped

    def train_step(self, batch: dict) -> dict:
        flipped = self.flip_batch(batch)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        keys = batch.get("keys", [""] * data.shape[0])
        self.optimizer.zero_grad(set_to_none=True)
        self.physics_terms = None
        losses, aux, skipped = self.compute_losses(data, target, keys, flipped)
        total, weights = self.balancer({k: v.float() for k, v in losses.items()})
        average_across_ranks(b for b in self.balancer.buffers() if b.is_floating_point())  # UW-SO's running means
        if self.use_pinn and "physics" not in losses:  # under DDP every parameter needs a gradient every step
            total = total + zero_term(self.plain_network().pinn_head).to(total.device)
        stepped = self.backward_and_step(total)
        if isinstance(self.class_loss, AUCMarginLoss) and stepped:
            average_across_ranks([self.class_loss.alpha_grad])
            self.class_loss.ascend()
        out = {"loss": total.detach().cpu().numpy(), "physics_skipped": float(skipped),
               "min_term_weight": min(weights[n] for n in losses),  # logged as the epoch's minimum
               "floored_fraction": float(any(weights[n] <= 1.01 * self.balancer_floor() for n in losses)),
               "physics_navier_stokes_share": self._navier_stokes_share()}
        for name in self.balancer.names:  # a skipped term: loss NaN (left out of the epoch's mean), weight 0
            out[f"loss_{name}"] = float(losses[name].detach()) if name in losses else float("nan")
            out[f"weight_{name}"] = weights[name]
        if isinstance(self.class_loss, AUCMarginLoss):
            out["aucm_alpha"] = float(self.class_loss.alpha.mean())
        order = aux.get("order_parameter")
        out["order_parameter"] = float(order.mean().detach()) if order is not None else float("nan")
        return out

    def _navier_stokes_share(self) -> float:
        """Of this step's physics loss, the share of the Navier-Stokes residual (continuity + momentum) against
        the boundary terms (no slip, flow condition); NaN without a physics term."""
        t = self.physics_terms
        if not t:
            return float("nan")
        equations = t["continuity"] + self._reynolds_and_momentum()[1] * t["momentum"]
        return equations / max(equations + t["no_slip"] + t["flow"], 1e-12)

    def balancer_floor(self) -> float:
        """The least weight the balancer gives a term (UW-SO's floor; 0 for a balancer without one): a step with
        a term at it is one where the balancer would have silenced that term (floored_fraction)."""
        return float(getattr(self.balancer, "floor", 0.0))

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        out = collate_outputs(train_outputs)
        out["metadata_missing"] = [self.metadata.take_missing()]  # a count per epoch, not a mean
        for key in self.extra_metrics:
            reduce = np.nanmin if key == "min_term_weight" else np.nanmean
            value = float(reduce(out[key])) if key in out and not np.all(np.isnan(out[key])) else float("nan")
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

