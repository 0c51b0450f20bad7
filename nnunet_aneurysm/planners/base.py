"""ExperimentPlanner for our networks: nnU-Net's spacing and normalisation, our patch and batch.

Only ``3d_fullres`` (sized for ``--vram-gb``) and ``3d_cpu`` (a small patch and a short
training schedule for tests and demos, sharing 3d_fullres's preprocessed data) are written.
The network is named by import path in the plans, so stock nnU-Net rebuilds it anywhere.
"""

from __future__ import annotations

from copy import deepcopy
from functools import partial

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from torch import nn

from nnunet_aneurysm.planners.memory import fit_patch_and_batch, initial_patch

# Schedule of the CPU configuration; our trainers read it from the plans.
DEFAULT_CPU_SCHEDULE = {"num_epochs": 5, "num_iterations_per_epoch": 10,
                        "num_val_iterations_per_epoch": 2, "save_every": 1}


class AneurysmPlanner(ExperimentPlanner):
    """Subclasses set ``network_class`` and the two architecture configurations."""

    network_class: type[nn.Module]
    arch_kwargs: dict = {}  # the full (GPU) configuration
    cpu_arch_kwargs: dict = {}  # the CPU configuration; empty means same as full
    default_plans_name: str = "AneurysmPlans"
    initial_patch_voxels = 256**3  # like nnU-Net: start large, shrink until it fits
    cpu_patch_voxels = 64**3
    min_batch_size = 2

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 16,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str | None = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 cpu_schedule: dict | None = None, fullres_schedule: dict | None = None):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or self.default_plans_name, overwrite_target_spacing, suppress_transpose)
        self.lowres_creation_threshold = 0  # no 3d_lowres/cascade: our stages are our own cascade
        self.cpu_schedule = {**DEFAULT_CPU_SCHEDULE, **(cpu_schedule or {})}
        self.fullres_schedule = dict(fullres_schedule or {})  # empty: nnU-Net's own (1000 x 250)

    @property
    def divisible_by(self) -> int:
        return self.network_class.total_stride

    def _num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def _num_classes(self) -> int:
        return len(self.dataset_json["labels"])

    def _builder(self, arch_kwargs: dict):
        return partial(self.network_class, self._num_input_channels(), self._num_classes(), True,
                       **arch_kwargs)

    def fit_patch_and_batch(self, spacing, median_shape, arch_kwargs: dict,
                            approximate_n_voxels_dataset: float) -> tuple[list[int], int, float]:
        return fit_patch_and_batch(self._builder(arch_kwargs), self._num_input_channels(), spacing, median_shape,
                                   self.UNet_vram_target_GB * 1e9, self.divisible_by, self.initial_patch_voxels,
                                   self.min_batch_size, approximate_n_voxels_dataset * self.max_dataset_covered)

    def _architecture(self, arch_kwargs: dict) -> dict:
        cls = self.network_class
        return {"network_class_name": f"{cls.__module__}.{cls.__name__}",
                "arch_kwargs": deepcopy(arch_kwargs), "_kw_requires_import": []}

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier,
                                    approximate_n_voxels_dataset, _cache) -> dict:
        if len(spacing) != 3:
            return {}  # nnU-Net always asks for a 2d plan; we plan none (save_plans drops it)
        patch, batch, memory = self.fit_patch_and_batch(spacing, median_shape, self.arch_kwargs,
                                                        approximate_n_voxels_dataset)
        resampling_data, data_kwargs, resampling_seg, seg_kwargs = self.determine_resampling()
        resampling_probs, probs_kwargs = self.determine_segmentation_softmax_export_fn()
        normalization, mask_for_norm = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        return {
            "data_identifier": data_identifier,
            "preprocessor_name": self.preprocessor_name,
            "batch_size": batch,
            "patch_size": patch,
            "median_image_size_in_voxels": median_shape,
            "spacing": spacing,
            "normalization_schemes": normalization,
            "use_mask_for_norm": mask_for_norm,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": data_kwargs,
            "resampling_fn_seg_kwargs": seg_kwargs,
            "resampling_fn_probabilities": resampling_probs.__name__,
            "resampling_fn_probabilities_kwargs": probs_kwargs,
            "architecture": self._architecture(self.arch_kwargs),
            "estimated_vram_gb": round(memory / 1e9, 2),
        }

    def cpu_configuration(self, fullres: dict) -> dict:
        """A small patch and short schedule over 3d_fullres's preprocessed data."""
        aspect_patch = initial_patch(fullres["spacing"], fullres["median_image_size_in_voxels"],
                                     self.cpu_patch_voxels, self.divisible_by)
        patch = [min(a, f) for a, f in zip(aspect_patch, fullres["patch_size"])]
        return {"inherits_from": "3d_fullres", "patch_size": patch, "batch_size": self.min_batch_size,
                "architecture": self._architecture(self.cpu_arch_kwargs or self.arch_kwargs),
                "trainer_schedule": dict(self.cpu_schedule)}

    def save_plans(self, plans):
        configurations = plans["configurations"]
        fullres = configurations["3d_fullres"]
        if self.fullres_schedule:
            fullres["trainer_schedule"] = dict(self.fullres_schedule)
        plans["configurations"] = {"3d_fullres": fullres, "3d_cpu": self.cpu_configuration(fullres)}
        super().save_plans(plans)
