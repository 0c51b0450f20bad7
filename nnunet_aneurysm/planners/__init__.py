"""Experiment planners for our networks, looked up by name by ``nnunet-aneurysm plan``."""

from nnunet_aneurysm.nnunet_version import require_supported_nnunetv2

require_supported_nnunetv2()  # before nnunetv2 is imported: one line instead of an error deep in nnU-Net

from nnunet_aneurysm.planners.base import AneurysmPlanner  # noqa: E402
from nnunet_aneurysm.planners.segformer3d import SegFormer3DPlanner  # noqa: E402
from nnunet_aneurysm.planners.waveformer import WaveFormerPlanner  # noqa: E402

PLANNERS: dict[str, type[AneurysmPlanner]] = {
    cls.__name__: cls for cls in (SegFormer3DPlanner, WaveFormerPlanner)
}
