"""The first GPU's check, one prepared run (``scripts/gpu_check.sh``): every CUDA path a user takes, with figures.

Steps, most needed first, each with its own time cap inside one budget (default 470 s: the whole check stays
under 8 minutes; a step the budget cannot start is reported as skipped, never silently dropped; a dry run on a
slow CPU is bounded by the budget alone, the caps being sized for a GPU):

1. ``demo``: ``nnunet-aneurysm demo --quick --device cuda`` (nnU-Net's ``3d_fullres`` on the GPU, every verb);
2. ``predict``: ``predict-series`` of the same held-out series on CUDA and on the CPU; the 14 probabilities must
   agree within 1e-3;
3. ``train``: one short epoch (the demo plans' schedule) of each of our trainers on fold 0 with ``nnUNet_compile``
   off, then on (the main trainers first, then the ablation variants), seconds per epoch from nnU-Net's log;
4. ``memory``: the planner's estimate (``planners/memory.py``) vs ``torch.cuda.max_memory_allocated`` of an
   nnU-Net-style training step of each planned network, at the plans' patch and batch and at 128^3, batch 2;
5. ``networks``: ``benchmarks/networks.py`` on CUDA (64^3, batch 1, as README's CPU figures): time, memory and
   kernels per step, AKOrN's overhead.

It prints the figures with the card's name and writes ``gpu_check.json`` and ``gpu_check.txt`` into the work
folder and into ``$OUT`` when set. ``--dry-run`` runs the same steps on the CPU at the smallest sizes (one trainer
per stage, compile-on runs skipped: nnU-Net never compiles on the CPU; one series predicted on the CPU and compared
with the demo's own submission) to check the script's plumbing in CI; ``--demo DIR`` reuses a finished
``demo --quick`` folder instead of running one. Exit status 0 when every step that ran passed, 1 otherwise, 2 when
it cannot start (no CUDA without ``--dry-run``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ beside the package
BIN = Path(sys.executable).parent
BUDGET_S = 470.0  # the check's own time: under 8 minutes with the interpreter's start and the report
PROBABILITY_TOLERANCE = 1e-3  # CUDA (autocast, cuDNN) vs CPU, per submission column
BIG_PATCH, BIG_BATCH = (128, 128, 128), 2  # a realistic training patch for the memory comparison


@dataclass
class Step:
    name: str
    status: str = "skipped"  # ok, failed, timeout, skipped
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    detail: str = ""


@dataclass
class Settings:
    workdir: Path
    dry_run: bool
    demo: Path | None
    budget_s: float

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def configuration(self) -> str:
        """The demo's configuration on this device (``DemoSettings.configuration``)."""
        return "3d_cpu" if self.dry_run else "3d_fullres"

    @property
    def demo_dir(self) -> Path:
        return self.demo or self.workdir / "demo"


class Budget:
    """Seconds left of the whole check; each step gets the lesser of its cap and what is left."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_command(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[str, float]:
    """Run a console script of this environment (or a python file), output to ``log``; (status, seconds)."""
    exe = BIN / argv[0] if (BIN / argv[0]).exists() else Path(argv[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        try:
            proc = subprocess.run([str(exe), *argv[1:]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=max(timeout, 1.0), cwd=REPO)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
    return status, time.perf_counter() - start


def last_lines(log: Path, n: int = 3) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def nnunet_env(settings: Settings, results: Path | None = None, compile_: bool = False) -> dict[str, str]:
    """The demo's nnU-Net folders (results elsewhere when given), our trainers visible, compile on or off."""
    from nnunet_aneurysm.demo import demo_environment

    env = demo_environment(settings.demo_dir)
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        env["nnUNet_results"] = str(results)
    env["nnUNet_compile"] = "true" if compile_ else "false"
    return env


# ---- the steps: each fills its Step and returns whether the steps after it may use its output ----

def step_demo(settings: Settings, step: Step, timeout: float) -> bool:
    if settings.demo is not None:
        step.status, step.detail = "ok", f"reused {settings.demo}"
    else:
        argv = ["nnunet-aneurysm", "demo", "--quick", "--device", settings.device, "--workdir", str(settings.demo_dir)]
        step.status, step.seconds = run_command(argv, dict(os.environ), settings.workdir / "logs" / "demo.log", timeout)
        step.detail = " ".join(argv)
    timing = settings.demo_dir / "timing.json"
    if step.status == "ok" and timing.is_file():
        step.figures["seconds_per_demo_step"] = json.loads(timing.read_text())
    return step.status == "ok" and (settings.demo_dir / "pipeline" / "pipeline.json").is_file()


