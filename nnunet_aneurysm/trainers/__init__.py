"""nnUNetTrainer subclasses; every class name starts with ``Aneurysm`` to stay globally unique."""

from nnunet_aneurysm.trainers.base import AneurysmScheduledNNUNetTrainer, AneurysmTrainerBase
from nnunet_aneurysm.trainers.segformer3d import AneurysmSegFormer3DTrainer
from nnunet_aneurysm.trainers.waveformer import (
    AneurysmWaveFormerAKOrNTrainer,
    AneurysmWaveFormerAUCMTrainer,
    AneurysmWaveFormerBaselineTrainer,
    AneurysmWaveFormerPINNTrainer,
    AneurysmWaveFormerTrainer,
)

__all__ = ["AneurysmTrainerBase", "AneurysmScheduledNNUNetTrainer", "AneurysmSegFormer3DTrainer",
           "AneurysmWaveFormerTrainer", "AneurysmWaveFormerBaselineTrainer", "AneurysmWaveFormerAKOrNTrainer",
           "AneurysmWaveFormerPINNTrainer", "AneurysmWaveFormerAUCMTrainer"]
