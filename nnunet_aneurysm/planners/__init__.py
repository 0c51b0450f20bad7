"""Experiment planners for our networks, looked up by name by ``nnunet-aneurysm plan``."""

from nnunet_aneurysm.planners.base import AneurysmPlanner
from nnunet_aneurysm.planners.segformer3d import SegFormer3DPlanner
from nnunet_aneurysm.planners.waveformer import WaveFormerPlanner

PLANNERS: dict[str, type[AneurysmPlanner]] = {
    cls.__name__: cls for cls in (SegFormer3DPlanner, WaveFormerPlanner)
}
