"""Stage 1's output stays on its own grid: that grid is where nnU-Net's preprocessing put the voxels, and
what is resampled from it lands in the right place."""

from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.nnunet_io import nnunet_properties
from nnunet_aneurysm.inference.stage1 import VesselPrediction, labels_at_threshold, preprocessed_grid, resample_channels
from tests.tiny_plans import plans_manager


def _oblique() -> tuple[np.ndarray, np.ndarray]:
    row = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    col = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])
    return row, col


def _blob_scan(shape, spacing, centre_mm, sigma_mm=4.0, margin=6) -> tuple[np.ndarray, Geometry]:
    """A Gaussian blob on an oblique grid, zero in a margin (so nnU-Net crops to the non-zero box)."""
    row, col = _oblique()
    scan = Geometry(np.array([-30.0, -20.0, -25.0]), row, col, spacing)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3).astype(float)
    r2 = ((scan.voxel_to_patient(index) - centre_mm) ** 2).sum(1)
    image = (100.0 * np.exp(-r2 / (2 * sigma_mm**2)) + 1.0).reshape(shape).astype(np.float32)
    inside = (slice(1, shape[0] - 1), *[slice(margin, s - margin) for s in shape[1:]])
    cropped = np.zeros_like(image)
    cropped[inside] = image[inside]
    return cropped, scan


def _centroid_mm(data: np.ndarray, grid: Geometry, transpose: list[int]) -> np.ndarray:
    """Intensity-weighted centre (mm) of the blob in a preprocessed array [transposed axes]."""
    weights = np.clip(data - np.percentile(data, 99.0), 0, None)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij"), -1).reshape(-1, 3)
    centre_t = (index * weights.reshape(-1, 1)).sum(0) / weights.sum()
    centre = np.empty(3)
    centre[transpose] = centre_t  # transposed axis t is the scan's axis transpose[t]
    return grid.voxel_to_patient(centre[None])[0]


@pytest.mark.parametrize("transpose, scan_spacing, target", [
    ([2, 0, 1], (0.7, 0.5, 0.45), [1.4, 1.5, 1.3]),  # resampled as one volume (order 3)
    ([0, 1, 2], (4.0, 0.5, 0.55), [4.0, 1.5, 1.6]),  # anisotropic: nnU-Net's separate-z path
])
def test_the_preprocessed_grid_puts_the_blob_where_it_is(transpose, scan_spacing, target):
    """The blob's centre found in nnU-Net's preprocessed array and mapped through ``preprocessed_grid`` is
    the blob's true centre within 0.1 mm; a corner-aligned mapping (the usual mistake) misses by ~0.4 mm."""
    centre_mm = np.array([2.0, 3.0, -1.0])
    shape = (20, 90, 100) if scan_spacing[0] > 2 else (70, 90, 100)
    image, scan = _blob_scan(shape, scan_spacing, centre_mm)
    plans = plans_manager(transpose, [target[t] for t in range(3)])
    data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        image[None], None, nnunet_properties(scan), plans, plans.get_configuration("3d_fullres"), {})
    assert np.any(np.array(properties["bbox_used_for_cropping"])[:, 0] > 0)  # the crop happened
    grid = preprocessed_grid(scan, properties, data.shape[1:], transpose)
    assert np.linalg.norm(_centroid_mm(data[0], grid, transpose) - centre_mm) < 0.1
    corner = Geometry(scan.voxel_to_patient(np.array([[b[0] for b in np.array(properties["bbox_used_for_cropping"])
                                                       [np.argsort(transpose)]]], float))[0],
                      scan.row_dir, scan.col_dir, grid.spacing)
    assert np.linalg.norm(_centroid_mm(data[0], corner, transpose) - centre_mm) > 0.3


