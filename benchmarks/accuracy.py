"""Held-out accuracy of the pipeline against nnU-Net's own trainer at EQUAL stage-2 wall time, with paired
intervals, training-seed repeats and a verdict for every module, in one run.

(a) this design: the demo's pipeline (stage 1 -> vessel ROI -> stage 2 with location-aware heads -> graph,
    GAT, stacker), trained on a generated training set and scored on a generated held-out set (another
    seed, never trained on: 300 series by default, so that a difference of ~0.03 in weighted AUC can be
    resolved by the paired bootstrap), predicted from its DICOM folders;
(b) the baseline: nnU-Net's own network and trainer (``AneurysmScheduledNNUNetTrainer``, PlainConvUNet as
    nnU-Net's planner configures it for the ROI patch) trained on the SAME stage-2 dataset and folds, for as
    many epochs as its stage-2 training seconds need to reach ours (measured on the fly: a two-epoch probe
    gives its seconds per epoch), read as the nnU-Net authors read it in the competition: the maximum of
    each location's softmax channel ('Aneurysm Present': the maximum over locations), on the same ROIs.

Every comparison on the same held-out series is a PAIRED bootstrap (resample the series, score both, take
the difference): ours vs the baseline, ours vs ours without flip TTA, the stacker vs the heads, the stacker
vs the stacker without each feature group (from the report's ablation table); verdict "pays" (interval
above 0), "costs" (below), "undecided". ``--repeats N`` trains everything N times with training seeds
0..N-1 on the same data; each row is then the mean and range over the repeats and a module's verdict holds
only if every repeat gives it. Also measured on the trained models (issue 21): the AKOrN oscillators'
spread between series, how far zeroed metadata moves the probabilities, the balancer's least weight and floored steps,
the physics loss's Navier-Stokes share and the vessel graphs' pieces at the operating point; and each
module's seconds (per-step network cost of AKOrN, PINN, FiLM; timings of the GAT, stacker and TTA).

    python benchmarks/accuracy.py --workdir accuracy_run --repeats 2     # the demo's default budget
    python benchmarks/accuracy.py --workdir W --train-series 300 --stage1-epochs 30 ...
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from nnunet_aneurysm.demo import STAGE2_DATASET, STAGE2_ID, DemoSettings, Runner, Schedule, model_folder, run_demo
from nnunet_aneurysm.evaluation.ablation import heads_submission
from nnunet_aneurysm.evaluation.metric import evaluate, paired_comparison
from nnunet_aneurysm.labels import ID_COLUMN, PRESENT_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.stages import BASELINE_TRAINER, STAGE2

BASELINE_CONFIGURATION = "3d_cpu_baseline"
PROBE_CONFIGURATION = "3d_cpu_baseline_probe"
PROBE_EPOCHS = 2


def plain_conv_unet_architecture(patch, spacing) -> dict:
    """PlainConvUNet as nnU-Net's planner configures it for this patch and spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pools, kernels, _, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    n = len(pools)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": n, "features_per_stage": [min(320, 32 * 2**i) for i in range(n)],
                            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": kernels, "strides": pools,
                            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
                            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def add_baseline_configuration(run: Runner, settings: DemoSettings, name: str, epochs: int) -> None:
    """A configuration of the stage-2 plans with nnU-Net's network, our patch, batch and iterations, ``epochs``."""
    plans_file = Path(run.env["nnUNet_preprocessed"]) / STAGE2_DATASET / f"{STAGE2.plans}.json"
    plans = json.loads(plans_file.read_text())
    ours = plans["configurations"][settings.configuration]
    fullres = plans["configurations"]["3d_fullres"]
    patch = ours.get("patch_size", fullres["patch_size"])
    plans["configurations"][name] = {
        "inherits_from": settings.configuration,
        "architecture": plain_conv_unet_architecture(patch, fullres["spacing"]),
        "trainer_schedule": {**ours["trainer_schedule"], "num_epochs": int(epochs)}}
    plans_file.write_text(json.dumps(plans, indent=2))


def epoch_seconds(folder: Path, fold: int) -> list[float]:
    logged = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                        weights_only=False)["logging"]
    return [end - start for start, end in zip(logged["epoch_start_timestamps"], logged["epoch_end_timestamps"])]


def training_seconds(folder: Path, folds: int) -> float:
    return float(sum(sum(epoch_seconds(folder, fold)) for fold in range(folds)))


