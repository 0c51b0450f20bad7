"""The main job on embedded synthetic data, as a user would run it: every step a command, printed,
resumable, ending in a scored held-out submission.

training set (generated) -> two raw datasets -> stage 1 planned, preprocessed, trained per fold ->
out-of-fold region-of-interest dataset -> stage 2 planned, preprocessed, trained per fold ->
out-of-fold meta-features -> GAT and stacker -> pipeline file -> held-out set (another seed, never
trained on) predicted from its DICOM folder -> evaluation -> report.

Each step runs the stock nnU-Net command or our verb as a subprocess, exactly as printed, with
nnU-Net's folders inside the work directory. A step whose output exists is skipped, and a fold
whose training stopped continues with ``--c``: running the demo again resumes it. Command output
goes to ``demo.log``; while a fold trains (minutes) the terminal shows one line per epoch.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_aneurysm.stages import (
    ANEURYSMS_NAME,
    CPU_CONFIGURATION,
    STAGE1,
    STAGE2,
    VESSELS_NAME,
    Stage,
    dataset_name,
    stage2_dataset_name,
)

VESSELS_ID, ANEURYSMS_ID, STAGE2_ID = 101, 102, 103
VESSELS_DATASET = dataset_name(VESSELS_ID, VESSELS_NAME)
ANEURYSMS_DATASET = dataset_name(ANEURYSMS_ID, ANEURYSMS_NAME)
STAGE2_DATASET = stage2_dataset_name(STAGE2_ID, ANEURYSMS_DATASET)
HELDOUT_SEED_OFFSET = 1000  # the held-out set's seed is the training seed + this: never the same series


@dataclass
class Schedule:
    epochs: int
    iterations: int
    val_iterations: int = 2


@dataclass
class DemoSettings:
    workdir: Path
    train_series: int = 200
    heldout_series: int = 100
    size: int = 64
    fov_mm: float = 84.0
    seed: int = 0  # of the generated data (the held-out set: seed + HELDOUT_SEED_OFFSET)
    training_seed: int = 0  # of both stages' trainers (plans' trainer_schedule), for repeatable and repeated runs
    bootstrap: int = 1000  # resamples of the report's intervals
    folds: int = 2
    stage1: Schedule = field(default_factory=lambda: Schedule(25, 20))
    stage2: Schedule = field(default_factory=lambda: Schedule(40, 25))
    device: str = "cpu"
    workers: int = 2

    @property
    def configuration(self) -> str:
        """The CPU configuration on the CPU; on a GPU nnU-Net's 3d_fullres (its patch, batch and network
        sizes) with the demo's schedule."""
        return CPU_CONFIGURATION if self.device == "cpu" else "3d_fullres"


def quick_settings(workdir: Path) -> DemoSettings:
    """The smoke size: every step runs, in minutes, learning nothing to speak of."""
    return DemoSettings(workdir, train_series=16, heldout_series=6, size=48, folds=2,
                        stage1=Schedule(1, 2, 1), stage2=Schedule(1, 2, 1), bootstrap=100)


def demo_environment(workdir: Path) -> dict[str, str]:
    """nnU-Net's three folders inside the work directory, our trainers visible, CPU-sane worker counts."""
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(workdir / name)
    from nnunet_aneurysm.nnunet_ext import FOLDER

    env["nnUNet_extTrainer"] = str(FOLDER)
    env.setdefault("nnUNet_n_proc_DA", "0")
    env.setdefault("nnUNet_def_n_proc", "1")
    return env


class EpochProgress:
    """One terminal line per epoch of an nnU-Net training (fold, epoch i/N, train loss, seconds), read from the
    lines nnU-Net logs (``<timestamp>: Epoch 3``, ``train_loss -0.41``, ``Epoch time: 12.3 s``), and the final
    validation Dice; every other line is left to the log."""

    def __init__(self, what: str, epochs: int):
        self.what, self.epochs = what, epochs
        self.epoch, self.train_loss = 0, float("nan")

    def __call__(self, line: str) -> str | None:
        text = line.split(": ", 1)[-1].strip()  # after nnU-Net's timestamp
        if match := re.fullmatch(r"Epoch (\d+)", text):
            self.epoch = int(match[1])
        elif match := re.fullmatch(r"train_loss (\S+)", text):
            self.train_loss = float(match[1])
        elif match := re.fullmatch(r"Epoch time: (\S+) s", text):
            return (f"  {self.what}: epoch {self.epoch + 1}/{self.epochs}, train loss {self.train_loss:.4f}, "
                    f"{float(match[1]):.0f} s")
        elif match := re.fullmatch(r"Mean Validation Dice:?\s+(\S+)", text):
            return f"  {self.what}: nnU-Net's mean validation Dice {float(match[1]):.4f}"
        return None


