"""Damaged DICOM series, made from a good generated one, as the competition's data has them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _by_position(folder: Path) -> list[Path]:
    """Single-frame files sorted along the slice normal."""
    datasets = [(p, pydicom.dcmread(p)) for p in _files(folder)]
    normal = np.cross(*np.array(datasets[0][1].ImageOrientationPatient, float).reshape(2, 3))
    return [p for p, ds in sorted(datasets, key=lambda t: np.dot(np.array(t[1].ImagePositionPatient, float), normal))]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def multiframe_without_geometry(src: Path, dst: Path) -> Path:
    """An enhanced multi-frame file stripped of orientation, pixel spacing and per-frame positions."""
    _copy(src, dst)
    (path,) = _files(dst)
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for name in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        if name in shared:
            delattr(shared, name)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        if "PlanePositionSequence" in frame:
            delattr(frame, "PlanePositionSequence")
    ds.save_as(path, enforce_file_format=True)
    return dst


def with_scout_and_mip(src: Path, dst: Path) -> Path:
    """Slices of other sizes mixed in: a scout and a maximum-intensity projection."""
    _copy(src, dst)
    for size, kind in ((32, "LOCALIZER"), (40, "MIP")):
        ds = pydicom.dcmread(_files(dst)[0])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Rows = ds.Columns = size
        ds.ImageType = ["DERIVED", "SECONDARY", kind] if kind == "MIP" else ["ORIGINAL", "PRIMARY", kind]
        ds.PixelData = np.zeros((size, size), np.uint16).tobytes()
        ds.save_as(dst / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return dst


def all_at_one_position(src: Path, dst: Path) -> Path:
    _copy(src, dst)
    position = pydicom.dcmread(_files(dst)[0]).ImagePositionPatient
    for path in _files(dst):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = position
        ds.save_as(path, enforce_file_format=True)
    return dst


def duplicated_slices(src: Path, dst: Path, every: int = 4) -> Path:
    _copy(src, dst)
    for path in _files(dst)[::every]:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(dst / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return dst


def missing_slice(src: Path, dst: Path) -> Path:
    """Uneven spacing: one slice in the middle of the stack is gone."""
    _copy(src, dst)
    ordered = _by_position(dst)
    ordered[len(ordered) // 2].unlink()
    return dst


def four_dimensional(src: Path, dst: Path) -> Path:
    """A second phase at the same positions, brighter (a 4-D series stored as one)."""
    _copy(src, dst)
    for path in _files(dst):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.TemporalPositionIdentifier = 2
        pixels = ds.pixel_array.astype(np.uint32) + 50
        ds.PixelData = np.clip(pixels, 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(dst / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return dst


def no_readable_image(dst: Path) -> Path:
    dst.mkdir(parents=True)
    (dst / "notes.txt").write_text("not DICOM")
    (dst / "truncated.dcm").write_bytes(b"DICM" + bytes(40))
    return dst


def no_vessel(src: Path, dst: Path) -> Path:
    """A readable series of flat noise: stage 1 finds no vessel in it."""
    _copy(src, dst)
    rng = np.random.default_rng(0)
    for path in _files(dst):
        ds = pydicom.dcmread(path)
        ds.PixelData = rng.integers(1000, 1010, (ds.Rows, ds.Columns), dtype=np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
    return dst
