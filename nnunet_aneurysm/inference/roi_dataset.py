"""Stage 1 -> stage 2: the aneurysm dataset cropped to each case's vessel region of interest.

Like nnU-Net's cascade, training cases get *out-of-fold* stage-1 predictions (``out_of_fold.py``).
Each case becomes, on its ROI grid (``roi.py``: fixed physical box, patient-aligned, isotropic):

* ``_0000`` the image (linear resampling), ``_0001`` stage 1's vessel probability,
  ``_0002`` stage 1's artery labels (its class probabilities resampled linearly from stage 1's own grid
  onto the ROI, then the argmax inside the vessel mask: label ids are never interpolated);
* the label: a ball around every localizer point (``localizers.csv``), drawn on the ROI grid.

First, stage 1's vessel threshold (its union mask: the ROI's placement and the artery labels) is
chosen out-of-fold on training cases with vessel labels (``vessel_threshold.py``) and written to
``vessel_operating_point.json``; ``pipeline init`` carries it into the pipeline file.

Beside it: ``roi.csv`` (each case's ROI centre in patient mm, shape, spacing, whether the
no-vessel fallback was used, whether its stage-1 input was out-of-fold), the aneurysm dataset's
``metadata.csv``, ``splits_final.json`` and ``localizers.csv``. Resumable: a case whose label
file exists is done (the label is written last); its ROI row lives in ``rois/<case>.json``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm import tqdm

from nnunet_aneurysm.dataset_conversion.convert import LOCALIZERS_FILE, SPHERE_RADIUS_MM, read_localizers
from nnunet_aneurysm.dataset_conversion.localizers import draw_spheres
from nnunet_aneurysm.geometry import Geometry, geometry_of, read_geometry, write_nifti
from nnunet_aneurysm.inference.out_of_fold import fold_groups
from nnunet_aneurysm.inference.stage1 import Stage1Model, VesselPrediction
from nnunet_aneurysm.inference.stage2_settings import settings_entry
from nnunet_aneurysm.inference.vessel_threshold import OperatingPoint, VesselCounts
from nnunet_aneurysm.metadata import MetadataTable
from nnunet_aneurysm.nnunet_env import trained_folds
from nnunet_aneurysm.parts import part_of, write_whole
from nnunet_aneurysm.roi import Roi, RoiSettings, find_roi, grid_centre, resample_to_roi
from nnunet_aneurysm.stages import (
    ARTERY_CHANNEL,
    FILE_ENDING,
    ROI_FILE,
    VESSEL_CHANNEL,
    channel_file,
    stage2_dataset_json_entries,
)

THRESHOLD_CASES_PER_FOLD = 8  # millions of voxels: plenty for one threshold; each costs one more stage-1 run


def roi_channels(image: np.ndarray, scan, vessels: VesselPrediction, settings: RoiSettings
                 ) -> tuple[Roi, list[np.ndarray]]:
    """The ROI of a scan and stage 2's input channels on it, in ``STAGE2_CHANNELS`` order: the image from the
    scan's grid, stage 1's channels from stage 1's own grid (never the scan's: ``stage1.py``)."""
    roi = find_roi(vessels.vessel_probability, vessels.geometry, settings, grid_centre(scan, image.shape))
    channels = [np.zeros(0)] * 3
    channels[0] = resample_to_roi(image, scan, roi)
    channels[VESSEL_CHANNEL], channels[ARTERY_CHANNEL] = vessels.on_grid(roi.geometry, roi.shape,
                                                                         settings.vessel_threshold)
    return roi, channels


def read_scan(path: Path) -> tuple[np.ndarray, Geometry]:
    """A raw image as float32 [k, j, i] and its grid; SimpleITK's copy is let go before anything runs on it (held
    alongside, it doubled the 4 bytes a voxel of a clinical scan)."""
    image = sitk.ReadImage(str(path))
    scan = geometry_of(image)
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False), scan


def training_spacings(dataset: Path) -> list[float]:
    """The finest voxel spacing (mm) of each training image of a raw dataset, from the file headers alone."""
    files = sorted((dataset / "imagesTr").glob(f"*_0000{FILE_ENDING}"))
    if not files:
        raise FileNotFoundError(f"no training images in {dataset / 'imagesTr'}: cannot plan the ROI's spacing "
                                f"(pass --spacing-mm)")
    return [min(read_geometry(f).spacing) for f in files]


def _points(localizers: pd.DataFrame, case: str) -> tuple[list[np.ndarray], list[int]]:
    rows = localizers[localizers["case_id"] == case]
    return [np.array([r.x_mm, r.y_mm, r.z_mm]) for r in rows.itertuples()], rows["class_id"].astype(int).tolist()


def write_roi_case(dst: Path, case: str, image: np.ndarray, scan, vessels: VesselPrediction, settings: RoiSettings,
                   localizers: pd.DataFrame, sphere_radius_mm: float, out_of_fold: bool) -> Roi:
    """One case of the ROI dataset: its channels, its ROI row, then (last, marking completion) its label."""
    roi, channels = roi_channels(image, scan, vessels, settings)
    for index, channel in enumerate(channels):
        write_nifti(channel, roi.geometry, dst / "imagesTr" / channel_file(case, index))
    row = {"case_id": case, **roi.as_row(), "out_of_fold": out_of_fold}
    write_whole(dst / "rois" / f"{case}.json", json.dumps(row))
    centres, values = _points(localizers, case)
    label = draw_spheres(roi.shape, roi.geometry, centres, values, sphere_radius_mm)
    write_nifti(label, roi.geometry, dst / "labelsTr" / f"{case}{FILE_ENDING}")
    return roi


def finish_roi_dataset(src: Path, dst: Path, cases, settings: RoiSettings) -> None:
    """roi.csv, dataset.json (channels named; the ROI ``settings`` and training prevalence that travel with the
    trained model to ``pipeline init``: ``stage2_settings.py``), and the source's metadata, splits and localizers."""
    rows = [json.loads((dst / "rois" / f"{c}.json").read_text()) for c in cases]
    write_whole(dst / ROI_FILE, pd.DataFrame(rows).to_csv(index=False))
    dataset_json = json.loads((src / "dataset.json").read_text())
    dataset_json.update(stage2_dataset_json_entries())
    dataset_json.update(settings_entry(settings, pd.read_csv(src / "metadata.csv")))
    dataset_json["numTraining"] = len(rows)
    write_whole(dst / "dataset.json", json.dumps(dataset_json, indent=2))
    for name in ("metadata.csv", "splits_final.json", LOCALIZERS_FILE):
        if (src / name).is_file():
            write_whole(dst / name, (src / name).read_bytes())


