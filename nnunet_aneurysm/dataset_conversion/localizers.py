"""Localizer points (pixel coordinates on one SOP instance/frame) -> patient space -> label spheres."""

from __future__ import annotations

import ast

import numpy as np

from nnunet_aneurysm.dataset_conversion.dicom_reader import SeriesError, Volume
from nnunet_aneurysm.geometry import Geometry


def parse_coordinates(text: str) -> tuple[float, float, int]:
    """``"{'x': 258.36, 'y': 261.36}"`` (frame 0) or with ``'f': 12`` -> (x, y, frame)."""
    try:
        value = ast.literal_eval(text)
        return float(value["x"]), float(value["y"]), int(value.get("f", 0))
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise SeriesError(f"unreadable localizer coordinates {text!r}") from None


def localizer_to_patient(volume: Volume, sop_uid: str, coordinates: str) -> np.ndarray:
    """Patient coordinates (mm, LPS) of a localizer row, from that instance's or frame's geometry."""
    x, y, frame = parse_coordinates(coordinates)
    key = (sop_uid, frame)
    if key not in volume.slices:
        raise SeriesError(f"localizer refers to SOPInstanceUID {sop_uid} frame {frame}, not in the series")
    return volume.slices[key].pixel_to_patient(x, y)


def draw_spheres(shape: tuple[int, int, int], geometry: Geometry, centres: list[np.ndarray],
                 values: list[int], radius_mm: float) -> np.ndarray:
    """uint8 label volume with a ball of ``radius_mm`` (physical, so ellipsoidal in anisotropic voxels)
    around each centre; a later ball overwrites an earlier one where they overlap."""
    labels = np.zeros(shape, np.uint8)
    spacing = np.array(geometry.spacing)
    extent = np.ceil(radius_mm / spacing).astype(int)
    for centre, value in zip(centres, values):
        c = geometry.patient_to_voxel(centre)[0]
        lo = np.maximum(np.floor(c).astype(int) - extent, 0)
        hi = np.minimum(np.ceil(c).astype(int) + extent + 1, shape)
        if np.any(hi <= lo):
            continue  # outside the volume
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        dist2 = sum(((g - ci) * s) ** 2 for g, ci, s in zip(grids, c, spacing))
        box = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        box[dist2 <= radius_mm**2] = value
    return labels
