"""``nnunet-aneurysm <verb>``: the steps nnU-Net has no verb for.

Every verb has ``--help``; heavy imports happen inside the verbs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_aneurysm.nnunet_env import UserInputError


def _ext_path(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.nnunet_ext import FOLDER

    print(FOLDER)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.planners import PLANNERS
    from nnunet_aneurysm.planners.run import plan_dataset

    schedule = {k: v for k, v in (("num_epochs", args.cpu_epochs),
                                  ("num_iterations_per_epoch", args.cpu_iterations),
                                  ("num_val_iterations_per_epoch", args.cpu_val_iterations))
                if v is not None}
    plans_name, plans_file = plan_dataset(args.dataset, PLANNERS[args.planner], args.vram_gb,
                                          args.plans_name, schedule, args.num_processes)
    print(f"Plans written to {plans_file}")
    print(f"Next: nnUNetv2_preprocess -d {args.dataset} -plans_name {plans_name} -c 3d_fullres")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.dataset_conversion.synthetic import generate

    truths = generate(args.out, args.series, args.seed, args.size, args.segmentation_fraction,
                      args.multiframe_fraction, args.workers)
    positive = sum(bool(t.aneurysms) for t in truths)
    print(f"wrote {len(truths)} series ({positive} with aneurysms) to {args.out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.dataset_conversion.convert import ConversionInputError, convert

    try:
        report = convert(args.rsna_root, args.vessels_id, args.aneurysms_id, args.raw, args.workers,
                         args.sphere_radius_mm, resume=not args.restart)
    except ConversionInputError as err:
        raise UserInputError(str(err)) from None
    failed = report[report["status"] == "failed"]
    print(f"converted {int((report['status'] != 'failed').sum())} of {len(report)} series "
          f"({int(report['has_vessel_labels'].sum())} with vessel labels); {len(failed)} failed")
    for _, row in failed.iterrows():
        print(f"  failed {row['SeriesInstanceUID']}: {row['reason']}", file=sys.stderr)
    return min(len(failed), 125)


def _vessel_channel(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.inference.vessel_channel import add_vessel_channel
    from nnunet_aneurysm.nnunet_env import dataset_name, model_folder, require_env
    from nnunet_aneurysm.stages import stage2_dataset_name

    raw = require_env("nnUNet_raw", "nnUNet_results")["nnUNet_raw"]
    aneurysms = dataset_name(args.aneurysms)
    model_dir = model_folder(args.vessels, args.trainer, args.plans, args.configuration)
    try:
        folder = add_vessel_channel(raw, aneurysms, stage2_dataset_name(args.output_id, aneurysms), model_dir,
                                    args.device)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from None
    print(f"wrote {folder}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import os

    from nnunet_aneurysm.nnunet_env import dataset_name, model_folder, our_trainers_visible, require_env

    raw = require_env("nnUNet_raw", "nnUNet_results")["nnUNet_raw"]
    our_trainers_visible()
    if not args.input.is_dir():
        raise UserInputError(f"input folder {args.input} does not exist")
    model_dir = model_folder(args.dataset, args.trainer, args.plans, args.configuration)

    import torch

    from nnunet_aneurysm.inference.case_features import CaseFeaturePredictor
    from nnunet_aneurysm.metadata import MetadataTable

    table = args.metadata or raw / dataset_name(args.dataset) / "metadata.csv"
    metadata = MetadataTable.read(table) if table.is_file() else MetadataTable()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    predictor = CaseFeaturePredictor(tile_step_size=args.step_size, use_mirroring=not args.disable_tta,
                                     device=torch.device(args.device), allow_tqdm=not args.disable_progress_bar,
                                     metadata=metadata)
    try:
        predictor.initialize_from_trained_model_folder(str(model_dir), [int(f) if f.isdigit() else f for f in args.f],
                                                       args.chk)
    except (ValueError, FileNotFoundError) as err:
        raise UserInputError(str(err)) from None
    predictor.predict_from_files(str(args.input), str(args.output), save_probabilities=args.save_probabilities,
                                 overwrite=True, num_processes_preprocessing=args.npp,
                                 num_processes_segmentation_export=args.nps)
    if metadata.missing:
        print(f"{metadata.missing} patch look-ups found no metadata row for their case: zeros entered FiLM")
    print(f"predictions and <case>_features.json written to {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.demo import DemoSettings, run_demo

    run_demo(DemoSettings(args.workdir, args.series, args.size, args.seed, tuple(args.folds), args.epochs,
                          args.iterations, args.val_iterations))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nnunet_aneurysm.planners import PLANNERS
    from nnunet_aneurysm.stages import STAGE1, STAGE2

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
    p.add_argument("-np", "--num-processes", type=int, default=2, help="fingerprint worker processes")
    p.set_defaults(func=_plan)

    p = verbs.add_parser("synth", help="write synthetic data in the RSNA competition layout",
                         description="Write OUT/train.csv, train_localizers.csv, series/ and segmentations/ "
                                     "exactly as the competition lays them out, from a Circle-of-Willis phantom.")
    p.add_argument("out", type=Path)
    p.add_argument("--series", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=96, help="in-plane matrix size (field of view is 84 mm)")
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
    p.set_defaults(func=_convert)

    p = verbs.add_parser("vessel-channel", help="add stage 1's out-of-fold vessel probability to the aneurysm "
                                                "dataset (stage 2's second input channel)",
                         description="Predict every aneurysm case with the stage-1 model of its own fold and write "
                                     "a new raw dataset DatasetOUT_<name>WithVessels with channels image + "
                                     "vessel probability (like nnU-Net's cascade does for its low-res stage).")
    p.add_argument("--vessels", required=True, help="stage-1 (vessel) dataset id or name")
    p.add_argument("--aneurysms", required=True, help="aneurysm dataset id or name")
    p.add_argument("--output-id", type=int, required=True)
    p.add_argument("-tr", "--trainer", default=STAGE1.trainer)
    p.add_argument("-p", "--plans", default=STAGE1.plans)
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("-device", "--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=_vessel_channel)

    p = verbs.add_parser("predict", help="nnUNetv2_predict for stage 2, plus per-case features for the stacker",
                         description="Same flags and outputs as nnUNetv2_predict, and beside each segmentation a "
                                     "<case>_features.json: per fold, the 14 series-level probabilities (max over "
                                     "patches), the AKOrN order parameter and the PINN residual. Needs an "
                                     "AneurysmWaveFormer* trainer.")
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of images named like imagesTr")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-tr", "--trainer", default=STAGE2.trainer)
    p.add_argument("-p", "--plans", default=STAGE2.plans)
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0 1 2 3 4)")
    p.add_argument("-chk", default="checkpoint_final.pth")
    p.add_argument("-step_size", "--step-size", type=float, default=0.5)
    p.add_argument("--disable_tta", action="store_true")
    p.add_argument("--save_probabilities", action="store_true")
    p.add_argument("--metadata", type=Path, default=None,
                   help="table with case_id, PatientAge, PatientSex, Modality (default: the dataset's metadata.csv)")
    p.add_argument("-npp", type=int, default=1, help="preprocessing processes")
    p.add_argument("-nps", type=int, default=1, help="export processes")
    p.add_argument("-device", "--device", default="cuda", choices=["cpu", "cuda"], help="as nnUNetv2_predict")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.set_defaults(func=_predict)

    p = verbs.add_parser("demo", help="the main job on synthetic data, end to end on the CPU",
                         description="Generate synthetic RSNA data, convert, plan, preprocess and train both "
                                     "stages with stock nnU-Net commands, then predict. Prints every command.")
    p.add_argument("--workdir", type=Path, default=Path("demo_run"))
    p.add_argument("--series", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", nargs="+", default=["0", "1"], help="folds to train (all five: 0 1 2 3 4)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--val-iterations", type=int, default=2)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as err:
        print(f"nnunet-aneurysm {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