def equal_time_epochs(our_seconds_per_fold: float, baseline_seconds_per_epoch: float) -> int:
    """The baseline's epochs per fold so that its training seconds reach ours (rounded up)."""
    return max(1, math.ceil(our_seconds_per_fold / max(baseline_seconds_per_epoch, 1e-9)))


def train_baseline(run: Runner, settings: DemoSettings, our_seconds: float, folds: int) -> tuple[Path, dict]:
    """A two-epoch probe for the baseline's seconds per epoch, then the baseline at equal stage-2 wall time per
    fold, for its first ``folds`` folds."""
    train = lambda configuration, fold: run(["nnUNetv2_train", str(STAGE2_ID), configuration, str(fold), "-tr",  # noqa: E731
                                             BASELINE_TRAINER, "-p", STAGE2.plans, "-device", settings.device],
                                            "baseline training")
    probe = model_folder(run.env, STAGE2_DATASET, STAGE2, PROBE_CONFIGURATION, BASELINE_TRAINER)
    if not (probe / "fold_0" / "checkpoint_final.pth").is_file():
        add_baseline_configuration(run, settings, PROBE_CONFIGURATION, PROBE_EPOCHS)
        train(PROBE_CONFIGURATION, 0)
    per_epoch = float(np.median(epoch_seconds(probe, 0)))
    epochs = equal_time_epochs(our_seconds / settings.folds, per_epoch)
    folder = model_folder(run.env, STAGE2_DATASET, STAGE2, BASELINE_CONFIGURATION, BASELINE_TRAINER)
    add_baseline_configuration(run, settings, BASELINE_CONFIGURATION, epochs)
    for fold in range(folds):
        if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            train(BASELINE_CONFIGURATION, fold)
    seconds = training_seconds(folder, folds)
    ours = our_seconds * folds / settings.folds  # ours over the same folds (the mean per fold)
    return folder, {"probe_seconds_per_epoch": per_epoch, "epochs": epochs, "seconds": seconds, "folds": folds,
                    "our_seconds": ours, "equal_or_more": seconds >= ours}


def baseline_submission(workdir: Path, model: Path, folds: int, heldout_ids: list[str]) -> pd.DataFrame:
    """The baseline's probabilities of the held-out series, from the ROIs the pipeline saved for them."""
    from nnunet_aneurysm.geometry import geometry_of
    from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties

    predictor = load_predictor(model, list(range(folds)), torch.device("cpu"))
    rows = []
    for uid in heldout_ids:
        outputs = workdir / "heldout_outputs" / uid
        if not (outputs / "roi_image.nii.gz").is_file():  # the pipeline's fallback row: no ROI to read
            rows.append({ID_COLUMN: uid, **{c: 0.5 for c in SUBMISSION_COLUMNS}})
            continue
        images = [sitk.ReadImage(str(outputs / f)) for f in ("roi_image.nii.gz", "vessel_probability.nii.gz",
                                                                "artery_labels.nii.gz")]
        data = np.stack([sitk.GetArrayFromImage(i).astype(np.float32) for i in images])
        _, probabilities = predictor.predict_single_npy_array(data, nnunet_properties(geometry_of(images[0])),
                                                              None, None, True)
        location_max = probabilities[1:].reshape(len(probabilities) - 1, -1).max(1)
        rows.append({ID_COLUMN: uid, **dict(zip(SUBMISSION_COLUMNS, [*location_max, location_max.max()]))})
    return pd.DataFrame(rows)


def stage1_on_heldout(workdir: Path) -> dict:
    """Union vessel recall and Dice of the pipeline's stage 1 (fold ensemble, flip TTA) on held-out series
    with ground-truth vessel labels: at the pipeline's vessel threshold (chosen out-of-fold) and at 0.5."""
    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.geometry import to_sitk
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline
    from nnunet_aneurysm.inference.stage1 import Stage1Model
    from nnunet_aneurysm.inference.vessel_threshold import VesselCounts
    from nnunet_aneurysm.metadata import encode_metadata, metadata_from_header

    pipeline = read_pipeline(workdir / "pipeline" / "pipeline.json")
    threshold = pipeline.roi_settings().vessel_threshold
    model = Stage1Model(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds)
    counts = VesselCounts.empty()
    for seg_file in sorted((workdir / "rsna_heldout" / "segmentations").glob("*_cowseg.nii")):
        uid = seg_file.name[: -len("_cowseg.nii")]
        volume = read_series(workdir / "rsna_heldout" / "series" / uid)
        reference = to_sitk(np.zeros(volume.array.shape, np.float32), volume.geometry)
        truth = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(seg_file)), reference, sitk.Transform(),
                                                     sitk.sitkNearestNeighbor, 0)) > 0
        vessels = model.predict(volume.array, volume.geometry, encode_metadata(*metadata_from_header(volume.header)))
        counts.add(vessels.vessel_probability_on(volume.geometry, volume.array.shape), truth)
    return {"series": counts.scans, "threshold": threshold, "chosen": counts.at(threshold), "half": counts.at(0.5)}