class Runner:
    """Runs commands with the demo's environment, printing each and logging its output."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env, self.log = demo_environment(workdir), workdir / "demo.log"
        self.timing = workdir / "timing.json"  # seconds per step, kept across resumed runs
        self.seconds: dict[str, float] = json.loads(self.timing.read_text()) if self.timing.is_file() else {}

    def __call__(self, argv: list[str], label: str | None = None, show_output: bool = False,
                 progress: Callable[[str], str | None] | None = None) -> None:
        """``show_output``: the command's output on the terminal (not in the log); ``progress``: every output
        line goes to the log, and the lines it returns for one to the terminal."""
        command = " ".join(shlex.quote(a) for a in argv)
        print(f"$ {command}", flush=True)
        start = time.perf_counter()
        bindir = Path(sys.executable).parent
        exe = [str(bindir / argv[0]) if (bindir / argv[0]).exists() else argv[0], *argv[1:]]
        with open(self.log, "a") as f:
            f.write(f"\n$ {command}\n")
            f.flush()
            if progress is None:
                returncode = subprocess.run(exe, env=self.env, stdout=None if show_output else f,
                                            stderr=None if show_output else subprocess.STDOUT).returncode
            else:
                returncode = self._follow(exe, f, progress)
        elapsed = time.perf_counter() - start
        if label:
            self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
            self.timing.write_text(json.dumps(self.seconds, indent=2))
        print(f"  done in {elapsed:.0f} s", flush=True)
        if returncode != 0:
            raise RuntimeError(f"step failed (exit {returncode}): {command}\n  see {self.log}")

    def _follow(self, exe: list[str], log, progress: Callable[[str], str | None]) -> int:
        """Run ``exe`` with its output (unbuffered) line by line into ``log``, showing what ``progress`` makes of it."""
        with subprocess.Popen(exe, env={**self.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                shown = progress(line)
                if shown:
                    print(shown, flush=True)
        return proc.returncode


def model_folder(env: dict[str, str], dataset: str, stage: Stage, configuration: str,
                 trainer: str | None = None) -> Path:
    return Path(env["nnUNet_results"]) / dataset / f"{trainer or stage.trainer}__{stage.plans}__{configuration}"


def train_folds(run: Runner, settings: DemoSettings, dataset_id: int, dataset: str, stage: Stage, epochs: int,
                trainer: str | None = None, label: str | None = None) -> Path:
    """Train every fold (skipped when finished, continued with --c when interrupted), one terminal line per
    epoch of ``epochs``; returns the model folder."""
    folder = model_folder(run.env, dataset, stage, settings.configuration, trainer)
    for fold in range(settings.folds):
        if (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            continue
        resume = ["--c"] if (folder / f"fold_{fold}" / "checkpoint_latest.pth").is_file() else []
        run(["nnUNetv2_train", str(dataset_id), settings.configuration, str(fold), "-tr", trainer or stage.trainer,
             "-p", stage.plans, "-device", settings.device, *resume], label or stage.trainer,
            progress=EpochProgress(f"{stage.trainer} fold {fold}", epochs))
    return folder


def plan_and_preprocess(run: Runner, settings: DemoSettings, dataset_id: int, dataset: str, stage: Stage,
                        schedule: Schedule) -> None:
    if (Path(run.env["nnUNet_preprocessed"]) / dataset / f"{stage.plans}.json").is_file():
        return
    gpu = ["--gpu-epochs", str(schedule.epochs), "--gpu-iterations", str(schedule.iterations)] \
        if settings.device != "cpu" else []
    run(["nnunet-aneurysm", "plan", "-d", str(dataset_id), "--planner", stage.planner,
         "--cpu-epochs", str(schedule.epochs), "--cpu-iterations", str(schedule.iterations),
         "--cpu-val-iterations", str(schedule.val_iterations), *gpu, "-np", str(settings.workers),
         "--training-seed", str(settings.training_seed)], "plan")
    run(["nnUNetv2_preprocess", "-d", str(dataset_id), "-plans_name", stage.plans, "-c", "3d_fullres",
         "-np", str(settings.workers)], "preprocess")


def generate(run: Runner, settings: DemoSettings) -> tuple[Path, Path]:
    """The training folder and the held-out folder (another seed), in the competition's layout."""
    train, heldout = run.workdir / "rsna_train", run.workdir / "rsna_heldout"
    for folder, n, seed in ((train, settings.train_series, settings.seed),
                            (heldout, settings.heldout_series, settings.seed + HELDOUT_SEED_OFFSET)):
        if not (folder / "train.csv").is_file():
            run(["nnunet-aneurysm", "synth", str(folder), "--series", str(n), "--size", str(settings.size),
                 "--fov-mm", str(settings.fov_mm), "--seed", str(seed), "--workers", str(settings.workers)], "synth")
    return train, heldout


