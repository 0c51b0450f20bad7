"""RSNA competition folder -> two nnU-Net raw datasets over the same case identifiers.

* vessels (series with a ``*_cowseg.nii``): image + 13 artery labels (our class ids), the
  segmentation resampled onto the DICOM grid when the grids differ;
* aneurysms (every series): image + a ball (default radius 4 mm) labelled with the location's
  class id around every localizer point.

Beside each dataset: ``metadata.csv`` (age, sex, modality, labels by case), ``splits_final.json``
(five folds by default, stratified on Aneurysm Present and modality, the same folds in both
datasets), and in the aneurysm dataset ``conversion_report.csv`` (one row per series: ok /
failed + reason, warnings) and ``localizers.csv`` (every localizer point in patient coordinates,
mm, LPS: what later steps need to draw targets on other grids and to score candidates).
Cases are written atomically, so a rerun resumes where an interrupted run stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_aneurysm.dataset_conversion.dicom_reader import SeriesError, read_series
from nnunet_aneurysm.dataset_conversion.localizers import draw_spheres, localizer_to_patient
from nnunet_aneurysm.dataset_conversion.splits import nnunet_splits, stratified_folds
from nnunet_aneurysm.geometry import PARTIAL_DIR, to_sitk, write_nifti
from nnunet_aneurysm.labels import (
    BY_CLASS_ID,
    BY_NAME,
    COWSEG_TO_CLASS,
    ID_COLUMN,
    LOCALIZER_COLUMNS,
    LOCALIZER_POINTS_COLUMNS,
    PRESENT_COLUMN,
    TRAIN_CSV_COLUMNS,
    dataset_labels,
)
from nnunet_aneurysm.resources import PROCESS_BYTES, largest_series_voxels, workers_for_memory
from nnunet_aneurysm.stages import ANEURYSMS_NAME, FILE_ENDING, VESSELS_NAME, channel_file, dataset_name

SPHERE_RADIUS_MM = 4.0  # of the label ball drawn around each localizer point
# peak memory of one series' conversion above its process, per scan voxel (benchmarks/clinical_steps.py: the
# float32 volume, the copies SimpleITK takes to resample the vessel labels and write each image, the labels)
CONVERT_BYTES_PER_VOXEL = 16.0
LOCALIZERS_FILE = "localizers.csv"


class ConversionInputError(ValueError):
    """The competition folder itself is unusable (missing or malformed CSV files)."""


@dataclass(frozen=True)
class Targets:
    vessels: Path  # nnU-Net raw dataset folders
    aneurysms: Path
    sphere_radius_mm: float


def dataset_folders(raw: Path, vessels_id: int, aneurysms_id: int) -> tuple[Path, Path]:
    return raw / dataset_name(vessels_id, VESSELS_NAME), raw / dataset_name(aneurysms_id, ANEURYSMS_NAME)


def read_tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    train_csv, loc_csv = root / "train.csv", root / "train_localizers.csv"
    for path in (train_csv, loc_csv):
        if not path.is_file():
            raise ConversionInputError(f"{path} not found: is {root} an RSNA competition folder?")
    train = pd.read_csv(train_csv, dtype={ID_COLUMN: str})
    missing = [c for c in TRAIN_CSV_COLUMNS if c not in train.columns]
    if missing:
        raise ConversionInputError(f"train.csv lacks columns {missing}")
    localizers = pd.read_csv(loc_csv, dtype=str)
    missing = [c for c in LOCALIZER_COLUMNS if c not in localizers.columns]
    if missing:
        raise ConversionInputError(f"train_localizers.csv lacks columns {missing}")
    return train, localizers


def case_id(series_uid: str) -> str:
    """nnU-Net case identifier of a series: the UID itself (dots are fine for nnU-Net)."""
    return series_uid


def _vessel_labels(root: Path, uid: str, image: sitk.Image, warnings: list[str]) -> np.ndarray | None:
    """The cowseg labels on the DICOM grid as our class ids, or None (with a warning) if unusable."""
    seg_file, img_file = root / "segmentations" / f"{uid}_cowseg.nii", root / "segmentations" / f"{uid}.nii"
    if not seg_file.is_file():
        return None
    seg = sitk.ReadImage(str(seg_file))
    if img_file.is_file():
        drawn_on = sitk.ReadImage(str(img_file))
        if drawn_on.GetSize() != seg.GetSize():
            warnings.append(f"segmentation shape {seg.GetSize()} does not match its image {drawn_on.GetSize()}; "
                            f"vessel labels skipped")
            return None
    values = sitk.GetArrayViewFromImage(seg)
    if values.max() > 13 or values.min() < 0:
        warnings.append(f"cowseg values outside 0..13 ({values.min()}..{values.max()}); vessel labels skipped")
        return None
    resampled = sitk.Resample(sitk.Cast(seg, sitk.sitkUInt8), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    labels = COWSEG_TO_CLASS[sitk.GetArrayFromImage(resampled)]
    seg_volume = float(np.count_nonzero(values)) * float(np.prod(seg.GetSpacing()))
    kept_volume = float(np.count_nonzero(labels)) * float(np.prod(image.GetSpacing()))
    if seg_volume > 0 and kept_volume < 0.5 * seg_volume:
        warnings.append(f"only {kept_volume / seg_volume:.0%} of the vessel segmentation lies inside the DICOM "
                        f"volume; vessel labels skipped")
        return None
    return labels


def convert_series(root: Path, uid: str, localizer_rows: list[dict], targets: Targets, resume: bool) -> dict:
    """Convert one series; never raises: failures come back as a report row."""
    case = case_id(uid)
    outputs = {name: (folder / "imagesTr" / channel_file(case, 0), folder / "labelsTr" / f"{case}{FILE_ENDING}")
               for name, folder in (("vessels", targets.vessels), ("aneurysms", targets.aneurysms))}
    row = {ID_COLUMN: uid, "case_id": case, "status": "ok", "reason": "", "warnings": "", "has_vessel_labels": False}
    if resume and all(p.is_file() for p in outputs["aneurysms"]):
        row["status"] = "resumed"
        row["has_vessel_labels"] = all(p.is_file() for p in outputs["vessels"])
        return row
    try:
        volume = read_series(root / "series" / uid)
        warnings = volume.warnings
        centres, values = [], []
        for loc in localizer_rows:
            if loc["location"] not in BY_NAME:
                warnings.append(f"unknown localizer location {loc['location']!r} ignored")
                continue
            try:
                centres.append(localizer_to_patient(volume, loc["SOPInstanceUID"], loc["coordinates"]))
                values.append(BY_NAME[loc["location"]].class_id)
            except SeriesError as err:
                warnings.append(str(err))
        spheres = draw_spheres(volume.array.shape, volume.geometry, centres, values, targets.sphere_radius_mm)
        row["localizers_mm"] = json.dumps([[v, *map(float, c)] for v, c in zip(values, centres)])
        vessels = _vessel_labels(root, uid, to_sitk(volume.array, volume.geometry), warnings)
        if vessels is not None:
            write_nifti(volume.array, volume.geometry, outputs["vessels"][0])
            write_nifti(vessels, volume.geometry, outputs["vessels"][1])  # label last: it marks completion
            row["has_vessel_labels"] = True
        write_nifti(volume.array, volume.geometry, outputs["aneurysms"][0])
        write_nifti(spheres, volume.geometry, outputs["aneurysms"][1])
        row.update(warnings="; ".join(warnings), shape="x".join(map(str, volume.array.shape)),
                   spacing_mm="x".join(f"{s:.3f}" for s in volume.geometry.spacing))
    except SeriesError as err:
        row.update(status="failed", reason=str(err))
    except Exception as err:  # a defect we did not foresee must not stop the run either
        row.update(status="failed", reason=f"unexpected {type(err).__name__}: {err}")
    return row


def _dataset_json(channel: str, n_cases: int) -> dict:
    return {"channel_names": {"0": channel}, "labels": dataset_labels(), "numTraining": n_cases,
            "file_ending": FILE_ENDING, "name": "RSNA 2025 intracranial aneurysm (converted by nnunet-aneurysm)"}


def _finish_dataset(folder: Path, table: pd.DataFrame, n_folds: int) -> None:
    """dataset.json, metadata.csv and splits_final.json for the cases present in ``table``."""
    with open(folder / "dataset.json", "w") as f:
        json.dump(_dataset_json("image", len(table)), f, indent=2)
    table.to_csv(folder / "metadata.csv", index=False)
    with open(folder / "splits_final.json", "w") as f:
        json.dump(nnunet_splits(table["case_id"], table["fold"], n_folds), f, indent=2)


def _localizer_table(report: pd.DataFrame, previous: Path) -> pd.DataFrame:
    """One row per localizer point of the converted series; resumed series keep their earlier rows."""
    rows = []
    for row in report.itertuples():
        if isinstance(getattr(row, "localizers_mm", None), str):
            points = json.loads(row.localizers_mm)
            rows += [(row.case_id, BY_CLASS_ID[int(v)].name, int(v), x, y, z) for v, x, y, z in points]
    table = pd.DataFrame(rows, columns=list(LOCALIZER_POINTS_COLUMNS))
    resumed = set(report.loc[report["status"] == "resumed", "case_id"])
    if resumed and previous.is_file():
        earlier = pd.read_csv(previous, dtype={"case_id": str})
        table = pd.concat([table, earlier[earlier["case_id"].isin(resumed)]], ignore_index=True)
    return table.sort_values(["case_id", "class_id"]).reset_index(drop=True)


def read_localizers(dataset_folder: Path) -> pd.DataFrame:
    """The converter's ``localizers.csv``: case_id, location, class_id, x_mm, y_mm, z_mm (patient LPS)."""
    return pd.read_csv(dataset_folder / LOCALIZERS_FILE, dtype={"case_id": str})