def choose_operating_point(src: Path, vessel_labels: Path, stage1_dir: Path, groups, vectors: MetadataTable,
                           device: str, cases_per_group: int = THRESHOLD_CASES_PER_FOLD,
                           progress: bool = True) -> OperatingPoint:
    """Stage 1's recall-first vessel threshold from out-of-fold predictions of up to ``cases_per_group``
    training cases with vessel labels per fold group (``vessel_threshold.py``)."""
    counts = VesselCounts.empty()
    chosen = [(g, [c for c in g.cases if (vessel_labels / f"{c}{FILE_ENDING}").is_file()][:cases_per_group])
              for g in groups if g.out_of_fold]
    bar = tqdm(total=sum(len(c) for _, c in chosen), disable=not progress, desc="stage 1 operating point",
               unit="case")
    for group, cases in chosen:
        if not cases:
            continue
        model = Stage1Model(stage1_dir, group.folds, torch.device(device))
        for case in cases:
            image, scan = read_scan(src / "imagesTr" / channel_file(case, 0))
            vessels = model.predict(image, scan, vectors.lookup([case])[0])
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(vessel_labels / f"{case}{FILE_ENDING}"))) > 0
            counts.add(vessels.vessel_probability_on(scan, image.shape), truth)
            bar.update()
    bar.close()
    if counts.scans == 0:
        raise FileNotFoundError(f"no out-of-fold training case with vessel labels in {vessel_labels}: cannot "
                                f"choose stage 1's vessel threshold (pass --vessel-threshold)")
    return OperatingPoint.from_counts(counts)


