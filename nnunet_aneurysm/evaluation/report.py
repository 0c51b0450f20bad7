"""The report of a run: ``DIR/index.html`` and its pictures, a folder that opens in any browser.

Made by ``nnunet-aneurysm report`` from a submission and its labels, for any run (the demo calls the
verb). Always: scores (weighted and per column, with bootstrap intervals) and ROC curves. With the
inputs that feed them: the ablation table (head alone, stacker, stacker without each feature group)
and how well the AKOrN order parameter and the PINN loss tell right calls from wrong ones (the
out-of-fold features and the submission's ``_features.csv``); stage 1's out-of-fold recall, precision
and Dice against its vessel threshold (``vessel_operating_point.json``); nnU-Net's training curves of
every model folder given; for series the pipeline got right, wrongly flagged and missed, orthogonal
slices through the candidate (vessel labels, aneurysm probability, the true localizer where the
labels' folder holds ``train_localizers.csv`` and ``series/``) and the vessel graph coloured by GAT
score (``predict-series --save-outputs``); the wall time per step. Every axis is in millimetres.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnunet_aneurysm.geometry import geometry_of
from nnunet_aneurysm.labels import ID_COLUMN, LOCALIZER_COLUMNS, PRESENT_COLUMN, SUBMISSION_COLUMNS


def _read(path: Path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), geometry_of(image)


def heldout_localizers_mm(root: Path, series_uid: str) -> list[tuple[str, np.ndarray]]:
    """The held-out series' true localizer points in patient coordinates (read from its DICOM)."""
    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.dataset_conversion.localizers import localizer_to_patient

    table = pd.read_csv(root / "train_localizers.csv", dtype=str)
    rows = table[table[LOCALIZER_COLUMNS[0]] == series_uid]
    if rows.empty:
        return []
    volume = read_series(root / "series" / series_uid)
    return [(r.location, localizer_to_patient(volume, r.SOPInstanceUID, r.coordinates)) for r in rows.itertuples()]