def train_both_stages(run: Runner, settings: DemoSettings, train: Path) -> tuple[Path, Path]:
    """Conversion, stage 1, the out-of-fold ROI dataset, stage 2; returns both model folders."""
    raw = Path(run.env["nnUNet_raw"])
    if not (raw / ANEURYSMS_DATASET / "metadata.csv").is_file():
        run(["nnunet-aneurysm", "convert", str(train), "--vessels-id", str(VESSELS_ID), "--aneurysms-id",
             str(ANEURYSMS_ID), "--folds", str(settings.folds), "--workers", str(settings.workers)], "convert")
    plan_and_preprocess(run, settings, VESSELS_ID, VESSELS_DATASET, STAGE1, settings.stage1)
    stage1 = train_folds(run, settings, VESSELS_ID, VESSELS_DATASET, STAGE1, settings.stage1.epochs)
    if not (raw / STAGE2_DATASET / "roi.csv").is_file():
        run(["nnunet-aneurysm", "roi-dataset", "--vessels", str(VESSELS_ID), "--aneurysms", str(ANEURYSMS_ID),
             "--output-id", str(STAGE2_ID), "-c", settings.configuration, "-device", settings.device], "roi-dataset")
    plan_and_preprocess(run, settings, STAGE2_ID, STAGE2_DATASET, STAGE2, settings.stage2)
    stage2 = train_folds(run, settings, STAGE2_ID, STAGE2_DATASET, STAGE2, settings.stage2.epochs)
    return stage1, stage2


def train_postprocessing(run: Runner, settings: DemoSettings) -> Path:
    """Out-of-fold features and graphs, one GAT per fold, the stacker; returns the features folder."""
    features = run.workdir / "postprocessing"
    table = features / "features.csv"
    if not table.is_file():
        run(["nnunet-aneurysm", "features", "--stage2", str(STAGE2_ID), "-c", settings.configuration,
             "-o", str(features), "-device", settings.device], "features")
    if not (features / "gat" / f"fold_{settings.folds - 1}" / "model.pt").is_file():
        run(["nnunet-aneurysm", "train-gat", "--features", str(features), "--stage2", str(STAGE2_ID)], "train-gat")
    if not (features / "stacker" / "stacker.json").is_file():
        run(["nnunet-aneurysm", "train-stacker", "--features", str(features)], "train-stacker")
    return features


def predict_heldout(run: Runner, settings: DemoSettings, heldout: Path, features: Path | None = None) -> Path:
    """Pipeline file from the trained models, then the held-out set predicted from its DICOM folder and scored."""
    pipeline = run.workdir / "pipeline" / "pipeline.json"
    extra = ["--gat", str(features / "gat"), "--stacker", str(features / "stacker")] if features else []
    run(["nnunet-aneurysm", "pipeline", "init", "-o", str(pipeline), "--stage1", str(VESSELS_ID), "--stage2",
         str(STAGE2_ID), "-c", settings.configuration, *extra], "pipeline init")
    submission = run.workdir / "submission.csv"
    if not submission.is_file():
        run(["nnunet-aneurysm", "predict-series", str(heldout), "-o", str(submission), "--pipeline", str(pipeline),
             "-device", settings.device, "--save-outputs", str(run.workdir / "heldout_outputs")], "predict-series",
            show_output=True)
    run(["nnunet-aneurysm", "evaluate", "--labels", str(heldout / "train.csv"), "--predictions", str(submission),
         "--out", str(run.workdir / "evaluation")], "evaluate", show_output=True)
    return submission


def make_report(run: Runner, heldout: Path, submission: Path, features: Path, bootstrap: int = 1000) -> Path:
    """The report, by the verb any run can call; returns its page."""
    report = run.workdir / "report"
    run(["nnunet-aneurysm", "report", "--submission", str(submission), "--labels", str(heldout / "train.csv"),
         "--models", run.env["nnUNet_results"], "--features", str(features),
         "--outputs", str(run.workdir / "heldout_outputs"),
         "--operating-point", str(Path(run.env["nnUNet_raw"]) / STAGE2_DATASET), "--timing", str(run.timing),
         "--title", "the main job on generated data, scored on held-out series (another seed, never trained on)",
         "--bootstrap", str(bootstrap), "-o", str(report)], "report")
    return report / "index.html"


def run_demo(settings: DemoSettings) -> Path:
    """Runs everything under ``settings.workdir``; returns the work directory."""
    workdir = settings.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run = Runner(workdir)
    print(f"working in {workdir} (full command output in {run.log})")
    started = time.perf_counter()
    train, heldout = generate(run, settings)
    train_both_stages(run, settings, train)
    features = train_postprocessing(run, settings)
    submission = predict_heldout(run, settings, heldout, features)
    page = make_report(run, heldout, submission, features, settings.bootstrap)
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    print(f"\nheld-out weighted AUC {metrics['weighted_auc']:.3f}, Aneurysm Present AUC "
          f"{metrics['column_auc']['Aneurysm Present']:.3f} ({metrics['n_series']} series); "
          f"this run took {(time.perf_counter() - started) / 60:.1f} min")
    print(f"report: {page}")
    return workdir
