"""``nnunet-aneurysm <verb>``: the steps nnU-Net has no verb for.

Every verb has ``--help``; heavy imports happen inside the verbs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunet_aneurysm.nnunet_env import UserInputError


def _ext_path(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.nnunet_ext import FOLDER

    print(FOLDER)
    return 0


def _device(args: argparse.Namespace) -> str:
    """``-device`` as given (cuda checked to be usable), or cuda where torch can use it, else cpu (said in one
    line)."""
    from nnunet_aneurysm.device import choose_device

    device, note = choose_device(args.device)
    if note:
        print(note, flush=True)
    return device


def _plan(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.planners import PLANNERS
    from nnunet_aneurysm.planners.run import plan_dataset

    schedule = {k: v for k, v in (("num_epochs", args.cpu_epochs),
                                  ("num_iterations_per_epoch", args.cpu_iterations),
                                  ("num_val_iterations_per_epoch", args.cpu_val_iterations))
                if v is not None}
    fullres = {k: v for k, v in (("num_epochs", args.gpu_epochs), ("num_iterations_per_epoch", args.gpu_iterations))
               if v is not None}
    if args.training_seed is not None:  # every configuration's trainer seeds python, numpy and torch with it
        schedule["seed"] = fullres["seed"] = args.training_seed
    plans_name, plans_file = plan_dataset(args.dataset, PLANNERS[args.planner], args.vram_gb,
                                          args.plans_name, schedule, args.num_processes, fullres)
    print(f"Plans written to {plans_file}")
    print(f"Next: nnUNetv2_preprocess -d {args.dataset} -plans_name {plans_name} -c 3d_fullres")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.dataset_conversion.synthetic import generate

    truths = generate(args.out, args.series, args.seed, args.size, args.segmentation_fraction,
                      args.multiframe_fraction, args.workers, fov_mm=args.fov_mm, slices=args.slices)
    positive = sum(bool(t.aneurysms) for t in truths)
    print(f"wrote {len(truths)} series ({positive} with aneurysms) to {args.out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.dataset_conversion.convert import ConversionInputError, convert

    try:
        report = convert(args.rsna_root, args.vessels_id, args.aneurysms_id, args.raw, args.workers,
                         args.sphere_radius_mm, resume=not args.restart, n_folds=args.folds)
    except ConversionInputError as err:
        raise UserInputError(str(err)) from None
    failed = report[report["status"] == "failed"]
    print(f"converted {int((report['status'] != 'failed').sum())} of {len(report)} series "
          f"({int(report['has_vessel_labels'].sum())} with vessel labels); {len(failed)} failed")
    for _, row in failed.iterrows():
        print(f"  failed {row['SeriesInstanceUID']}: {row['reason']}", file=sys.stderr)
    return min(len(failed), 125)


def _roi_dataset(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nnunet_aneurysm.inference.roi_dataset import build_roi_dataset
    from nnunet_aneurysm.nnunet_env import dataset_name, model_folder, our_trainers_visible, require_env
    from nnunet_aneurysm.roi import RoiSettings
    from nnunet_aneurysm.stages import stage2_dataset_name

    fixed = args.vessel_threshold is not None
    if fixed and not 0.0 < args.vessel_threshold < 1.0:
        raise UserInputError(f"--vessel-threshold must lie in (0, 1), not {args.vessel_threshold}")
    raw = require_env("nnUNet_raw", "nnUNet_results")["nnUNet_raw"]
    our_trainers_visible()
    aneurysms = dataset_name(args.aneurysms)
    model_dir = model_folder(args.vessels, args.trainer, args.plans, args.configuration)
    threshold = args.vessel_threshold if fixed else RoiSettings.vessel_threshold
    try:
        settings = replace(roi_settings_for(args, raw / aneurysms, raw / stage2_dataset_name(args.output_id,
                                                                                              aneurysms)),
                           vessel_threshold=threshold)
        folder = build_roi_dataset(raw, aneurysms, stage2_dataset_name(args.output_id, aneurysms), model_dir,
                                   _device(args), settings, choose_threshold=not fixed, num_parts=args.num_parts,
                                   part_id=args.part_id, operating_point_only=args.operating_point_only,
                                   asked_size_mm=args.size_mm)
    except (FileNotFoundError, ValueError) as err:
        raise UserInputError(str(err)) from None
    if folder is None:
        print(f"part {args.part_id} of {args.num_parts} done; the part that finishes last completes the dataset")
        return 0
    print(f"wrote {folder}" + (" (stage 1's operating point only)" if args.operating_point_only else ""))
    return 0


def roi_settings_for(args: argparse.Namespace, src: Path, dst: Path):
    """The ROI grid of the stage-2 dataset ``dst``: the one it was started with (roi_settings.json), so that
    every part and every resume writes the same grid whatever machine it runs on; for a new dataset the grid
    asked for (--spacing-mm) or planned (``build_roi_dataset`` saves it just before its first case)."""
    from nnunet_aneurysm.roi import ROI_SETTINGS_FILE, RoiSettings

    size = tuple(args.size_mm) if args.size_mm is not None else RoiSettings.size_mm
    saved = RoiSettings.read(dst)
    if saved is not None:
        other_spacing = args.spacing_mm is not None and args.spacing_mm != saved.spacing_mm
        if other_spacing or (args.size_mm is not None and size != RoiSettings.asked_size(dst)):
            raise UserInputError(f"{dst.name} was started with ROIs of {saved.spacing_mm:g} mm and "
                                 f"{' x '.join(f'{s:g}' for s in saved.size_mm)} mm ({dst / ROI_SETTINGS_FILE}); "
                                 f"use the same or another --output-id")
        print(f"ROI grid from {dst / ROI_SETTINGS_FILE}: {saved.spacing_mm:g} mm, "
              f"{' x '.join(map(str, saved.shape))} voxels")
        return saved
    if args.spacing_mm is not None:
        return RoiSettings(size, args.spacing_mm)
    return planned_roi(src, size, args.roi_max_voxels, _device(args), args.vram_gb)


def planned_roi(dataset: Path, size_mm: tuple[float, float, float], max_voxels: int | None, device: str,
                vram_gb: float):
    """The ROI settings ``roi.plan_roi_settings`` gives for a raw dataset's training series, said in one line."""
    import numpy as np

    from nnunet_aneurysm.inference.roi_dataset import training_spacings
    from nnunet_aneurysm.roi import CPU_ROI_VOXELS, plan_roi_settings

    if max_voxels is None:
        from nnunet_aneurysm.planners.waveformer import roi_voxel_budget

        max_voxels = CPU_ROI_VOXELS if device == "cpu" else roi_voxel_budget(vram_gb, size_mm)
    spacings = training_spacings(dataset)
    settings = plan_roi_settings(spacings, max_voxels, size_mm=size_mm)
    print(f"ROI planned: {settings.spacing_mm:g} mm, {' x '.join(map(str, settings.shape))} voxels "
          f"({' x '.join(f'{s:.0f}' for s in settings.size_mm)} mm) from the median finest spacing "
          f"{float(np.median(spacings)):.3f} mm of {len(spacings)} training series and a budget of {max_voxels:,} "
          f"voxels")
    return settings


