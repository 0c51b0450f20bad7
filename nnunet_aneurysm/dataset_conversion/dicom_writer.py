"""Write a volume as real DICOM: one file per slice, or one enhanced multi-frame file.

``ImageOrientationPatient`` is ``row_dir + col_dir`` and ``PixelSpacing`` is
``[row_spacing, col_spacing]``, as DICOM defines (see ``geometry.py`` for the voxel grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from nnunet_aneurysm.geometry import Geometry

CT_IMAGE, MR_IMAGE = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT, ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"


@dataclass
class SeriesInfo:
    series_uid: str
    study_uid: str
    modality: str  # DICOM Modality tag: CT or MR
    patient_age: int
    patient_sex: str  # F or M
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    frame_of_reference_uid: str = ""
    series_description: str = ""


def _common(info: SeriesInfo, sop_class: str, sop_uid: str, shape: tuple[int, int]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = info.study_uid, info.series_uid
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PatientID = "SYNTH-" + info.series_uid[-8:]
    ds.PatientAge, ds.PatientSex = f"{info.patient_age:03d}Y", info.patient_sex
    ds.Modality, ds.SeriesNumber = info.modality, 1
    if info.series_description:
        ds.SeriesDescription = info.series_description
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _ds(values) -> list[str]:
    return [f"{float(v):.6f}".rstrip("0").rstrip(".") or "0" for v in values]


def write_single_frame_series(folder: Path, volume: np.ndarray, geometry: Geometry, info: SeriesInfo,
                              rng: np.random.Generator) -> list[str]:
    """One file per slice named ``<SOPInstanceUID>.dcm``; returns the SOP UIDs by slice index.

    InstanceNumber is assigned in a random order, so a reader that sorts by it is caught out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sop_class = CT_IMAGE if info.modality == "CT" else MR_IMAGE
    instance_numbers = rng.permutation(volume.shape[0]) + 1
    uids = []
    for k in range(volume.shape[0]):
        uid = generate_uid()
        ds = _common(info, sop_class, uid, volume.shape[1:])
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = _ds(geometry.slice_position(k))
        ds.ImageOrientationPatient = _ds(np.concatenate([geometry.row_dir, geometry.col_dir]))
        ds.PixelSpacing = _ds(geometry.spacing[1:])
        ds.SliceThickness = _ds([geometry.spacing[0]])[0]
        ds.RescaleSlope, ds.RescaleIntercept = _ds([info.rescale_slope])[0], _ds([info.rescale_intercept])[0]
        ds.PixelData = np.ascontiguousarray(volume[k], dtype=np.uint16).tobytes()
        pydicom.dcmwrite(folder / f"{uid}.dcm", ds, enforce_file_format=True)
        uids.append(uid)
    return uids


def write_multiframe(folder: Path, volume: np.ndarray, geometry: Geometry, info: SeriesInfo,
                     rng: np.random.Generator, shuffle_frames: bool = True) -> tuple[str, np.ndarray]:
    """One enhanced multi-frame file; frames may be stored out of spatial order.

    Returns the SOP UID and ``frame_of_slice[k]``: the 0-based stored frame index of slice k.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = volume.shape[0]
    order = rng.permutation(n) if shuffle_frames else np.arange(n)  # order[f] = slice stored as frame f
    uid = generate_uid()
    ds = _common(info, ENHANCED_CT if info.modality == "CT" else ENHANCED_MR, uid, volume.shape[1:])
    ds.InstanceNumber, ds.NumberOfFrames = 1, n
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = _ds(np.concatenate([geometry.row_dir, geometry.col_dir]))
    measures.PixelSpacing = _ds(geometry.spacing[1:])
    measures.SliceThickness = _ds([geometry.spacing[0]])[0]
    transform.RescaleSlope = _ds([info.rescale_slope])[0]
    transform.RescaleIntercept = _ds([info.rescale_intercept])[0]
    transform.RescaleType = "HU" if info.modality == "CT" else "US"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = _ds(geometry.slice_position(int(k)))
        content.InStackPositionNumber = int(k) + 1
        content.StackID = "1"
        content.DimensionIndexValues = [1, int(k) + 1]
        item.PlanePositionSequence = Sequence([position])
        item.FrameContentSequence = Sequence([content])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(volume[order], dtype=np.uint16).tobytes()
    pydicom.dcmwrite(folder / f"{uid}.dcm", ds, enforce_file_format=True)
    frame_of_slice = np.empty(n, dtype=int)
    frame_of_slice[order] = np.arange(n)
    return uid, frame_of_slice