def step_predict(settings: Settings, step: Step, timeout: float) -> None:
    """On a GPU: the same series predicted on CUDA and on the CPU. In a dry run the CPU's prediction is compared
    with the demo's own submission.csv rows (the same pipeline's), which saves one run of the CPU's time."""
    import pandas as pd

    from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS

    series = sorted((settings.demo_dir / "rsna_heldout" / "series").iterdir())[: 1 if settings.dry_run else 2]
    uids = sorted(s.name for s in series)  # the synthetic series' folders are named by their UID
    tables = []
    for run, device in enumerate([settings.device] + ([] if settings.dry_run else ["cpu"])):
        output, log = settings.workdir / f"predict_{run}_{device}.csv", settings.workdir / "logs" / f"predict_{run}.log"
        argv = ["nnunet-aneurysm", "predict-series", *map(str, series), "-o", str(output), "--pipeline",
                str(settings.demo_dir / "pipeline" / "pipeline.json"), "-device", device]
        status, seconds = run_command(argv, dict(os.environ), log, timeout - step.seconds)
        step.seconds += seconds
        step.figures[f"seconds_{device}_run_{run}"] = round(seconds, 1)
        if status != "ok":
            step.status, step.detail = status, last_lines(log)
            return
        tables.append(pd.read_csv(output, dtype={ID_COLUMN: str}).set_index(ID_COLUMN))
    reference = "cpu"
    if settings.dry_run:
        reference = "the demo's submission.csv"
        tables.append(pd.read_csv(settings.demo_dir / "submission.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN))
    first, second = (table.reindex(uids)[list(SUBMISSION_COLUMNS)] for table in tables)
    difference = float((first - second).abs().to_numpy().max())
    step.figures.update(series=len(series), max_abs_difference=difference, tolerance=PROBABILITY_TOLERANCE)
    complete = not first.isna().any().any() and not second.isna().any().any()
    step.status = "ok" if complete and difference <= PROBABILITY_TOLERANCE else "failed"
    step.detail = f"{settings.device} vs {reference} on {len(series)} held-out series"


def trainer_plan(dry_run: bool) -> list[tuple[str, bool]]:
    """(trainer, compile) in the order the budget serves them: the two stages' main trainers first."""
    from nnunet_aneurysm.stages import STAGE1, STAGE2
    from nnunet_aneurysm.trainers import __all__ as trainers

    variants = [t for t in trainers if t.startswith(STAGE2.trainer) and t != STAGE2.trainer]
    main = [STAGE1.trainer, STAGE2.trainer]
    order = [(t, False) for t in main] + [(t, True) for t in main] + [(t, False) for t in variants] + \
            [(t, True) for t in variants]
    if dry_run:  # the CPU: one trainer per stage shows the plumbing; nnU-Net never compiles on the CPU
        return [(t, c) for t, c in order if t in main and not c]
    return order


def step_train(settings: Settings, step: Step, timeout: float, trainer: str, compile_: bool) -> None:
    from nnunet_aneurysm.demo import STAGE2_ID, VESSELS_ID
    from nnunet_aneurysm.stages import STAGE1, STAGE2

    stage, dataset = (STAGE1, VESSELS_ID) if trainer == STAGE1.trainer else (STAGE2, STAGE2_ID)
    results = settings.workdir / f"results_compile_{'on' if compile_ else 'off'}"  # never the demo's models
    argv = ["nnUNetv2_train", str(dataset), settings.configuration, "0", "-tr", trainer, "-p", stage.plans,
            "-device", settings.device]
    log = settings.workdir / "logs" / f"{step.name}.log"
    step.status, step.seconds = run_command(argv, nnunet_env(settings, results, compile_), log, timeout)
    epochs = [float(v) for v in re.findall(r"Epoch time: ([0-9.]+) s", log.read_text(errors="replace"))]
    step.figures.update(wall_seconds=round(step.seconds, 1), epoch_seconds=epochs,
                        compiled="Using torch.compile" in log.read_text(errors="replace"))
    step.detail = " ".join(argv) + ("" if step.status == "ok" else f" :: {last_lines(log)}")


def step_memory(settings: Settings, step: Step, timeout: float) -> None:
    out = settings.workdir / "memory.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "memory", "--demo", str(settings.demo_dir),
            "--configuration", settings.configuration, "--device", settings.device, "--json", str(out)]
    step.status, step.seconds = run_command(argv, dict(os.environ), settings.workdir / "logs" / "memory.log", timeout)
    if step.status == "ok":
        step.figures["rows"] = json.loads(out.read_text())
    else:
        step.detail = last_lines(settings.workdir / "logs" / "memory.log")


def step_networks(settings: Settings, step: Step, timeout: float) -> None:
    out = settings.workdir / "networks.json"
    sizes = ["--patch", "32", "32", "32", "--repeats", "1", "--threads", "1", "--only", "WaveFormer",
             "WaveFormer+AKOrN"] if settings.dry_run else ["--patch", "64", "64", "64", "--repeats", "5"]
    argv = [sys.executable, str(REPO / "benchmarks" / "networks.py"), *sizes, "--batch", "1", "--rounds", "1",
            "--device", settings.device, "--json", str(out)]
    log = settings.workdir / "logs" / "networks.log"
    step.status, step.seconds = run_command(argv, dict(os.environ), log, timeout)
    if step.status != "ok":
        step.detail = last_lines(log)
        return
    rows = json.loads(out.read_text())["rows"]
    step.figures["rows"] = rows
    for extra, backbone in (("WaveFormer+AKOrN", "WaveFormer"), ("WaveFormer+AKOrN+PINN", "WaveFormer+AKOrN")):
        if extra in rows and backbone in rows:
            step.figures[f"{extra} over {backbone}"] = {
                "time_percent": round(100 * (rows[extra]["seconds"] / rows[backbone]["seconds"] - 1), 1),
                "kernels_percent": round(100 * (rows[extra]["kernels"] / rows[backbone]["kernels"] - 1), 1)}


# ---- the memory worker: a process of its own, so a CUDA failure is one failed step ----

def planned_networks(demo: Path, configuration: str):
    """(name, builder, input channels, patch, batch, plans' estimate in GB) of each stage's planned network."""
    from functools import partial
    from pydoc import locate

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_aneurysm.demo import STAGE2_DATASET, VESSELS_DATASET
    from nnunet_aneurysm.stages import STAGE1, STAGE2

    for dataset, stage in ((VESSELS_DATASET, STAGE1), (STAGE2_DATASET, STAGE2)):
        folder = demo / "nnUNet_preprocessed" / dataset
        plans = json.loads((folder / f"{stage.plans}.json").read_text())
        config = PlansManager(plans).get_configuration(configuration)
        dataset_json = json.loads((folder / "dataset.json").read_text())
        channels, classes = len(dataset_json["channel_names"]), len(dataset_json["labels"])
        network = locate(config.network_arch_class_name)
        build = partial(network, channels, classes, True, **config.network_arch_init_kwargs)
        estimate = plans["configurations"][configuration].get("estimated_vram_gb")  # its own, not inherited
        yield network.__name__, build, channels, list(config.patch_size), config.batch_size, estimate


def example_input(channels: int, batch: int, patch, device="cuda"):
    """Stage 1: one image channel; stage 2: image, vessel probability, artery labels (class ids)."""
    import torch

    x = torch.randn(batch, channels, *patch, device=device)
    if channels == 3:
        x[:, 1] = torch.rand(batch, *patch, device=device)
        x[:, 2] = torch.randint(0, 14, (batch, *patch), device=device).float()
    return x


def memory_worker(argv: list[str]) -> int:
    from functools import partial

    from benchmarks.memory_calibration import measured_peak  # an nnU-Net-style step: what the estimate assumes
    from nnunet_aneurysm.planners.memory import CUDA_OVERHEAD_BYTES, training_memory_bytes

    parser = argparse.ArgumentParser(prog="gpu_check.py memory")
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--configuration", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for name, build, channels, patch, batch, plans_gb in planned_networks(args.demo, args.configuration):
        sizes = [(patch, batch, plans_gb)] + ([] if args.device == "cpu" else [(list(BIG_PATCH), BIG_BATCH, None)])
        for size, n, planned in sizes:
            # the CUDA context and allocator slack are in the estimate, not in max_memory_allocated
            estimate = training_memory_bytes(build, channels, size, n) - CUDA_OVERHEAD_BYTES
            measured = measured_peak(build, size, n, partial(example_input, channels)) if args.device == "cuda" \
                else None
            rows.append({"network": name, "patch": size, "batch": n, "plans_estimated_vram_gb": planned,
                         "estimate_gb": round(estimate / 1e9, 3),
                         "measured_gb": None if measured is None else round(measured / 1e9, 3),
                         "measured_over_estimate": None if measured is None else round(measured / estimate, 3)})
            print(rows[-1], flush=True)
    args.json.write_text(json.dumps(rows, indent=2))
    return 0


# ---- the check ----

def card_name(dry_run: bool) -> str:
    import torch

    if torch.cuda.is_available() and not dry_run:
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; dry run)"


