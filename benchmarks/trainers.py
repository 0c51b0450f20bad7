"""Seconds per training iteration of our trainers vs nnU-Net's default trainer, same data and patch.

The baseline is ``AneurysmScheduledNNUNetTrainer``: nnU-Net's trainer and PlainConvUNet as its
planner configures them for the patch, reading only the one-epoch schedule from the plans.

Uses a finished demo folder (``nnunet-aneurysm demo --workdir W``): adds one configuration per
network to the stage-2 plans (same patch, same batch, a 1-epoch schedule), runs stock
``nnUNetv2_train`` for each trainer on CPU, and reads the epoch duration nnU-Net logged.

    python benchmarks/trainers.py --workdir demo_run --patch 64 64 64 --iterations 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from nnunet_aneurysm.demo import STAGE2_DATASET as DATASET
from nnunet_aneurysm.demo import STAGE2_ID, demo_environment
from nnunet_aneurysm.stages import BASELINE_TRAINER, STAGE1, STAGE2

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import plain_conv_unet_architecture  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    env = demo_environment(args.workdir.resolve())
    plans_file = Path(env["nnUNet_preprocessed"]) / DATASET / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    schedule = {"num_epochs": 1, "num_iterations_per_epoch": args.iterations, "num_val_iterations_per_epoch": 1,
                "save_every": 1, "seed": 0}
    waveformer = plans["configurations"]["3d_fullres"]["architecture"]
    segformer = {"network_class_name": "nnunet_aneurysm.networks.segformer3d.SegFormer3D", "arch_kwargs": {},
                 "_kw_requires_import": []}
    runs = [(BASELINE_TRAINER, plain_conv_unet_architecture(args.patch, [1.0, 1.0, 1.0])),
            (STAGE1.trainer, segformer),
            ("AneurysmWaveFormerBaselineTrainer", waveformer),
            ("AneurysmWaveFormerAKOrNTrainer", waveformer),
            ("AneurysmWaveFormerPINNTrainer", waveformer),
            ("AneurysmWaveFormerTrainer", waveformer),
            ("AneurysmWaveFormerAUCMTrainer", waveformer)]
    for trainer, architecture in runs:
        plans["configurations"][f"bench_{trainer}"] = {
            "inherits_from": "3d_fullres", "patch_size": list(args.patch), "batch_size": 2,
            "architecture": architecture, "trainer_schedule": schedule}
    plans_file.write_text(json.dumps(plans, indent=2))
    seconds = {}
    for trainer, _ in runs:
        configuration = f"bench_{trainer}"
        argv = [str(Path(sys.executable).parent / "nnUNetv2_train"), str(STAGE2_ID), configuration, "0",
                "-tr", trainer, "-p", STAGE2.plans, "-device", "cpu"]
        subprocess.run(argv, env=env, check=True, capture_output=True)
        folder = Path(env["nnUNet_results"]) / DATASET / f"{trainer}__{STAGE2.plans}__{configuration}" / "fold_0"
        logged = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
        epoch = logged["epoch_end_timestamps"][0] - logged["epoch_start_timestamps"][0]
        seconds[trainer] = epoch / (args.iterations + 1)
        print(f"{trainer:36s} {seconds[trainer]:6.2f} s/iteration", flush=True)
    base = seconds[BASELINE_TRAINER]
    print(f"\npatch {args.patch}, batch 2, CPU, {torch.get_num_threads()} threads; one epoch of {args.iterations} "
          f"training + 1 validation iteration, data loading included")
    for trainer, value in seconds.items():
        print(f"{trainer:36s} {value / base:5.2f}x the time of nnU-Net's default trainer")


if __name__ == "__main__":
    main()
