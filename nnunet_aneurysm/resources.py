"""Parallel workers sized from the memory this machine has free, so that no step is killed for memory.

Each heavy step states what one worker needs per scan voxel (measured by ``benchmarks/clinical_steps.py``
on 512 x 512 x 400 generated CTAs, with a margin) plus a fixed cost per process (Python, torch, nnU-Net).
"""

from __future__ import annotations

from pathlib import Path

import psutil

PROCESS_BYTES = 0.6e9  # an interpreter with numpy, SimpleITK, pydicom (and torch) imported
USABLE_SHARE = 0.8  # of the available memory: the rest is left to the system and the page cache


def free_bytes() -> int:
    return int(psutil.virtual_memory().available)


def workers_for_memory(requested: int, bytes_per_worker: float, available: int | None = None) -> tuple[int, str]:
    """How many of ``requested`` workers fit, each needing ``bytes_per_worker``; at least one (which may then be
    the machine's limit), and a one-line reason when fewer than asked."""
    available = free_bytes() if available is None else available
    fit = int(USABLE_SHARE * available // max(bytes_per_worker, 1.0))
    workers = max(1, min(requested, fit))
    if workers >= requested:
        return workers, ""
    return workers, (f"{workers} worker(s) instead of {requested}: each needs about {bytes_per_worker / 1e9:.1f} GB "
                     f"for the largest series and {available / 1e9:.1f} GB are free")


def largest_series_voxels(folders: list[Path]) -> int:
    """The voxels of the largest DICOM series among ``folders``, from one header per folder (Rows x Columns x
    frames, times the number of files): file sizes would understate a compressed series."""
    import pydicom
    from pydicom.misc import is_dicom

    largest = 0
    for folder in folders:
        try:
            files = sorted(e for e in Path(folder).iterdir() if e.is_file())
        except OSError:
            continue
        dicom = [f for f in files if is_dicom(f)]
        for file in dicom[:3]:  # the first readable header with a matrix (DICOMDIR and the like have none)
            try:
                header = pydicom.dcmread(file, stop_before_pixels=True,
                                         specific_tags=["Rows", "Columns", "NumberOfFrames"])
                frames = int(getattr(header, "NumberOfFrames", 1) or 1)
                largest = max(largest, int(header.Rows) * int(header.Columns) * frames * len(dicom))
                break
            except (OSError, AttributeError, ValueError, pydicom.errors.InvalidDicomError):
                continue  # unreadable: the converter itself reports it
    return largest
