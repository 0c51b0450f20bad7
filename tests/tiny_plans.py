"""A plans file as nnU-Net's planner writes it, reduced to what preprocessing reads, for tests."""

from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager


def plans_manager(transpose: list[int], spacing: list[float], scheme: str = "ZScoreNormalization",
                  use_mask: bool = False, order: int = 3, intensity: dict | None = None) -> PlansManager:
    """``spacing`` in the plans' (transposed) axis order."""
    resampling = {"is_seg": False, "order": order, "order_z": 0, "force_separate_z": None}
    intensity = intensity or {"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}
    return PlansManager({
        "dataset_name": "Dataset999_Grid", "plans_name": "P", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": [32, 32, 32],
        "transpose_forward": transpose, "transpose_backward": [transpose.index(i) for i in range(3)],
        "experiment_planner_used": "test", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensity},
        "configurations": {"3d_fullres": {
            "data_identifier": "P_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [32, 32, 32], "median_image_size_in_voxels": [32, 32, 32], "spacing": spacing,
            "normalization_schemes": [scheme], "use_mask_for_norm": [use_mask],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
            "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}})