def build_roi_dataset(raw: Path, aneurysms_dataset: str, output_dataset: str, stage1_dir: Path,
                      device: str = "cpu", settings: RoiSettings = RoiSettings(),
                      sphere_radius_mm: float = SPHERE_RADIUS_MM, progress: bool = True,
                      choose_threshold: bool = True, num_parts: int = 1, part_id: int = 0,
                      operating_point_only: bool = False, asked_size_mm=None) -> Path | None:
    """Write ``output_dataset`` under ``raw``; returns its folder, or None while other parts still have cases
    to write. ``choose_threshold``: stage 1's vessel threshold is chosen out-of-fold (on the vessel dataset of
    ``stage1_dir``, written to ``vessel_operating_point.json``) instead of ``settings.vessel_threshold``.
    ``num_parts``/``part_id``: this job writes cases part_id, part_id + num_parts, ... (``parts.py``); the
    operating point must be chosen before (``operating_point_only``), and the last part to finish completes
    the dataset (roi.csv, dataset.json). The ROI grid is saved in ``roi_settings.json`` before the first case
    (``RoiSettings.claim``); a dataset that has one keeps it (``asked_size_mm``: the box asked for)."""
    src, dst = raw / aneurysms_dataset, raw / output_dataset
    metadata = pd.read_csv(src / "metadata.csv", dtype={"case_id": str})
    localizers = read_localizers(src)
    trained = trained_folds(stage1_dir)
    if not trained:
        raise FileNotFoundError(f"no fold_*/checkpoint_final.pth under {stage1_dir}: train stage 1 first")
    groups = fold_groups(dict(zip(metadata["case_id"], metadata["fold"])), trained)
    for group in groups:
        if not group.out_of_fold:
            print(f"{len(group.cases)} cases are in folds without a stage-1 model: they get the ensemble of folds "
                  f"{list(group.folds)} (not out-of-fold for cases that stage 1 trained on)")
    for sub in ("imagesTr", "labelsTr", "rois"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    vectors = MetadataTable.read(src / "metadata.csv")
    if choose_threshold:
        point = OperatingPoint.read(dst)
        if point is None and num_parts > 1 and not operating_point_only:
            raise FileNotFoundError(f"no {dst / 'vessel_operating_point.json'}: with -num_parts, choose stage 1's "
                                    f"operating point once first (roi-dataset ... --operating-point-only) or pass "
                                    f"--vessel-threshold")
        if point is None:
            vessel_labels = raw / stage1_dir.parent.name / "labelsTr"  # results/<vessel dataset>/<model>/
            point = choose_operating_point(src, vessel_labels, stage1_dir, groups,
                                           vectors, device, progress=progress)
            point.save(dst)
        print(f"stage 1 {point.describe()}")
        if point.chosen["dice"] < 0.1:
            print(f"warning: stage 1 barely separates vessels out of fold (Dice {point.chosen['dice']:.3f} at its "
                  f"best threshold): the ROIs are placed almost blind; train stage 1 longer")
        settings = replace(settings, vessel_threshold=point.threshold)
    settings = settings.claim(dst, asked_size_mm)  # the grid every part and resume of this dataset writes
    if operating_point_only:
        return dst
    mine = set(part_of(sorted(metadata["case_id"]), num_parts, part_id))
    bar = tqdm(total=len(mine), disable=not progress, desc="stage 1 -> ROI dataset", unit="case")
    for group in groups:
        cases = [c for c in group.cases if c in mine]
        todo = [c for c in cases if not (dst / "labelsTr" / f"{c}{FILE_ENDING}").is_file()]
        bar.update(len(cases) - len(todo))
        if not todo:
            continue
        model = Stage1Model(stage1_dir, group.folds, torch.device(device))
        for case in todo:
            image, scan = read_scan(src / "imagesTr" / channel_file(case, 0))
            vessels = model.predict(image, scan, vectors.lookup([case])[0])
            write_roi_case(dst, case, image, scan, vessels, settings, localizers, sphere_radius_mm, group.out_of_fold)
            bar.update()
    bar.close()
    if not all((dst / "labelsTr" / f"{c}{FILE_ENDING}").is_file() for c in metadata["case_id"]):
        return None  # another part is still writing its cases; the last one to finish completes the dataset
    finish_roi_dataset(src, dst, metadata["case_id"], settings)
    return dst