def case_figure(outputs: Path, truth: list[tuple[str, np.ndarray]], title: str, out: Path) -> Path | None:
    """Orthogonal slices (axial, coronal, sagittal, mm) through the true aneurysm (through the best candidate
    when there is none): the ROI image, stage 1's vessels as contours, stage 2's probability, and the true
    aneurysm (a cross where it lies within 3 mm of the slice)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (outputs / "roi_image.nii.gz").is_file():
        return None
    image, roi = _read(outputs / "roi_image.nii.gz")
    arteries, _ = _read(outputs / "artery_labels.nii.gz")
    map_file = outputs / "aneurysm_probability.nii.gz"
    probability = _read(map_file)[0] if map_file.is_file() else np.zeros_like(image)
    candidates = pd.read_csv(outputs / "candidates.csv") if (outputs / "candidates.csv").is_file() else pd.DataFrame()
    if truth:
        focus_mm = truth[0][1]
    elif len(candidates):
        focus_mm = candidates.iloc[0][["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    else:
        focus_mm = roi.voxel_to_patient((np.array(image.shape, float)[None] - 1) / 2)[0]
    k, j, i = np.clip(np.round(roi.patient_to_voxel(focus_mm[None])[0]).astype(int), 0, np.array(image.shape) - 1)
    s = roi.spacing[0]
    extent = {"axial": [0, image.shape[2] * s, image.shape[1] * s, 0],
              "coronal": [0, image.shape[2] * s, image.shape[0] * s, 0],
              "sagittal": [0, image.shape[1] * s, image.shape[0] * s, 0]}
    views = {"axial (S-I slice)": (image[k], arteries[k], probability[k], extent["axial"], (2, 1), 0),
             "coronal (A-P slice)": (image[:, j], arteries[:, j], probability[:, j], extent["coronal"], (2, 0), 1),
             "sagittal (L-R slice)": (image[:, :, i], arteries[:, :, i], probability[:, :, i], extent["sagittal"],
                                      (1, 0), 2)}
    focus_voxel = np.array([k, j, i])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    low, high = np.percentile(image, [1, 99.5])
    for ax, (name, (img, art, prob, ext, (ax_x, ax_y), normal)) in zip(axes, views.items()):
        ax.imshow(img, cmap="gray", vmin=low, vmax=high, extent=ext)
        if art.max() > 0:
            ax.contour(art > 0, levels=[0.5], colors="deepskyblue", linewidths=0.8, extent=ext, origin="upper")
        ax.imshow(np.ma.masked_less(prob, 0.1), cmap="autumn", alpha=0.6, vmin=0, vmax=1, extent=ext)
        for _, point in truth:
            voxel = roi.patient_to_voxel(point[None])[0]
            if abs(voxel[normal] - focus_voxel[normal]) * s <= 3.0:
                ax.scatter([voxel[ax_x] * s], [voxel[ax_y] * s], marker="+", s=160, c="lime", linewidths=2)
        ax.set_title(name)
        ax.set_xlabel({2: "L-R (mm)", 1: "A-P (mm)"}[ax_x])
        ax.set_ylabel({1: "A-P (mm)", 0: "S-I (mm)"}[ax_y])
    fig.suptitle(f"{title}\ncyan: stage-1 vessels, red-yellow: stage-2 P(aneurysm) > 0.1, green +: true aneurysm "
                 f"(within 3 mm of the slice)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def graph_figure(outputs: Path, title: str, out: Path) -> Path | None:
    """The vessel graph seen from above and from the side (mm): edges as lines, nodes coloured by GAT score."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (outputs / "graph_nodes.csv").is_file():
        return None
    nodes, edges = pd.read_csv(outputs / "graph_nodes.csv"), pd.read_csv(outputs / "graph_edges.csv")
    if nodes.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (a, b, xl, yl) in zip(axes, (("x_mm", "y_mm", "L-R (mm)", "A-P (mm)"),
                                         ("x_mm", "z_mm", "L-R (mm)", "S-I (mm)"))):
        for e in edges.itertuples():
            ax.plot(nodes.loc[[e.src, e.dst], a], nodes.loc[[e.src, e.dst], b], color="0.6", lw=1)
        points = ax.scatter(nodes[a], nodes[b], c=nodes["gat_score"], cmap="viridis", vmin=0, vmax=1,
                            s=10 + 10 * nodes["radius_mm"])
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_aspect("equal")
    fig.colorbar(points, ax=axes, label="GAT score")
    fig.suptitle(f"{title}: vessel graph ({len(nodes)} nodes, {len(edges)} edges), size = radius", fontsize=10)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def operating_point_figure(point, out: Path) -> Path:
    """Stage 1's out-of-fold recall, precision and Dice of the union vessel mask against its threshold, with
    the chosen (F-beta) threshold and 0.5 marked."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = point.counts()
    edges = np.arange(1, len(counts.vessel)) / len(counts.vessel)
    curves = pd.DataFrame([counts.at(t) for t in edges])
    fig, ax = plt.subplots(figsize=(8, 4))
    for name in ("recall", "precision", "dice"):
        ax.plot(curves["threshold"], curves[name], label=name if name != "dice" else "Dice")
    ax.axvline(point.threshold, color="k", lw=1, label=f"chosen (F{point.beta:g}): {point.threshold:.2f}")
    ax.axvline(0.5, color="0.6", lw=1, ls="--", label="0.5")
    ax.set_xlabel("threshold on stage 1's vessel probability")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"stage 1, union vessel mask, out-of-fold ({point.scans} training series)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="-", border=0,
                         classes="table")


def _readout_table(aurocs: dict) -> str:
    """The read-outs' AUROCs (correct vs wrong calls at the out-of-fold threshold; aneurysm vs none)."""
    rows = []
    for name in ("order_parameter", "pinn_loss"):
        for target, label in (("correct_vs_wrong", "heads' correct vs wrong Present calls"),
                              ("aneurysm_vs_none", "aneurysm vs none")):
            r = aurocs[name][target]
            rows.append({"read-out": name, "separates": label, "AUROC": r["auroc"], "95 % low": r["low"],
                         "95 % high": r["high"], "rows": r["n"], "verdict": r["verdict"]})
    return (_table(pd.DataFrame(rows)) + f"<p>Calls at the heads' threshold {aurocs['threshold']:.3f}, chosen on the "
            f"{html.escape(aurocs['threshold_from'])}: {aurocs['wrong_calls']} wrong of {aurocs['calls']} (one row "
            "per series and fold model; read-outs relative to their fold model's out-of-fold scale).</p>")


def pick_cases(submission: pd.DataFrame, labels: pd.DataFrame) -> dict[str, str]:
    """A true positive, a false positive and a miss of 'Aneurysm Present' (by the 0.5 threshold), when there are."""
    merged = submission.merge(labels[[ID_COLUMN, PRESENT_COLUMN]], on=ID_COLUMN, suffixes=("", "_truth"))
    score, truth = merged[PRESENT_COLUMN], merged[f"{PRESENT_COLUMN}_truth"]
    picks = {}
    for name, rows, best in (("true positive", merged[(truth == 1) & (score >= 0.5)], "max"),
                             ("false positive", merged[(truth == 0) & (score >= 0.5)], "max"),
                             ("missed aneurysm", merged[(truth == 1) & (score < 0.5)], "min")):
        if len(rows):
            index = rows[PRESENT_COLUMN].idxmax() if best == "max" else rows[PRESENT_COLUMN].idxmin()
            picks[name] = merged.loc[index, ID_COLUMN]
    return picks


