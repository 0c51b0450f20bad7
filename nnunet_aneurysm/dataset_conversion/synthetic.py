"""Synthetic data in exactly the RSNA 2025 competition layout (shared/docs/rsna-data.md).

    <root>/train.csv, train_localizers.csv
    <root>/series/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   (or one multi-frame file)
    <root>/segmentations/<SeriesInstanceUID>.nii, <SeriesInstanceUID>_cowseg.nii

Each series renders the phantom of ``phantom.py`` inside a head (brain, CSF cistern, skull,
scalp) with one of the four modalities' contrasts, in a random rigid orientation (axial,
coronal, sagittal, oblique), with anisotropic spacing, partial volume, a smooth bias field and
noise. The field of view is ``fov_mm`` across: the default 84 mm frames the Circle of Willis (fast,
for demos and tests); a head-sized one (CTA is typically 200-230 mm) puts the arteries in a small
central part of the scan, with skull and soft tissue around, as stage 1's region of interest
expects on real data. Everything is reproducible from the seed.
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid
from tqdm import tqdm

from nnunet_aneurysm.dataset_conversion.dicom_writer import SeriesInfo, write_multiframe, write_single_frame_series
from nnunet_aneurysm.dataset_conversion.phantom import Phantom, add_aneurysms, render, vessel_tree
from nnunet_aneurysm.geometry import Geometry, write_nifti
from nnunet_aneurysm.labels import (
    BY_CLASS_ID,
    CLASS_TO_COWSEG,
    ID_COLUMN,
    LOCALIZER_COLUMNS,
    LOCATION_COLUMNS,
    MODALITIES,
    PRESENT_COLUMN,
    TRAIN_CSV_COLUMNS,
)

MODALITY_WEIGHTS = (0.42, 0.29, 0.22, 0.07)  # CTA, MRA, MRI T2, MRI T1post (competition mix)
FOV_MM = 84.0  # default field of view: the Circle of Willis and a margin
HEAD_FOV_MM = 220.0  # a whole head, as clinical CTA frames it
COW_CENTRE = np.array([0.0, 4.0, -5.0])  # centre of the arterial phantom's region, LPS mm
HEAD_CENTRE = np.array([0.0, 10.0, 20.0])  # centre of the head ellipsoid (the brain sits above the skull base)
BRAIN_RADII = np.array([68.0, 85.0, 72.0])  # L-R, A-P, S-I semi-axes of the brain, mm
SKULL_MM, SCALP_MM = 7.0, 6.0  # thicknesses outside the brain
# Per modality: air, scalp (soft tissue), skull, brain, CSF, vessel (HU for CTA, arbitrary MR signal), noise sd.
CONTRAST = {
    "CTA": dict(air=-1000, soft=40, skull=1200, brain=35, csf=8, vessel=400, noise=12, bias=0.0),
    "MRA": dict(air=5, soft=150, skull=20, brain=120, csf=60, vessel=700, noise=10, bias=0.25),
    "MRI T2": dict(air=5, soft=250, skull=30, brain=350, csf=900, vessel=40, noise=15, bias=0.2),
    "MRI T1post": dict(air=5, soft=500, skull=60, brain=450, csf=150, vessel=800, noise=15, bias=0.2),
}


@dataclass
class SeriesTruth:
    """What the generator knows and the competition files only imply (for tests)."""

    series_uid: str
    modality: str
    geometry: Geometry
    shape: tuple[int, int, int]
    orientation: str
    multiframe: bool
    aneurysms: list  # phantom.Aneurysm, centres in patient mm


ORIENTATIONS = ("axial", "coronal", "sagittal", "oblique")
# What scanners write in SeriesDescription, per modality (the competition's test series carry no Modality column)
SERIES_DESCRIPTIONS = {"CTA": ("CTA HEAD", "CT ANGIO COW", "Angio Head 0.6"),
                       "MRA": ("TOF 3D multi-slab", "MRA COW TOF"),
                       "MRI T2": ("T2 TSE AX", "t2_tse_tra"),
                       "MRI T1post": ("T1 MPRAGE POST", "t1_vibe_post_gd")}


def _orientation(rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    kind = kind or rng.choice(ORIENTATIONS, p=[0.4, 0.2, 0.2, 0.2])
    base = {"axial": ((1, 0, 0), (0, 1, 0)), "coronal": ((1, 0, 0), (0, 0, -1)),
            "sagittal": ((0, 1, 0), (0, 0, -1))}
    row, col = (np.array(v, float) for v in base["axial" if kind == "oblique" else kind])
    if kind == "oblique":
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        rot = sitk.VersorTransform(tuple(axis), float(np.deg2rad(rng.uniform(10, 25)))).GetMatrix()
        rot = np.array(rot).reshape(3, 3)
        row, col = rot @ row, rot @ col
    return row, col, str(kind)


def _spacing(modality: str, size: int, fov_mm: float, rng: np.random.Generator) -> tuple[float, float, float]:
    inplane = fov_mm / size
    slice_mm = {"CTA": inplane * rng.uniform(1.0, 1.5), "MRA": inplane * rng.uniform(1.0, 1.4),
                "MRI T2": rng.uniform(3.0, 5.0), "MRI T1post": inplane * rng.uniform(1.0, 1.2)}[modality]
    return float(slice_mm), inplane, inplane


def _tissue(points: np.ndarray, c: dict) -> np.ndarray:
    """Brain, skull, scalp and air of an ellipsoidal head; a CSF cistern around the arteries."""
    rel = points - HEAD_CENTRE
    r = np.linalg.norm(rel / BRAIN_RADII, axis=1)  # 1 on the brain's surface
    depth = (r - 1) * np.linalg.norm(rel, axis=1) / np.maximum(r, 1e-6)  # about mm outside the brain
    value = np.select([r < 1, depth < SKULL_MM, depth < SKULL_MM + SCALP_MM],
                      [c["brain"], c["skull"], c["soft"]], c["air"]).astype(np.float32)
    cistern = np.linalg.norm((points - np.array([0.0, 5.0, -6.0])) / np.array([22.0, 16.0, 9.0]), axis=1) < 1
    value[cistern] = c["csf"]
    return value


RENDER_CHUNK_VOXELS = 2_000_000  # voxels rendered at once: memory stays ~0.2 GB at any series size


def render_series(phantom: Phantom, modality: str, geometry: Geometry, shape: tuple[int, int, int],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image (modality units, float32) and vessel class-id labels, both [slices, rows, cols]; rendered a
    slab of slices at a time (a 512 x 512 x 600 series would need ~15 GB of coordinates at once)."""
    c = CONTRAST[modality]
    inplane = geometry.spacing[2]
    # thick slices: average sub-slices so partial volume along the slice axis is right
    n_sub = max(1, int(np.ceil(geometry.spacing[0] / inplane)))
    offsets = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    image, labels = np.empty(shape, np.float32), np.empty(shape, np.uint8)
    plane = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape[1:]], indexing="ij"), -1).reshape(-1, 2)
    per_slab = max(1, RENDER_CHUNK_VOXELS // len(plane))
    for k0 in range(0, shape[0], per_slab):
        ks = np.arange(k0, min(k0 + per_slab, shape[0]), dtype=float)
        grid = np.concatenate([np.repeat(ks, len(plane))[:, None], np.tile(plane, (len(ks), 1))], axis=1)
        slab = np.zeros(len(grid), np.float32)
        for off in offsets:
            points = geometry.voxel_to_patient(grid + np.array([off, 0.0, 0.0]))
            vessel, label, sac = render(phantom, points, inplane)
            occ = np.maximum(vessel, sac)
            slab += _tissue(points, c) * (1 - occ) + c["vessel"] * occ
            if abs(off) < 0.5 / n_sub + 1e-9:
                labels[k0:k0 + len(ks)] = label.reshape(len(ks), *shape[1:])
        slab /= n_sub
        image[k0:k0 + len(ks)] = slab.reshape(len(ks), *shape[1:])
    if c["bias"]:
        z, y, x = (np.linspace(-1, 1, s) for s in shape)
        coeffs = rng.normal(0, c["bias"] / 2, 3)
        field = 1 + coeffs[0] * z[:, None, None] + coeffs[1] * y[None, :, None] + coeffs[2] * x[None, None, :]
        image *= field.astype(np.float32)
    image += rng.normal(0, c["noise"], shape).astype(np.float32)
    return image, labels


def _stored(image: np.ndarray, modality: str, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Stored uint16 values with (slope, intercept) so that slope * stored + intercept = image."""
    slope, intercept = (1.0, -1024.0) if modality == "CTA" else (float(rng.choice([1.0, 0.5, 2.0])), 0.0)
    stored = np.clip(np.round((image - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def _localizer(an, geometry: Geometry, shape, sop_uids, frame_of_slice) -> tuple[str, str] | None:
    """(SOPInstanceUID, coordinates string) of the slice nearest to the aneurysm centre."""
    rel = an.centre - geometry.origin
    k = int(round(rel @ geometry.normal / geometry.spacing[0]))
    if not 0 <= k < shape[0]:
        return None
    on_slice = an.centre - geometry.slice_position(k)
    x, y = on_slice @ geometry.row_dir / geometry.spacing[2], on_slice @ geometry.col_dir / geometry.spacing[1]
    if not (0 <= x <= shape[2] - 1 and 0 <= y <= shape[1] - 1):
        return None
    if frame_of_slice is None:
        return sop_uids[k], f"{{'x': {x:.2f}, 'y': {y:.2f}}}"
    return sop_uids[0], f"{{'x': {x:.2f}, 'y': {y:.2f}, 'f': {int(frame_of_slice[k])}}}"


def make_series(root: Path, index: int, seed: int, size: int, segmentation_fraction: float,
                multiframe_fraction: float, modality: str | None = None, orientation: str | None = None,
                multiframe: bool | None = None, n_aneurysms: int | None = None, fov_mm: float = FOV_MM,
                slices: int | None = None) -> tuple[dict, list[dict], SeriesTruth]:
    """Write one series (and maybe its segmentations); return its train.csv row, localizer rows, truth.

    ``modality``, ``orientation``, ``multiframe`` and ``n_aneurysms`` force a choice that is
    otherwise random; ``slices`` fixes the number of slices (default: the field of view's worth).
    """
    rng = np.random.default_rng([seed, index])
    series_uid = generate_uid(entropy_srcs=["series", str(seed), str(index)])
    modality = modality or str(rng.choice(MODALITIES, p=MODALITY_WEIGHTS))
    phantom = Phantom(vessel_tree(rng))
    drawn = 0 if rng.random() > 0.4 else int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05]))
    n_aneurysms = drawn if n_aneurysms is None else n_aneurysms
    add_aneurysms(phantom, n_aneurysms, rng)
    row_dir, col_dir, orientation = _orientation(rng, orientation)
    spacing = _spacing(modality, size, fov_mm, rng)
    shape = (slices or max(8, int(round(fov_mm / spacing[0]))), size, size)
    normal = np.cross(row_dir, col_dir)
    framed = COW_CENTRE if fov_mm < 150 else HEAD_CENTRE  # a small field of view frames the arteries
    centre = framed + rng.normal(0, 2.0, 3)
    origin = (centre - (shape[2] - 1) / 2 * spacing[2] * row_dir - (shape[1] - 1) / 2 * spacing[1] * col_dir
              - (shape[0] - 1) / 2 * spacing[0] * normal)
    geometry = Geometry(origin, row_dir, col_dir, spacing)
    image, vessel_labels = render_series(phantom, modality, geometry, shape, rng)
    stored, slope, intercept = _stored(image, modality, rng)
    info = SeriesInfo(series_uid, generate_uid(entropy_srcs=["study", str(seed), str(index)]),
                      "CT" if modality == "CTA" else "MR", int(rng.integers(25, 90)), str(rng.choice(["F", "M"])),
                      slope, intercept, generate_uid(entropy_srcs=["frame", str(seed), str(index)]),
                      str(rng.choice(SERIES_DESCRIPTIONS[modality])))
    folder = root / "series" / series_uid
    draw = rng.random()
    multiframe = draw < multiframe_fraction if multiframe is None else multiframe
    if multiframe:
        sop, frame_of_slice = write_multiframe(folder, stored, geometry, info, rng)
        sop_uids = [sop]
    else:
        sop_uids, frame_of_slice = write_single_frame_series(folder, stored, geometry, info, rng), None
    localizers, kept = [], []
    for an in phantom.aneurysms:
        loc = _localizer(an, geometry, shape, sop_uids, frame_of_slice)
        if loc is not None:  # an aneurysm outside the field of view is not in the labels either
            kept.append(an)
            localizers.append(dict(zip(LOCALIZER_COLUMNS, (series_uid, loc[0], loc[1], BY_CLASS_ID[an.class_id].name))))
    if rng.random() < segmentation_fraction:
        seg = root / "segmentations"
        seg.mkdir(parents=True, exist_ok=True)
        write_nifti((stored.astype(np.float32) * slope + intercept).astype(np.float32), geometry,
                     seg / f"{series_uid}.nii")
        write_nifti(CLASS_TO_COWSEG[vessel_labels], geometry, seg / f"{series_uid}_cowseg.nii")
    present = {an.class_id for an in kept}
    row = {ID_COLUMN: series_uid, "PatientAge": info.patient_age,
           "PatientSex": "Female" if info.patient_sex == "F" else "Male", "Modality": modality}
    row.update({name: int(i + 1 in present) for i, name in enumerate(LOCATION_COLUMNS)})
    row[PRESENT_COLUMN] = int(bool(present))
    truth = SeriesTruth(series_uid, modality, geometry, shape, orientation, multiframe, kept)
    return row, localizers, truth


def generate(root: Path | str, n_series: int = 40, seed: int = 0, size: int = 96,
             segmentation_fraction: float = 0.5, multiframe_fraction: float = 0.1,
             workers: int = 1, progress: bool = True, forced: list[dict] | None = None,
             fov_mm: float = FOV_MM, slices: int | None = None) -> list[SeriesTruth]:
    """Write a competition-layout folder; returns the hidden truth of every series.

    ``forced[i]`` (optional) fixes ``modality``/``orientation``/``multiframe``/``n_aneurysms`` of series i.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    forced = forced or [{}] * n_series
    args = [(root, i, seed, size, segmentation_fraction, multiframe_fraction, forced[i].get("modality"),
             forced[i].get("orientation"), forced[i].get("multiframe"), forced[i].get("n_aneurysms"), fov_mm,
             forced[i].get("slices", slices))
            for i in range(n_series)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(make_series, *zip(*args)), total=n_series, disable=not progress,
                                desc="synthetic series"))
    else:
        results = [make_series(*a) for a in tqdm(args, disable=not progress, desc="synthetic series")]
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TRAIN_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(r[0] for r in results)
    with open(root / "train_localizers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOCALIZER_COLUMNS)
        writer.writeheader()
        writer.writerows(loc for r in results for loc in r[1])
    return [r[2] for r in results]
