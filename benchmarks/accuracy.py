"""Held-out accuracy of the pipeline against the baseline a user would otherwise pick, in one run.

(a) this design: the demo's pipeline (stage 1 -> vessel ROI -> stage 2 with location-aware heads
    -> graph, GAT, stacker), trained on a generated training set and scored on a generated held-out
    set (another seed, never trained on), predicted from its DICOM folders;
(b) the baseline: nnU-Net's own network and trainer (``AneurysmScheduledNNUNetTrainer``,
    PlainConvUNet as nnU-Net's planner configures it for the ROI patch) trained on the SAME stage-2
    dataset with the same folds, epochs and iterations, read as the nnU-Net authors read it in the
    competition: the maximum of each location's softmax channel ('Aneurysm Present': the maximum
    over locations), on the same held-out ROIs.

Also printed: stage 1's union vessel recall and Dice on the held-out series that have ground-truth
vessels, the ablation table (head alone, stacker, stacker without each feature group) and the
wall time of each side's training. Every AUC comes with a bootstrap 95 % interval.

    python benchmarks/accuracy.py --workdir accuracy_run            # the demo's default budget
    python benchmarks/accuracy.py --workdir W --train-series 300 --stage1-epochs 30 ...
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from nnunet_aneurysm.demo import (
    STAGE2_DATASET,
    STAGE2_ID,
    DemoSettings,
    Runner,
    Schedule,
    model_folder,
    run_demo,
)
from nnunet_aneurysm.evaluation.metric import evaluate
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.stages import BASELINE_TRAINER, STAGE2

BASELINE_CONFIGURATION = "3d_cpu_baseline"


def plain_conv_unet_architecture(patch, spacing) -> dict:
    """PlainConvUNet as nnU-Net's planner configures it for this patch and spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pools, kernels, _, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    n = len(pools)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": n, "features_per_stage": [min(320, 32 * 2**i) for i in range(n)],
                            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": kernels, "strides": pools,
                            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
                            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def add_baseline_configuration(run: Runner, settings: DemoSettings, epochs: int | None = None) -> None:
    """The stage-2 plans get a configuration with nnU-Net's network, same patch, batch and schedule (or
    ``epochs`` of the same iterations: on 2 CPU cores nnU-Net's network is ~10x slower per step)."""
    plans_file = Path(run.env["nnUNet_preprocessed"]) / STAGE2_DATASET / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    ours = plans["configurations"][settings.configuration]
    fullres = plans["configurations"]["3d_fullres"]
    patch = ours.get("patch_size", fullres["patch_size"])
    plans["configurations"][BASELINE_CONFIGURATION] = {
        "inherits_from": settings.configuration, "architecture": plain_conv_unet_architecture(patch,
                                                                                             fullres["spacing"])}
    if epochs is not None:
        schedule = {**ours["trainer_schedule"], "num_epochs": epochs}
        plans["configurations"][BASELINE_CONFIGURATION]["trainer_schedule"] = schedule
    plans_file.write_text(json.dumps(plans, indent=2))


def training_seconds(folder: Path, folds: int) -> float:
    total = 0.0
    for fold in range(folds):
        logged = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)["logging"]
        total += logged["epoch_end_timestamps"][-1] - logged["epoch_start_timestamps"][0]
    return total


def baseline_submission(workdir: Path, model: Path, folds: int, heldout_ids: list[str]) -> pd.DataFrame:
    """The baseline's probabilities of the held-out series, from the ROIs the pipeline saved for them."""
    from nnunet_aneurysm.geometry import geometry_of
    from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties

    predictor = load_predictor(model, list(range(folds)), torch.device("cpu"))
    rows = []
    for uid in heldout_ids:
        outputs = workdir / "heldout_outputs" / uid
        if not (outputs / "roi_image.nii.gz").is_file():  # the pipeline's fallback row: no ROI to read
            rows.append({ID_COLUMN: uid, **{c: 0.5 for c in SUBMISSION_COLUMNS}})
            continue
        images = [sitk.ReadImage(str(outputs / f)) for f in ("roi_image.nii.gz", "vessel_probability.nii.gz",
                                                                "artery_labels.nii.gz")]
        data = np.stack([sitk.GetArrayFromImage(i).astype(np.float32) for i in images])
        _, probabilities = predictor.predict_single_npy_array(data, nnunet_properties(geometry_of(images[0])),
                                                              None, None, True)
        location_max = probabilities[1:].reshape(len(probabilities) - 1, -1).max(1)
        rows.append({ID_COLUMN: uid, **dict(zip(SUBMISSION_COLUMNS, [*location_max, location_max.max()]))})
    return pd.DataFrame(rows)


