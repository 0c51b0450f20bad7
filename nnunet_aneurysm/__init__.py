"""nnU-Net v2 plugin for the RSNA 2025 intracranial aneurysm pipeline."""
