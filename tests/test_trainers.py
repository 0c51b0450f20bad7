"""Both stages' trainers through the stock nnU-Net command line.

Stage 1 is read from the quick demo. Stage 2 trains here on a small ROI dataset whose "stage 1"
is the ground-truth vessel labels (so the vessel channel holds vessels and the physics, graph and
territory code has something to work on): the variants, --c after a kill, the losses from the
plans, seeded repeatability.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from nnunet_aneurysm.demo import VESSELS_DATASET, VESSELS_ID
from nnunet_aneurysm.stages import CPU_CONFIGURATION, STAGE1, STAGE2
from tests.conftest import BIN, run_cli

pytestmark = pytest.mark.integration
ROI_ID = 903
ROI_DATASET = "Dataset903_GroundTruthROI"
VESSEL_CONFIGURATION = "3d_cpu_3mm"


def _results(env, dataset: str, trainer: str, plans: str, configuration: str = CPU_CONFIGURATION) -> Path:
    return Path(env["nnUNet_results"]) / dataset / f"{trainer}__{plans}__{configuration}"


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def demo_env(quick_demo):
    from nnunet_aneurysm.demo import demo_environment

    return demo_environment(quick_demo)


def test_stage1_logs_union_and_per_label_vessel_metrics_and_never_mirrors(demo_env):
    folder = _results(demo_env, VESSELS_DATASET, STAGE1.trainer, STAGE1.plans)
    for fold in ("fold_0", "fold_1"):
        checkpoint = _checkpoint(folder / fold / "checkpoint_final.pth")
        logged = checkpoint["logging"]
        for key in ("union_recall", "union_dice", "vessel_recall", "vessel_dice"):
            assert len(logged[key]) == 1 and 0.0 <= logged[key][0] <= 1.0, key
        assert logged["metadata_missing"] == [0]  # every case's metadata (modality) reached FiLM
        assert checkpoint["inference_allowed_mirroring_axes"] is None  # left/right labels: no mirror TTA
        picture = matplotlib.image.imread(folder / fold / "progress_extra.png")
        assert picture.shape[:2] == (5 * 250, 800)  # one 8 x 2.5 inch panel per logged metric at 100 dpi
        assert picture[..., :3].std() > 0.05  # drawn, not blank
        assert logged["lrs"][0] < 1e-3  # AdamW's warm-up, not nnU-Net's SGD at 1e-2
        log = "".join(p.read_text() for p in (folder / fold).glob("training_log_*.txt"))
        assert "modality-balanced sampling, training cases per modality" in log


def test_validation_rerun_with_npz(demo_env):
    run_cli(["nnUNetv2_train", str(VESSELS_ID), CPU_CONFIGURATION, "0", "-tr", STAGE1.trainer, "-p", STAGE1.plans,
             "-device", "cpu", "--val", "--npz"], demo_env)
    folder = _results(demo_env, VESSELS_DATASET, STAGE1.trainer, STAGE1.plans) / "fold_0" / "validation"
    assert sorted(folder.glob("*.npz")) and len(list(folder.glob("*.npz"))) == len(list(folder.glob("*.nii.gz")))


def test_the_roi_dataset_has_stage1_channels_on_one_patient_aligned_grid(quick_demo):
    from nnunet_aneurysm.demo import STAGE2_DATASET

    raw = quick_demo / "nnUNet_raw" / STAGE2_DATASET
    dataset = json.loads((raw / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "image", "1": "noNorm", "2": "noNorm"}
    assert dataset["nnunet_aneurysm_channels"] == ["image", "vessel_probability", "artery_labels"]
    rois = pd.read_csv(raw / "roi.csv", dtype={"case_id": str})
    assert len(rois) == dataset["numTraining"] and rois["out_of_fold"].all() and set(rois["shape"]) == {"48x48x64"}
    case = rois["case_id"].iloc[0]
    images = [sitk.ReadImage(str(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz")) for c in range(3)]
    spacing = float(rois["spacing_mm"].iloc[0])  # planned from the data: the quick demo's 1.75 mm series
    assert all(i.GetSize() == (64, 48, 48) and i.GetSpacing() == pytest.approx((spacing,) * 3) for i in images)
    assert images[0].GetDirection() == pytest.approx(np.eye(3).ravel())  # patient axes: orientation-free
    arteries = sitk.GetArrayFromImage(images[2])
    assert np.array_equal(arteries, np.round(arteries)) and arteries.min() >= 0 and arteries.max() <= 13
    # stage 1's vessel threshold, chosen out-of-fold before the ROIs, is the one the pipeline file carries
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline
    from nnunet_aneurysm.inference.vessel_threshold import OperatingPoint

    point = OperatingPoint.read(raw)
    assert point is not None and 0 < point.threshold < 1 and point.scans > 0
    assert read_pipeline(quick_demo / "pipeline" / "pipeline.json").roi_settings().vessel_threshold == point.threshold


@pytest.fixture(scope="module")
def roi_env(nnunet_env, tmp_path_factory):
    """A stage-2 dataset cropped by ground-truth vessels, planned and preprocessed."""
    from tests.tiny_dataset import write_ground_truth_roi_dataset

    write_ground_truth_roi_dataset(Path(nnunet_env["nnUNet_raw"]), ROI_ID, tmp_path_factory.mktemp("gt_rsna"))
    run_cli(["nnunet-aneurysm", "plan", "-d", str(ROI_ID), "--planner", STAGE2.planner, "--cpu-epochs", "1",
             "--cpu-iterations", "2", "--cpu-val-iterations", "1", "-np", "1"], nnunet_env)
    run_cli(["nnUNetv2_preprocess", "-d", str(ROI_ID), "-plans_name", STAGE2.plans, "-c", "3d_fullres", "-np", "1"],
            nnunet_env)
    return nnunet_env


def _add_configuration(env, name: str, schedule: dict | None = None, losses: dict | None = None) -> None:
    plans_file = Path(env["nnUNet_preprocessed"]) / ROI_DATASET / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"][CPU_CONFIGURATION]["trainer_schedule"]
    plans["configurations"][name] = {"inherits_from": CPU_CONFIGURATION,
                                     "trainer_schedule": {**base, **(schedule or {})}}
    if losses is not None:
        plans["configurations"][name]["losses"] = losses
    plans_file.write_text(json.dumps(plans, indent=2))


def _train(env, trainer: str, fold: str, configuration: str = CPU_CONFIGURATION, check=True):
    return run_cli(["nnUNetv2_train", str(ROI_ID), configuration, fold, "-tr", trainer, "-p", STAGE2.plans,
                    "-device", "cpu"], env, check=check)


VARIANTS = {  # trainer: (has AKOrN, has PINN, AUC-margin loss)
    "AneurysmWaveFormerTrainer": (True, True, False),
    "AneurysmWaveFormerBaselineTrainer": (False, False, False),
    "AneurysmWaveFormerAKOrNTrainer": (True, False, False),
    "AneurysmWaveFormerPINNTrainer": (False, True, False),
    "AneurysmWaveFormerAUCMTrainer": (True, True, True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stage2_variants_train_from_the_same_plans_and_log_every_term(roi_env, variant):
    akorn, pinn, aucm = VARIANTS[variant]
    _train(roi_env, variant, "0")
    checkpoint = _checkpoint(_results(roi_env, ROI_DATASET, variant, STAGE2.plans) / "fold_0" / "checkpoint_final.pth")
    keys, logged = checkpoint["network_weights"].keys(), checkpoint["logging"]
    assert any("akorn" in k for k in keys) == akorn and any("pinn_head" in k for k in keys) == pinn
    assert any(k.startswith("heads.") for k in keys) and any(k.startswith("films.") for k in keys)
    for key in ("loss_seg", "loss_cls", "weight_seg", "weight_cls"):
        assert np.isfinite(logged[key][0]), key
    assert logged["loss_seg"][0] >= 0  # the bounded Dice + CE
    assert np.isfinite(logged["loss_physics"][0]) == pinn and logged["physics_skipped"][0] == 0
    assert (0 <= logged["order_parameter"][0] <= 1) == akorn
    assert logged["metadata_missing"][0] == 0
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    balancer = checkpoint["aneurysm_extra_state"]["balancer"]  # UW-SO's running means travel with the checkpoint
    assert bool(balancer["seen"][:2].all()) and torch.isfinite(balancer["running"]).all()
    assert ("class_loss" in checkpoint["aneurysm_extra_state"]) == aucm  # ASL learns nothing outside the network
    if aucm:  # the dual variable moved (PESG's ascent step ran) and is logged per epoch
        alpha = checkpoint["aneurysm_extra_state"]["class_loss"]["alpha"]
        assert alpha.shape == (14,) and (alpha >= 0).all() and alpha.abs().sum() > 0


def test_a_case_without_metadata_is_counted_not_silent(roi_env):
    raw = Path(roi_env["nnUNet_raw"]) / ROI_DATASET
    table = pd.read_csv(raw / "metadata.csv", dtype={"case_id": str})
    table.iloc[:1].to_csv(raw / "metadata.csv", index=False)  # every case but one loses its row
    try:
        _add_configuration(roi_env, "3d_cpu_missing", {"num_iterations_per_epoch": 6})
        _train(roi_env, STAGE2.trainer, "1", "3d_cpu_missing")
    finally:
        table.to_csv(raw / "metadata.csv", index=False)
    folder = _results(roi_env, ROI_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_missing") / "fold_1"
    logged = _checkpoint(folder / "checkpoint_final.pth")["logging"]
    assert logged["metadata_missing"][0] > 0  # 6 iterations of 2 cases, only one case with a row


def test_killed_run_continues_with_c(roi_env):
    _add_configuration(roi_env, "3d_cpu_long", {"num_epochs": 3, "num_iterations_per_epoch": 2, "save_every": 1})
    argv = [str(BIN / "nnUNetv2_train"), str(ROI_ID), "3d_cpu_long", "1", "-tr", STAGE2.trainer, "-p", STAGE2.plans,
            "-device", "cpu"]
    folder = _results(roi_env, ROI_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_long") / "fold_1"
    proc = subprocess.Popen(argv, env=roi_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (folder / "checkpoint_latest.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / "checkpoint_latest.pth").exists() and not (folder / "checkpoint_final.pth").exists()
    resumed_from = _checkpoint(folder / "checkpoint_latest.pth")
    assert 1 <= resumed_from["current_epoch"] < 3
    run_cli(argv[:1] + argv[1:] + ["--c"], roi_env)
    logged = _checkpoint(folder / "checkpoint_final.pth")["logging"]
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


def test_uncertainty_weighting_from_the_plans_learns_and_survives_in_the_checkpoint(roi_env):
    _add_configuration(roi_env, "3d_cpu_uw", losses={"balancer": "uw"})
    _train(roi_env, STAGE2.trainer, "1", "3d_cpu_uw")
    folder = _results(roi_env, ROI_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_uw") / "fold_1"
    checkpoint = _checkpoint(folder / "checkpoint_final.pth")
    log_vars = checkpoint["aneurysm_extra_state"]["balancer"]["log_vars"]
    assert log_vars.shape == (3,) and log_vars.abs().min() > 0  # in the optimiser: every weight moved
    assert checkpoint["logging"]["weight_seg"][0] != pytest.approx(1.0, abs=1e-6)
    preprocessed = Path(roi_env["nnUNet_preprocessed"]) / ROI_DATASET
    proc = run_cli(["python", "-c", RESTORE_SCRIPT, str(preprocessed / f"{STAGE2.plans}.json"),
                    str(preprocessed / "dataset.json"), "3d_cpu_uw", "1", str(folder / "checkpoint_final.pth")],
                   roi_env)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(log_vars.tolist(), abs=0)


def test_loss_choices_that_contradict_the_trainer_or_each_other_are_refused(roi_env):
    _add_configuration(roi_env, "3d_cpu_uw_aucm", losses={"balancer": "uw", "class_loss": "aucm"})
    proc = _train(roi_env, STAGE2.trainer, "1", "3d_cpu_uw_aucm", check=False)
    assert proc.returncode != 0 and "uwso" in proc.stderr
    _add_configuration(roi_env, "3d_cpu_asl", losses={"class_loss": "asl"})
    proc = _train(roi_env, "AneurysmWaveFormerAUCMTrainer", "1", "3d_cpu_asl", check=False)
    assert proc.returncode != 0 and "trains with class_loss 'aucm'" in proc.stderr  # no silent ASL
    _add_configuration(roi_env, "3d_cpu_schedule_loss", {"balancer": "uw"})
    proc = _train(roi_env, STAGE2.trainer, "1", "3d_cpu_schedule_loss", check=False)
    assert proc.returncode != 0 and "'losses' entry" in proc.stderr


def test_seeded_runs_repeat_their_first_iterations(roi_env):
    _add_configuration(roi_env, "3d_cpu_seeded", {"seed": 123})
    losses = []
    for _ in range(2):
        _train(roi_env, STAGE2.trainer, "all", "3d_cpu_seeded")  # fold 'all' too: trains and validates on every case
        folder = _results(roi_env, ROI_DATASET, STAGE2.trainer, STAGE2.plans, "3d_cpu_seeded") / "fold_all"
        logged = _checkpoint(folder / "checkpoint_final.pth")["logging"]
        losses.append((logged["train_losses"][0], logged["loss_seg"][0], logged["loss_physics"][0]))
    assert losses[0] == losses[1]


def test_pretrained_checkpoints_fine_tune_through_stock_nnunet(roi_env):
    """Vessel pretraining (the ROIs labelled with their ground-truth arteries), masked pretraining (SparK) and
    MiM run as stock nnUNetv2_train; stage 2's trainer starts from each with stock -pretrained_weights (every
    key loaded).

    The vessel pretraining learns arteries: 300 steps on 4 generated series' ROI crops (resampled to 3 mm, the
    detail a 48-voxel series holds), its learning rate held after a one-epoch warm-up, and nnU-Net's own
    validation on the fold's 4 held-out crops: union artery Dice 0.36 (0.29-0.45 per crop) and the infraclinoid
    ICAs, the largest arteries, 0.16 and 0.42 (measured; with the image blanked in the pretrainer's batches the
    same run scores 0.04 and 0.00 / 0.004, with nnU-Net's poly decay 0.40 and 0.11 / 0.25; the left ICA appears
    late, so the better one is asserted). The fine-tuning below starts from these 3 mm weights at stage 2's 1.5 mm: it
    checks the loading, not pretraining at stage 2's resolution."""
    from nnunet_aneurysm.inference.vessel_roi_dataset import build_vessel_roi_dataset
    from nnunet_aneurysm.trainers.pretraining import AneurysmWaveFormerVesselPretrainer

    raw = Path(roi_env["nnUNet_raw"])
    table = build_vessel_roi_dataset(raw, ROI_DATASET, f"Dataset{ROI_ID - 2:03d}_RSNAVessels",
                                     "Dataset905_RSNAVesselsROI", progress=False)
    assert (table["labels"] == "ground truth").all()
    case = table["case_id"].iloc[0]
    blank = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "Dataset905_RSNAVesselsROI" / "imagesTr" /
                                                      f"{case}_0002.nii.gz")))
    arteries = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "Dataset905_RSNAVesselsROI" / "labelsTr" /
                                                         f"{case}.nii.gz")))
    assert blank.max() == 0 and arteries.max() > 0  # the target is the arteries, and they are not in the input
    run_cli(["nnunet-aneurysm", "plan", "-d", "905", "--planner", STAGE2.planner, "--cpu-epochs", "1",
             "--cpu-iterations", "2", "--cpu-val-iterations", "1", "-np", "1"], roi_env)
    plans_file = Path(roi_env["nnUNet_preprocessed"]) / "Dataset905_RSNAVesselsROI" / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"][VESSEL_CONFIGURATION] = {  # stage 2's CPU network on 24 x 24 x 32 crops of 3 mm voxels
        "inherits_from": CPU_CONFIGURATION, "spacing": [3.0, 3.0, 3.0], "patch_size": [24, 24, 32], "batch_size": 4,
        "data_identifier": f"{STAGE2.plans}_{VESSEL_CONFIGURATION}",
        "trainer_schedule": {"num_epochs": 12, "num_iterations_per_epoch": 25, "num_val_iterations_per_epoch": 1,
                             "save_every": 12, "seed": 0}}
    plans_file.write_text(json.dumps(plans, indent=2))
    run_cli(["nnUNetv2_preprocess", "-d", "905", "-plans_name", STAGE2.plans, "-c", VESSEL_CONFIGURATION, "-np", "1"],
            roi_env)
    run_cli(["nnUNetv2_train", "905", VESSEL_CONFIGURATION, "0", "-tr", "AneurysmWaveFormerVesselPretrainer", "-p",
             STAGE2.plans, "-device", "cpu"], roi_env)
    vessel = _results(roi_env, "Dataset905_RSNAVesselsROI", "AneurysmWaveFormerVesselPretrainer", STAGE2.plans,
                      VESSEL_CONFIGURATION)
    lrs = _checkpoint(vessel / "fold_0" / "checkpoint_final.pth")["logging"]["lrs"]
    peak = AneurysmWaveFormerVesselPretrainer.adamw_lr
    assert lrs[0] < lrs[1] and np.allclose(lrs[1:], peak), lrs  # warm-up, then held at the peak (no decay)
    summary = json.loads((vessel / "fold_0" / "validation" / "summary.json").read_text())
    assert max(summary["mean"][k]["Dice"] for k in ("1", "2")) >= 0.2, summary["mean"]  # the better of the ICAs
    truth = Path(roi_env["nnUNet_preprocessed"]) / "Dataset905_RSNAVesselsROI" / "gt_segmentations"
    union = []
    for predicted in sorted((vessel / "fold_0" / "validation").glob("*.nii.gz")):
        p, t = (sitk.GetArrayFromImage(sitk.ReadImage(str(f))) > 0 for f in (predicted, truth / predicted.name))
        union.append(2 * (p & t).sum() / (p.sum() + t.sum()))
    assert len(union) == 4 and np.mean(union) >= 0.25, union  # any artery against background, held-out crops
    _train(roi_env, "AneurysmWaveFormerMaskedPretrainer", "0")
    masked = _results(roi_env, ROI_DATASET, "AneurysmWaveFormerMaskedPretrainer", STAGE2.plans)
    weights = _checkpoint(masked / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert any(k.startswith("masked_pretraining.") for k in weights)
    _train(roi_env, "AneurysmWaveFormerMiMPretrainer", "0")
    mim = _results(roi_env, ROI_DATASET, "AneurysmWaveFormerMiMPretrainer", STAGE2.plans)
    checkpoint = _checkpoint(mim / "fold_0" / "checkpoint_final.pth")
    assert any(k.startswith("masked_pretraining.alignment.") for k in checkpoint["network_weights"])
    assert 0.0 <= checkpoint["logging"]["alignment_accuracy"][0] <= 1.0  # logged per epoch
    folders = {"vessel": vessel, "masked": masked, "MiM": mim}
    pretrained = {name: _checkpoint(folder / "fold_0" / "checkpoint_final.pth")["network_weights"]
                  for name, folder in folders.items()}
    for name in pretrained:
        _add_configuration(roi_env, f"3d_cpu_finetune_{name}", {"num_epochs": 1})
        proc = run_cli(["nnUNetv2_train", str(ROI_ID), f"3d_cpu_finetune_{name}", "1", "-tr", STAGE2.trainer, "-p",
                        STAGE2.plans, "-device", "cpu", "-pretrained_weights",
                        str(folders[name] / "fold_0" / "checkpoint_final.pth")], roi_env)
        assert "Loading pretrained weights" in proc.stdout
        tuned = _checkpoint(_results(roi_env, ROI_DATASET, STAGE2.trainer, STAGE2.plans, f"3d_cpu_finetune_{name}")
                            / "fold_1" / "checkpoint_final.pth")["network_weights"]
        for key in ("stem.0.weight", "downs.0.mix.0.weight"):  # the encoder the pretraining taught
            own = (tuned[key] - pretrained[name][key]).norm()
            for other in set(pretrained) - {name}:  # it started from its own
                assert own < 0.5 * (tuned[key] - pretrained[other][key]).norm(), (name, other, key)
