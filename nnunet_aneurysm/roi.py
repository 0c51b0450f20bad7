"""The vessel region of interest: where stage 2 looks, and how its voxels map back to the scan.

Choice: a FIXED physical box, aligned with the patient axes (LPS), centred on the middle of
stage 1's vessels (the midpoint of their 1st and 99th percentile along each patient axis),
resampled to one isotropic spacing. Why:

* every ROI has the same shape, so stage 2 trains on the whole ROI as one patch and its series
  heads are trained exactly as they are read (no tiles, no max over tiles);
* percentiles ignore stray false-positive vessel voxels, which would stretch a bounding box
  with a margin; the box is sized for the Circle of Willis with the cavernous carotids and the
  middle cerebral arteries' first branches (default 72 x 72 x 96 mm, S-I x A-P x L-R, at
  1.5 mm: 48 x 48 x 64 voxels, divisible by stage 2's stride);
* resampling onto patient axes makes stage 2's input orientation-free (axial, sagittal,
  coronal and oblique series all arrive the same way: left-right is the last array axis) and
  lets stage 1's outputs be resampled once, from stage 1's own grid onto the ROI (artery labels as
  the argmax of the resampled class probabilities), so nnU-Net's preprocessing never interpolates
  them again (the grid is already at its target spacing).

When stage 1 finds no vessel the box is centred on the scan's centre (the central region of
the head) and the fallback is reported. The box's placement is a :class:`Geometry`, so any ROI
voxel maps to patient coordinates (mm) and to the scan's voxels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_aneurysm.geometry import Geometry, to_sitk


@dataclass(frozen=True)
class RoiSettings:
    size_mm: tuple[float, float, float] = (72.0, 72.0, 96.0)  # numpy axes of the ROI: S-I, A-P, L-R
    spacing_mm: float = 1.5
    vessel_threshold: float = 0.5  # stage 1's union vessel mask: probability >= this (vessel_threshold.py)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(round(s / self.spacing_mm)) for s in self.size_mm)


    def claim(self, folder: Path, asked_size_mm: Sequence[float] | None = None) -> RoiSettings:
        """Make this the ROI grid of the dataset in ``folder`` unless it has one (``roi_settings.json``, created
        whole and only if absent, so two parts starting at once cannot both write theirs); returns the grid
        the dataset holds, with this threshold. ``asked_size_mm``: the box asked for (planning may round it up),
        kept so a later run can tell a different request from the same one."""
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{ROI_SETTINGS_FILE}.{os.getpid()}.partial"
        partial.write_text(json.dumps({"size_mm": list(self.size_mm), "spacing_mm": self.spacing_mm,
                                       "asked_size_mm": list(asked_size_mm or self.size_mm)}, indent=2))
        try:
            os.link(partial, folder / ROI_SETTINGS_FILE)  # fails if another run saved its grid first
        except FileExistsError:
            pass
        finally:
            partial.unlink()
        saved = RoiSettings.read(folder)
        return RoiSettings(saved.size_mm, saved.spacing_mm, self.vessel_threshold)

    @staticmethod
    def read(folder: Path) -> RoiSettings | None:
        """The ROI grid a dataset was started with, or None for a new dataset."""
        file = folder / ROI_SETTINGS_FILE
        if not file.is_file():
            return None
        saved = json.loads(file.read_text())
        return RoiSettings(tuple(float(s) for s in saved["size_mm"]), float(saved["spacing_mm"]))

    @staticmethod
    def asked_size(folder: Path) -> tuple[float, ...] | None:
        """The box (mm) the dataset's first run asked for (before planning rounded it), or None for a new one."""
        file = folder / ROI_SETTINGS_FILE
        if not file.is_file():
            return None
        saved = json.loads(file.read_text())
        return tuple(float(s) for s in saved.get("asked_size_mm", saved["size_mm"]))


ROI_SETTINGS_FILE = "roi_settings.json"  # in stage 2's raw dataset: every part and every resume uses this grid
CPU_ROI_VOXELS = 48 * 48 * 64  # the demo's ROI: what stage 2 trains in its budget on 2 CPU cores


def plan_roi_settings(spacings_mm: Sequence[float], max_voxels: int, stride: int = 16,
                      size_mm: tuple[float, float, float] = RoiSettings.size_mm) -> RoiSettings:
    """The ROI grid for a dataset, as nnU-Net plans a target spacing: the median of the training series' finest
    spacing (mm), coarsened until the box holds at most ``max_voxels`` (stage 2's whole-ROI patch must fit the
    memory budget); each side then rounded up to a whole number of ``stride`` voxels (never less than the box asked
    for, and the spacing coarsened further if that breaks the budget). On the
    demo's 1.31 mm series with the CPU budget this gives its 1.5 mm, 48 x 48 x 64."""
    spacing = max(float(np.median(spacings_mm)), float(np.prod(size_mm) / max_voxels) ** (1 / 3))
    whole = lambda sp: [max(stride, int(np.ceil(s / sp / stride - 1e-6)) * stride) for s in size_mm]  # noqa: E731
    shape = whole(spacing)
    while np.prod(shape) > max_voxels and max(shape) > stride:  # rounding up may overshoot the budget
        spacing *= 1.05
        shape = whole(spacing)
    spacing = round(spacing, 4)
    return RoiSettings(tuple(float(n * spacing) for n in shape), spacing)


