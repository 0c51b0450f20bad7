"""``scripts/gpu_check.sh --dry-run``: the GPU check's every step on the CPU at the smallest sizes, on the quick
demo's trained folder, so the script a first GPU user runs is known to work up to the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DRY_RUN_STEPS = {"demo", "predict", "train_AneurysmSegFormer3DTrainer_compile_off",
                 "train_AneurysmWaveFormerTrainer_compile_off", "memory", "networks"}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.integration
def test_the_gpu_check_dry_run_passes_every_step_and_reports_its_figures(quick_demo, tmp_path):
    demo_results = _files(quick_demo / "nnUNet_results")
    proc = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--demo", str(quick_demo),
                           "--workdir", str(tmp_path / "work"), "--budget-s", "900"],
                          env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert report["dry_run"] and {n for n, s in steps.items() if s["status"] == "ok"} == DRY_RUN_STEPS
    assert steps["predict"]["figures"]["max_abs_difference"] <= 1e-3
    for name in DRY_RUN_STEPS:
        if name.startswith("train_"):
            assert len(steps[name]["figures"]["epoch_seconds"]) == 1 and not steps[name]["figures"]["compiled"]
    memory = steps["memory"]["figures"]["rows"]
    assert {r["network"] for r in memory} == {"SegFormer3D", "WaveFormer"} and all(r["estimate_gb"] > 0 for r in memory)
    assert steps["networks"]["figures"]["WaveFormer+AKOrN over WaveFormer"]["kernels_percent"] > 0
    assert (tmp_path / "out" / "gpu_check.txt").read_text().startswith("gpu_check on CPU")
    assert _files(quick_demo / "nnUNet_results") == demo_results  # the trainers trained elsewhere