def trained_module_readouts(workdir: Path, folder: Path, folds: int, max_series: int = 60) -> dict:
    """What the trained stage-2 models do (issue 21), on held-out ROIs: per fold model, the AKOrN final states'
    mean cosine between series and the order parameter's mean and spread; the largest and mean change of the 14
    probabilities when the metadata are zeroed; from the training logs, the least term weight, the share of
    steps at the balancer's floor and the Navier-Stokes
    share of the physics loss; from the out-of-fold graphs, pieces and junction share at the operating point."""
    from nnunet_aneurysm.geometry import geometry_of
    from nnunet_aneurysm.inference.stage2 import Stage2Model

    uids = sorted(p.name for p in (workdir / "heldout_outputs").iterdir()
                  if (p / "roi_image.nii.gz").is_file())[:max_series]
    out = {"series": len(uids), "folds": {}}
    for fold in range(folds):
        model = Stage2Model(folder, [fold], flip_tta=False)
        network = model.network
        network.load_state_dict(model.predictor.list_of_parameters[0])
        network.eval()
        states, orders, shifts = [], [], []
        for uid in uids:
            outputs = workdir / "heldout_outputs" / uid
            images = [sitk.ReadImage(str(outputs / f)) for f in ("roi_image.nii.gz", "vessel_probability.nii.gz",
                                                                    "artery_labels.nii.gz")]
            data, _ = model._preprocess([sitk.GetArrayFromImage(i).astype(np.float32) for i in images],
                                        geometry_of(images[0]))
            metadata = np.array(json.loads((outputs / "series.json").read_text()).get("metadata", []), np.float32)
            with torch.no_grad():
                vector = torch.from_numpy(metadata)[None] if metadata.size else None
                _, aux = network(data[None], metadata=vector, return_aux=True)
                _, zeroed = network(data[None], metadata=torch.zeros_like(vector) if vector is not None else None,
                                    return_aux=True)
            shifts.append((torch.sigmoid(aux["class_logits"]) - torch.sigmoid(zeroed["class_logits"])).abs()[0].numpy())
            layers = network.akorn_layers()
            if layers:
                states.append(torch.cat([layer.last_trajectory[1].flatten() / layer.last_trajectory[1].norm()
                                         for layer in layers]))
                orders.append(float(aux["order_parameter"].mean()))
        fold_out = {"metadata_shift_max": float(np.max(shifts)), "metadata_shift_mean": float(np.mean(shifts))}
        if states:
            stacked = torch.nn.functional.normalize(torch.stack(states), dim=1)
            cosine = (stacked @ stacked.T)[~torch.eye(len(stacked), dtype=torch.bool)]
            fold_out.update(state_cosine=float(cosine.mean()), order_mean=float(np.mean(orders)),
                            order_std=float(np.std(orders)))
        logged = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)["logging"]
        if "min_term_weight" in logged:  # the least weight of any term on any step (UW-SO's floor: 0.1)
            fold_out["min_term_weight"] = float(np.nanmin(logged["min_term_weight"]))
        for key in ("floored_fraction", "physics_navier_stokes_share", "weight_cls", "weight_physics"):
            if key in logged:
                fold_out[f"{key}_last"] = float(logged[key][-1])
                fold_out[f"{key}_mean"] = float(np.nanmean(logged[key]))
        out["folds"][fold] = fold_out
        del model
    out["graphs"] = graph_shapes(workdir / "postprocessing" / "graphs")
    return out


