"""Shared fixtures: temporary nnU-Net folders and a runner for the stock command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict[str, str]:
    """Environment for nnU-Net subprocesses: temp folders, our trainers, CPU-sane worker counts."""
    root = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        env[name] = str(root / name)
    env.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", nnUNet_compile="false",
               nnUNet_extTrainer=run_cli(["nnunet-aneurysm", "ext-path"], env).stdout.strip())
    return env


def run_cli(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a console script of this venv; on failure show its output in the test report."""
    argv = [str(BIN / argv[0]), *argv[1:]]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """The main job at its smoke size, run once per test session: every artefact a user gets."""
    from nnunet_aneurysm.demo import quick_settings, run_demo

    return run_demo(quick_settings(tmp_path_factory.mktemp("quick_demo")))
