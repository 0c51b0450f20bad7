"""Does pretraining stage 2's network pay, at the same total wall time? From scratch (the demo's stage 2) against
vessel-pretrained, masked-pretrained and both, each fine-tuned through stock ``nnUNetv2_train -pretrained_weights``.

On a finished demo (``--workdir``, e.g. one repeat of ``benchmarks/accuracy.py``):

1. vessel pretraining: ``vessel-roi-dataset`` (the stage-2 ROIs labelled with their ground-truth arteries), planned
   with stage 2's planner (the same network, checked key by key), ``AneurysmWaveFormerVesselPretrainer`` on EACH
   fold of stage 2's splits (its validation artery Dice on the fold's other half is printed: held-out ROI crops);
2. masked pretraining: ``AneurysmWaveFormerMaskedPretrainer`` on the stage-2 ROI dataset's images, each fold;
3. both: the vessel pretrainer of fold k started from the masked checkpoint of fold k;
4. fold k of stage 2 fine-tuned from fold k's pretrained checkpoint, which never saw fold k's validation
   series (one checkpoint for every fold would have seen the other folds' validation series, and the
   out-of-fold table the stacker learns from would flatter it), for as many epochs as keep all pretraining +
   fine-tuning within the from-scratch stage-2 seconds (measured: the pretraining's seconds, and the demo's
   seconds per epoch);
5. the held-out ROIs the demo saved, read by each variant's fold models (flip TTA): the stage-2 heads' weighted and
   'Aneurysm Present' AUC with bootstrap intervals, and the paired interval of each variant minus from-scratch.

    python benchmarks/pretraining.py --workdir accuracy_run/seed_0 [--pretrain-epochs 15]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import training_seconds  # noqa: E402

from nnunet_aneurysm.demo import STAGE2_DATASET, STAGE2_ID, VESSELS_ID, Runner, model_folder  # noqa: E402
from nnunet_aneurysm.evaluation.metric import evaluate, paired_comparison  # noqa: E402
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS  # noqa: E402
from nnunet_aneurysm.stages import CPU_CONFIGURATION, STAGE2, dataset_name  # noqa: E402

VESSEL_ROI_ID = 104
VESSEL_ROI_DATASET = dataset_name(VESSEL_ROI_ID, "RSNAVesselsROI")
VESSEL_PRETRAINER, MASKED_PRETRAINER = "AneurysmWaveFormerVesselPretrainer", "AneurysmWaveFormerMaskedPretrainer"


def add_configuration(run: Runner, dataset: str, name: str, epochs: int) -> None:
    """A configuration of a dataset's stage-2 plans that is the CPU configuration with ``epochs`` epochs."""
    plans_file = Path(run.env["nnUNet_preprocessed"]) / dataset / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"][CPU_CONFIGURATION]
    plans["configurations"][name] = {"inherits_from": CPU_CONFIGURATION,
                                     "trainer_schedule": {**base["trainer_schedule"], "num_epochs": int(epochs)}}
    plans_file.write_text(json.dumps(plans, indent=2))