@dataclass
class ReportSources:
    """What a report is made of. Only the submission and the labels are needed; each other source adds its
    section, and one that is given but absent is an error (a report silently missing a section misleads)."""

    submission: Path  # submission.csv (predict-series); its <stem>_features.csv feeds the ablation
    labels: Path  # train.csv-like; train_localizers.csv and series/ beside it mark the true aneurysms
    models: tuple[Path, ...] = ()  # nnU-Net model folders, folders above them, or pipeline files: training curves
    features: Path | None = None  # the folder of nnunet-aneurysm features (out-of-fold features.csv): ablation
    outputs: Path | None = None  # the folder of predict-series --save-outputs: the case figures
    operating_point: Path | None = None  # stage 2's raw dataset (vessel_operating_point.json): stage 1's threshold
    seconds: dict[str, float] | None = None  # wall time per step, seconds
    title: str = "report"
    bootstrap: int = 1000  # resamples for the 95 % intervals

    def heldout_features(self) -> Path:
        return self.submission.with_name(self.submission.stem + "_features.csv")

    def check(self) -> None:
        """A one-line FileNotFoundError for the first input that is named but not there."""
        from nnunet_aneurysm.inference.vessel_threshold import OPERATING_POINT_FILE

        needed = [(self.submission, "the submission"), (self.labels, "the labels"),
                  *[(m, "--models") for m in self.models]]
        if self.features is not None:
            needed += [(self.features / "features.csv", "--features (nnunet-aneurysm features writes it)"),
                       (self.heldout_features(), "the ablation (predict-series writes it beside the submission "
                                                 "when the pipeline has a stacker)")]
        if self.outputs is not None:
            needed.append((self.outputs, "--outputs (predict-series --save-outputs)"))
        if self.operating_point is not None:
            needed.append((self.operating_point / OPERATING_POINT_FILE, "--operating-point (roi-dataset writes it)"))
        for path, what in needed:
            if not path.exists():
                raise FileNotFoundError(f"no {path}: needed for {what}")


def training_curves(models: tuple[Path, ...]) -> list[tuple[Path, str]]:
    """nnU-Net's ``progress*.png`` of every model folder under ``models`` (a pipeline file: its two stages), each
    with a name that says whose it is."""
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline

    folders = []
    for path in models:
        if path.is_file():
            pipeline = read_pipeline(path)
            folders += [pipeline.resolve(pipeline.stage1.folder), pipeline.resolve(pipeline.stage2.folder)]
        else:
            folders.append(path)
    return [(png, "/".join((folder.resolve().name, *png.relative_to(folder).parts)))
            for folder in folders for png in sorted(folder.rglob("progress*.png"))]


