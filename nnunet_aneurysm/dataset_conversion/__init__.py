"""RSNA folder -> nnU-Net raw datasets, and the synthetic RSNA-format generator."""
