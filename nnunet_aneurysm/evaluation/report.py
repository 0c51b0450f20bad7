"""The demo's report: ``WORKDIR/report/index.html`` and its pictures, a folder that opens in any browser.

Scores (weighted and per column, with bootstrap intervals) and ROC curves; the ablation table
(head alone, stacker, stacker without each feature group) and how well the AKOrN order parameter
and the PINN loss tell right calls from wrong ones; stage 1's out-of-fold recall, precision and
Dice against its vessel threshold; nnU-Net's training curves of every stage and fold; and, for
held-out series the pipeline got right, wrongly flagged and missed, orthogonal slices through
the candidate (vessel labels, aneurysm probability, the true localizer) and the vessel graph
coloured by GAT score. Every axis is in millimetres.
"""

from __future__ import annotations

import html
import json
import shutil
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


def write_report(workdir: Path, seconds: dict[str, float] | None = None) -> Path:
    """Write ``workdir/report``; returns the page. Reads what the demo's steps left in ``workdir``."""
    from nnunet_aneurysm.evaluation.ablation import ablation_table, confidence_aurocs

    report = workdir / "report"
    (report / "images").mkdir(parents=True, exist_ok=True)
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    labels = pd.read_csv(workdir / "rsna_heldout" / "train.csv", dtype={ID_COLUMN: str})
    submission = pd.read_csv(workdir / "submission.csv", dtype={ID_COLUMN: str})
    sections = []

    def ci(name):
        low_high = metrics["ci95"].get(name)
        return f" (95 % CI {low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""

    score = metrics["weighted_auc"]
    sections.append(f"<h2>Held-out score</h2><p class='big'>weighted AUC {score:.3f}{ci('weighted_auc')}<br>"
                    f"Aneurysm Present AUC {metrics['column_auc'][PRESENT_COLUMN]:.3f}{ci(PRESENT_COLUMN)}</p>"
                    f"<p>{metrics['n_series']} held-out series (another seed, never trained on), predicted from their "
                    f"DICOM folder. {html.escape(metrics['one_class_handling'])}.</p>")
    columns = pd.DataFrame({"column": list(SUBMISSION_COLUMNS),
                            "AUC": [metrics["column_auc"][c] for c in SUBMISSION_COLUMNS],
                            "positives": [metrics["positives"][c] for c in SUBMISSION_COLUMNS]})
    sections.append("<h3>Per column</h3>" + _table(columns))
    for name in ("roc_present.png", "roc_locations.png"):
        shutil.copyfile(workdir / "evaluation" / name, report / "images" / name)
    sections.append("<h3>ROC curves</h3><img src='images/roc_present.png' alt='ROC Aneurysm Present'>"
                    "<img src='images/roc_locations.png' alt='ROC per location' class='wide'>")

    features = workdir / "submission_features.csv"
    if features.is_file():
        oof = pd.read_csv(workdir / "postprocessing" / "features.csv", dtype={"case_id": str})
        heldout = pd.read_csv(features, dtype={ID_COLUMN: str})
        ablation = ablation_table(oof, heldout, labels)
        ablation.to_csv(report / "ablation.csv", index=False)
        aurocs = confidence_aurocs(heldout, labels)
        (report / "interpretability.json").write_text(json.dumps(aurocs, indent=2))
        sections.append("<h2>Do the modules earn their cost?</h2><p>Held-out AUCs of the stage-2 head alone, the "
                        "stacker, and the stacker trained without each feature group (bootstrap 95 % intervals):</p>"
                        + _table(ablation) +
                        f"<p>AUROC with which the AKOrN order parameter tells the head's correct 'Aneurysm Present' "
                        f"calls from its wrong ones: {aurocs['order_parameter']}; the PINN loss: "
                        f"{aurocs['pinn_loss']} ({aurocs['wrong_calls']} wrong of {aurocs['calls']} calls; 0.5 means "
                        f"no information).</p>")

    from nnunet_aneurysm.inference.vessel_threshold import OperatingPoint

    chosen = next((workdir / "nnUNet_raw").glob("*/vessel_operating_point.json"), None)  # the demo's ROI dataset
    if chosen is not None:
        point = OperatingPoint.read(chosen.parent)
        operating_point_figure(point, report / "images" / "vessel_threshold.png")
        sections.append(f"<h2>Stage 1's vessel threshold</h2><p>{html.escape(point.describe())}.</p>"
                        "<img src='images/vessel_threshold.png' alt='stage 1 vessel threshold'>")

    curves = []
    for png in sorted((workdir / "nnUNet_results").rglob("progress*.png")):
        relative = png.relative_to(workdir / "nnUNet_results")
        name = "_".join(relative.parts).replace("__", "_")
        shutil.copyfile(png, report / "images" / name)
        curves.append(f"<figure><img src='images/{name}' alt='{html.escape(str(relative))}' class='wide'>"
                      f"<figcaption>{html.escape(str(relative))}</figcaption></figure>")
    sections.append("<h2>Training curves (nnU-Net's, per stage and fold)</h2>" + "".join(curves))

    cases = []
    for kind, uid in pick_cases(submission, labels).items():
        outputs = workdir / "heldout_outputs" / uid
        truth = heldout_localizers_mm(workdir / "rsna_heldout", uid)
        probability = float(submission.set_index(ID_COLUMN).loc[uid, PRESENT_COLUMN])
        title = f"{kind}: series ...{uid[-12:]}, P(Aneurysm Present) = {probability:.2f}"
        slug = kind.replace(" ", "_")
        for made in (case_figure(outputs, truth, title, report / "images" / f"case_{slug}.png"),
                     graph_figure(outputs, title, report / "images" / f"graph_{slug}.png")):
            if made is not None:
                cases.append(f"<figure><img src='images/{made.name}' alt='{html.escape(title)}' class='wide'>"
                             f"<figcaption>{html.escape(title)}</figcaption></figure>")
    sections.append("<h2>Held-out series</h2>" + ("".join(cases) or "<p>No series to show.</p>"))
    if seconds:
        timing = pd.DataFrame({"step": list(seconds), "seconds": [round(v) for v in seconds.values()]})
        sections.append("<h2>Wall time per step</h2>" + _table(timing, 0))
    page = report / "index.html"
    page.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>nnunet-aneurysm demo report</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222} img{max-width:48%;margin:4px}"
        " img.wide{max-width:100%} .big{font-size:1.4em} table.table{border-collapse:collapse}"
        " table.table td,table.table th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "</style></head><body><h1>nnunet-aneurysm: the main job on generated data</h1>"
        + "".join(sections) + "</body></html>")
    return page
