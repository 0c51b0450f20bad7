"""Modality-balanced sampling reaches nnU-Net's augmentation workers (nnUNet_n_proc_DA > 0, nnU-Net's default).

The workers copy the training loader when they start; what they draw is what the network sees. A tiny
dataset of five CTA cases and one T2 case, trained on fold 'all': uniform draws give T2 a sixth of the
samples, balanced draws a half.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli
from tests.tiny_dataset import write_tiny_dataset

pytestmark = pytest.mark.integration

DATASET = 991
PLANS = "AneurysmSegFormer3DPlans"
RARE_CASE = "case005"  # the one T2 case of six

DRAW = """
import json, sys
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunet_aneurysm.trainers.segformer3d import AneurysmSegFormer3DTrainer

plans_file, dataset_file, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
plans = {**load_json(plans_file), "continue_training": False}  # what nnUNetv2_train adds
trainer = AneurysmSegFormer3DTrainer(plans, "3d_cpu", "all", load_json(dataset_file), torch.device("cpu"))
trainer.initialize()
train, val = trainer.get_dataloaders()
keys = [str(k) for _ in range(batches) for k in next(train)["keys"]]
for augmenter in (train, val):
    if hasattr(augmenter, "_finish"):
        augmenter._finish()
print(json.dumps({"augmenter": type(train).__name__, "keys": keys}))
"""


@pytest.fixture(scope="module")
def preprocessed(nnunet_env) -> Path:
    raw = write_tiny_dataset(Path(nnunet_env["nnUNet_raw"]), DATASET, n_cases=6, shape=(24, 28, 24), seed=3)
    cases = [f"case{i:03d}" for i in range(6)]
    pd.DataFrame({"case_id": cases, "PatientAge": 50, "PatientSex": "Female",
                  "Modality": ["MRI T2" if c == RARE_CASE else "CTA" for c in cases]}).to_csv(
        raw / "metadata.csv", index=False)
    run_cli(["nnunet-aneurysm", "plan", "-d", str(DATASET), "--planner", "SegFormer3DPlanner", "-np", "1"], nnunet_env)
    run_cli(["nnUNetv2_preprocess", "-d", str(DATASET), "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"],
            nnunet_env)
    return Path(nnunet_env["nnUNet_preprocessed"]) / raw.name


def _draw(env: dict[str, str], preprocessed: Path, workers: int, batches: int) -> tuple[str, Counter]:
    proc = subprocess.run([sys.executable, "-c", DRAW, str(preprocessed / f"{PLANS}.json"),
                           str(preprocessed / "dataset.json"), str(batches)],
                          env={**env, "nnUNet_n_proc_DA": str(workers)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    drawn = json.loads(proc.stdout.strip().splitlines()[-1])
    return drawn["augmenter"], Counter(drawn["keys"])


@pytest.mark.parametrize("workers", [2, 0])
def test_the_cases_the_loader_draws_are_balanced_by_modality(nnunet_env, preprocessed, workers):
    augmenter, counts = _draw(nnunet_env, preprocessed, workers, batches=60)
    assert augmenter == ("NonDetMultiThreadedAugmenter" if workers else "SingleThreadedAugmenter")
    total = sum(counts.values())
    # balanced: T2 half of the draws (uniform: a sixth, 1/6 +- 0.03 over these draws)
    assert 0.35 < counts[RARE_CASE] / total < 0.65, counts
    assert set(counts) == {f"case{i:03d}" for i in range(6)}  # the CTA cases are still drawn
