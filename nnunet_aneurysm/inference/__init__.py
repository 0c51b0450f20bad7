"""Prediction: stage 1 on a scan, the region-of-interest dataset, stage 2 on an ROI, and the
whole pipeline from a DICOM series (``load_pipeline(FILE).predict(series_path)``)."""

from nnunet_aneurysm.inference.series import load_pipeline

__all__ = ["load_pipeline"]
