"""Does pretraining stage 2's network pay, at the same total wall time? From scratch (the demo's stage 2) against
vessel-pretrained, masked-pretrained (SparK; MiM) and both, each fine-tuned through stock ``nnUNetv2_train
-pretrained_weights``.

On a finished demo (``--workdir``, e.g. one repeat of ``benchmarks/accuracy.py``):

1. vessel pretraining: ``vessel-roi-dataset`` (the stage-2 ROIs labelled with their ground-truth arteries), planned
   with stage 2's planner (the same network, checked key by key), ``AneurysmWaveFormerVesselPretrainer`` on EACH
   fold of stage 2's splits (its validation artery Dice on the fold's other half is printed: held-out ROI crops);
2. masked pretraining: ``AneurysmWaveFormerMaskedPretrainer`` on the stage-2 ROI dataset's images, each fold;
3. both: the vessel pretrainer of fold k started from the masked checkpoint of fold k;
   "MiM" (``--variants ... MiM``): ``AneurysmWaveFormerMiMPretrainer`` on the same images (MiM's two levels and
   its cross-level alignment; each step two passes, so fewer fine-tuning epochs fit);
4. with ``--stage1-labels``, "vessel + stage 1": vessel pretraining on EVERY training ROI, those without
   ground-truth vessels labelled with stage 1's out-of-fold arteries (``vessel-roi-dataset --stage1-labels``);
   its artery Dice is scored on the ground-truth-labelled validation cases only;
5. fold k of stage 2 fine-tuned from fold k's pretrained checkpoint, which never saw fold k's validation
   series (one checkpoint for every fold would have seen the other folds' validation series, and the
   out-of-fold table the stacker learns from would flatter it), for as many epochs as keep all pretraining +
   fine-tuning within the from-scratch stage-2 seconds (measured: the pretraining's seconds, and the demo's
   seconds per epoch);
6. with ``--control-epochs N``, stage 2 from scratch for N epochs: a variant fine-tuned for N epochs paired
   against it shows what its starting point is worth apart from the epochs its pretraining took (a variant
   with other fine-tuning epochs differs from it in those epochs too);
7. the held-out ROIs the demo saved, read by each variant's fold models (flip TTA): the stage-2 heads' weighted and
   'Aneurysm Present' AUC with bootstrap intervals, and the paired interval of each variant minus from-scratch.

    python benchmarks/pretraining.py --workdir accuracy_run/seed_0 [--pretrain-epochs 15] [--stage1-labels]
        [--control-epochs 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import training_seconds  # noqa: E402

from nnunet_aneurysm.demo import STAGE2_DATASET, STAGE2_ID, VESSELS_ID, Runner, model_folder  # noqa: E402
from nnunet_aneurysm.evaluation.metric import evaluate, paired_comparison  # noqa: E402
from nnunet_aneurysm.labels import ID_COLUMN, LOCATIONS, PRESENT_COLUMN, SUBMISSION_COLUMNS  # noqa: E402
from nnunet_aneurysm.stages import ARTERY_CHANNEL, CPU_CONFIGURATION, FILE_ENDING, STAGE2, channel_file, dataset_name  # noqa: E402,E501

VESSEL_ROI_ID, STAGE1_LABELLED_ROI_ID = 104, 105
VESSEL_ROI_DATASET = dataset_name(VESSEL_ROI_ID, "RSNAVesselsROI")
STAGE1_LABELLED_ROI_DATASET = dataset_name(STAGE1_LABELLED_ROI_ID, "RSNAVesselsROI")
STAGE1_VARIANT = "vessel + stage 1"
VESSEL_PRETRAINER, MASKED_PRETRAINER = "AneurysmWaveFormerVesselPretrainer", "AneurysmWaveFormerMaskedPretrainer"
MIM_PRETRAINER = "AneurysmWaveFormerMiMPretrainer"


def add_configuration(run: Runner, dataset: str, name: str, epochs: int) -> None:
    """A configuration of a dataset's stage-2 plans that is the CPU configuration with ``epochs`` epochs."""
    plans_file = Path(run.env["nnUNet_preprocessed"]) / dataset / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"][CPU_CONFIGURATION]
    plans["configurations"][name] = {"inherits_from": CPU_CONFIGURATION,
                                     "trainer_schedule": {**base["trainer_schedule"], "num_epochs": int(epochs)}}
    plans_file.write_text(json.dumps(plans, indent=2))