def same_network(run: Runner) -> None:
    """The vessel ROI dataset's plans build stage 2's network (so every key of the checkpoint fits)."""
    read = lambda d: json.loads((Path(run.env["nnUNet_preprocessed"]) / d / f"{STAGE2.plans}.json").read_text())  # noqa: E731
    ours, theirs = read(STAGE2_DATASET)["configurations"], read(VESSEL_ROI_DATASET)["configurations"]
    for key in ("architecture", "patch_size", "spacing"):
        if ours["3d_fullres"][key] != theirs["3d_fullres"][key]:
            raise SystemExit(f"the vessel ROI dataset's plans differ from stage 2's in {key}: not the same network")


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
    parser.add_argument("--variants", nargs="+", default=["vessel", "masked", "both"])
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

    checkpoints, pretrain_seconds, artery_dice = {}, {}, {}
    if {"vessel", "both"} & set(args.variants):
        if not (raw / VESSEL_ROI_DATASET / "dataset.json").is_file():
            run(["nnunet-aneurysm", "vessel-roi-dataset", "--roi-dataset", str(STAGE2_ID), "--vessels",
                 str(VESSELS_ID), "--output-id", str(VESSEL_ROI_ID)], "vessel ROI dataset")
        if not (Path(run.env["nnUNet_preprocessed"]) / VESSEL_ROI_DATASET / f"{STAGE2.plans}.json").is_file():
            run(["nnunet-aneurysm", "plan", "-d", str(VESSEL_ROI_ID), "--planner", STAGE2.planner, "--cpu-epochs",
                 str(args.pretrain_epochs), "--cpu-iterations", "25", "--cpu-val-iterations", "2", "-np", "2",
                 "--training-seed", "0"], "plan")
            run(["nnUNetv2_preprocess", "-d", str(VESSEL_ROI_ID), "-plans_name", STAGE2.plans, "-c", "3d_fullres",
                 "-np", "2"], "preprocess")
        same_network(run)
    stages = {"vessel": (VESSEL_ROI_ID, CPU_CONFIGURATION, VESSEL_PRETRAINER, None),
              "masked": (STAGE2_ID, "3d_cpu_masked", MASKED_PRETRAINER, None),
              "both": (VESSEL_ROI_ID, "3d_cpu_after_masked", VESSEL_PRETRAINER, "masked")}
    for name in ("masked", "vessel", "both"):
        if name not in args.variants and not (name == "masked" and "both" in args.variants):
            continue
        dataset_id, configuration, trainer, start = stages[name]
        dataset = STAGE2_DATASET if dataset_id == STAGE2_ID else VESSEL_ROI_DATASET
        folder = results / dataset / f"{trainer}__{STAGE2.plans}__{configuration}"
        if configuration != CPU_CONFIGURATION:
            add_configuration(run, dataset, configuration, args.pretrain_epochs)
        for fold in folds:  # the same splits as stage 2 (vessel-roi-dataset copies them)
            if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                train(run, dataset_id, configuration, fold, trainer, checkpoints[start][fold] if start else None)
        checkpoints[name] = {fold: folder / f"fold_{fold}" / "checkpoint_final.pth" for fold in folds}
        pretrain_seconds[name] = training_seconds(folder, len(folds)) + pretrain_seconds.get(start, 0.0)
        summaries = [folder / f"fold_{fold}" / "validation" / "summary.json" for fold in folds]
        if all(s.is_file() for s in summaries):
            artery_dice[name] = float(np.mean([json.loads(s.read_text())["foreground_mean"]["Dice"]
                                               for s in summaries]))

    labels = pd.read_csv(workdir / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    uids = labels[ID_COLUMN].tolist()
    tables = {"from scratch": heads_submission(workdir, scratch, folds, uids)}
    budget = {}
    for name in args.variants:
        fine_epochs = max(1, int((scratch_seconds - pretrain_seconds[name]) / (per_epoch * len(folds))))
        configuration = f"3d_cpu_finetune_{name}"
        folder = model_folder(run.env, STAGE2_DATASET, STAGE2, configuration)
        add_configuration(run, STAGE2_DATASET, configuration, fine_epochs)
        for fold in folds:
            if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
                train(run, STAGE2_ID, configuration, fold, STAGE2.trainer, checkpoints[name][fold], "fine-tuning")
        budget[name] = {"pretraining_s": pretrain_seconds[name], "fine_tuning_s": training_seconds(folder, len(folds)),
                        "fine_tuning_epochs": fine_epochs}
        tables[name] = heads_submission(workdir, folder, folds, uids)
    rows = []
    for name, table in tables.items():
        result = evaluate(labels, table, bootstrap=args.bootstrap)
        row = {"stage 2": name, "weighted AUC": result.score, "weighted CI": result.intervals.get("weighted_auc"),
               "Present AUC": result.aucs[PRESENT_COLUMN], "Present CI": result.intervals.get(PRESENT_COLUMN)}
        if name != "from scratch":
            paired = paired_comparison(labels, table, tables["from scratch"], args.bootstrap)
            row.update({f"{k} minus scratch": (round(d.difference, 3), round(d.low, 3), round(d.high, 3), d.verdict)
                        for k, d in paired.items()})
            row.update(budget[name], artery_dice=artery_dice.get(name))
        rows.append(row)
    pd.set_option("display.width", 250)
    print(f"\nstage-2 heads on {len(uids)} held-out series; from scratch: {scratch_seconds:.0f} s of stage-2 training "
          f"({epochs} epochs x {len(folds)} folds); each variant: pretraining + fine-tuning within that")
    print(pd.DataFrame(rows).to_string(index=False))
    (workdir / "pretraining.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"written to {workdir / 'pretraining.json'}")


if __name__ == "__main__":
    main()
