"""Planner for stage 2 (aneurysms): WaveFormer with AKOrN layers and the PINN head.

The plans size the patch for the *full* network (the heaviest variant), so every stage-2
trainer variant (baseline, +AKOrN, +PINN, full) fits under the same VRAM target. The series
heads' outputs and FiLM's input size come from the label and metadata tables; the artery-label
channel and the territory margin come from the dataset (``roi-dataset`` names its channels in
``dataset.json``). On a region-of-interest dataset the patch is the whole ROI when it fits, so
the series heads train on what they read; when it does not, the plan says so.
"""

from __future__ import annotations

from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import METADATA_DIM
from nnunet_aneurysm.networks.waveformer import WaveFormer, cpu_config, gpu_config
from nnunet_aneurysm.planners.base import AneurysmPlanner
from nnunet_aneurysm.stages import CHANNELS_KEY

TERRITORY_MARGIN_MM = 5.0  # a saccular aneurysm's centre lies within about this distance of its artery's wall
_HEADS = {"akorn": {}, "pinn": {}, "classification_outputs": len(SUBMISSION_COLUMNS), "metadata_dim": METADATA_DIM}


class WaveFormerPlanner(AneurysmPlanner):
    network_class = WaveFormer
    arch_kwargs = {**gpu_config(), **_HEADS}
    cpu_arch_kwargs = {**cpu_config(), **_HEADS}
    default_plans_name = "AneurysmWaveFormerPlans"

    @property
    def divisible_by(self) -> int:
        return 2 ** len(self.arch_kwargs["embed_dims"])

    def dataset_arch_kwargs(self, spacing) -> dict:
        """Where the artery labels are, and the territory margin in the heads' (half-resolution) voxels."""
        names = self.dataset_json.get(CHANNELS_KEY, [])
        artery = names.index("artery_labels") if "artery_labels" in names else None
        return {"artery_channel": artery, "territory_margin": int(round(TERRITORY_MARGIN_MM / (2 * min(spacing))))}

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache) -> dict:
        if len(spacing) != 3:
            return {}
        extra = self.dataset_arch_kwargs(spacing)
        self.arch_kwargs = {**type(self).arch_kwargs, **extra}
        self.cpu_arch_kwargs = {**type(self).cpu_arch_kwargs, **extra}
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        if extra["artery_channel"] is not None and any(p < m for p, m in zip(plan["patch_size"], median_shape)):
            print(f"WaveFormerPlanner: the ROI {list(median_shape)} does not fit one patch under the memory target "
                  f"(patch {plan['patch_size']}): series heads will train on patch targets and be read as the "
                  f"maximum over tiles")
        return plan


def roi_voxel_budget(vram_gb: float, size_mm: tuple[float, float, float] = (72.0, 72.0, 96.0),
                     batch_size: int = 2) -> int:
    """The most ROI voxels (the box's proportions, whole strides) whose training step with the full stage-2
    network (AKOrN + PINN, 3 input channels, batch 2) fits ``vram_gb`` by our memory model: the budget
    ``roi-dataset`` plans its ROI spacing with on a GPU (``roi.plan_roi_settings``)."""
    from functools import partial

    import numpy as np

    from nnunet_aneurysm.planners.memory import training_memory_bytes

    stride = 2 ** len(gpu_config()["embed_dims"])
    build = partial(WaveFormer, 3, len(SUBMISSION_COLUMNS), True, **gpu_config(), **_HEADS, artery_channel=2)
    best = 0
    for spacing in np.geomspace(2.0, 0.3, 16):
        shape = [max(stride, int(round(s / spacing / stride)) * stride) for s in size_mm]
        if training_memory_bytes(build, 3, shape, batch_size) > vram_gb * 1e9:
            break
        best = int(np.prod(shape))
    return max(best, stride**3)
