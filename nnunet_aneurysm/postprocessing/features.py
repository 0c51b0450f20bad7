"""Meta-features of a series for the stacker, and the out-of-fold table of the training series.

One row per (series, fold model): the stage-2 head's 14 probabilities, the maximum of each
location's stage-2 map, the AKOrN order parameter, the PINN physics loss, the GAT's maximum score
per location and its candidate count, the vessel volume and graph size, and the metadata vector.
For a training series the only fold model allowed is the one that did not train on it
(``source_fold == fold``); at inference each fold model gives a row and the stacker's outputs
are averaged. ``FEATURE_GROUPS`` is the one table of the columns, by group, for the ablations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_aneurysm.geometry import geometry_of
from nnunet_aneurysm.inference.stage2 import FoldReadout, Stage2Model
from nnunet_aneurysm.inference.vessel_threshold import vessel_threshold_of
from nnunet_aneurysm.labels import NUM_LOCATIONS, SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import METADATA_DIM, MetadataTable
from nnunet_aneurysm.postprocessing.gat import GATScorer, graph_readout
from nnunet_aneurysm.postprocessing.vessel_graph import VesselGraph, build_vessel_graph
from nnunet_aneurysm.stages import ARTERY_CHANNEL, VESSEL_CHANNEL, channel_file

FEATURE_GROUPS: dict[str, list[str]] = {
    "head": [f"head_{j}" for j in range(len(SUBMISSION_COLUMNS))],
    "maps": [f"map_max_{k}" for k in range(1, NUM_LOCATIONS + 1)],
    "akorn": ["order_parameter"],
    "pinn": ["pinn_loss"],
    "gat": [f"gat_max_{k}" for k in range(1, NUM_LOCATIONS + 1)] + ["gat_max", "gat_candidates"],
    "graph": ["vessel_volume_mm3", "graph_nodes", "graph_edges"],
    "metadata": [f"metadata_{i}" for i in range(METADATA_DIM)],
}
GRAPH_THRESHOLD = 0.8  # the seed's high-confidence vessel core


def feature_columns(without: tuple[str, ...] = ()) -> list[str]:
    """Every feature column except the groups named in ``without``."""
    unknown = set(without) - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)}; there are {sorted(FEATURE_GROUPS)}")
    return [c for group, columns in FEATURE_GROUPS.items() if group not in without for c in columns]


def fold_row(readout: FoldReadout, graph: VesselGraph, gat: GATScorer | None, vessel_volume_mm3: float,
             metadata: np.ndarray) -> dict[str, float]:
    """One fold model's features of one series. Missing read-outs (no AKOrN, no vessel for the PINN, no GAT)
    are NaN, which XGBoost treats as missing."""
    row = {f"head_{j}": float(v) for j, v in enumerate(readout.series)}
    row.update({f"map_max_{k + 1}": float(v) for k, v in enumerate(readout.map_max)})
    row["order_parameter"] = np.nan if readout.order_parameter is None else float(readout.order_parameter)
    row["pinn_loss"] = np.nan if readout.pinn_loss is None else float(readout.pinn_loss)
    scores = gat.score(graph) if gat is not None else None
    gat_part = graph_readout(graph, scores if scores is not None else np.zeros(len(graph.nodes)))
    if scores is None:
        gat_part = {k: (np.nan if k.startswith("gat_") else v) for k, v in gat_part.items()}
    row.update(gat_part)
    row["vessel_volume_mm3"] = float(vessel_volume_mm3)
    row.update({f"metadata_{i}": float(v) for i, v in enumerate(metadata)})
    return row


def vessel_volume_mm3(channels: list[np.ndarray], spacing, vessel_threshold: float) -> float:
    """The volume (mm^3) of stage 1's union vessel mask in an ROI, at stage 1's operating point."""
    return float((channels[VESSEL_CHANNEL] >= vessel_threshold).sum() * np.prod(spacing))


def series_graph(channels: list[np.ndarray], aneurysm_map: np.ndarray, spacing) -> VesselGraph:
    """The vessel graph of an ROI: stage 1's vessel probability and artery labels, stage 2's P(any aneurysm)."""
    return build_vessel_graph(channels[VESSEL_CHANNEL], spacing, channels[ARTERY_CHANNEL], 1.0 - aneurysm_map[0],
                              threshold=GRAPH_THRESHOLD)


def read_roi_case(raw: Path, case: str) -> tuple[list[np.ndarray], object]:
    """Stage 2's input channels of a case of the ROI dataset, and the ROI grid."""
    images = [sitk.ReadImage(str(raw / "imagesTr" / channel_file(case, c))) for c in range(ARTERY_CHANNEL + 1)]
    return [sitk.GetArrayFromImage(i).astype(np.float32) for i in images], geometry_of(images[0])


