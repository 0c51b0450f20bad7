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
* Modality-balanced sampling (``modality_balanced_sampling``) needs the training loader's per-case
  probabilities before nnU-Net's augmentation workers copy the loader, so the loaders are built here
  (nnU-Net 2.8.1's construction, the probabilities added) rather than set after nnU-Net's.
* A trainer of ours reads the plans of one planner (``planner``); started on plans of another network
  (``nnUNetv2_train``'s default ``nnUNetPlans``: PlainConvUNet) it stops with one line naming the
  planner to run, not an AttributeError deep in nnU-Net's initialisation.
* Our labels are left/right specific, so nnU-Net's mirroring (training and test time) is off;
  instead each training sample is flipped along its own left-right axis with probability
  ``left_right_flip_probability`` and its labels swapped to their partners (``left_right.py``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import matplotlib
import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from torch import nn
from torch.optim.lr_scheduler import _LRScheduler

from nnunet_aneurysm.left_right import flip_left_right, left_right_axis
from nnunet_aneurysm.metadata import modality_balanced_probabilities, modality_groups, read_modalities

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


class WarmupPolyLRScheduler(_LRScheduler):
    """Linear warm-up over ``warmup_steps`` epochs, then nnU-Net's poly decay (exponent 0.9) to zero; exponent 0
    holds the learning rate at ``initial_lr`` after the warm-up."""

    def __init__(self, optimizer, initial_lr: float, warmup_steps: int, max_steps: int, exponent: float = 0.9):
        self.initial_lr, self.warmup_steps, self.max_steps = initial_lr, warmup_steps, max_steps
        self.exponent = exponent
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step=None):
        step = self.ctr if current_step is None or current_step == -1 else current_step
        self.ctr = step + 1
        if step < self.warmup_steps:
            lr = self.initial_lr * (step + 1) / (self.warmup_steps + 1)
        else:
            progress = (step - self.warmup_steps) / max(self.max_steps - self.warmup_steps, 1)
            lr = self.initial_lr * max(0.0, 1 - progress) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)


class WrongPlansError(SystemExit):
    """Plans whose network this trainer cannot train. A SystemExit, so that ``nnUNetv2_train`` ends with this
    one line (and a non-zero status) instead of an AttributeError deep in nnU-Net's initialisation."""


def check_plans_network(trainer: nnUNetTrainer, planner_name: str) -> None:
    """Raise :class:`WrongPlansError` naming the planner to run when the configuration's network is not the one
    ``planner_name`` plans (nnUNetv2_train's default plans are nnU-Net's own, with PlainConvUNet)."""
    from nnunet_aneurysm.planners import PLANNERS

    planner = PLANNERS[planner_name]
    expected = f"{planner.network_class.__module__}.{planner.network_class.__name__}"
    found = trainer.configuration_manager.network_arch_class_name
    if found == expected:
        return
    dataset = trainer.plans_manager.dataset_name
    dataset_id = int(dataset[len("Dataset"):].split("_")[0])
    raise WrongPlansError(f"{type(trainer).__name__} needs plans written by {planner_name} "
                          f"({trainer.plans_manager.plans_name} {trainer.configuration_name} has "
                          f"{found.rsplit('.', 1)[-1]}): nnunet-aneurysm plan -d {dataset_id} "
                          f"--planner {planner_name}, then nnUNetv2_preprocess and nnUNetv2_train with "
                          f"-p {planner.default_plans_name}")


class AneurysmTrainerBase(AneurysmScheduledNNUNetTrainer):
    """What all our own trainers share on top of the scheduled baseline (see the module docstring)."""

    planner: str | None = None  # the planner (``nnunet-aneurysm plan --planner``) whose plans this trainer reads
    extra_metrics: tuple[str, ...] = ()  # logged once per epoch by subclasses
    left_right_flip_probability = 0.5
    label_input_channels: tuple[int, ...] = ()  # input channels holding class ids (swapped by the flip)
    # AdamW with a linear warm-up (over this share of the epochs) then poly decay: nnU-Net's own recipe for
    # transformers (Primus), at learning rates for short schedules; None keeps nnU-Net's SGD.
    adamw_lr: float | None = None
    adamw_weight_decay = 1e-2
    warmup_fraction = 0.1
    lr_decay_exponent = 0.9  # of the poly decay after the warm-up (nnU-Net's); 0: constant after the warm-up
    # draw training cases so that every modality (metadata.csv beside the raw dataset) is drawn equally often
    modality_balanced_sampling = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.planner is not None:
            check_plans_network(self, self.planner)
        if self.adamw_lr is not None:  # nnU-Net's __init__ set its SGD values
            self.initial_lr, self.weight_decay = self.adamw_lr, self.adamw_weight_decay

    def configure_optimizers(self):
        if self.adamw_lr is None:
            return super().configure_optimizers()
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                      betas=(0.9, 0.98))
        warmup = max(1, int(round(self.warmup_fraction * self.num_epochs)))
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, warmup, self.num_epochs,
                                                  self.lr_decay_exponent)

    def initialize(self):
        super().initialize()
        self._left_right_axes: dict[str, int] = {}
        for key in self.extra_metrics:  # after __init__, where subclasses may still add metrics
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])

    def get_dataloaders(self):
        """nnU-Net 2.8.1's training and validation augmenters, built here so that the training loader's
        sampling probabilities (modality balance) are set before any augmentation worker starts: the
        workers copy the loader as they start, and nnU-Net's own ``get_dataloaders`` starts them (its first
        ``next``) before returning, with probabilities ``None``."""
        if not self.modality_balanced_sampling:
            return super().get_dataloaders()
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        labels = self.label_manager
        label_kwargs = dict(is_cascaded=self.is_cascaded, foreground_labels=labels.foreground_labels,
                            regions=labels.foreground_regions if labels.has_regions else None,
                            ignore_label=labels.ignore_label)
        train_transforms = self.get_training_transforms(patch_size, rotation, scales, mirror_axes, dummy_2d,
                                                        use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
                                                        **label_kwargs)
        val_transforms = self.get_validation_transforms(scales, **label_kwargs)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        loaders = [nnUNetDataLoader(dataset, self.batch_size, first_patch, patch_size, labels,
                                    oversample_foreground_percent=self.oversample_foreground_percent,
                                    sampling_probabilities=probabilities, pad_sides=None, transforms=transforms,
                                    probabilistic_oversampling=self.probabilistic_oversampling)
                   for dataset, first_patch, probabilities, transforms in (
                       (dataset_tr, initial_patch_size, self.modality_probabilities(dataset_tr.identifiers),
                        train_transforms),
                       (dataset_val, patch_size, None, val_transforms))]
        workers = get_allowed_n_proc_DA()
        if workers == 0:
            train, val = (SingleThreadedAugmenter(loader, None) for loader in loaders)
        else:
            pin = self.device.type == "cuda"
            train = NonDetMultiThreadedAugmenter(loaders[0], None, workers, max(6, workers // 2), None, pin, 0.002)
            val = NonDetMultiThreadedAugmenter(loaders[1], None, max(1, workers // 2), max(3, workers // 4), None,
                                               pin, 0.002)
        next(train), next(val)  # start the workers, as nnU-Net does
        return train, val

    def raw_metadata_path(self) -> Path:
        """The converter's ``metadata.csv`` beside this dataset's raw images (age, sex, modality, labels)."""
        return Path(os.environ.get("nnUNet_raw", "")) / self.plans_manager.dataset_name / "metadata.csv"

    def modality_probabilities(self, cases) -> np.ndarray | None:
        """Each training case's sampling probability, such that every modality is drawn equally often;
        None (uniform) without a ``metadata.csv``."""
        path = self.raw_metadata_path()
        if not path.is_file():
            self.print_to_log_file(f"no {path}: training cases are drawn uniformly, not balanced by modality")
            return None
        known = read_modalities(path)
        modalities = [known.get(str(case)) for case in cases]
        counts = modality_groups(modalities).value_counts().sort_index()
        self.print_to_log_file("modality-balanced sampling, training cases per modality (each modality drawn "
                               f"equally often): {counts.to_dict()}")
        return modality_balanced_probabilities(modalities)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None  # nnU-Net's mirror TTA would mix left and right labels
        return rotation, dummy_2d, initial_patch, None

    def left_right_axis(self, key: str) -> int:
        """The preprocessed array axis of case ``key`` closest to patient left-right (from its direction)."""
        if key not in self._left_right_axes:
            properties = load_pickle(os.path.join(self.preprocessed_dataset_folder, f"{key}.pkl"))
            self._left_right_axes[key] = left_right_axis(properties["sitk_stuff"]["direction"],
                                                         self.plans_manager.transpose_forward)
        return self._left_right_axes[key]

    def flip_batch(self, batch: dict) -> list[bool]:
        """Flip each sample of ``batch`` (data and every target level, in place of the dict's tensors) with
        probability ``left_right_flip_probability``; returns which were flipped."""
        keys = batch.get("keys")
        if keys is None or self.left_right_flip_probability <= 0:
            return [False] * len(batch["data"])
        flip = [bool(f) for f in np.random.random_sample(len(keys)) < self.left_right_flip_probability]
        if any(flip):
            target = batch["target"]
            targets = target if isinstance(target, list) else [target]
            data, targets = flip_left_right(batch["data"], targets, [self.left_right_axis(str(k)) for k in keys],
                                            flip, self.label_input_channels)
            batch["data"], batch["target"] = data, targets if isinstance(target, list) else targets[0]
        return flip

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
        logged = self.logger.local_logger.my_fantastic_logging  # replaced whole by the checkpoint's
        for key in self.extra_metrics:  # a metric added since the checkpoint was written: NaN for its epochs
            logged.setdefault(key, [float("nan")] * self.current_epoch)
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
            self.adjust_gradients()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
            return True
        scale = self.grad_scaler.get_scale()
        self.grad_scaler.scale(total).backward()
        self.grad_scaler.unscale_(self.optimizer)
        self.adjust_gradients()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        return self.grad_scaler.get_scale() >= scale

    def adjust_gradients(self) -> None:
        """Hook between backward (unscaled gradients) and clipping; a no-op unless a trainer needs one."""

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