def run_check(settings: Settings) -> list[Step]:
    budget = Budget(settings.budget_s)
    steps: list[Step] = []

    def serve(name: str, cap: float, work, *extra) -> Step:
        step = Step(name)
        steps.append(step)
        timeout = budget.left() if settings.dry_run else min(cap, budget.left())  # caps are GPU-sized
        if timeout < 10:
            step.detail = f"not started: {budget.left():.0f} s of the {settings.budget_s:.0f} s budget left"
            return step
        print(f"-- {name} (at most {timeout:.0f} s)", flush=True)
        work(settings, step, timeout, *extra)
        print(f"   {step.status} in {step.seconds:.0f} s {json.dumps(step.figures)[:300]}", flush=True)
        return step

    demo = Step("demo")
    steps.append(demo)
    print("-- demo", flush=True)
    if not step_demo(settings, demo, budget.left() if settings.dry_run else min(330.0, budget.left())):
        print(f"   {demo.status}: the steps after it need the demo's models", flush=True)
        return steps
    print(f"   {demo.status} in {demo.seconds:.0f} s", flush=True)
    serve("predict", 90.0, step_predict)
    for trainer, compile_ in trainer_plan(settings.dry_run):
        serve(f"train_{trainer}_compile_{'on' if compile_ else 'off'}", 90.0, step_train, trainer, compile_)
    serve("memory", 90.0, step_memory)
    serve("networks", 120.0, step_networks)
    if settings.dry_run:
        steps.append(Step("train (compile on, ablation variants)", detail="dry run: nnU-Net never compiles on the "
                          "CPU, and one trainer per stage shows the plumbing"))
    return steps