def same_network(run: Runner, dataset: str) -> None:
    """A vessel ROI dataset's plans build stage 2's network (so every key of the checkpoint fits)."""
    read = lambda d: json.loads((Path(run.env["nnUNet_preprocessed"]) / d / f"{STAGE2.plans}.json").read_text())  # noqa: E731
    ours, theirs = read(STAGE2_DATASET)["configurations"], read(dataset)["configurations"]
    for key in ("architecture", "patch_size", "spacing"):
        if ours["3d_fullres"][key] != theirs["3d_fullres"][key]:
            raise SystemExit(f"{dataset}'s plans differ from stage 2's in {key}: not the same network")


def vessel_roi_dataset(run: Runner, dataset_id: int, dataset: str, stage1_labels: bool, epochs: int) -> None:
    """Write, plan and preprocess a vessel ROI dataset (once), with stage 2's planner."""
    if not (Path(run.env["nnUNet_raw"]) / dataset / "dataset.json").is_file():
        run(["nnunet-aneurysm", "vessel-roi-dataset", "--roi-dataset", str(STAGE2_ID), "--vessels", str(VESSELS_ID),
             "--output-id", str(dataset_id), *(["--stage1-labels"] if stage1_labels else [])], "vessel ROI dataset")
    if not (Path(run.env["nnUNet_preprocessed"]) / dataset / f"{STAGE2.plans}.json").is_file():
        run(["nnunet-aneurysm", "plan", "-d", str(dataset_id), "--planner", STAGE2.planner, "--cpu-epochs",
             str(epochs), "--cpu-iterations", "25", "--cpu-val-iterations", "2", "-np", "2", "--training-seed", "0"],
            "plan")
        run(["nnUNetv2_preprocess", "-d", str(dataset_id), "-plans_name", STAGE2.plans, "-c", "3d_fullres", "-np",
             "2"], "preprocess")
    same_network(run, dataset)


def stage1_label_dice(raw: Path, dataset: str) -> float:
    """Stage 1's out-of-fold artery labels (the ROI dataset's artery channel) against the ground truth of the
    vessel ROI dataset ``dataset`` on its ground-truth cases (per artery: mean over those cases, NaN where neither
    has it; then mean over arteries; all cases at once, not per fold): how good the labels ``--stage1-labels``
    trains on are."""
    sources = pd.read_csv(raw / dataset / "label_sources.csv", dtype={"case_id": str})
    per_artery = []
    for case in sources.loc[sources["labels"] == "ground truth", "case_id"]:
        stage1 = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / STAGE2_DATASET / "imagesTr" /
                                                           channel_file(case, ARTERY_CHANNEL))))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / dataset / "labelsTr" / f"{case}{FILE_ENDING}")))
        both = [((stage1 == k).sum() + (truth == k).sum(), 2 * ((stage1 == k) & (truth == k)).sum())
                for k in (loc.class_id for loc in LOCATIONS)]
        per_artery.append([hit / total if total else np.nan for total, hit in both])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.nanmean(np.array(per_artery, float), axis=0)))


def artery_dice(summary: Path, cases: set[str] | None = None) -> float:
    """nnU-Net's foreground-mean Dice of a validation summary (per artery: mean over cases, NaN where neither
    reference nor prediction has it; then mean over arteries), over ``cases`` only when given. Unlike nnU-Net's,
    an artery in none of the cases is left out rather than making the mean NaN."""
    per_case = json.loads(summary.read_text())["metric_per_case"]
    if cases is not None:
        per_case = [c for c in per_case if Path(c["reference_file"]).name.split(".nii")[0] in cases]
    labels = per_case[0]["metrics"].keys()
    with warnings.catch_warnings():  # an artery in no reference and no prediction of these cases: NaN, left out
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean([np.nanmean([c["metrics"][k]["Dice"] for c in per_case]) for k in labels]))


def finetune_configuration(variant: str) -> str:
    """The stage-2 configuration a variant fine-tunes in: a name nnU-Net can use as a folder (no spaces)."""
    return "3d_cpu_finetune_" + variant.replace(" + ", "_").replace(" ", "")


def train(run: Runner, dataset_id: int, configuration: str, fold, trainer: str, pretrained: Path | None = None,
          label: str = "pretraining") -> None:
    run(["nnUNetv2_train", str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", STAGE2.plans,
         "-device", "cpu", *(["-pretrained_weights", str(pretrained)] if pretrained else [])], label)


