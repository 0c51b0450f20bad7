"""What a series' prediction leaves behind for people (``predict-series --save-outputs DIR``):

    DIR/<SeriesInstanceUID>/roi_image.nii.gz        the ROI's image (patient-aligned, mm)
    DIR/<SeriesInstanceUID>/aneurysm_probability.nii.gz   stage 2's P(any aneurysm) on the ROI grid
    DIR/<SeriesInstanceUID>/aneurysm_labels.nii.gz  its most probable location per voxel (class ids)
    DIR/<SeriesInstanceUID>/vessel_probability.nii.gz, artery_labels.nii.gz   stage 1 on the ROI grid
    DIR/<SeriesInstanceUID>/candidates.csv          aneurysm candidates in patient coordinates (mm)
    DIR/<SeriesInstanceUID>/graph_nodes.csv, graph_edges.csv   the vessel graph (ROI mm) with GAT scores
    DIR/<SeriesInstanceUID>/series.json             the 14 probabilities, their source, per-fold read-outs,
                                                    the metadata vector the networks were given

The NIfTI files carry the ROI's placement, so any viewer overlays them on the original scan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from nnunet_aneurysm.geometry import Geometry, write_nifti
from nnunet_aneurysm.labels import BY_CLASS_ID, SUBMISSION_COLUMNS
from nnunet_aneurysm.postprocessing.gat import CANDIDATE_COLUMNS
from nnunet_aneurysm.stages import ARTERY_CHANNEL, VESSEL_CHANNEL


def map_candidates(probabilities: np.ndarray, roi: Geometry, threshold: float = 0.5) -> pd.DataFrame:
    """Connected regions where stage 2's P(any aneurysm) exceeds ``threshold``: centroid (patient mm),
    most probable location, peak probability and volume."""
    foreground = 1.0 - probabilities[0]
    regions, n = ndimage.label(foreground > threshold)
    rows = []
    voxel_mm3 = float(np.prod(roi.spacing))
    for index in range(1, n + 1):
        region = regions == index
        centre = roi.voxel_to_patient(np.array(ndimage.center_of_mass(region))[None])[0]
        class_id = int(probabilities[1:, region].sum(1).argmax()) + 1
        rows.append((*map(float, centre), BY_CLASS_ID[class_id].name, class_id, float(foreground[region].max()),
                     float(region.sum()) * voxel_mm3, "stage2 map"))
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS)).sort_values("score", ascending=False)


def save_series_outputs(result, folder: Path) -> Path:
    """Write one series' outputs (``series.SeriesResult``) under ``folder/<SeriesInstanceUID>``."""
    out = folder / result.series_uid
    out.mkdir(parents=True, exist_ok=True)
    summary = {"probabilities": dict(zip(SUBMISSION_COLUMNS, map(float, result.probabilities))),
               "source": result.source, "reasons": result.reasons, "seconds": result.seconds,
               "metadata": None if result.metadata is None else [float(v) for v in result.metadata]}
    if result.roi is not None:
        summary["roi"] = result.roi.as_row()
        geometry = result.roi.geometry
        write_nifti(result.channels[0], geometry, out / "roi_image.nii.gz")
        write_nifti(result.channels[VESSEL_CHANNEL], geometry, out / "vessel_probability.nii.gz")
        write_nifti(result.channels[ARTERY_CHANNEL].astype(np.uint8), geometry, out / "artery_labels.nii.gz")
    if result.stage2 is not None:
        probabilities = result.stage2.probabilities
        write_nifti((1.0 - probabilities[0]).astype(np.float32), geometry, out / "aneurysm_probability.nii.gz")
        write_nifti(probabilities.argmax(0).astype(np.uint8), geometry, out / "aneurysm_labels.nii.gz")
        candidates = map_candidates(probabilities, geometry)
        if result.candidates is not None:
            candidates = pd.concat([result.candidates, candidates], ignore_index=True)
        candidates.to_csv(out / "candidates.csv", index=False)
        if result.graphs:
            graph, scores = result.graphs[0]
            graph.nodes.assign(gat_score=scores).to_csv(out / "graph_nodes.csv", index=False)
            graph.edges.to_csv(out / "graph_edges.csv", index=False)
        summary["folds"] = [{"series": f.series.tolist(), "map_max": f.map_max.tolist(),
                             "order_parameter": f.order_parameter, "pinn_loss": f.pinn_loss}
                            for f in result.stage2.folds]
    (out / "series.json").write_text(json.dumps(summary, indent=2))
    return out