def write_report(sources: ReportSources, out: Path) -> Path:
    """Write the report into ``out``; returns its page."""
    from nnunet_aneurysm.evaluation.ablation import ablation_table, confidence_aurocs
    from nnunet_aneurysm.evaluation.metric import align, evaluate
    from nnunet_aneurysm.evaluation.roc import plot_roc_curves

    sources.check()
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(sources.labels, dtype={ID_COLUMN: str})
    submission = pd.read_csv(sources.submission, dtype={ID_COLUMN: str})
    result = evaluate(labels, submission, bootstrap=sources.bootstrap)
    metrics = result.as_dict()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    truth, scores, _, _ = align(labels, submission)
    plot_roc_curves(truth, scores, list(result.aucs.values()), out / "images")
    sections = []

    def ci(name):
        low_high = metrics["ci95"].get(name)
        return f" (95 % CI {low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""

    def auc(value):
        return "undefined (one class)" if value is None else f"{value:.3f}"

    sections.append(f"<h2>Score</h2><p class='big'>weighted AUC {auc(metrics['weighted_auc'])}{ci('weighted_auc')}"
                    f"<br>Aneurysm Present AUC {auc(metrics['column_auc'][PRESENT_COLUMN])}{ci(PRESENT_COLUMN)}</p>"
                    f"<p>{metrics['n_series']} series of {html.escape(sources.submission.name)} scored against "
                    f"{html.escape(str(sources.labels))}. {html.escape(metrics['one_class_handling'])}.</p>")
    columns = pd.DataFrame({"column": list(SUBMISSION_COLUMNS),
                            "AUC": [metrics["column_auc"][c] for c in SUBMISSION_COLUMNS],
                            "positives": [metrics["positives"][c] for c in SUBMISSION_COLUMNS]})
    sections.append("<h3>Per column</h3>" + _table(columns))
    sections.append("<h3>ROC curves</h3><img src='images/roc_present.png' alt='ROC Aneurysm Present'>"
                    "<img src='images/roc_locations.png' alt='ROC per location' class='wide'>")

    if sources.features is not None:
        oof = pd.read_csv(sources.features / "features.csv", dtype={"case_id": str})
        heldout = pd.read_csv(sources.heldout_features(), dtype={ID_COLUMN: str})
        ablation = ablation_table(oof, heldout, labels, bootstrap=sources.bootstrap)
        ablation.to_csv(out / "ablation.csv", index=False)
        aurocs = confidence_aurocs(oof, heldout, labels, bootstrap=sources.bootstrap)
        (out / "interpretability.json").write_text(json.dumps(aurocs, indent=2))
        sections.append("<h2>Do the modules earn their cost?</h2><p>AUCs of the stage-2 heads alone, the "
                        "stacker, and the stacker trained without each feature group, with bootstrap 95 % "
                        "intervals; each module's gain is the <em>paired</em> difference on the same series (the "
                        "full stacker minus the stacker without it; the stacker minus the heads), with its own "
                        "interval: <b>pays</b> (above 0), <b>costs</b> (below 0), <b>undecided</b> (spans 0).</p>"
                        + _table(ablation) + "<h3>Interpretability read-outs</h3>" + _readout_table(aurocs))
    if sources.operating_point is not None:
        from nnunet_aneurysm.inference.vessel_threshold import OperatingPoint

        point = OperatingPoint.read(sources.operating_point)
        operating_point_figure(point, out / "images" / "vessel_threshold.png")
        sections.append(f"<h2>Stage 1's vessel threshold</h2><p>{html.escape(point.describe())}.</p>"
                        "<img src='images/vessel_threshold.png' alt='stage 1 vessel threshold'>")

    curves = []
    for png, name in training_curves(sources.models):
        file_name = name.replace("/", "_").replace("__", "_")
        shutil.copyfile(png, out / "images" / file_name)
        curves.append(f"<figure><img src='images/{file_name}' alt='{html.escape(name)}' class='wide'>"
                      f"<figcaption>{html.escape(name)}</figcaption></figure>")
    if sources.models:
        sections.append("<h2>Training curves (nnU-Net's, per stage and fold)</h2>"
                        + ("".join(curves) or "<p>No progress.png under the model folders given.</p>"))

    if sources.outputs is not None:
        root = sources.labels.parent  # an RSNA folder: the true localizers, read in patient mm from the DICOM
        localizers = root if (root / "train_localizers.csv").is_file() and (root / "series").is_dir() else None
        cases = []
        for kind, uid in pick_cases(submission, labels).items():
            truth = heldout_localizers_mm(localizers, uid) if localizers is not None else []
            probability = float(submission.set_index(ID_COLUMN).loc[uid, PRESENT_COLUMN])
            title = f"{kind}: series ...{uid[-12:]}, P(Aneurysm Present) = {probability:.2f}"
            slug = kind.replace(" ", "_")
            for made in (case_figure(sources.outputs / uid, truth, title, out / "images" / f"case_{slug}.png"),
                         graph_figure(sources.outputs / uid, title, out / "images" / f"graph_{slug}.png")):
                if made is not None:
                    cases.append(f"<figure><img src='images/{made.name}' alt='{html.escape(title)}' class='wide'>"
                                 f"<figcaption>{html.escape(title)}</figcaption></figure>")
        sections.append("<h2>Series</h2>" + ("".join(cases) or "<p>No series to show.</p>"))
    if sources.seconds:
        seconds = {**sources.seconds, "all steps": sum(sources.seconds.values())}
        timing = pd.DataFrame({"step": list(seconds), "seconds": [round(v) for v in seconds.values()]})
        sections.append("<h2>Wall time per step</h2>" + _table(timing, 0))
    title = html.escape(f"nnunet-aneurysm: {sources.title}")
    page = out / "index.html"
    page.write_text(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222} img{max-width:48%;margin:4px}"
        " img.wide{max-width:100%} .big{font-size:1.4em} table.table{border-collapse:collapse}"
        " table.table td,table.table th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}"
        f"</style></head><body><h1>{title}</h1>" + "".join(sections) + "</body></html>")
    return page
