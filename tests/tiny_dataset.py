"""A tiny nnU-Net raw dataset (random tubes in noise), for tests of the nnU-Net plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def tube_case(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two straight tubes (labels 1 and 2) through a noisy volume; image float32, label uint8."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    for value, axis in ((1, 0), (2, 2)):
        centre = [rng.uniform(0.3, 0.7) * s for s in shape]
        coords = [zz, yy, xx]
        others = [c for i, c in enumerate(coords) if i != axis]
        cs = [c for i, c in enumerate(centre) if i != axis]
        r2 = (others[0] - cs[0]) ** 2 + (others[1] - cs[1]) ** 2
        label[r2 <= rng.uniform(2.0, 4.0) ** 2] = value
    image = rng.normal(0, 0.3, shape).astype(np.float32) + (label > 0) * 2.0
    return image.astype(np.float32), label


def write_tiny_dataset(raw: Path, dataset_id: int, n_cases: int = 6, shape=(40, 48, 36),
                       seed: int = 0, n_test: int = 1) -> Path:
    """Writes Dataset{id}_Tiny with imagesTr/labelsTr/imagesTs and returns its folder."""
    rng = np.random.default_rng(seed)
    folder = raw / f"Dataset{dataset_id:03d}_Tiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.8, 0.7, 0.9, 1.0])
    for i in range(n_cases + n_test):
        image, label = tube_case(shape, rng)
        sub = "imagesTr" if i < n_cases else "imagesTs"
        nib.save(nib.Nifti1Image(image, affine), folder / sub / f"case{i:03d}_0000.nii.gz")
        if i < n_cases:
            nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / f"case{i:03d}.nii.gz")
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2},
                    "numTraining": n_cases, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def write_ground_truth_roi_dataset(raw: Path, dataset_id: int, rsna: Path, n_series: int = 8) -> Path:
    """A stage-2 ROI dataset whose "stage 1" is the ground-truth vessel labels: generated series (each with a
    segmentation, half with aneurysms), converted, then cropped to their vessel ROI like ``roi-dataset`` does."""
    import pandas as pd
    import SimpleITK as sitk

    from nnunet_aneurysm.dataset_conversion.convert import convert, read_localizers
    from nnunet_aneurysm.dataset_conversion.synthetic import generate
    from nnunet_aneurysm.geometry import geometry_of
    from nnunet_aneurysm.inference.roi_dataset import finish_roi_dataset, write_roi_case
    from nnunet_aneurysm.inference.stage1 import VesselPrediction
    from nnunet_aneurysm.roi import RoiSettings
    from nnunet_aneurysm.stages import dataset_name

    forced = [{"n_aneurysms": i % 2} for i in range(n_series)]
    generate(rsna, n_series, seed=11, size=48, segmentation_fraction=1.0, progress=False, forced=forced)
    convert(rsna, dataset_id - 2, dataset_id - 1, raw=raw, workers=1, progress=False, n_folds=2)
    vessels = raw / dataset_name(dataset_id - 2, "RSNAVessels")
    aneurysms = raw / dataset_name(dataset_id - 1, "RSNAAneurysms")
    out = raw / f"Dataset{dataset_id:03d}_GroundTruthROI"
    for sub in ("imagesTr", "labelsTr", "rois"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    localizers = read_localizers(aneurysms)
    cases = pd.read_csv(vessels / "metadata.csv", dtype={"case_id": str})["case_id"]
    for case in cases:
        image = sitk.ReadImage(str(vessels / "imagesTr" / f"{case}_0000.nii.gz"))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(vessels / "labelsTr" / f"{case}.nii.gz")))
        truth = VesselPrediction(np.moveaxis(np.eye(14, dtype=np.float32)[labels], -1, 0), geometry_of(image))
        write_roi_case(out, case, sitk.GetArrayFromImage(image).astype(np.float32), geometry_of(image), truth,
                       RoiSettings(), localizers, 4.0, out_of_fold=False)
    finish_roi_dataset(aneurysms, out, cases, RoiSettings())
    return out
