"""Both stages through the stock nnU-Net command line on converted synthetic data (the demo at a
tiny size), then the stage-2 variants, resume with --c, and seeded repeatability."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from nnunet_aneurysm.demo import STAGE2_DATASET, STAGE2_ID, VESSELS_ID, DemoSettings, demo_environment, run_demo
from nnunet_aneurysm.stages import STAGE1, STAGE2, VESSELS_NAME, dataset_name
from tests.conftest import BIN, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(workdir, series=10, size=48, folds=("0", "1"), epochs=1, iterations=2, val_iterations=1)
    predictions = run_demo(settings)
    return workdir, demo_environment(workdir), predictions


def _results(env, dataset: str, trainer: str, plans: str, configuration: str = "3d_cpu") -> Path:
    return Path(env["nnUNet_results"]) / dataset / f"{trainer}__{plans}__{configuration}"


def _logging(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]


def test_stage1_logs_vessel_recall_and_dice(demo):
    _, env, _ = demo
    folder = _results(env, dataset_name(VESSELS_ID, VESSELS_NAME), STAGE1.trainer, STAGE1.plans)
    for fold in ("fold_0", "fold_1"):
        logged = _logging(folder / fold / "checkpoint_final.pth")
        assert len(logged["vessel_recall"]) == 1 and 0.0 <= logged["vessel_recall"][0] <= 1.0
        assert len(logged["vessel_dice"]) == 1
        picture = matplotlib.image.imread(folder / fold / "progress_extra.png")
        assert picture.shape[:2] == (2 * 250, 800)  # one 8 x 2.5 inch panel per metric at 100 dpi
        assert picture[..., :3].std() > 0.05  # drawn, not blank
        assert (folder / fold / "validation" / "summary.json").is_file()


def test_validation_rerun_with_npz(demo):
    _, env, _ = demo
    run_cli(["nnUNetv2_train", str(VESSELS_ID), "3d_cpu", "0", "-tr", STAGE1.trainer, "-p", STAGE1.plans,
             "-device", "cpu", "--val", "--npz"], env)
    folder = _results(env, dataset_name(VESSELS_ID, VESSELS_NAME), STAGE1.trainer, STAGE1.plans)
    folder = folder / "fold_0" / "validation"
    assert sorted(folder.glob("*.npz")) and len(list(folder.glob("*.npz"))) == len(list(folder.glob("*.nii.gz")))


def test_vessel_channel_is_a_probability_on_the_image_grid(demo):
    import SimpleITK as sitk

    _, env, _ = demo
    raw = Path(env["nnUNet_raw"]) / STAGE2_DATASET
    assert json.loads((raw / "dataset.json").read_text())["channel_names"] == {"0": "image", "1": "noNorm"}
    images = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))
    assert len(images) == 10
    for image in images[:3]:
        a, b = sitk.ReadImage(str(image)), sitk.ReadImage(str(image).replace("_0000", "_0001"))
        assert a.GetSize() == b.GetSize()
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        p = sitk.GetArrayFromImage(b)
        assert p.min() >= -1e-4 and p.max() <= 1 + 1e-4


def test_stage2_logs_every_loss_term_and_weight(demo):
    _, env, _ = demo
    folder = _results(env, STAGE2_DATASET, STAGE2.trainer, STAGE2.plans)
    logged = _logging(folder / "fold_0" / "checkpoint_final.pth")
    for key in ("loss_seg", "loss_cls", "loss_physics", "weight_seg", "weight_cls", "weight_physics"):
        assert len(logged[key]) == 1 and np.isfinite(logged[key][0]), key
    assert 0 <= logged["order_parameter"][0] <= 1
    assert logged["physics_skipped"][0] == 0


def test_two_fold_prediction_with_probabilities(demo):
    _, _, predictions = demo
    segmentations = sorted(predictions.glob("*.nii.gz"))
    assert len(segmentations) == 2
    for seg in segmentations:
        probabilities = np.load(str(seg).replace(".nii.gz", ".npz"))["probabilities"]
        assert probabilities.shape[0] == 14
        np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-3)


def test_case_features_beside_predictions_match_stock_predict(demo):
    """Our predict verb writes per-fold features and exactly the predictions stock nnUNetv2_predict writes."""
    workdir, env, predictions = demo
    features = sorted(predictions.glob("*_features.json"))
    assert len(features) == 2
    for path in features:
        f = json.loads(path.read_text())
        assert f["folds"] == ["0", "1"] and len(f["per_fold"]) == 2
        assert (predictions / f"{f['case_id']}.nii.gz").is_file()
        for fold in f["per_fold"]:
            assert fold["patches"] >= 1 and len(fold["class_probabilities"]) == 14
            assert all(0 <= p <= 1 for p in fold["class_probabilities"].values())
            assert 0 <= fold["order_parameter"] <= 1
            assert np.isfinite(fold["pinn_residual"]) and fold["pinn_residual"] > 0
        assert f["order_parameter"] == pytest.approx(np.mean([x["order_parameter"] for x in f["per_fold"]]))
    stock = workdir / "stock_predictions"
    run_cli(["nnUNetv2_predict", "-i", str(workdir / "predict_input"), "-o", str(stock), "-d", str(STAGE2_ID),
             "-c", "3d_cpu", "-tr", STAGE2.trainer, "-p", STAGE2.plans, "-f", "0", "1", "-device", "cpu",
             "--save_probabilities", "-npp", "1", "-nps", "1"], env)
    for path in features:
        case = path.name[: -len("_features.json")]
        ours = np.load(predictions / f"{case}.npz")["probabilities"]
        np.testing.assert_allclose(ours, np.load(stock / f"{case}.npz")["probabilities"], atol=1e-5)
    assert not list(stock.glob("*_features.json"))


def test_predict_refuses_a_model_without_auxiliary_outputs(demo):
    workdir, env, _ = demo
    proc = run_cli(["nnunet-aneurysm", "predict", "-i", str(workdir / "predict_input"), "-o", str(workdir / "x"),
                    "-d", str(VESSELS_ID), "-c", "3d_cpu", "-tr", STAGE1.trainer, "-p", STAGE1.plans, "-f", "0",
                    "-device", "cpu"], env, check=False)
    assert proc.returncode == 2 and "AneurysmWaveFormer" in proc.stderr


VARIANTS = {  # trainer: (has AKOrN, has PINN, AUC-margin loss)
    "AneurysmWaveFormerBaselineTrainer": (False, False, False),
    "AneurysmWaveFormerAKOrNTrainer": (True, False, False),
    "AneurysmWaveFormerPINNTrainer": (False, True, False),
    "AneurysmWaveFormerAUCMTrainer": (True, True, True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ablation_variants_train_from_the_same_plans(demo, variant):
    _, env, _ = demo
    akorn, pinn, aucm = VARIANTS[variant]
    run_cli(["nnUNetv2_train", str(STAGE2_ID), "3d_cpu", "2", "-tr", variant, "-p", STAGE2.plans, "-device", "cpu"],
            env)
    folder = _results(env, STAGE2_DATASET, variant, STAGE2.plans) / "fold_2"
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    keys = checkpoint["network_weights"].keys()
    assert any("akorn" in k for k in keys) == akorn
    assert any("pinn_head" in k for k in keys) == pinn
    assert np.isfinite(checkpoint["logging"]["loss_physics"][0]) == pinn
    assert ("aneurysm_extra_state" in checkpoint) == aucm  # ASL + UW-SO learn nothing outside the network
    if aucm:  # the dual variable moved (PESG's ascent step ran) and is logged per epoch
        class_loss_state = checkpoint["aneurysm_extra_state"]["class_loss"]
        assert class_loss_state["alpha"].shape == (14,) and (class_loss_state["alpha"] >= 0).all()
        assert class_loss_state["alpha"].abs().sum() > 0
        assert checkpoint["logging"]["aucm_alpha"][0] == pytest.approx(float(class_loss_state["alpha"].mean()),
                                                                       rel=0.5, abs=1e-3)
    if variant == "AneurysmWaveFormerBaselineTrainer":  # features of a network with neither extra
        workdir = Path(env["nnUNet_raw"]).parent
        out = workdir / "baseline_predictions"
        run_cli(["nnunet-aneurysm", "predict", "-i", str(workdir / "predict_input"), "-o", str(out),
                 "-d", str(STAGE2_ID), "-c", "3d_cpu", "-tr", variant, "-p", STAGE2.plans, "-f", "2", "-device", "cpu"],
                env)
        assert len(list(out.glob("*_features.json"))) == 2
        for path in out.glob("*_features.json"):
            f = json.loads(path.read_text())
            assert f["order_parameter"] is None and f["pinn_residual"] is None
            assert len(f["class_probabilities"]) == 14


def _add_configuration(env, name: str, schedule: dict | None = None, losses: dict | None = None) -> None:
    plans_file = Path(env["nnUNet_preprocessed"]) / STAGE2_DATASET / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"]["3d_cpu"]["trainer_schedule"]
    plans["configurations"][name] = {"inherits_from": "3d_cpu", "trainer_schedule": {**base, **(schedule or {})}}
    if losses is not None:
        plans["configurations"][name]["losses"] = losses
    plans_file.write_text(json.dumps(plans, indent=2))


def test_killed_run_continues_with_c(demo):
    _, env, _ = demo
    _add_configuration(env, "3d_cpu_long", {"num_epochs": 3, "num_iterations_per_epoch": 2, "save_every": 1})
    argv = [str(BIN / "nnUNetv2_train"), str(STAGE2_ID), "3d_cpu_long", "3", "-tr", STAGE2.trainer, "-p", STAGE2.plans,
            "-device", "cpu"]
    folder = _results(env, STAGE2_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_long") / "fold_3"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (folder / "checkpoint_latest.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / "checkpoint_latest.pth").exists() and not (folder / "checkpoint_final.pth").exists()
    resumed_from = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert 1 <= resumed_from["current_epoch"] < 3
    run_cli(argv[:1] + argv[1:] + ["--c"], env)
    logged = _logging(folder / "checkpoint_final.pth")
    assert len(logged["train_losses"]) == 3 and len(logged["loss_seg"]) == 3
    assert logged["train_losses"][: resumed_from["current_epoch"]] == \
        resumed_from["logging"]["train_losses"][: resumed_from["current_epoch"]]


RESTORE_SCRIPT = """
import json, sys, torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunet_aneurysm.trainers import AneurysmWaveFormerTrainer
plans_file, dataset_json, configuration, fold, checkpoint = sys.argv[1:]
plans = load_json(plans_file)
plans["continue_training"] = True  # nnU-Net 2.8.1's run_training sets this before building a trainer
trainer = AneurysmWaveFormerTrainer(plans, configuration, int(fold), load_json(dataset_json), torch.device("cpu"))
trainer.load_checkpoint(checkpoint)  # what nnUNetv2_train --c and --val call
print(json.dumps(trainer.balancer.log_vars.tolist()))
"""


def test_uncertainty_weighting_from_the_plans_learns_and_survives_in_the_checkpoint(demo):
    _, env, _ = demo
    _add_configuration(env, "3d_cpu_uw", losses={"balancer": "uw"})
    run_cli(["nnUNetv2_train", str(STAGE2_ID), "3d_cpu_uw", "4", "-tr", STAGE2.trainer, "-p", STAGE2.plans,
             "-device", "cpu"], env)
    folder = _results(env, STAGE2_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_uw") / "fold_4"
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    log_vars = checkpoint["aneurysm_extra_state"]["balancer"]["log_vars"]
    assert log_vars.shape == (3,) and log_vars.abs().min() > 0  # in the optimiser: every weight moved
    assert checkpoint["logging"]["weight_seg"][0] != pytest.approx(1.0, abs=1e-6)
    preprocessed = Path(env["nnUNet_preprocessed"]) / STAGE2_DATASET
    proc = run_cli(["python", "-c", RESTORE_SCRIPT, str(preprocessed / f"{STAGE2.plans}.json"),
                    str(preprocessed / "dataset.json"), "3d_cpu_uw", "4", str(folder / "checkpoint_final.pth")], env)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(log_vars.tolist(), abs=0)


def test_uw_with_auc_margin_is_refused_with_a_reason(demo):
    _, env, _ = demo
    _add_configuration(env, "3d_cpu_uw_aucm", losses={"balancer": "uw", "class_loss": "aucm"})
    proc = run_cli(["nnUNetv2_train", str(STAGE2_ID), "3d_cpu_uw_aucm", "4", "-tr", STAGE2.trainer, "-p", STAGE2.plans,
                    "-device", "cpu"], env, check=False)
    assert proc.returncode != 0 and "uwso" in proc.stderr


def test_seeded_runs_repeat_their_first_iterations(demo):
    _, env, _ = demo
    _add_configuration(env, "3d_cpu_seeded", {"seed": 123})
    losses = []
    for _ in range(2):
        run_cli(["nnUNetv2_train", str(STAGE2_ID), "3d_cpu_seeded", "all", "-tr", STAGE2.trainer, "-p", STAGE2.plans,
                 "-device", "cpu"], env)  # fold 'all' too: trains and validates on every case
        folder = _results(env, STAGE2_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_seeded") / "fold_all"
        logged = _logging(folder / "checkpoint_final.pth")
        losses.append((logged["train_losses"][0], logged["loss_seg"][0], logged["loss_physics"][0]))
    assert losses[0] == losses[1]