def convert(root: Path | str, vessels_id: int, aneurysms_id: int, raw: Path | str | None = None,
            workers: int = 2, sphere_radius_mm: float = SPHERE_RADIUS_MM, resume: bool = True,
            progress: bool = True, n_folds: int = 5) -> pd.DataFrame:
    """Convert a competition folder; returns the conversion report (one row per series)."""
    root = Path(root)
    raw = Path(raw or os.environ.get("nnUNet_raw") or "")
    if not str(raw):
        raise ConversionInputError("no output folder: pass raw=... or set nnUNet_raw")
    train, localizers = read_tables(root)
    vessels_dir, aneurysms_dir = dataset_folders(raw, vessels_id, aneurysms_id)
    for folder in (vessels_dir, aneurysms_dir):
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            shutil.rmtree(folder / sub / PARTIAL_DIR, ignore_errors=True)  # left by an interrupted run
    targets = Targets(vessels_dir, aneurysms_dir, sphere_radius_mm)
    by_series = {uid: rows.to_dict("records") for uid, rows in localizers.groupby(ID_COLUMN)}
    uids = train[ID_COLUMN].tolist()
    args = [(root, uid, by_series.get(uid, []), targets, resume) for uid in uids]
    if workers > 1:
        largest = largest_series_voxels([root / "series" / uid for uid in uids])
        per_worker = PROCESS_BYTES + CONVERT_BYTES_PER_VOXEL * largest
        workers, reason = workers_for_memory(workers, per_worker)
        if reason:
            print(f"convert: {reason}")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(tqdm(pool.map(convert_series, *zip(*args)), total=len(args), disable=not progress,
                             desc="converting series"))
    else:
        rows = [convert_series(*a) for a in tqdm(args, disable=not progress, desc="converting series")]
    report = pd.DataFrame(rows)

    table = train.merge(report[[ID_COLUMN, "case_id", "status", "has_vessel_labels"]], on=ID_COLUMN)
    table = table[table["status"] != "failed"].drop(columns="status").reset_index(drop=True)
    table["fold"] = stratified_folds(table, [PRESENT_COLUMN, "Modality"], n_folds)
    _localizer_table(report, aneurysms_dir / LOCALIZERS_FILE).to_csv(aneurysms_dir / LOCALIZERS_FILE, index=False)
    report.drop(columns="localizers_mm", errors="ignore").to_csv(aneurysms_dir / "conversion_report.csv", index=False)
    _finish_dataset(aneurysms_dir, table, n_folds)
    _finish_dataset(vessels_dir, table[table["has_vessel_labels"]].reset_index(drop=True), n_folds)
    return report