def _stage2_raw_and_model(args) -> tuple[Path, Path]:
    from nnunet_aneurysm.nnunet_env import dataset_name, model_folder, our_trainers_visible, require_env

    raw = require_env("nnUNet_raw", "nnUNet_results")["nnUNet_raw"]
    our_trainers_visible()
    return raw / dataset_name(args.stage2), model_folder(args.stage2, args.trainer, args.plans, args.configuration)


def _vessel_roi_dataset(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.vessel_roi_dataset import build_vessel_roi_dataset
    from nnunet_aneurysm.nnunet_env import dataset_name, require_env
    from nnunet_aneurysm.stages import dataset_name as make_name

    raw = require_env("nnUNet_raw")["nnUNet_raw"]
    roi = dataset_name(args.roi_dataset)
    output = make_name(args.output_id, "RSNAVesselsROI")
    try:
        table = build_vessel_roi_dataset(raw, roi, dataset_name(args.vessels), output, args.stage1_labels)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from None
    counts = table["labels"].value_counts().to_dict()
    print(f"wrote {raw / output}: " + ", ".join(f"{n} {source}" for source, n in counts.items()))
    print(f"Next: nnunet-aneurysm plan -d {args.output_id} --planner WaveFormerPlanner, nnUNetv2_preprocess, then "
          f"nnUNetv2_train {args.output_id} CONFIG FOLD -tr AneurysmWaveFormerVesselPretrainer -p "
          f"AneurysmWaveFormerPlans for EACH fold; fine-tune stage 2's fold k from fold k's checkpoint "
          f"(docs/architecture.md)")
    return 0


def _features(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.out_of_fold_features import out_of_fold_features
    from nnunet_aneurysm.parts import write_whole

    raw, model = _stage2_raw_and_model(args)
    try:
        table = out_of_fold_features(raw, model, args.output, _device(args), num_parts=args.num_parts,
                                     part_id=args.part_id)
    except (FileNotFoundError, ValueError) as err:
        raise UserInputError(str(err)) from None
    if table is None:
        print(f"part {args.part_id} of {args.num_parts} done; features.csv is written by the part that finishes last")
        return 0
    write_whole(args.output / "features.csv", table.to_csv(index=False))
    print(f"{len(table)} series, out-of-fold features and vessel graphs in {args.output}")
    return 0


def _train_gat(args: argparse.Namespace) -> int:
    import pandas as pd

    from nnunet_aneurysm.dataset_conversion.convert import read_localizers
    from nnunet_aneurysm.nnunet_env import dataset_name, require_env
    from nnunet_aneurysm.postprocessing.training import train_fold_gats
    from nnunet_aneurysm.stages import ROI_FILE

    raw = require_env("nnUNet_raw")["nnUNet_raw"] / dataset_name(args.stage2)
    table_file = args.features / "features.csv"
    if not table_file.is_file():
        raise UserInputError(f"no {table_file}: run nnunet-aneurysm features first")
    table = pd.read_csv(table_file, dtype={"case_id": str})
    table = train_fold_gats(table, args.features / "graphs", read_localizers(raw),
                            pd.read_csv(raw / ROI_FILE, dtype={"case_id": str}), args.features / "gat")
    table.to_csv(table_file, index=False)
    print(f"GATs of folds {sorted(table['fold'].unique())} in {args.features / 'gat'}; out-of-fold GAT scores added to "
          f"{table_file}")
    return 0


def _train_stacker(args: argparse.Namespace) -> int:
    import pandas as pd

    from nnunet_aneurysm.postprocessing.stacker import LeakageError
    from nnunet_aneurysm.postprocessing.training import train_and_save_stacker

    table_file = args.features / "features.csv"
    if not table_file.is_file():
        raise UserInputError(f"no {table_file}: run nnunet-aneurysm features (and train-gat) first")
    table = pd.read_csv(table_file, dtype={"case_id": str})
    out = args.output or args.features / "stacker"
    try:
        stacker = train_and_save_stacker(table, out, tuple(args.without))
    except (LeakageError, KeyError, ValueError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None
    print(f"stacker ({len(stacker.config.features)} features, trees per column {sorted(set(stacker.trees.values()))}) "
          f"in {out}")
    return 0


def _pipeline_step(step, *arguments):
    """A ``pipeline`` action's work; its ValueError and FileNotFoundError are the user's one-line error."""
    try:
        return step(*arguments)
    except (ValueError, FileNotFoundError) as err:
        raise UserInputError(str(err)) from None


def _pipeline_init(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.pipeline_init import init_pipeline

    path = _pipeline_step(init_pipeline, args.output, args.stage1, args.stage2, args.stage1_trainer,
                          args.stage2_trainer, args.stage1_plans, args.stage2_plans, args.configuration, args.folds,
                          args.gat, args.stacker, not args.no_tta)
    print(f"pipeline file written to {path}")
    return 0


def _pipeline_export(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.pipeline_share import export_pipeline

    archive = _pipeline_step(export_pipeline, args.pipeline, args.output)
    print(f"pipeline packed into {archive} ({archive.stat().st_size / 2**20:.1f} MiB): "
          f"nnunet-aneurysm pipeline install {archive} DIR")
    return 0


def _pipeline_install(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.pipeline_share import install_pipeline

    print(_pipeline_step(install_pipeline, args.archive, args.folder))  # the installed pipeline file, alone
    return 0


def _messages_to(path: Path, append: bool) -> None:
    """Every log record and Python warning of this process goes to ``path``, none to the terminal."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.FileHandler(path, mode="a" if append else "w")], force=True)
    logging.captureWarnings(True)


def _predict_series(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline
    from nnunet_aneurysm.inference.series import ModelLoadError, SeriesPipeline
    from nnunet_aneurysm.inference.submission import predict_series, series_folders
    from nnunet_aneurysm.parts import part_of

    if not 0 < args.step_size <= 1:
        raise UserInputError(f"-step_size is a fraction of the patch in (0, 1], not {args.step_size}")
    try:
        pipeline = read_pipeline(args.pipeline).choose(args.folds, args.checkpoint,
                                                       False if args.disable_tta else None)
        folders = part_of(series_folders(args.inputs, require_dicom=not args.allow_fallback), args.num_parts,
                          args.part_id)
    except ValueError as err:
        raise UserInputError(str(err)) from None
    device = _device(args)
    messages = args.output.with_suffix(".log")
    _messages_to(messages, append=args.resume)
    if device == "cpu":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    try:
        model = SeriesPipeline(pipeline, device, args.step_size)
    except ModelLoadError as err:
        raise UserInputError(str(err)) from None
    summary = predict_series(model, folders, args.output, save_outputs=args.save_outputs, resume=args.resume)
    print(f"{summary.line()}; messages {messages}")
    failure = summary.systemic_failure()
    if failure and not args.allow_fallback:
        raise UserInputError(failure)
    return 0


def _merge_submissions(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.submission import series_folders
    from nnunet_aneurysm.parts import merge_submissions

    try:
        expected = series_folders(args.inputs, require_dicom=False) if args.inputs else None
        merged = merge_submissions(args.parts, args.output, expected)
    except ValueError as err:
        raise UserInputError(str(err)) from None
    print(f"{len(merged)} series from {len(args.parts)} parts: {args.output}"
          + (f" (every one of the {len(expected)} input folders exactly once)" if expected else ""))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from nnunet_aneurysm.evaluation.metric import align, evaluate
    from nnunet_aneurysm.evaluation.roc import plot_roc_curves
    from nnunet_aneurysm.labels import ID_COLUMN

    tables = []
    for path in (args.labels, args.predictions):
        if not path.is_file():
            raise UserInputError(f"{path} does not exist")
        tables.append(pd.read_csv(path, dtype={ID_COLUMN: str}))
    try:
        result = evaluate(*tables, bootstrap=args.bootstrap)
    except ValueError as err:
        raise UserInputError(str(err)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(result.as_dict(), indent=2))
    truth, scores, _, _ = align(*tables)
    plot_roc_curves(truth, scores, list(result.aucs.values()), args.out)
    print(format_evaluation(result))
    print(f"metrics.json and ROC curves in {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    from nnunet_aneurysm.evaluation.report import ReportSources, write_report

    if args.timing is not None and not args.timing.is_file():
        raise UserInputError(f"no {args.timing}: needed for --timing")
    seconds = json.loads(args.timing.read_text()) if args.timing is not None else None
    sources = ReportSources(args.submission, args.labels, tuple(args.models), args.features, args.outputs,
                            args.operating_point, seconds, args.title or f"report on {args.submission.name}",
                            args.bootstrap)
    try:
        page = write_report(sources, args.output)
    except (FileNotFoundError, ValueError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None
    print(f"report: {page}")
    return 0


def format_evaluation(result) -> str:
    """The scores as a terminal shows them: weighted AUC and 'present' with 95 % intervals, then each column."""
    def with_ci(name, value):
        ci = result.intervals.get(name)
        text = "undefined" if value is None else f"{value:.3f}"
        return text + (f" (95 % CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")

    lines = [f"held-out series: {result.n_series}",
             f"weighted AUC: {with_ci('weighted_auc', result.score)}",
             f"Aneurysm Present AUC: {with_ci('Aneurysm Present', result.aucs['Aneurysm Present'])}"]
    for column, auc in result.aucs.items():
        lines.append(f"  {column:45s} {'one class' if auc is None else f'{auc:.3f}':>9s}  "
                     f"({result.positives[column]} positives)")
    if result.missing:
        lines.append(f"{len(result.missing)} labelled series have no prediction (left out): {result.missing[:3]}...")
    if result.extra:
        lines.append(f"{len(result.extra)} predicted series have no label (ignored)")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nnunet_aneurysm.demo import DemoSettings, Schedule, quick_settings, run_demo

    settings = quick_settings(args.workdir) if args.quick else DemoSettings(args.workdir)
    changes = {k: v for k, v in (("train_series", args.train_series), ("heldout_series", args.heldout_series),
                                 ("size", args.size), ("folds", args.folds)) if v is not None}
    settings = replace(settings, seed=args.seed, device=_device(args), **changes)
    for stage, epochs in (("stage1", args.stage1_epochs), ("stage2", args.stage2_epochs)):
        old = getattr(settings, stage)
        setattr(settings, stage, Schedule(epochs or old.epochs, args.iterations or old.iterations, old.val_iterations))
    run_demo(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nnunet_aneurysm.inference.submission import MAX_FALLBACK_SHARE
    from nnunet_aneurysm.planners import PLANNERS
    from nnunet_aneurysm.roi import RoiSettings
    from nnunet_aneurysm.stages import STAGE1, STAGE2

    def device_argument(p, help_extra: str = "") -> None:
        p.add_argument("-device", "--device", default=None, choices=["cpu", "cuda"],
                       help="default: cuda where torch can use a GPU, else cpu (said in one line)" + help_extra)

    def parts_arguments(p, what: str) -> None:
        p.add_argument("-num_parts", "--num-parts", type=int, default=1,
                       help=f"split the {what} into this many parts, as nnUNetv2_predict does (default 1)")
        p.add_argument("-part_id", "--part-id", type=int, default=0,
                       help="which part this job does (0..num_parts-1): items part_id, part_id + num_parts, ...")

    parser = argparse.ArgumentParser(prog="nnunet-aneurysm", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("ext-path", help="print the folder to export as nnUNet_extTrainer",
                         description="Print the folder that holds our trainers for nnU-Net: "
                                     "export nnUNet_extTrainer=$(nnunet-aneurysm ext-path)")
    p.set_defaults(func=_ext_path)

    p = verbs.add_parser("plan", help="plan a dataset with one of our planners",
                         description="Extract the fingerprint if missing, then write plans with our "
                                     "planner (3d_fullres sized for --vram-gb, plus 3d_cpu). "
                                     "Preprocess afterwards with stock nnUNetv2_preprocess.")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("--planner", required=True, choices=sorted(PLANNERS))
    p.add_argument("--vram-gb", type=float, default=16.0, help="GPU memory target (default 16, a T4)")
    p.add_argument("--plans-name", default=None, help="plans identifier (default: the planner's)")
    p.add_argument("--cpu-epochs", type=int, default=None, help="epochs of the 3d_cpu configuration")
    p.add_argument("--cpu-iterations", type=int, default=None, help="iterations per 3d_cpu epoch")
    p.add_argument("--cpu-val-iterations", type=int, default=None,
                   help="validation iterations per 3d_cpu epoch")
    p.add_argument("--gpu-epochs", type=int, default=None,
                   help="epochs of 3d_fullres (default: nnU-Net's 1000); for short GPU runs such as the demo's")
    p.add_argument("--gpu-iterations", type=int, default=None, help="iterations per 3d_fullres epoch (default 250)")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="fingerprint worker processes")
    p.add_argument("--training-seed", type=int, default=None,
                   help="seed of our trainers' RNGs (+ the fold), written into the plans (default: unseeded, "
                        "as nnU-Net)")
    p.set_defaults(func=_plan)

    p = verbs.add_parser("synth", help="write synthetic data in the RSNA competition layout",
                         description="Write OUT/train.csv, train_localizers.csv, series/ and segmentations/ "
                                     "exactly as the competition lays them out, from a Circle-of-Willis phantom.")
    p.add_argument("out", type=Path)
    p.add_argument("--series", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=96, help="in-plane matrix size")
    p.add_argument("--fov-mm", type=float, default=84.0,
                   help="field of view across, mm: 84 frames the arteries (default), 220 a whole head as CTA does")
    p.add_argument("--slices", type=int, default=None,
                   help="slices per series (default: the field of view's worth at each modality's slice spacing)")
    p.add_argument("--segmentation-fraction", type=float, default=0.5, help="share of series with cowseg files")
    p.add_argument("--multiframe-fraction", type=float, default=0.1, help="share stored as one multi-frame file")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_synth)

    p = verbs.add_parser("convert", help="convert an RSNA folder into the two nnU-Net raw datasets",
                         description="Convert RSNA_ROOT into DatasetA_RSNAVessels and DatasetB_RSNAAneurysms "
                                     "under $nnUNet_raw. Failed series are listed in conversion_report.csv; the "
                                     "exit status is the number of failed series (at most 125).")
    p.add_argument("rsna_root", type=Path)
    p.add_argument("--vessels-id", type=int, required=True)
    p.add_argument("--aneurysms-id", type=int, required=True)
    p.add_argument("--raw", type=Path, default=None, help="output folder (default: $nnUNet_raw)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sphere-radius-mm", type=float, default=4.0)
    p.add_argument("--restart", action="store_true", help="reconvert cases that already exist")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds in splits_final.json (default 5)")
    p.set_defaults(func=_convert)

    p = verbs.add_parser("roi-dataset", help="stage 1 -> stage 2: the aneurysm dataset cropped to each case's "
                                             "vessel region of interest, with stage 1's vessel channels",
                         description="Predict every aneurysm case with the stage-1 model of its own fold (out-of-fold, "
                                     "like nnU-Net's cascade), find its vessel region of interest (a fixed box "
                                     "around the vessels' median, patient-aligned) and write DatasetOUT_<name>ROI: "
                                     "image, vessel probability and artery labels on the ROI grid, the aneurysm "
                                     "labels drawn there, and roi.csv (where each ROI lies in its scan). Stage 1's "
                                     "vessel threshold is first chosen out-of-fold (F2, recall first) on training "
                                     "cases with vessel labels: vessel_operating_point.json.")
    p.add_argument("--vessels", required=True, help="stage-1 (vessel) dataset id or name")
    p.add_argument("--aneurysms", required=True, help="aneurysm dataset id or name")
    p.add_argument("--output-id", type=int, required=True)
    p.add_argument("-tr", "--trainer", default=STAGE1.trainer)
    p.add_argument("-p", "--plans", default=STAGE1.plans)
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("--size-mm", type=float, nargs=3, default=None,
                   help=f"ROI extent along S-I, A-P, L-R in mm (default {list(RoiSettings.size_mm)})")
    p.add_argument("--spacing-mm", type=float, default=None,
                   help="ROI voxel size in mm (default: planned from the training series' spacing and the memory "
                        "budget, as nnU-Net plans its spacing: 1.5 on the demo's 1.3 mm data). The first run saves "
                        "the grid in the dataset's roi_settings.json; every part and resume then uses it")
    p.add_argument("--roi-max-voxels", type=int, default=None,
                   help="memory budget of the planned ROI in voxels (default: the demo's 48 x 48 x 64 on the CPU; "
                        "on a GPU what the full stage-2 network trains in --vram-gb at batch 2)")
    p.add_argument("--vram-gb", type=float, default=16.0, help="GPU memory target for the planned ROI (default 16)")
    p.add_argument("--vessel-threshold", type=float, default=None,
                   help="a fixed threshold on stage 1's vessel probability instead of the out-of-fold choice")
    p.add_argument("--operating-point-only", action="store_true",
                   help="choose stage 1's operating point (vessel_operating_point.json) and stop: the first job "
                        "before parts run (-num_parts)")
    parts_arguments(p, "training cases (each part a job; the last to finish completes the dataset)")
    device_argument(p)
    p.set_defaults(func=_roi_dataset)

    def stage2_model_arguments(p):
        p.add_argument("--stage2", required=True, help="stage-2 (ROI) dataset id or name")
        p.add_argument("-tr", "--trainer", default=STAGE2.trainer)
        p.add_argument("-p", "--plans", default=STAGE2.plans)
        p.add_argument("-c", "--configuration", default="3d_fullres")

    p = verbs.add_parser("vessel-roi-dataset", help="stage 2's ROIs labelled with their arteries, for pretraining",
                         description="Write a raw dataset of the stage-2 ROI dataset's cases labelled with the 13 "
                                     "arteries (ground-truth vessel labels resampled onto each ROI; with "
                                     "--stage1-labels also stage 1's out-of-fold labels for the others), stage 1's "
                                     "channels blank: the data of AneurysmWaveFormerVesselPretrainer.")
    p.add_argument("--roi-dataset", required=True, help="the stage-2 ROI dataset id or name (roi-dataset's output)")
    p.add_argument("--vessels", required=True, help="the vessel dataset id or name (convert's, with labelsTr)")
    p.add_argument("--output-id", type=int, required=True)
    p.add_argument("--stage1-labels", action="store_true",
                   help="label the cases without ground truth with stage 1's out-of-fold artery labels")
    p.set_defaults(func=_vessel_roi_dataset)

    p = verbs.add_parser("features", help="out-of-fold meta-features and vessel graphs of every training series",
                         description="For every series of the stage-2 (ROI) dataset, with the stage-2 fold model that "
                                     "did not train on it: the head's 14 probabilities, each location's map maximum, "
                                     "the AKOrN order parameter, the PINN physics loss, the vessel graph, its size "
                                     "and the vessel volume, and the metadata. Writes OUTPUT/features.csv (a 'fold' "
                                     "and a 'source_fold' column) and OUTPUT/graphs; resumable.")
    stage2_model_arguments(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for features.csv and graphs/")
    parts_arguments(p, "training cases (each part a job; the last to finish writes features.csv)")
    device_argument(p)
    p.set_defaults(func=_features)

    p = verbs.add_parser("train-gat", help="one GAT per fold on the out-of-fold vessel graphs",
                         description="Trains FEATURES/gat/fold_<f> on the graphs of the series not in fold f (node "
                                     "label: within 6 mm of a localizer point) and adds its out-of-fold scores to "
                                     "FEATURES/features.csv (max per location, candidate count).")
    p.add_argument("--features", type=Path, required=True, help="the folder nnunet-aneurysm features wrote")
    p.add_argument("--stage2", required=True, help="stage-2 (ROI) dataset id or name (its localizers and ROIs)")
    p.set_defaults(func=_train_gat)

    p = verbs.add_parser("train-stacker", help="the XGBoost stacker on the out-of-fold table",
                         description="One XGBoost model per output column, trained on FEATURES/features.csv with its "
                                     "own 5-fold early stopping; refuses any row whose features came from a model "
                                     "that trained on it.")
    p.add_argument("--features", type=Path, required=True, help="the folder nnunet-aneurysm features wrote")
    p.add_argument("-o", "--output", type=Path, default=None, help="stacker folder (default FEATURES/stacker)")
    p.add_argument("--without", nargs="*", default=[], help="feature groups to leave out (ablation): "
                                                              "head maps akorn pinn gat graph metadata")
    p.set_defaults(func=_train_stacker)

    p = verbs.add_parser("pipeline", help="the pipeline file: everything a prediction needs",
                         description="Write a pipeline file (JSON, paths relative to it) from trained models; share "
                                     "a trained pipeline as one zip file and install it elsewhere.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("init", help="write a pipeline file from trained stage-1 and stage-2 models",
                           description="Names the stage-1 and stage-2 model folders and folds, the ROI settings (so "
                                       "inference crops as training did), the optional GAT and stacker, and the "
                                       "fallback probabilities (training prevalence). The ROI settings and the "
                                       "prevalence come with the stage-2 model folder (its dataset.json); models "
                                       "trained on an older ROI dataset read them from $nnUNet_raw.")
    q.add_argument("-o", "--output", type=Path, required=True, help="the pipeline file to write (.json)")
    q.add_argument("--stage1", required=True, help="stage-1 (vessel) dataset id or name")
    q.add_argument("--stage2", required=True, help="stage-2 (ROI) dataset id or name")
    q.add_argument("--stage1-trainer", default=STAGE1.trainer)
    q.add_argument("--stage2-trainer", default=STAGE2.trainer)
    q.add_argument("--stage1-plans", default=STAGE1.plans)
    q.add_argument("--stage2-plans", default=STAGE2.plans)
    q.add_argument("-c", "--configuration", default="3d_fullres")
    q.add_argument("-f", "--folds", nargs="+", type=int, default=None, help="folds (default: every trained fold)")
    q.add_argument("--gat", type=Path, default=None, help="folder of the per-fold GAT models")
    q.add_argument("--stacker", type=Path, default=None, help="folder of the stacker")
    q.add_argument("--no-tta", action="store_true", help="no left/right flip test-time augmentation")
    q.set_defaults(func=_pipeline_init)
    q = actions.add_parser("export", help="pack a trained pipeline into one zip file",
                           description="Packs what PIPELINE names (the folds and checkpoints it uses, with each "
                                       "nnU-Net model folder's plans.json, dataset.json and "
                                       "dataset_fingerprint.json; the GAT and stacker folders), the pipeline file "
                                       "with paths inside the zip, and the plugin's and nnunetv2's versions.")
    q.add_argument("pipeline", type=Path, metavar="PIPELINE", help="the pipeline file (.json)")
    q.add_argument("-o", "--output", type=Path, required=True, help="the zip file to write")
    q.set_defaults(func=_pipeline_export)
    q = actions.add_parser("install", help="unpack a shared pipeline zip; prints its pipeline file",
                           description="Unpacks ARCHIVE into FOLDER (new or empty) after checking that this "
                                       "environment has the plugin and nnunetv2 versions it was exported with, and "
                                       "prints the installed pipeline file's path (for predict-series --pipeline). "
                                       "No raw data is needed; FOLDER/nnUNet_results is an nnU-Net results folder.")
    q.add_argument("archive", type=Path, metavar="ARCHIVE", help="a zip written by nnunet-aneurysm pipeline export")
    q.add_argument("folder", type=Path, metavar="FOLDER", help="where to install it")
    q.set_defaults(func=_pipeline_install)

    p = verbs.add_parser("predict-series", help="DICOM series -> submission.csv (14 probabilities per series)",
                         description="Predict DICOM series with a pipeline file: stage 1 (folds, flip TTA), region of "
                                     "interest, stage 2 (folds, flip TTA), graph, GAT, stacker. INPUT is a series "
                                     "folder, a folder of series folders, or an RSNA root. A series that fails any "
                                     "step still gets a row (the previous step's answer or the fallback row); the "
                                     "reasons go to <output>_log.csv. Rows are appended as each series finishes. "
                                     "The terminal shows a progress bar and a summary; nnU-Net's messages and "
                                     "warnings go to <output>.log. Exit status 2 with one line on a systemic "
                                     "failure: a -device that cannot be used, a model that cannot be loaded, no "
                                     f"INPUT folder holding DICOM, or more than {100 * MAX_FALLBACK_SHARE:.0f} % of "
                                     "the series on the fallback row (after every row is written).")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, required=True, help="submission CSV to write")
    p.add_argument("--pipeline", type=Path, required=True, help="pipeline file (nnunet-aneurysm pipeline init)")
    device_argument(p)
    p.add_argument("-f", "--folds", type=int, nargs="+", default=None,
                   help="folds of both stages (and their GATs) to ensemble (default: the pipeline file's)")
    p.add_argument("-chk", "--checkpoint", default=None,
                   help="checkpoint file of every fold of both stages, e.g. checkpoint_best.pth (default: the "
                        "pipeline file's, checkpoint_final.pth)")
    p.add_argument("--disable_tta", "--disable-tta", action="store_true",
                   help="no left/right flip test-time augmentation in either stage (about half the network time)")
    p.add_argument("-step_size", "--step-size", type=float, default=0.5,
                   help="sliding-window step of both stages, a fraction of the patch (nnU-Net's; default 0.5, "
                        "larger is faster)")
    p.add_argument("--continue", "--continue_prediction", dest="resume", action="store_true",
                   help="keep the series OUTPUT already holds (a killed run's) and predict only the others")
    parts_arguments(p, "series (each part its own -o; then nnunet-aneurysm merge-submissions)")
    p.add_argument("--allow-fallback", action="store_true",
                   help=f"exit 0 however many series got the fallback row (default: exit 2 above "
                        f"{100 * MAX_FALLBACK_SHARE:.0f} %%) and give folders without DICOM the fallback row: "
                        "a row for every series, as the competition's server needs")
    p.add_argument("--save-outputs", type=Path, default=None,
                   help="also write each series' stage-2 maps and candidates (patient mm) under this folder")
    p.set_defaults(func=_predict_series)

    p = verbs.add_parser("merge-submissions", help="the parts of a split predict-series as one submission",
                         description="Concatenate the submissions (and their _log.csv, _features.csv) that "
                                     "predict-series -num_parts N -part_id K wrote; refuse a series in two parts and, "
                                     "with --inputs, an input series folder in no part.")
    p.add_argument("parts", type=Path, nargs="+", help="each part's submission CSV")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--inputs", type=Path, nargs="+", default=None,
                   help="the INPUT folders predict-series was given: every series folder must be in one part")
    p.set_defaults(func=_merge_submissions)

    p = verbs.add_parser("evaluate", help="the competition's weighted AUC of a submission",
                         description="Weighted AUC (13 x Aneurysm Present + the 13 location AUCs, over 26), per-column "
                                     "AUCs with positives counted, bootstrap 95 % intervals; rows matched by "
                                     "SeriesInstanceUID. A column with one class has no AUC and is left out with its "
                                     "weight (reported). Writes metrics.json and ROC curves.")
    p.add_argument("--labels", type=Path, required=True, help="train.csv-like table with the 14 label columns")
    p.add_argument("--predictions", type=Path, required=True, help="submission.csv")
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="folder for metrics.json and ROC curves")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.set_defaults(func=_evaluate)

    p = verbs.add_parser("report", help="the report of a run: scores, ROC curves and what the run left",
                         description="Write DIR/index.html (a folder any browser opens): weighted and per-column AUCs "
                                     "with bootstrap intervals and ROC curves of SUBMISSION against LABELS; with "
                                     "--features the ablation (head alone, stacker, stacker without each feature "
                                     "group) and how well AKOrN and PINN read-outs flag wrong calls; with "
                                     "--operating-point stage 1's vessel threshold curves; with --models nnU-Net's "
                                     "training curves; with --outputs slices and vessel graphs of a hit, a false "
                                     "alarm and a miss (the true aneurysm marked where LABELS sits in an RSNA folder "
                                     "with train_localizers.csv and series/); with --timing the wall time per step.")
    p.add_argument("--submission", type=Path, required=True, help="submission.csv (predict-series)")
    p.add_argument("--labels", type=Path, required=True, help="train.csv-like table with the 14 label columns")
    p.add_argument("-o", "--output", type=Path, required=True, help="the report's folder")
    p.add_argument("--models", type=Path, nargs="*", default=[],
                   help="nnU-Net model folders, folders above them ($nnUNet_results) or pipeline files: their "
                        "training curves")
    p.add_argument("--features", type=Path, default=None,
                   help="the folder of nnunet-aneurysm features (out-of-fold features.csv); needs the submission's "
                        "_features.csv beside it")
    p.add_argument("--outputs", type=Path, default=None, help="the folder of predict-series --save-outputs")
    p.add_argument("--operating-point", type=Path, default=None,
                   help="stage 2's raw dataset folder, where roi-dataset wrote vessel_operating_point.json")
    p.add_argument("--timing", type=Path, default=None, help="JSON of seconds per step (the demo's timing.json)")
    p.add_argument("--title", default=None, help="the page's title (default: report on SUBMISSION's name)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.set_defaults(func=_report)

    p = verbs.add_parser("demo", help="the main job on synthetic data, end to end, scored on a held-out set",
                         description="Generate a training set and a held-out set (another seed), convert, plan, "
                                     "preprocess and train both stages per fold with stock nnU-Net commands, build "
                                     "out-of-fold features, GAT and stacker, write the pipeline file, predict the "
                                     "held-out set from its DICOM folder, evaluate it and write the report. Prints "
                                     "every command; running it again resumes.")
    p.add_argument("--workdir", type=Path, default=Path("demo_run"))
    p.add_argument("--quick", action="store_true", help="the smoke size: every step in minutes, nothing learnt")
    p.add_argument("--train-series", type=int, default=None, help="training series (default 200)")
    p.add_argument("--heldout-series", type=int, default=None, help="held-out series (default 100)")
    p.add_argument("--size", type=int, default=None, help="in-plane matrix size of the generated scans (default 64)")
    p.add_argument("--folds", type=int, default=None, help="cross-validation folds, each trained (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage1-epochs", type=int, default=None, help="stage-1 epochs per fold (default 25)")
    p.add_argument("--stage2-epochs", type=int, default=None, help="stage-2 epochs per fold (default 40)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per epoch of both stages (default 20 for stage 1, 25 for stage 2)")
    device_argument(p, "; cuda trains nnU-Net's GPU configuration (3d_fullres) with the demo's schedule")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except UserInputError as err:  # an unsupported nnunetv2 (nnunet_version.py): every verb needs it
        print(f"nnunet-aneurysm: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as err:
        print(f"nnunet-aneurysm {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