@dataclass(frozen=True)
class Roi:
    geometry: Geometry  # of the ROI grid: LPS-aligned, isotropic
    shape: tuple[int, int, int]
    centre_mm: tuple[float, float, float]  # patient coordinates (LPS)
    fallback: bool  # True: no vessel found, centred on the scan

    def as_row(self) -> dict:
        """A table row that :func:`roi_from_row` turns back into this ROI."""
        return {"centre_x_mm": self.centre_mm[0], "centre_y_mm": self.centre_mm[1], "centre_z_mm": self.centre_mm[2],
                "shape": "x".join(map(str, self.shape)), "spacing_mm": self.geometry.spacing[0],
                "fallback": self.fallback}


def roi_geometry(centre_mm, shape: tuple[int, int, int], spacing_mm: float) -> Geometry:
    """An LPS-aligned grid of ``shape`` ([z, y, x] voxels) centred on ``centre_mm``."""
    extent = (np.array(shape[::-1], float) - 1) * spacing_mm  # along x, y, z
    origin = np.asarray(centre_mm, float) - extent / 2
    return Geometry(origin, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (spacing_mm,) * 3)


def roi_from_row(row) -> Roi:
    shape = tuple(int(v) for v in str(row["shape"]).split("x"))
    centre = (float(row["centre_x_mm"]), float(row["centre_y_mm"]), float(row["centre_z_mm"]))
    return Roi(roi_geometry(centre, shape, float(row["spacing_mm"])), shape, centre, bool(row["fallback"]))


def grid_centre(grid: Geometry, shape) -> np.ndarray:
    """Patient coordinates (mm) of the centre of an array of ``shape`` on ``grid``."""
    return grid.voxel_to_patient((np.array(shape, float)[None] - 1) / 2)[0]


def find_roi(vessel_probability: np.ndarray, grid: Geometry, settings: RoiSettings = RoiSettings(),
             fallback_centre_mm=None) -> Roi:
    """The ROI of a scan from stage 1's vessel probability ([k, j, i] on ``grid``: stage 1's own grid or the
    scan's); without a vessel, centred on ``fallback_centre_mm`` (default: the centre of ``grid``)."""
    index = np.argwhere(vessel_probability >= settings.vessel_threshold)
    fallback = len(index) == 0
    if fallback:
        centre = grid_centre(grid, vessel_probability.shape) if fallback_centre_mm is None \
            else np.asarray(fallback_centre_mm, float)
    else:
        points = grid.voxel_to_patient(index.astype(float))
        centre = (np.percentile(points, 1, axis=0) + np.percentile(points, 99, axis=0)) / 2
    return Roi(roi_geometry(centre, settings.shape, settings.spacing_mm), settings.shape, tuple(map(float, centre)),
               fallback)


def covering_crop(shape, grid: Geometry, target: Geometry, target_shape, margin: int = 2
                  ) -> tuple[tuple[slice, ...], Geometry] | None:
    """The part of an array of ``shape`` on ``grid`` that an interpolation onto ``target`` reads (its index box
    around the target's corners, ``margin`` voxels wider), and that part's grid; None if they do not meet."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in target_shape], indexing="ij")).reshape(3, -1).T
    index = grid.patient_to_voxel(target.voxel_to_patient(corners.astype(float)))
    lo = np.maximum(np.floor(index.min(0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(index.max(0)).astype(int) + margin + 1, shape)
    if np.any(hi <= lo):
        return None
    origin = grid.voxel_to_patient(lo[None].astype(float))[0]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), Geometry(origin, grid.row_dir, grid.col_dir, grid.spacing)


def resample_to_roi(array: np.ndarray, scan: Geometry, roi: Roi, labels: bool = False,
                    outside: float = 0.0) -> np.ndarray:
    """A scan-grid array ([k, j, i]) sampled on the ROI grid: linear, or nearest for ``labels``. Only the part of
    the scan around the ROI is handed to SimpleITK (which copies what it is given: a whole clinical scan would
    cost another 4 bytes per voxel)."""
    reference = to_sitk(np.zeros(roi.shape, np.float32), roi.geometry)
    crop = covering_crop(array.shape, scan, roi.geometry, roi.shape)
    if crop is None:
        return np.full(roi.shape, outside, np.uint8 if labels else np.float32)
    image = to_sitk(np.ascontiguousarray(array[crop[0]], dtype=np.float32), crop[1])
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), interpolator, outside))
    return out.astype(np.uint8) if labels else out.astype(np.float32)


def resample_to_scan(array: np.ndarray, roi: Roi, scan: Geometry, scan_shape: tuple[int, int, int],
                     labels: bool = False) -> np.ndarray:
    """An ROI-grid array sampled back on the scan's grid (zero outside the ROI)."""
    reference = to_sitk(np.zeros(scan_shape, np.float32), scan)
    image = to_sitk(np.ascontiguousarray(array, dtype=np.float32), roi.geometry)
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0))
    return out.astype(np.uint8) if labels else out.astype(np.float32)
