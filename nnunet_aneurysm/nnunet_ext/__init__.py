"""Folder for ``nnUNet_extTrainer``: nnU-Net imports the modules here as top-level names."""