def report(settings: Settings, steps: list[Step], started: float) -> str:
    import torch

    from nnunet_aneurysm import __version__
    from nnunet_aneurysm.nnunet_version import installed_nnunetv2_version

    head = {"card": card_name(settings.dry_run), "dry_run": settings.dry_run, "torch": torch.__version__,
            "nnunetv2": installed_nnunetv2_version(), "plugin": __version__,
            "seconds": round(time.perf_counter() - started, 1)}
    lines = [f"gpu_check on {head['card']}: torch {head['torch']}, nnunetv2 {head['nnunetv2']}, nnunet-aneurysm "
             f"{head['plugin']}, {head['seconds']:.0f} s" + (" (DRY RUN: CPU, smallest sizes)" if settings.dry_run
                                                              else "")]
    for step in steps:
        lines.append(f"{step.status:8s} {step.seconds:6.1f} s  {step.name}  {step.detail}".rstrip())
        for key, value in step.figures.items():
            lines.append(f"{'':18s}{key}: {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    body = json.dumps({**head, "steps": [asdict(s) for s in steps]}, indent=2, default=str)
    for folder in [settings.workdir] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gpu_check.json").write_text(body)
        (folder / "gpu_check.txt").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["memory"]:
        return memory_worker(argv[1:])
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at the smallest sizes")
    parser.add_argument("--demo", type=Path, default=None, help="reuse this finished demo --quick folder")
    parser.add_argument("--workdir", type=Path, default=Path("gpu_check_run"), help="outputs and logs")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for all steps (default %(default)s)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here; scripts/gpu_check.sh --dry-run checks the script on the CPU",
              file=sys.stderr)
        return 2
    if args.demo is not None and not (args.demo / "pipeline" / "pipeline.json").is_file():
        print(f"gpu_check: error: {args.demo} holds no finished demo (no pipeline/pipeline.json)", file=sys.stderr)
        return 2
    settings = Settings(args.workdir.resolve(), args.dry_run, args.demo.resolve() if args.demo else None,
                        args.budget_s)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = run_check(settings)
    print("\n" + report(settings, steps, started), end="")
    return 0 if all(s.status in ("ok", "skipped") for s in steps) and steps[0].status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