def heads_submission(workdir: Path, folder: Path, folds: list[int], uids: list[str]) -> pd.DataFrame:
    """The stage-2 heads' 14 probabilities (mean over fold models, flip TTA) of the held-out series' saved ROIs;
    kept in the model folder, so a rerun with more variants reads them back (unless a fold model is newer)."""
    cached = folder / f"heldout_heads_folds_{'_'.join(map(str, folds))}.csv"
    newest_model = max((folder / f"fold_{fold}" / "checkpoint_final.pth").stat().st_mtime for fold in folds)
    if cached.is_file() and cached.stat().st_mtime > newest_model:
        table = pd.read_csv(cached, dtype={ID_COLUMN: str})
        if table[ID_COLUMN].tolist() == list(uids):
            return table
    from nnunet_aneurysm.geometry import geometry_of
    from nnunet_aneurysm.inference.stage2 import Stage2Model

    model = Stage2Model(folder, folds)
    rows = []
    for uid in uids:
        outputs = workdir / "heldout_outputs" / uid
        if not (outputs / "roi_image.nii.gz").is_file():
            rows.append({ID_COLUMN: uid, **dict.fromkeys(SUBMISSION_COLUMNS, 0.5)})
            continue
        images = [sitk.ReadImage(str(outputs / f)) for f in ("roi_image.nii.gz", "vessel_probability.nii.gz",
                                                                "artery_labels.nii.gz")]
        metadata = np.array(json.loads((outputs / "series.json").read_text())["metadata"], np.float32)
        prediction = model.predict([sitk.GetArrayFromImage(i).astype(np.float32) for i in images],
                                   geometry_of(images[0]), metadata)
        rows.append({ID_COLUMN: uid, **dict(zip(SUBMISSION_COLUMNS, map(float, prediction.series)))})
    pd.DataFrame(rows).to_csv(cached, index=False)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished demo")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=["vessel", "masked", "both"],
                        choices=["vessel", "masked", "both", STAGE1_VARIANT, "MiM"])
    parser.add_argument("--stage1-labels", action="store_true",
                        help="also 'vessel + stage 1': vessel pretraining on every training ROI, stage 1's out-of-fold "
                             "arteries where there is no ground truth")
    parser.add_argument("--control-epochs", type=int,
                        help="also stage 2 from scratch for this many epochs (one control, e.g. the vessel variant's "
                             "fine-tuning epochs), each variant paired against it: what pretraining adds beyond the "
                             "epochs it takes away")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    run = Runner(workdir)
    raw, results = Path(run.env["nnUNet_raw"]), Path(run.env["nnUNet_results"])
    scratch = model_folder(run.env, STAGE2_DATASET, STAGE2, CPU_CONFIGURATION)
    folds = sorted(int(p.name.split("_")[1]) for p in scratch.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
    scratch_seconds = training_seconds(scratch, len(folds))
    logged = torch.load(scratch / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    epochs = len(logged["logging"]["epoch_end_timestamps"])
    per_epoch = scratch_seconds / (epochs * len(folds))

    checkpoints, pretrain_seconds, dice = {}, {}, {}
    if {"vessel", "both"} & set(args.variants):
        vessel_roi_dataset(run, VESSEL_ROI_ID, VESSEL_ROI_DATASET, False, args.pretrain_epochs)
    if args.stage1_labels:
        args.variants.append(STAGE1_VARIANT)
    args.variants = list(dict.fromkeys(args.variants))  # each once
    label_dice = None
    if STAGE1_VARIANT in args.variants:
        vessel_roi_dataset(run, STAGE1_LABELLED_ROI_ID, STAGE1_LABELLED_ROI_DATASET, True, args.pretrain_epochs)
        label_dice = stage1_label_dice(raw, STAGE1_LABELLED_ROI_DATASET)
        print(f"stage 1's out-of-fold artery labels against the ground truth on its ROI crops: artery Dice "
              f"{label_dice:.3f}")
    stages = {"vessel": (VESSEL_ROI_ID, CPU_CONFIGURATION, VESSEL_PRETRAINER, None),
              "masked": (STAGE2_ID, "3d_cpu_masked", MASKED_PRETRAINER, None),
              "both": (VESSEL_ROI_ID, "3d_cpu_after_masked", VESSEL_PRETRAINER, "masked"),
              "MiM": (STAGE2_ID, "3d_cpu_mim", MIM_PRETRAINER, None),
              STAGE1_VARIANT: (STAGE1_LABELLED_ROI_ID, CPU_CONFIGURATION, VESSEL_PRETRAINER, None)}
    for name in stages:
        if name not in args.variants and not (name == "masked" and "both" in args.variants):
            continue
        dataset_id, configuration, trainer, start = stages[name]
        dataset = {STAGE2_ID: STAGE2_DATASET, VESSEL_ROI_ID: VESSEL_ROI_DATASET,
                   STAGE1_LABELLED_ROI_ID: STAGE1_LABELLED_ROI_DATASET}[dataset_id]
        folder = results / dataset / f"{trainer}__{STAGE2.plans}__{configuration}"
        if configuration != CPU_CONFIGURATION:
            add_configuration(run, dataset, configuration, args.pretrain_epochs)
        for fold in folds:  # the same splits as stage 2 (vessel-roi-dataset copies them)
            if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                train(run, dataset_id, configuration, fold, trainer, checkpoints[start][fold] if start else None)
        checkpoints[name] = {fold: folder / f"fold_{fold}" / "checkpoint_final.pth" for fold in folds}
        pretrain_seconds[name] = training_seconds(folder, len(folds)) + pretrain_seconds.get(start, 0.0)
        summaries = [folder / f"fold_{fold}" / "validation" / "summary.json" for fold in folds]
        if trainer == VESSEL_PRETRAINER and all(s.is_file() for s in summaries):
            sources = pd.read_csv(raw / dataset / "label_sources.csv", dtype={"case_id": str})
            truth = set(sources.loc[sources["labels"] == "ground truth", "case_id"])
            dice[name] = float(np.mean([artery_dice(s, truth) for s in summaries]))

    labels = pd.read_csv(workdir / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    uids = labels[ID_COLUMN].tolist()
    tables = {"from scratch": heads_submission(workdir, scratch, folds, uids)}
    budget = {}
    for name in args.variants:
        fine_epochs = max(1, int((scratch_seconds - pretrain_seconds[name]) / (per_epoch * len(folds))))
        configuration = finetune_configuration(name)
        folder = model_folder(run.env, STAGE2_DATASET, STAGE2, configuration)
        add_configuration(run, STAGE2_DATASET, configuration, fine_epochs)
        for fold in folds:
            if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                train(run, STAGE2_ID, configuration, fold, STAGE2.trainer, checkpoints[name][fold], "fine-tuning")
        budget[name] = {"pretraining_s": pretrain_seconds[name], "fine_tuning_s": training_seconds(folder, len(folds)),
                        "fine_tuning_epochs": fine_epochs}
        tables[name] = heads_submission(workdir, folder, folds, uids)
    control = f"from scratch, {args.control_epochs} epochs" if args.control_epochs else None
    if control:  # the variants fine-tune for fewer epochs than scratch: what that alone costs, and what is left
        configuration = f"3d_cpu_scratch_{args.control_epochs}"
        folder = model_folder(run.env, STAGE2_DATASET, STAGE2, configuration)
        add_configuration(run, STAGE2_DATASET, configuration, args.control_epochs)
        for fold in folds:
            if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                train(run, STAGE2_ID, configuration, fold, STAGE2.trainer, None, "control")
        budget[control] = {"pretraining_s": 0.0, "fine_tuning_s": training_seconds(folder, len(folds)),
                           "fine_tuning_epochs": args.control_epochs}
        tables[control] = heads_submission(workdir, folder, folds, uids)
    rows = []
    for name, table in tables.items():
        result = evaluate(labels, table, bootstrap=args.bootstrap)
        row = {"stage 2": name, "weighted AUC": result.score, "weighted CI": result.intervals.get("weighted_auc"),
               "Present AUC": result.aucs[PRESENT_COLUMN], "Present CI": result.intervals.get(PRESENT_COLUMN)}
        if name != "from scratch":
            paired = paired_comparison(labels, table, tables["from scratch"], args.bootstrap)
            row.update({f"{k} minus scratch": (round(d.difference, 3), round(d.low, 3), round(d.high, 3), d.verdict)
                        for k, d in paired.items()})
            if control and name != control:
                paired = paired_comparison(labels, table, tables[control], args.bootstrap)
                row.update({f"{k} minus control": (round(d.difference, 3), round(d.low, 3), round(d.high, 3),
                                                   d.verdict) for k, d in paired.items()})
            row.update(budget[name], artery_dice=dice.get(name))
            if name == STAGE1_VARIANT:
                row["stage1_labels_artery_dice"] = label_dice
        rows.append(row)
    pd.set_option("display.width", 250)
    print(f"\nstage-2 heads on {len(uids)} held-out series; from scratch: {scratch_seconds:.0f} s of stage-2 training "
          f"({epochs} epochs x {len(folds)} folds); each variant: pretraining + fine-tuning within that")
    print(pd.DataFrame(rows).to_string(index=False))
    (workdir / "pretraining.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"written to {workdir / 'pretraining.json'}")


if __name__ == "__main__":
    main()
