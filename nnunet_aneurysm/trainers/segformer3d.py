"""Stage 1: SegFormer3D on the vessel dataset."""

from nnunet_aneurysm.trainers.base import AneurysmTrainerBase


class AneurysmSegFormer3DTrainer(AneurysmTrainerBase):
    """The network comes from the plans (SegFormer3DPlanner); nnU-Net's Dice + CE loss."""
