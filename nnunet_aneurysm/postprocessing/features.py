"""Meta-features of a series for the stacker, from arrays and graphs (the models run in ``inference``;
``inference/out_of_fold_features.py`` builds the training series' out-of-fold table with these).

One row per (series, fold model): the stage-2 head's 14 probabilities, the maximum of each
location's stage-2 map, the AKOrN order parameter, the PINN physics loss, the GAT's maximum score
per location and its candidate count, the vessel volume and graph size, and the metadata vector.
For a training series the only fold model allowed is the one that did not train on it
(``source_fold == fold``); at inference each fold model gives a row and the stacker's outputs
are averaged. ``FEATURE_GROUPS`` is the one table of the columns, by group, for the ablations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from nnunet_aneurysm.labels import NUM_LOCATIONS, SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import METADATA_DIM
from nnunet_aneurysm.postprocessing.gat import GATScorer, graph_readout
from nnunet_aneurysm.postprocessing.vessel_graph import VesselGraph, build_vessel_graph
from nnunet_aneurysm.stages import ARTERY_CHANNEL, VESSEL_CHANNEL

FEATURE_GROUPS: dict[str, list[str]] = {
    "head": [f"head_{j}" for j in range(len(SUBMISSION_COLUMNS))],
    "maps": [f"map_max_{k}" for k in range(1, NUM_LOCATIONS + 1)],
    "akorn": ["order_parameter"],
    "pinn": ["pinn_loss"],
    "gat": [f"gat_max_{k}" for k in range(1, NUM_LOCATIONS + 1)] + ["gat_max", "gat_candidates"],
    "graph": ["vessel_volume_mm3", "graph_nodes", "graph_edges"],
    "metadata": [f"metadata_{i}" for i in range(METADATA_DIM)],
}


def feature_columns(without: tuple[str, ...] = ()) -> list[str]:
    """Every feature column except the groups named in ``without``."""
    unknown = set(without) - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)}; there are {sorted(FEATURE_GROUPS)}")
    return [c for group, columns in FEATURE_GROUPS.items() if group not in without for c in columns]


class StageTwoReadout(Protocol):
    """What one stage-2 fold model says of a series (``inference.stage2.FoldReadout`` is one)."""

    series: np.ndarray  # [14] head probabilities, submission column order
    map_max: np.ndarray  # [13] maximum of each location's segmentation probability
    order_parameter: float | None  # AKOrN synchrony (None without AKOrN)
    pinn_loss: float | None  # physics loss of the flow field (None without PINN or vessel)


def fold_row(readout: StageTwoReadout, graph: VesselGraph, gat: GATScorer | None, vessel_volume_mm3: float,
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


def series_graph(channels: list[np.ndarray], aneurysm_map: np.ndarray, spacing, vessel_threshold: float
                 ) -> VesselGraph:
    """The vessel graph of an ROI: stage 1's vessel probability and artery labels, stage 2's P(any aneurysm).

    Built on stage 1's union mask at its operating point (``vessel_threshold``, chosen out of fold), the mask
    that placed the ROI and labelled the arteries. At the seed's fixed 0.8 core the demo's median graph fell
    into 9 pieces with 2.6 % junction nodes, against 4 pieces and 22 % at its operating point 0.31."""
    return build_vessel_graph(channels[VESSEL_CHANNEL], spacing, channels[ARTERY_CHANNEL], 1.0 - aneurysm_map[0],
                              threshold=vessel_threshold)


def save_graph(graph: VesselGraph, folder: Path, case: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    graph.nodes.to_csv(folder / f"{case}_nodes.csv", index=False)
    graph.edges.to_csv(folder / f"{case}_edges.csv", index=False)


def load_graph(folder: Path, case: str) -> VesselGraph:
    return VesselGraph(pd.read_csv(folder / f"{case}_nodes.csv"), pd.read_csv(folder / f"{case}_edges.csv"))


def localizer_points_in_roi(localizers: pd.DataFrame, rois: pd.DataFrame, case: str) -> np.ndarray:
    """A case's localizer points in its ROI graph's frame (mm from the ROI array's first voxel, [z, y, x])."""
    from nnunet_aneurysm.roi import roi_from_row

    points = localizers.loc[localizers["case_id"] == case, ["x_mm", "y_mm", "z_mm"]].to_numpy(float)
    if not len(points):
        return np.zeros((0, 3))
    roi = roi_from_row(rois.set_index("case_id").loc[case])
    return roi.geometry.patient_to_voxel(points) * np.asarray(roi.geometry.spacing)