def stage1_on_heldout(workdir: Path, folds: int) -> dict:
    """Union vessel recall and Dice of the pipeline's stage 1 (fold ensemble, flip TTA) on held-out series
    with ground-truth vessel labels: at the pipeline's vessel threshold (chosen out-of-fold) and at 0.5."""
    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.geometry import to_sitk
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline
    from nnunet_aneurysm.inference.stage1 import Stage1Model
    from nnunet_aneurysm.inference.vessel_threshold import VesselCounts
    from nnunet_aneurysm.metadata import encode_metadata, metadata_from_header

    pipeline = read_pipeline(workdir / "pipeline" / "pipeline.json")
    threshold = pipeline.roi_settings().vessel_threshold
    model = Stage1Model(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds)
    counts = VesselCounts.empty()
    for seg_file in sorted((workdir / "rsna_heldout" / "segmentations").glob("*_cowseg.nii")):
        uid = seg_file.name[: -len("_cowseg.nii")]
        volume = read_series(workdir / "rsna_heldout" / "series" / uid)
        reference = to_sitk(np.zeros(volume.array.shape, np.float32), volume.geometry)
        truth = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(seg_file)), reference, sitk.Transform(),
                                                     sitk.sitkNearestNeighbor, 0)) > 0
        metadata = encode_metadata(*metadata_from_header(volume.header))
        vessels = model.predict(volume.array, volume.geometry, metadata)
        counts.add(vessels.vessel_probability_on(volume.geometry, volume.array.shape), truth)
    return {"series": counts.scans, "threshold": threshold, "chosen": counts.at(threshold), "half": counts.at(0.5)}


def describe(name: str, result) -> str:
    ci, cip = result.intervals.get("weighted_auc"), result.intervals.get(PRESENT_COLUMN)
    return (f"{name:38s} weighted AUC {result.score:.3f} ({ci[0]:.3f}-{ci[1]:.3f})   Aneurysm Present AUC "
            f"{result.aucs[PRESENT_COLUMN]:.3f} ({cip[0]:.3f}-{cip[1]:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--train-series", type=int, default=None)
    parser.add_argument("--heldout-series", type=int, default=None)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--stage1-epochs", type=int, default=None)
    parser.add_argument("--stage2-epochs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="the baseline's epochs (default: ours); fewer for an equal-wall-time comparison")
    args = parser.parse_args()
    settings = DemoSettings(args.workdir.resolve(), seed=args.seed)
    changes = {k: v for k, v in (("train_series", args.train_series), ("heldout_series", args.heldout_series),
                                 ("folds", args.folds)) if v is not None}
    settings = replace(settings, **changes)
    for stage, epochs in (("stage1", args.stage1_epochs), ("stage2", args.stage2_epochs)):
        old = getattr(settings, stage)
        setattr(settings, stage, Schedule(epochs or old.epochs, args.iterations or old.iterations, old.val_iterations))
    workdir = settings.workdir
    if not (workdir / "report" / "index.html").is_file():
        run_demo(settings)  # (a): trains everything, predicts and scores the held-out set (resumes)

    run = Runner(workdir)
    add_baseline_configuration(run, settings, args.baseline_epochs)
    folder = model_folder(run.env, STAGE2_DATASET, STAGE2, BASELINE_CONFIGURATION, BASELINE_TRAINER)
    for fold in range(settings.folds):
        if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            run(["nnUNetv2_train", str(STAGE2_ID), BASELINE_CONFIGURATION, str(fold), "-tr", BASELINE_TRAINER,
                 "-p", STAGE2.plans, "-device", settings.device], "baseline training")

    labels = pd.read_csv(workdir / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    ours = evaluate(labels, pd.read_csv(workdir / "submission.csv", dtype={ID_COLUMN: str}))
    baseline = evaluate(labels, baseline_submission(workdir, folder, settings.folds, labels[ID_COLUMN].tolist()))
    ours_folder = model_folder(run.env, STAGE2_DATASET, STAGE2, settings.configuration)
    print(f"\nbudget: {settings.train_series} training series, {settings.heldout_series} held-out, size "
          f"{settings.size}, {settings.folds} folds; stage 1 {settings.stage1.epochs} x {settings.stage1.iterations}, "
          f"stage 2 {settings.stage2.epochs} x {settings.stage2.iterations} iterations per fold")
    print(describe("(a) this pipeline", ours))
    print(describe("(b) nnU-Net network + trainer, max", baseline))
    baseline_epochs = args.baseline_epochs or settings.stage2.epochs
    print(f"stage-2 training wall time: ours {training_seconds(ours_folder, settings.folds):.0f} s for "
          f"{settings.stage2.epochs} x {settings.stage2.iterations} iterations per fold, nnU-Net's "
          f"{training_seconds(folder, settings.folds):.0f} s for {baseline_epochs} x {settings.stage2.iterations} "
          f"(same folds, patch and batch)")
    stage1 = stage1_on_heldout(workdir, settings.folds)
    chosen, half = stage1["chosen"], stage1["half"]
    print(f"stage 1 on {stage1['series']} held-out series with vessel labels: union recall {chosen['recall']:.3f}, "
          f"Dice {chosen['dice']:.3f} at the pipeline's vessel threshold {stage1['threshold']:.2f} (chosen "
          f"out-of-fold); at 0.5: recall {half['recall']:.3f}, Dice {half['dice']:.3f}")
    ablation = workdir / "report" / "ablation.csv"
    if ablation.is_file():
        print("\nablation (held-out, bootstrap 95 % intervals):")
        print(pd.read_csv(ablation).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(json.loads((workdir / "report" / "interpretability.json").read_text()))


if __name__ == "__main__":
    main()
