"""The foundation's promise: stock nnU-Net commands plan, train and predict with our classes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_aneurysm.stages import STAGE1, STAGE2
from tests.conftest import run_cli
from tests.tiny_dataset import write_tiny_dataset

DATASET = 990
PLANS = "AneurysmSegFormer3DPlans"
TRAINER = "AneurysmSegFormer3DTrainer"


@pytest.fixture(scope="module")
def planned(nnunet_env):
    raw = write_tiny_dataset(Path(nnunet_env["nnUNet_raw"]), DATASET)
    run_cli(["nnunet-aneurysm", "plan", "-d", str(DATASET), "--planner", "SegFormer3DPlanner",
             "--cpu-epochs", "1", "--cpu-iterations", "2", "--cpu-val-iterations", "1", "-np", "1"], nnunet_env)
    run_cli(["nnUNetv2_preprocess", "-d", str(DATASET), "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"],
            nnunet_env)
    return raw


@pytest.mark.integration
def test_plan_train_two_folds_and_predict(planned, nnunet_env, tmp_path):
    plans = json.loads((Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset990_Tiny" / f"{PLANS}.json").read_text())
    assert set(plans["configurations"]) == {"3d_fullres", "3d_cpu"}
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"] == "nnunet_aneurysm.networks.segformer3d.SegFormer3D"
    assert all(p % 32 == 0 for p in plans["configurations"]["3d_fullres"]["patch_size"])

    results = Path(nnunet_env["nnUNet_results"]) / "Dataset990_Tiny" / f"{TRAINER}__{PLANS}__3d_cpu"
    for fold in ("0", "1"):
        run_cli(["nnUNetv2_train", str(DATASET), "3d_cpu", fold, "-tr", TRAINER, "-p", PLANS, "-device", "cpu"],
                nnunet_env)
        assert (results / f"fold_{fold}" / "checkpoint_final.pth").is_file()
        summary = json.loads((results / f"fold_{fold}" / "validation" / "summary.json").read_text())
        assert set(summary["mean"]) == {"1", "2"}  # nnU-Net scored both labels of the validation cases
        assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0

    out = tmp_path / "pred"
    run_cli(["nnUNetv2_predict", "-i", str(planned / "imagesTs"), "-o", str(out), "-d", str(DATASET),
             "-c", "3d_cpu", "-tr", TRAINER, "-p", PLANS, "-f", "0", "1", "-device", "cpu",
             "--disable_tta", "-npp", "1", "-nps", "1"], nnunet_env)
    for image_file in sorted((planned / "imagesTs").glob("*_0000.nii.gz")):
        case = image_file.name.replace("_0000.nii.gz", "")
        image = nib.load(image_file)
        prediction = nib.load(out / f"{case}.nii.gz")
        assert prediction.shape == image.shape
        np.testing.assert_allclose(prediction.affine, image.affine, atol=1e-4)
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


@pytest.mark.integration
def test_unknown_trainer_gives_nnunets_error(planned, nnunet_env):
    proc = run_cli(["nnUNetv2_train", str(DATASET), "3d_cpu", "0", "-tr", "AneurysmNoSuchTrainer", "-p", PLANS,
                    "-device", "cpu"], nnunet_env, check=False)
    assert proc.returncode != 0
    assert "Could not find requested nnunet trainer AneurysmNoSuchTrainer" in proc.stderr
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith('File "')]
    assert frames and not [f for f in frames if "nnunet_aneurysm" in f]  # nnU-Net's error, not ours


@pytest.mark.integration
def test_scheduled_baseline_is_nnunets_trainer_on_the_plans_schedule(planned, nnunet_env):
    """The baseline of our benchmarks: nnU-Net's trainer and PlainConvUNet, only the schedule from the plans."""
    import torch

    plans_file = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset990_Tiny" / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    n = 3
    plans["configurations"]["3d_cpu_plain"] = {"inherits_from": "3d_cpu", "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": n, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
                        "n_conv_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}
    plans_file.write_text(json.dumps(plans, indent=2))
    trainer = "AneurysmScheduledNNUNetTrainer"
    run_cli(["nnUNetv2_train", str(DATASET), "3d_cpu_plain", "0", "-tr", trainer, "-p", PLANS, "-device", "cpu"],
            nnunet_env)
    folder = Path(nnunet_env["nnUNet_results"]) / "Dataset990_Tiny" / f"{trainer}__{PLANS}__3d_cpu_plain" / "fold_0"
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert len(checkpoint["logging"]["train_losses"]) == 1  # the plans' one epoch, not nnU-Net's 1000
    assert any(k.startswith("encoder.stages") for k in checkpoint["network_weights"])



@pytest.mark.integration
@pytest.mark.parametrize("trainer, stage", [("AneurysmSegFormer3DTrainer", STAGE1),
                                            ("AneurysmWaveFormerPINNTrainer", STAGE2)])
def test_our_trainer_on_stock_plans_names_the_planner_to_run(planned, nnunet_env, trainer, stage):
    """nnUNetv2_train's default plans are nnU-Net's (PlainConvUNet): one line saying what to run instead."""
    stock = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset990_Tiny" / "nnUNetPlans.json"
    if not stock.is_file():
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which must not be 0 there
        run_cli(["nnUNetv2_plan_experiment", "-d", str(DATASET)], {**nnunet_env, "nnUNet_n_proc_DA": "1"})
    proc = run_cli(["nnUNetv2_train", str(DATASET), "3d_fullres", "0", "-tr", trainer, "-device", "cpu"], nnunet_env,
                   check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"{trainer} needs plans written by {stage.planner} (nnUNetPlans 3d_fullres has PlainConvUNet): "
        f"nnunet-aneurysm plan -d {DATASET} --planner {stage.planner}, then nnUNetv2_preprocess and nnUNetv2_train "
        f"with -p {stage.plans}")


@pytest.mark.integration
def test_the_demo_shows_each_epoch_while_the_log_keeps_everything(planned, nnunet_env, tmp_path, capsys):
    """A demo fold trains for minutes: the terminal gets one line per epoch, demo.log nnU-Net's whole output."""
    from nnunet_aneurysm.demo import DemoSettings, Runner, train_folds

    run = Runner(tmp_path)
    run.env = {**nnunet_env, "nnUNet_results": str(tmp_path / "results")}  # a fold of its own to train
    train_folds(run, DemoSettings(tmp_path, folds=1), DATASET, "Dataset990_Tiny", STAGE1, epochs=1)
    shown = capsys.readouterr().out.splitlines()
    epochs = [line for line in shown if ": epoch " in line]
    assert len(epochs) == 1 and epochs[0].startswith(f"  {STAGE1.trainer} fold 0: epoch 1/1, train loss "), shown
    assert epochs[0].endswith(" s") and any("mean validation Dice" in line for line in shown), shown
    log = (tmp_path / "demo.log").read_text()
    assert "Epoch time:" in log and "train_loss" in log and "Using device: cpu" in log
    assert not [line for line in shown if "train_loss" in line or "Using device" in line]  # those stay in the log
