"""Folder for ``nnUNet_extTrainer``: nnU-Net imports the modules here as top-level names."""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent  # the value to export as nnUNet_extTrainer
