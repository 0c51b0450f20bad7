"""Training the postprocessing on the out-of-fold table: one GAT per fold, then the stacker.

GAT of fold f: trained on the graphs of the series NOT in fold f (each built from the stage-1 and
stage-2 models that did not train on it), so its scores of fold f's series are out-of-fold too;
those scores become the table's GAT columns. The stacker then trains on the complete table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nnunet_aneurysm.postprocessing.features import feature_columns, load_graph, localizer_points_in_roi
from nnunet_aneurysm.postprocessing.gat import GATConfig, GATScorer, graph_readout, node_labels, train_gat
from nnunet_aneurysm.postprocessing.stacker import Stacker, StackerConfig, train_stacker


def train_fold_gats(table: pd.DataFrame, graphs_dir: Path, localizers: pd.DataFrame, rois: pd.DataFrame,
                    out: Path, config: GATConfig = GATConfig()) -> pd.DataFrame:
    """Train and save ``out/fold_<f>`` for every fold of the table; returns the table with out-of-fold GAT columns."""
    graphs = {case: load_graph(graphs_dir, case) for case in table["case_id"]}
    labels = {case: node_labels(graph, localizer_points_in_roi(localizers, rois, case), config.label_radius_mm)
              for case, graph in graphs.items()}
    table = table.copy()
    for fold in sorted(table["fold"].unique()):
        training = table.loc[table["fold"] != fold, "case_id"]
        scorer = train_gat([graphs[c] for c in training], [labels[c] for c in training], config)
        scorer.save(out / f"fold_{fold}")
        for index in table.index[table["fold"] == fold]:
            graph = graphs[table.at[index, "case_id"]]
            for key, value in graph_readout(graph, scorer.score(graph)).items():
                table.at[index, key] = value
    return table


def load_fold_gats(folder: Path, folds) -> dict[int, GATScorer]:
    return {int(f): GATScorer.load(folder / f"fold_{f}") for f in folds}


def train_and_save_stacker(table: pd.DataFrame, out: Path, without: tuple[str, ...] = (),
                           config: StackerConfig | None = None) -> Stacker:
    stacker = train_stacker(table, feature_columns(without), config)
    stacker.save(out)
    return stacker

