"""The main job on embedded synthetic data: every step a user would type, in order.

synthetic RSNA folder -> two raw datasets -> stage 1 (SegFormer3D, vessels) planned, preprocessed,
trained per fold -> out-of-fold vessel channel -> stage 2 (WaveFormer + AKOrN + PINN, aneurysms)
planned, preprocessed, trained per fold -> fold-ensemble prediction with probabilities and per-case
features for the stacker (our predict verb: nnU-Net's predictor plus AKOrN and PINN read-outs).
Each step runs the stock nnU-Net command (or our verb) as a subprocess, exactly as printed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_aneurysm.stages import (
    ANEURYSMS_NAME,
    CPU_CONFIGURATION,
    STAGE1,
    STAGE2,
    VESSEL_CHANNEL,
    Stage,
    channel_file,
    dataset_name,
    stage2_dataset_name,
)

VESSELS_ID, ANEURYSMS_ID, STAGE2_ID = 101, 102, 103
STAGE2_DATASET = stage2_dataset_name(STAGE2_ID, dataset_name(ANEURYSMS_ID, ANEURYSMS_NAME))


@dataclass
class DemoSettings:
    workdir: Path
    series: int = 20
    size: int = 64
    seed: int = 0
    folds: tuple[str, ...] = ("0", "1")
    epochs: int = 5
    iterations: int = 10
    val_iterations: int = 2
    predict_cases: int = 2


def demo_environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(workdir / name)
    from nnunet_aneurysm.nnunet_ext import FOLDER

    env["nnUNet_extTrainer"] = str(FOLDER)
    env.setdefault("nnUNet_n_proc_DA", "0")
    env.setdefault("nnUNet_def_n_proc", "1")
    return env


def _run(argv: list[str], env: dict[str, str], log: Path) -> None:
    command = " ".join(shlex.quote(a) for a in argv)
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    bindir = Path(sys.executable).parent
    exe = bindir / argv[0] if (bindir / argv[0]).exists() else argv[0]
    with open(log, "a") as f:
        f.write(f"\n$ {command}\n")
        f.flush()
        proc = subprocess.run([str(exe), *argv[1:]], env=env, stdout=f, stderr=subprocess.STDOUT)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"step failed (exit {proc.returncode}): {command}\n  see {log}")


def _stage(settings: DemoSettings, env, log, dataset: int, stage: Stage) -> None:
    _run(["nnunet-aneurysm", "plan", "-d", str(dataset), "--planner", stage.planner,
          "--cpu-epochs", str(settings.epochs), "--cpu-iterations", str(settings.iterations),
          "--cpu-val-iterations", str(settings.val_iterations), "-np", "2"], env, log)
    _run(["nnUNetv2_preprocess", "-d", str(dataset), "-plans_name", stage.plans, "-c", "3d_fullres", "-np", "2"],
         env, log)
    for fold in settings.folds:
        _run(["nnUNetv2_train", str(dataset), CPU_CONFIGURATION, fold, "-tr", stage.trainer, "-p", stage.plans,
              "-device", "cpu"], env, log)


def run_demo(settings: DemoSettings) -> Path:
    """Runs everything under ``settings.workdir``; returns the folder of the final predictions."""
    workdir = settings.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env, log = demo_environment(workdir), workdir / "demo.log"
    print(f"working in {workdir} (full command output in {log})")
    rsna = workdir / "rsna"
    if not (rsna / "train.csv").is_file():
        _run(["nnunet-aneurysm", "synth", str(rsna), "--series", str(settings.series), "--size",
              str(settings.size), "--seed", str(settings.seed)], env, log)
    _run(["nnunet-aneurysm", "convert", str(rsna), "--vessels-id", str(VESSELS_ID),
          "--aneurysms-id", str(ANEURYSMS_ID)], env, log)
    _stage(settings, env, log, VESSELS_ID, STAGE1)
    _run(["nnunet-aneurysm", "vessel-channel", "--vessels", str(VESSELS_ID), "--aneurysms", str(ANEURYSMS_ID),
          "--output-id", str(STAGE2_ID), "-c", CPU_CONFIGURATION], env, log)
    _stage(settings, env, log, STAGE2_ID, STAGE2)

    raw = Path(env["nnUNet_raw"]) / STAGE2_DATASET
    inputs = workdir / "predict_input"
    inputs.mkdir(exist_ok=True)
    first = channel_file("", 0)
    cases = sorted(p.name[: -len(first)] for p in (raw / "imagesTr").glob(f"*{first}"))
    for case in cases[: settings.predict_cases]:
        for channel in (0, VESSEL_CHANNEL):
            target = inputs / channel_file(case, channel)
            if not target.exists():
                target.symlink_to(raw / "imagesTr" / target.name)
    out = workdir / "predictions"
    _run(["nnunet-aneurysm", "predict", "-i", str(inputs), "-o", str(out), "-d", str(STAGE2_ID),
          "-c", CPU_CONFIGURATION, "-tr", STAGE2.trainer, "-p", STAGE2.plans, "-f", *settings.folds, "-device", "cpu",
          "--save_probabilities", "-npp", "1", "-nps", "1"], env, log)
    results = Path(env["nnUNet_results"])
    print("\nWhat to look at:")
    for png in sorted(results.rglob("progress*.png")):
        print(f"  {png}")
    print(f"  predictions (segmentations, probabilities, <case>_features.json): {out}")
    return out
