"""Planner for stage 2 (aneurysms): WaveFormer with AKOrN layers and the PINN head.

The plans size the patch for the *full* network (the heaviest variant), so every stage-2
trainer variant (baseline, +AKOrN, +PINN, full) fits under the same VRAM target. The series
head's outputs and FiLM's input size come from the label and metadata tables.
"""

from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import METADATA_DIM
from nnunet_aneurysm.networks.waveformer import WaveFormer, cpu_config, gpu_config
from nnunet_aneurysm.planners.base import AneurysmPlanner

_HEADS = {"akorn": {}, "pinn": {}, "classification_outputs": len(SUBMISSION_COLUMNS), "metadata_dim": METADATA_DIM}


class WaveFormerPlanner(AneurysmPlanner):
    network_class = WaveFormer
    arch_kwargs = {**gpu_config(), **_HEADS}
    cpu_arch_kwargs = {**cpu_config(), **_HEADS}
    default_plans_name = "AneurysmWaveFormerPlans"

    @property
    def divisible_by(self) -> int:
        return 2 ** len(self.arch_kwargs["embed_dims"])
