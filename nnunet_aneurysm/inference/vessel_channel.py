"""Stage 1 -> stage 2: add the vessel probability as a second input channel of the aneurysm dataset.

Like nnU-Net's cascade, training cases get *out-of-fold* predictions: a case in fold f is
predicted by the stage-1 model of fold f, which never saw it (both datasets share the converter's
folds). Cases of a fold whose model is missing are predicted by the ensemble of the folds that
exist, and the run says so. The result is a new raw dataset: the aneurysm dataset's images,
labels, metadata and splits, plus ``<case>_0001.nii.gz`` = 1 - P(background) of stage 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nnunet_aneurysm.dataset_conversion.geometry import read_geometry, write_nifti
from nnunet_aneurysm.inference.out_of_fold import fold_groups
from nnunet_aneurysm.nnunet_env import trained_folds
from nnunet_aneurysm.stages import FILE_ENDING, VESSEL_CHANNEL, channel_file, stage2_channel_names


def _predictor(model_dir: Path, folds: tuple, device: torch.device):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=folds,
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


def vessel_probability(predictor, image_file: Path) -> np.ndarray:
    """Stage-1 probability of 'any artery' in the image's own voxel order ([k, j, i])."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, properties = SimpleITKIO().read_images([str(image_file)])
    _, probabilities = predictor.predict_single_npy_array(data, properties, None, None, True)
    return (1.0 - probabilities[0]).astype(np.float32)


def add_vessel_channel(raw: Path, aneurysms_dataset: str, output_dataset: str, model_dir: Path,
                       device: str = "cpu", progress: bool = True) -> Path:
    """Write ``output_dataset`` under ``raw``; returns its folder."""
    src, dst = raw / aneurysms_dataset, raw / output_dataset
    metadata = pd.read_csv(src / "metadata.csv", dtype={"case_id": str})
    folds_present = trained_folds(model_dir)
    if not folds_present:
        raise FileNotFoundError(f"no fold_*/checkpoint_final.pth under {model_dir}: train stage 1 first")
    groups = fold_groups(dict(zip(metadata["case_id"], metadata["fold"])), folds_present)
    for group in groups:
        if not group.out_of_fold:
            print(f"{len(group.cases)} cases are in folds without a stage-1 model: they get the ensemble of folds "
                  f"{list(group.folds)} (not out-of-fold for cases that stage 1 trained on)")
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    bar = tqdm(total=len(metadata), disable=not progress, desc="stage-1 vessel channel")
    for group in groups:
        predictor = _predictor(model_dir, group.folds, torch_device)
        for case in group.cases:
            image = src / "imagesTr" / channel_file(case, 0)
            target = dst / "imagesTr" / channel_file(case, VESSEL_CHANNEL)
            if not target.is_file():  # resumable: written atomically, skipped when present
                write_nifti(vessel_probability(predictor, image), read_geometry(image), target)
            shutil.copyfile(image, dst / "imagesTr" / image.name)
            shutil.copyfile(src / "labelsTr" / f"{case}{FILE_ENDING}", dst / "labelsTr" / f"{case}{FILE_ENDING}")
            bar.update()
    bar.close()
    dataset_json = json.loads((src / "dataset.json").read_text())
    dataset_json["channel_names"] = stage2_channel_names()
    (dst / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    for name in ("metadata.csv", "splits_final.json"):
        shutil.copyfile(src / name, dst / name)
    return dst
