"""Planner for stage 2 (aneurysms): WaveFormer with AKOrN layers and the PINN head.

The plans size the patch for the *full* network (the heaviest variant), so every stage-2
trainer variant (baseline, +AKOrN, +PINN, full) fits under the same VRAM target.
"""

from nnunet_aneurysm.networks.waveformer import WaveFormer
from nnunet_aneurysm.planners.base import AneurysmPlanner


class WaveFormerPlanner(AneurysmPlanner):
    network_class = WaveFormer
    arch_kwargs = {"akorn": {}, "pinn": {}}
    cpu_arch_kwargs = {"embed_dims": (16, 32, 64, 128), "stem_channels": 8, "akorn": {}, "pinn": {}}
    default_plans_name = "AneurysmWaveFormerPlans"

    @property
    def divisible_by(self) -> int:
        return 2 ** len(self.arch_kwargs.get("embed_dims", (0, 0, 0, 0)))
