"""The patient-space grid of a volume, and NIfTI input/output that keeps it exact.

``volume[k, j, i]`` is slice k, row j, column i; voxel (k, j, i) lies at
``origin + i * col_spacing * row_dir + j * row_spacing * col_dir + k * slice_spacing * normal``
(mm, DICOM LPS), with ``normal = row_dir x col_dir``. SimpleITK uses the same LPS convention
and converts to NIfTI's RAS on writing, so an image written here reads back in the same place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

PARTIAL_DIR = ".partial"

@dataclass
class Geometry:
    origin: np.ndarray  # mm, LPS position of voxel (0, 0, 0)
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    spacing: tuple[float, float, float]  # (slice, row, col) spacing in mm

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def slice_position(self, k: int) -> np.ndarray:
        return self.origin + k * self.spacing[0] * self.normal

    def patient_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] patient coordinates (mm) -> [N, 3] continuous (k, j, i) indices."""
        rel = np.atleast_2d(points) - self.origin
        ds, dr, dc = self.spacing
        return np.stack([rel @ self.normal / ds, rel @ self.col_dir / dr, rel @ self.row_dir / dc], axis=1)

    def voxel_to_patient(self, kji: np.ndarray) -> np.ndarray:
        """[N, 3] continuous (k, j, i) indices -> [N, 3] patient coordinates (mm)."""
        ds, dr, dc = self.spacing
        return (self.origin + kji[:, 2:3] * dc * self.row_dir + kji[:, 1:2] * dr * self.col_dir
                + kji[:, 0:1] * ds * self.normal)



def to_sitk(array: np.ndarray, geometry: Geometry, vector: bool = False) -> sitk.Image:
    """``array`` [k, j, i] (``vector``: [k, j, i, components]) as an image on ``geometry``."""
    img = sitk.GetImageFromArray(array, isVector=vector)  # numpy [k, j, i] -> ITK index (i, j, k)
    img.SetSpacing((geometry.spacing[2], geometry.spacing[1], geometry.spacing[0]))
    img.SetOrigin(tuple(float(v) for v in geometry.origin))
    direction = np.stack([geometry.row_dir, geometry.col_dir, geometry.normal], axis=1)
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


def geometry_of(img: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """From an image, or from a reader after ``ReadImageInformation()`` (the header alone)."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    sx, sy, sz = img.GetSpacing()
    return Geometry(np.array(img.GetOrigin()), direction[:, 0], direction[:, 1], (sz, sy, sx))


def read_geometry(path: Path | str) -> Geometry:
    """The grid of an image file without reading its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return geometry_of(reader)


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path | str) -> None:
    """Write atomically: written under ``.partial/`` beside the target, then renamed into place,
    so no reader (nnU-Net included) ever sees half a file."""
    path = Path(path)
    partial = path.parent / PARTIAL_DIR / path.name
    partial.parent.mkdir(exist_ok=True)
    sitk.WriteImage(to_sitk(array, geometry), str(partial), useCompression=path.name.endswith(".gz"),
                    imageIO="NiftiImageIO")
    os.replace(partial, path)