def graph_shapes(folder: Path) -> dict:
    """Median pieces (connected components) and junction share (degree >= 3) of the out-of-fold vessel graphs."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    pieces, junctions = [], []
    for nodes_file in sorted(folder.glob("*_nodes.csv")):
        nodes = pd.read_csv(nodes_file)
        edges = pd.read_csv(nodes_file.with_name(nodes_file.name.replace("_nodes.csv", "_edges.csv")))
        if not len(nodes):
            continue
        matrix = sp.coo_matrix((np.ones(len(edges)), (edges["src"], edges["dst"])), shape=(len(nodes),) * 2)
        pieces.append(connected_components(matrix, directed=False)[0])
        junctions.append(float((nodes["degree"] >= 3).mean()))
    return {"graphs": len(pieces), "median_pieces": float(np.median(pieces)) if pieces else None,
            "median_junction_share": float(np.median(junctions)) if junctions else None}


def module_step_seconds(run: Runner, settings: DemoSettings, steps: int = 4) -> dict:
    """Seconds of one stage-2 training step (forward + backward, the plans' patch and batch) of WaveFormer with
    each module and without it (AKOrN, PINN head with its physics loss at the trainer's points, FiLM), and of
    one forward pass: what each module adds per step, medians of ``steps`` after a warm-up."""
    from nnunet_aneurysm.losses.physics import physics_loss
    from nnunet_aneurysm.networks.waveformer import WaveFormer

    plans = json.loads((Path(run.env["nnUNet_preprocessed"]) / STAGE2_DATASET / f"{STAGE2.plans}.json").read_text())
    configuration = plans["configurations"][settings.configuration]
    kwargs = dict(configuration["architecture"]["arch_kwargs"])
    patch = configuration.get("patch_size", plans["configurations"]["3d_fullres"]["patch_size"])
    batch = configuration.get("batch_size", 2)
    x = torch.randn(batch, 3, *patch)
    x[:, 2] = torch.randint(0, 14, (batch, *patch)).float()
    metadata = torch.randn(batch, kwargs.get("metadata_dim", 7))
    variants = {"full": {}, "without AKOrN": {"akorn": None}, "without PINN": {"pinn": None},
                "without metadata (FiLM)": {"metadata_dim": 0}}
    out = {}
    for name, change in variants.items():
        network = WaveFormer(3, 14, True, **{**kwargs, **change})
        meta = metadata if network.films is not None else None
        train_times, infer_times = [], []
        for i in range(steps + 1):
            start = time.perf_counter()
            seg, aux = network(x, metadata=meta, return_aux=True)
            loss = sum(s.float().mean() for s in seg) + aux["class_logits"].mean()
            if network.pinn_head is not None:
                points = torch.rand(batch, 1024, 3, dtype=torch.float64) * 4 - 2
                head, code = network.pinn_head, aux["pinn_code"]
                loss = loss + physics_loss(lambda c, h=head, z=code: h.field(c, z), points, points[:, :256], 100.0,
                                           field_with_derivatives=lambda c, h=head, z=code:
                                           h.field_with_derivatives(c, z))["total"].float()
            loss.backward()
            if i:
                train_times.append(time.perf_counter() - start)
            with torch.no_grad():
                start = time.perf_counter()
                network(x[:1], metadata=meta[:1] if meta is not None else None, return_aux=True)
                if i:
                    infer_times.append(time.perf_counter() - start)
        out[name] = {"train_step_s": float(np.median(train_times)), "forward_s": float(np.median(infer_times))}
    return out


def evaluate_repeat(workdir: Path, settings: DemoSettings, bootstrap: int, baseline_folds: int | None = None) -> dict:
    """Every figure of one trained repeat (its models, its held-out predictions). ``baseline_folds``: the baseline
    trains only its first folds (time), and is then compared with our stage-2 heads of the same folds."""
    run = Runner(workdir)
    labels = pd.read_csv(workdir / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    pipeline = workdir / "pipeline" / "pipeline.json"
    no_tta = workdir / "submission_no_tta.csv"
    if not no_tta.is_file():
        run(["nnunet-aneurysm", "predict-series", str(workdir / "rsna_heldout"), "-o", str(no_tta), "--pipeline",
             str(pipeline), "-device", settings.device, "--disable_tta", "--allow-fallback"], "predict-series (no TTA)")
    ours_folder = model_folder(run.env, STAGE2_DATASET, STAGE2, settings.configuration)
    our_seconds = training_seconds(ours_folder, settings.folds)
    folds = baseline_folds or settings.folds
    baseline_folder, baseline_time = train_baseline(run, settings, our_seconds, folds)
    baseline_file = workdir / f"submission_baseline_{folds}_folds.csv"
    if not baseline_file.is_file():
        baseline_submission(workdir, baseline_folder, folds, labels[ID_COLUMN].tolist()).to_csv(
            baseline_file, index=False)
    features = lambda stem: pd.read_csv(workdir / f"{stem}_features.csv", dtype={ID_COLUMN: str})  # noqa: E731
    tables = {"ours": pd.read_csv(workdir / "submission.csv", dtype={ID_COLUMN: str}),
              "ours without flip TTA": pd.read_csv(no_tta, dtype={ID_COLUMN: str}),
              "nnU-Net baseline (equal time)": pd.read_csv(baseline_file, dtype={ID_COLUMN: str}),
              # flip TTA judged where it acts: the heads (the stacker learnt from TTA features only)
              "stage-2 heads": heads_submission(features("submission")),
              "stage-2 heads without flip TTA": heads_submission(features("submission_no_tta"))}
    if folds < settings.folds:  # equal time: our heads of the folds the baseline trained
        ours_folds = features("submission")
        tables[f"stage-2 heads, folds 0-{folds - 1}"] = heads_submission(ours_folds[ours_folds["source_fold"] < folds])
    scores = {}
    for name, table in tables.items():
        result = evaluate(labels, table, bootstrap=bootstrap)
        scores[name] = {"weighted_auc": result.score, "weighted_ci": result.intervals.get("weighted_auc"),
                        "present_auc": result.aucs[PRESENT_COLUMN], "present_ci": result.intervals.get(PRESENT_COLUMN)}
    paired = {}
    pairs = [("ours - nnU-Net baseline", "nnU-Net baseline (equal time)")]
    if folds < settings.folds:
        pairs.append((f"our stage-2 heads - nnU-Net baseline, folds 0-{folds - 1} (equal time)",
                      "nnU-Net baseline (equal time)"))
    for name, other in (*pairs,
                        ("flip TTA on the stage-2 heads (with - without)", "stage-2 heads without flip TTA"),
                        ("flip TTA through the stacker (with - without)", "ours without flip TTA")):
        mine = (tables[f"stage-2 heads, folds 0-{folds - 1}"] if "folds 0-" in name
                else tables["stage-2 heads"] if "heads" in name else tables["ours"])
        comparison = paired_comparison(labels, mine, tables[other], bootstrap)
        paired[name] = {key: {"difference": d.difference, "low": d.low, "high": d.high, "verdict": d.verdict}
                        for key, d in comparison.items()}
    log = lambda stem: pd.read_csv(workdir / f"{stem}_log.csv")  # noqa: E731
    seconds_columns = [c for c in log("submission").columns if c.startswith("seconds_") and "preprocess" not in c]
    timing = json.loads((workdir / "timing.json").read_text())
    return {"scores": scores, "paired": paired, "baseline_time": baseline_time,
            "ablation": pd.read_csv(workdir / "report" / "ablation.csv").to_dict("records"),
            "interpretability": json.loads((workdir / "report" / "interpretability.json").read_text()),
            "stage1": stage1_on_heldout(workdir),
            "trained_modules": trained_module_readouts(workdir, ours_folder, settings.folds),
            "module_step_seconds": module_step_seconds(run, settings),
            "seconds": {"stage-2 training (ours)": our_seconds, "train-gat": timing.get("train-gat"),
                        "train-stacker": timing.get("train-stacker"), "demo (all steps)": sum(timing.values()),
                        "predict per series (flip TTA)": float(log("submission")[seconds_columns].sum(1).mean()),
                        "predict per series (no TTA)": float(log("submission_no_tta")[seconds_columns].sum(1).mean()),
                        "postprocessing per series": float(log("submission")["seconds_postprocessing"].mean())},
            "training_seed": settings.training_seed}


def summarise(repeats: list[dict]) -> dict:
    """Each score as mean and range over the repeats; each verdict kept only where every repeat agrees."""
    out = {"repeats": len(repeats), "seeds": [r["training_seed"] for r in repeats], "scores": {}, "paired": {},
           "ablation": {}}
    for name in repeats[0]["scores"]:
        for key in ("weighted_auc", "present_auc"):
            values = [r["scores"][name][key] for r in repeats]
            out["scores"].setdefault(name, {})[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                                                       "max": float(np.max(values))}
    for name in repeats[0]["paired"]:
        for key in repeats[0]["paired"][name]:
            verdicts = {r["paired"][name][key]["verdict"] for r in repeats}
            out["paired"].setdefault(name, {})[key] = {
                "difference_mean": float(np.mean([r["paired"][name][key]["difference"] for r in repeats])),
                "verdict": verdicts.pop() if len(verdicts) == 1 else "undecided (repeats disagree)"}
    for row in repeats[0]["ablation"]:
        rows = [next(x for x in r["ablation"] if x["variant"] == row["variant"]) for r in repeats]
        entry = {"weighted_auc_mean": float(np.mean([x["weighted_auc"] for x in rows])),
                 "present_auc_mean": float(np.mean([x["present_auc"] for x in rows]))}
        if isinstance(row.get("verdict"), str):
            verdicts = {x["verdict"] for x in rows}
            entry.update(module=row["module"], weighted_gain_mean=float(np.mean([x["weighted_gain"] for x in rows])),
                         verdict=verdicts.pop() if len(verdicts) == 1 else "undecided (repeats disagree)")
        out["ablation"][row["variant"]] = entry
    ours = [r["scores"]["ours"]["weighted_auc"] for r in repeats]
    out["seed_spread_weighted_auc"] = float(np.max(ours) - np.min(ours)) if len(ours) > 1 else None
    return out


def print_repeat(result: dict) -> None:
    fmt = lambda ci: f"({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""  # noqa: E731
    print(f"\n== training seed {result['training_seed']} ==")
    for name, s in result["scores"].items():
        print(f"{name:32s} weighted AUC {s['weighted_auc']:.3f} {fmt(s['weighted_ci'])}   Aneurysm Present "
              f"{s['present_auc']:.3f} {fmt(s['present_ci'])}")
    for name, p in result["paired"].items():
        for key, d in p.items():
            print(f"paired {name:40s} {key:17s} {d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) "
                  f"{d['verdict']}")
    t = result["baseline_time"]
    print(f"stage-2 training: ours {t['our_seconds']:.0f} s, nnU-Net baseline {t['seconds']:.0f} s "
          f"({t['epochs']} epochs per fold from its probe's {t['probe_seconds_per_epoch']:.1f} s per epoch)")
    print(pd.DataFrame(result["ablation"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps({k: result[k] for k in ("interpretability", "stage1", "trained_modules", "module_step_seconds",
                                             "seconds")}, indent=1, default=str))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--train-series", type=int, default=None)
    parser.add_argument("--heldout-series", type=int, default=300)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--stage1-epochs", type=int, default=None)
    parser.add_argument("--stage2-epochs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="of the generated data")
    parser.add_argument("--repeats", type=int, default=1, help="trainings with training seeds 0..N-1, same data")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--baseline-folds", type=int, default=None,
                        help="train the baseline on its first N folds only (equal time per fold) and compare it with "
                             "our stage-2 heads of those folds too (default: every fold)")
    args = parser.parse_args()
    root = args.workdir.resolve()
    settings = DemoSettings(root, seed=args.seed, heldout_series=args.heldout_series)
    changes = {k: v for k, v in (("train_series", args.train_series), ("folds", args.folds)) if v is not None}
    settings = replace(settings, **changes)
    for stage, epochs in (("stage1", args.stage1_epochs), ("stage2", args.stage2_epochs)):
        old = getattr(settings, stage)
        setattr(settings, stage, Schedule(epochs or old.epochs, args.iterations or old.iterations, old.val_iterations))
    results = []
    for seed in range(args.repeats):
        repeat = replace(settings, workdir=root / f"seed_{seed}", training_seed=seed)
        repeat.workdir.mkdir(parents=True, exist_ok=True)
        if seed:  # the same data: the first repeat's generated folders
            for name in ("rsna_train", "rsna_heldout"):
                link = repeat.workdir / name
                if not link.exists():
                    link.symlink_to(root / "seed_0" / name, target_is_directory=True)
        if not (repeat.workdir / "report" / "index.html").is_file():
            run_demo(repeat)
        results.append(evaluate_repeat(repeat.workdir, repeat, args.bootstrap, args.baseline_folds))
        print_repeat(results[-1])
        (root / "accuracy.json").write_text(json.dumps({"settings": {
            "train_series": settings.train_series, "heldout_series": settings.heldout_series, "size": settings.size,
            "folds": settings.folds, "stage1": vars(settings.stage1), "stage2": vars(settings.stage2)},
            "repeats": results, "summary": summarise(results)}, indent=1, default=str))
    print("\n== summary over repeats ==")
    print(json.dumps(summarise(results), indent=1))
    print(f"written to {root / 'accuracy.json'}")


if __name__ == "__main__":
    main()
