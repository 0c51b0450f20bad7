"""The vessel region of interest: it holds the arteries of a head-sized scan, and its voxels map back to
the scan's; stage 2's flip test-time augmentation is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_aneurysm.dataset_conversion.synthetic import HEAD_FOV_MM, make_series
from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.stage2 import flip_tta
from nnunet_aneurysm.left_right import swap_class_channels, swap_labels, swap_series_columns
from nnunet_aneurysm.roi import RoiSettings, find_roi, resample_to_roi, resample_to_scan


@pytest.fixture(scope="module")
def head_scans(tmp_path_factory):
    """Head-sized CTA and MR series (220 mm across) in several orientations, with their vessel labels."""
    import SimpleITK as sitk

    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.geometry import to_sitk

    root = tmp_path_factory.mktemp("head")
    out = []
    for i, (modality, orientation) in enumerate((("CTA", "axial"), ("MRA", "oblique"), ("MRI T2", "sagittal"))):
        _, _, truth = make_series(root, i, 7, 96, 1.0, 0.0, modality, orientation, False, 1, fov_mm=HEAD_FOV_MM)
        volume = read_series(root / "series" / truth.series_uid)
        seg = sitk.ReadImage(str(root / "segmentations" / f"{truth.series_uid}_cowseg.nii"))
        reference = to_sitk(np.zeros(volume.array.shape, np.float32), volume.geometry)
        labels = sitk.GetArrayFromImage(sitk.Resample(seg, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        out.append((volume, labels))
    return out


def test_the_roi_of_a_head_sized_scan_holds_every_vessel_voxel(head_scans):
    for volume, labels in head_scans:
        assert (labels > 0).mean() < 0.01  # the arteries are a small central part of a 220 mm field of view
        roi = find_roi((labels > 0).astype(np.float32), volume.geometry, RoiSettings())
        assert not roi.fallback
        vessel_mm = volume.geometry.voxel_to_patient(np.argwhere(labels > 0).astype(float))
        inside = roi.geometry.patient_to_voxel(vessel_mm)
        assert (inside >= -0.5).all() and (inside <= np.array(roi.shape) - 0.5).all()
        scan_mm = np.prod(np.array(volume.array.shape) * np.array(volume.geometry.spacing))
        assert np.prod(RoiSettings().size_mm) < 0.1 * scan_mm  # and it is much smaller than the scan


def test_no_vessel_falls_back_to_the_scan_centre_and_says_so():
    scan = Geometry(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (2.0, 1.0, 1.0))
    roi = find_roi(np.zeros((20, 30, 40), np.float32), scan)
    assert roi.fallback
    np.testing.assert_allclose(roi.centre_mm, [19.5, 14.5, 19.0])


def _oblique_scan() -> tuple[Geometry, tuple[int, int, int]]:
    angle = np.deg2rad(20)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle) * 0.6, np.cos(angle) * 0.6, 0.8])
    col /= np.linalg.norm(col)
    return Geometry(np.array([-60.0, -50.0, -40.0]), row, col, (1.6, 0.9, 0.9)), (70, 120, 120)


def test_a_point_goes_to_the_roi_and_back_to_the_scan_within_half_a_voxel():
    scan, shape = _oblique_scan()
    point = scan.voxel_to_patient(np.array([[35.2, 61.7, 58.4]]))[0]
    image = np.zeros(shape, np.float32)
    k, j, i = np.round(scan.patient_to_voxel(point[None])[0]).astype(int)
    image[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3] = 1.0  # a small blob around the point
    roi = find_roi(image, scan, RoiSettings((40.0, 40.0, 40.0), 1.0))
    on_roi = resample_to_roi(image, scan, roi)
    found = roi.geometry.voxel_to_patient(np.array([np.argwhere(on_roi > 0.5).mean(0)]))[0]
    assert np.linalg.norm(found - point) < 0.5 * np.linalg.norm(scan.spacing)
    prediction = np.zeros(roi.shape, np.float32)  # an ROI-grid prediction at the point's ROI voxel
    rk, rj, ri = np.round(roi.geometry.patient_to_voxel(point[None])[0]).astype(int)
    prediction[rk - 1:rk + 2, rj - 1:rj + 2, ri - 1:ri + 2] = 1.0
    back = resample_to_scan(prediction, roi, scan, shape)
    mapped = scan.voxel_to_patient(np.array([np.argwhere(back > 0.5).mean(0)]))[0]
    assert np.linalg.norm(scan.patient_to_voxel(mapped[None])[0] - scan.patient_to_voxel(point[None])[0]) < 0.5 * 3**0.5


def test_labels_are_resampled_as_labels():
    scan, shape = _oblique_scan()
    labels = np.zeros(shape, np.uint8)
    labels[30:40, 50:70, 50:70] = 5
    labels[30:40, 50:70, 70:90] = 7
    roi = find_roi((labels > 0).astype(np.float32), scan, RoiSettings((40.0, 40.0, 40.0), 1.0))
    assert set(np.unique(resample_to_roi(labels, scan, roi, labels=True))) == {0, 5, 7}  # never a 6


def test_flip_tta_of_a_mirrored_roi_is_the_mirrored_and_swapped_tta():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 14, 3, padding=1)
    head = torch.nn.Linear(3, 14)

    def forward(x):  # any network: deliberately not mirror-symmetric
        return conv(x), {"class_logits": head(x.mean((2, 3, 4))) + x[:, :, ..., :2].mean((2, 3, 4, 1))[:, None]}

    x = torch.randn(1, 3, 6, 5, 8)
    x[:, 2] = torch.randint(0, 14, (1, 6, 5, 8)).float()
    mirrored = torch.flip(x, (4,))
    mirrored[:, 2] = swap_labels(mirrored[:, 2])
    a, b = flip_tta(forward, x, 2), flip_tta(forward, mirrored, 2)
    torch.testing.assert_close(b["probabilities"], swap_class_channels(torch.flip(a["probabilities"], (4,))))
    torch.testing.assert_close(b["series"], swap_series_columns(a["series"]))


def test_resampling_to_the_roi_reads_only_the_crop_around_it_and_gives_the_same_values():
    """The crop handed to SimpleITK covers the ROI: the values equal those of resampling the whole scan."""
    import SimpleITK as sitk

    from nnunet_aneurysm.geometry import to_sitk
    from nnunet_aneurysm.roi import covering_crop

    rng = np.random.default_rng(0)
    row = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    scan = Geometry(np.array([-60.0, -50.0, -40.0]), row, np.cross([0, 0, 1.0], row), (1.1, 0.7, 0.8))
    shape = (90, 150, 140)
    image = rng.normal(size=shape).astype(np.float32)
    roi = find_roi(np.zeros((2, 2, 2), np.float32), scan, RoiSettings((30.0, 36.0, 42.0), 1.5),
                   fallback_centre_mm=[-5.0, 10.0, 0.0])
    whole = sitk.GetArrayFromImage(sitk.Resample(to_sitk(image, scan), to_sitk(np.zeros(roi.shape, np.float32),
                                                                                roi.geometry),
                                                 sitk.Transform(), sitk.sitkLinear, 0.0))
    assert np.abs(resample_to_roi(image, scan, roi) - whole).max() < 1e-5
    crop, _ = covering_crop(shape, scan, roi.geometry, roi.shape)
    assert np.prod([s.stop - s.start for s in crop]) < 0.2 * image.size


def test_the_roi_grid_is_planned_from_the_data_and_the_memory_budget():
    """nnU-Net's rule (the median spacing), coarsened to the budget: the demo's 1.31 mm data on the CPU budget give
    its 1.5 mm 48 x 48 x 64; clinical 0.43 mm data on a 16 GB GPU get a far finer grid, the box never smaller."""
    from nnunet_aneurysm.planners.waveformer import roi_voxel_budget
    from nnunet_aneurysm.roi import CPU_ROI_VOXELS, plan_roi_settings

    demo = plan_roi_settings([1.3125, 1.31, 1.33], CPU_ROI_VOXELS)
    assert (demo.spacing_mm, demo.shape, demo.size_mm) == (1.5, (48, 48, 64), (72.0, 72.0, 96.0))
    budget = roi_voxel_budget(16.0)
    clinical = plan_roi_settings([0.43, 0.45, 0.41], budget)
    assert 0.43 <= clinical.spacing_mm <= 0.7 and np.prod(clinical.shape) <= budget
    assert all(n % 16 == 0 for n in clinical.shape) and all(a >= b - 1e-9 for a, b in zip(clinical.size_mm,
                                                                                        RoiSettings().size_mm))
    fine = plan_roi_settings([0.3], 10**9)  # no memory limit: the data's own spacing
    assert fine.spacing_mm == 0.3


def test_every_part_and_resume_uses_the_grid_the_dataset_was_started_with(tmp_path):
    """A dataset's ROI grid is saved before its first case, only by the first run to get there; a later part (on a
    GPU machine, say) reads it instead of planning again, and another grid asked for is a one-line error, so no
    dataset mixes two grids."""
    import argparse

    from nnunet_aneurysm.cli import UserInputError, roi_settings_for

    def args(spacing, device, size=None):
        return argparse.Namespace(size_mm=size, spacing_mm=spacing, roi_max_voxels=None, device=device,
                                  vram_gb=16.0)

    dst = tmp_path / "Dataset103_ROI"
    first = roi_settings_for(args(1.5, "cpu"), tmp_path / "src_never_read", dst)
    assert not dst.exists() and first.shape == (48, 48, 64)  # nothing saved before a case is written
    racing = RoiSettings((72.0, 72.0, 96.0), 0.75, 0.4).claim(dst)  # a part that started at the same time...
    assert racing.spacing_mm == 0.75 and racing.vessel_threshold == 0.4
    claimed = first.claim(dst)  # ...got there first: this one writes its grid, not ours
    assert (claimed.spacing_mm, claimed.size_mm) == (0.75, (72.0, 72.0, 96.0))
    later = roi_settings_for(args(None, "cuda"), tmp_path / "src_never_read", dst)  # would plan 0.5 mm on a GPU
    assert later.spacing_mm == 0.75
    assert roi_settings_for(args(None, "cpu", [72.0, 72.0, 96.0]), tmp_path / "src_never_read", dst).spacing_mm == 0.75
    with pytest.raises(UserInputError, match="was started with ROIs of 0.75 mm"):
        roi_settings_for(args(1.5, "cpu"), tmp_path / "src_never_read", dst)
    with pytest.raises(UserInputError, match="was started with"):
        roi_settings_for(args(None, "cpu", [80.0, 80.0, 100.0]), tmp_path / "src_never_read", dst)
