"""Planner for stage 1 (vessels): SegFormer3D in the paper's configuration with the refinement head,
metadata (modality above all) by FiLM."""

from nnunet_aneurysm.metadata import METADATA_DIM, polarity_gain_weights
from nnunet_aneurysm.networks.segformer3d import SegFormer3D, vessel_config
from nnunet_aneurysm.planners.base import AneurysmPlanner


class SegFormer3DPlanner(AneurysmPlanner):
    network_class = SegFormer3D
    arch_kwargs = {**vessel_config(), "metadata_dim": METADATA_DIM, "input_gain": polarity_gain_weights()}
    default_plans_name = "AneurysmSegFormer3DPlans"
