"""nnUNetTrainer subclasses; every class name starts with ``Aneurysm`` to stay globally unique."""

from nnunet_aneurysm.nnunet_version import require_supported_nnunetv2

require_supported_nnunetv2()  # before nnunetv2 is imported: one line instead of an error deep in nnU-Net

from nnunet_aneurysm.trainers.base import AneurysmScheduledNNUNetTrainer, AneurysmTrainerBase  # noqa: E402
from nnunet_aneurysm.trainers.pretraining import (  # noqa: E402
    AneurysmWaveFormerMaskedPretrainer,
    AneurysmWaveFormerMiMPretrainer,
    AneurysmWaveFormerVesselPretrainer,
)
from nnunet_aneurysm.trainers.segformer3d import AneurysmSegFormer3DTrainer  # noqa: E402
from nnunet_aneurysm.trainers.waveformer import (  # noqa: E402
    AneurysmWaveFormerAKOrNTrainer,
    AneurysmWaveFormerAUCMTrainer,
    AneurysmWaveFormerBaselineTrainer,
    AneurysmWaveFormerPINNTrainer,
    AneurysmWaveFormerTrainer,
)

__all__ = ["AneurysmTrainerBase", "AneurysmScheduledNNUNetTrainer", "AneurysmSegFormer3DTrainer",
           "AneurysmWaveFormerTrainer", "AneurysmWaveFormerBaselineTrainer", "AneurysmWaveFormerAKOrNTrainer",
           "AneurysmWaveFormerPINNTrainer", "AneurysmWaveFormerAUCMTrainer", "AneurysmWaveFormerVesselPretrainer",
           "AneurysmWaveFormerMaskedPretrainer", "AneurysmWaveFormerMiMPretrainer"]