def test_channels_resampled_from_stage1_grid_match_the_truth_on_the_roi_grid():
    """A linear field on stage 1's grid resampled onto another (finer, shifted) grid is that field there."""
    row, col = _oblique()
    source = Geometry(np.array([0.0, 0.0, 0.0]), row, col, (1.6, 1.4, 1.5))
    target = Geometry(np.array([5.0, 4.0, 6.0]), row, col, (0.9, 1.1, 1.0))
    field = lambda p: 0.02 * p[:, 0] - 0.01 * p[:, 1] + 0.03 * p[:, 2] + 1.0  # noqa: E731
    shape = (30, 32, 34)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3).astype(float)
    values = field(source.voxel_to_patient(index)).reshape(shape).astype(np.float32)
    out = resample_channels(np.stack([values, 2 * values]), source, target, (12, 14, 16))
    t_index = np.stack(np.meshgrid(*[np.arange(s) for s in (12, 14, 16)], indexing="ij"), -1).reshape(-1, 3)
    expected = field(target.voxel_to_patient(t_index.astype(float))).reshape(12, 14, 16)
    assert np.abs(out[0] - expected).max() < 1e-4 and np.abs(out[1] - 2 * expected).max() < 1e-4


def test_on_grid_gives_the_probability_and_labels_of_the_roi_and_nothing_outside_stage1_grid():
    grid = Geometry(np.zeros(3), np.eye(3)[0], np.eye(3)[1], (1.0, 1.0, 1.0))
    probabilities = np.zeros((14, 10, 10, 10), np.float32)
    probabilities[0] = 1.0
    probabilities[0, 4:6, 4:6, 4:6], probabilities[7, 4:6, 4:6, 4:6] = 0.3, 0.7  # an artery of class 7
    prediction = VesselPrediction(probabilities, grid)
    vessel, labels = prediction.on_grid(grid, (10, 10, 10), 0.5)
    assert np.allclose(vessel, prediction.vessel_probability, atol=1e-6)
    assert (labels == prediction.artery_labels(0.5)).all() and set(np.unique(labels)) == {0, 7}
    shifted = Geometry(np.array([20.0, 0, 0]), np.eye(3)[0], np.eye(3)[1], (1.0, 1.0, 1.0))  # wholly outside
    vessel, labels = prediction.on_grid(shifted, (10, 10, 10), 0.5)
    assert vessel.max() == 0 and labels.max() == 0


def test_one_channel_resamples_to_one_channel():
    grid = Geometry(np.zeros(3), np.eye(3)[0], np.eye(3)[1], (1.0, 1.0, 1.0))
    out = resample_channels(np.ones((1, 4, 5, 6), np.float32), grid, grid, (4, 5, 6))
    assert out.shape == (1, 4, 5, 6) and np.allclose(out, 1.0)


def test_on_grid_reads_only_the_roi_part_of_stage1_grid_and_gives_what_the_whole_grid_gives():
    """The crop (the pipeline's memory peak was the whole grid's 14 channels copied) changes no value: an oblique,
    finer ROI that sticks out of stage 1's grid gets what resampling the whole grid gives."""
    rng = np.random.default_rng(0)
    grid = Geometry(np.array([-3.0, 2.0, 1.0]), np.eye(3)[0], np.eye(3)[1], (1.7, 1.3, 1.3))
    probabilities = rng.dirichlet(np.ones(14), size=(30, 32, 34)).transpose(3, 0, 1, 2).astype(np.float32)
    prediction = VesselPrediction(probabilities, grid)
    angle = 0.3
    row, col = np.array([np.cos(angle), np.sin(angle), 0.0]), np.array([-np.sin(angle), np.cos(angle), 0.0])
    roi = Geometry(np.array([20.0, 10.0, 30.0]), row, col, (0.9, 0.8, 0.7))  # its far corner lies outside
    shape = (40, 44, 48)
    vessel, labels = prediction.on_grid(roi, shape, 0.4)
    channels = np.concatenate([prediction.vessel_probability[None], probabilities[1:]])
    whole = resample_channels(channels, grid, roi, shape)
    assert 0 < (whole[0] == 0).mean() < 0.9  # partly outside stage 1's grid
    assert np.abs(vessel - whole[0]).max() < 1e-6
    assert (labels == labels_at_threshold(whole[0], whole[1:], 0.4)).all()