def save_graph(graph: VesselGraph, folder: Path, case: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    graph.nodes.to_csv(folder / f"{case}_nodes.csv", index=False)
    graph.edges.to_csv(folder / f"{case}_edges.csv", index=False)


def load_graph(folder: Path, case: str) -> VesselGraph:
    return VesselGraph(pd.read_csv(folder / f"{case}_nodes.csv"), pd.read_csv(folder / f"{case}_edges.csv"))


def out_of_fold_features(raw: Path, stage2_dir: Path, out: Path, device: str = "cpu",
                         progress: bool = True) -> pd.DataFrame:
    """The out-of-fold table of a stage-2 ROI dataset's training series (without GAT columns: those need
    the per-fold GATs, trained on these graphs). Resumable: each case's row is kept in ``out/rows``."""
    import torch

    metadata_table = pd.read_csv(raw / "metadata.csv", dtype={"case_id": str})
    threshold = vessel_threshold_of(raw)
    vectors = MetadataTable.read(raw / "metadata.csv")
    (out / "rows").mkdir(parents=True, exist_ok=True)
    folds = sorted(metadata_table["fold"].unique())
    bar = tqdm(total=len(metadata_table), desc="out-of-fold features", unit="case", disable=not progress)
    for fold in folds:
        cases = metadata_table.loc[metadata_table["fold"] == fold, "case_id"].tolist()
        todo = [c for c in cases if not (out / "rows" / f"{c}.json").is_file()]
        bar.update(len(cases) - len(todo))
        if not todo:
            continue
        if not (stage2_dir / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            raise FileNotFoundError(f"stage 2 has no trained fold {fold} in {stage2_dir}: out-of-fold features need "
                                    f"every fold of the dataset's splits")
        model = Stage2Model(stage2_dir, [int(fold)], torch.device(device))
        for case in todo:
            channels, roi = read_roi_case(raw, case)
            metadata = vectors.lookup([case])[0]
            prediction = model.predict(channels, roi, metadata)
            graph = series_graph(channels, prediction.fold_probabilities[0], roi.spacing)
            save_graph(graph, out / "graphs", case)
            volume = vessel_volume_mm3(channels, roi.spacing, threshold)
            row = {"case_id": case, "fold": int(fold), "source_fold": int(fold),
                   **fold_row(prediction.folds[0], graph, None, volume, metadata)}
            (out / "rows" / f"{case}.json").write_text(json.dumps(row))
            bar.update()
    bar.close()
    rows = [json.loads((out / "rows" / f"{c}.json").read_text()) for c in metadata_table["case_id"]]
    table = pd.DataFrame(rows).merge(metadata_table[["case_id", *SUBMISSION_COLUMNS]], on="case_id")
    return table


def localizer_points_in_roi(localizers: pd.DataFrame, rois: pd.DataFrame, case: str) -> np.ndarray:
    """A case's localizer points in its ROI graph's frame (mm from the ROI array's first voxel, [z, y, x])."""
    from nnunet_aneurysm.roi import roi_from_row

    points = localizers.loc[localizers["case_id"] == case, ["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    if not len(points):
        return np.zeros((0, 3))
    roi = roi_from_row(rois.set_index("case_id").loc[case])
    return roi.geometry.patient_to_voxel(points) * np.asarray(roi.geometry.spacing)

