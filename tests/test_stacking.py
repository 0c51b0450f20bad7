"""GAT candidate scoring and the XGBoost stacker, on toy data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.postprocessing.gat import GATConfig, GATScorer, NodeGAT, graph_readout, node_labels, train_gat
from nnunet_aneurysm.postprocessing.stacker import LeakageError, Stacker, fold_relative, train_stacker
from nnunet_aneurysm.postprocessing.vessel_graph import EDGE_FEATURES, NODE_FEATURES, VesselGraph


def _chain(n_nodes: int, rng: np.random.Generator, bulge_at: int | None = None) -> VesselGraph:
    """A chain of nodes along z; ``bulge_at`` gets a large radius (a sac)."""
    nodes = pd.DataFrame({"k": np.arange(n_nodes) * 5, "j": 0, "i": 0})
    nodes["z_mm"], nodes["y_mm"], nodes["x_mm"] = nodes["k"] * 1.0, 0.0, 0.0
    for c in ("pos_0", "pos_1", "pos_2"):
        nodes[c] = rng.normal(size=n_nodes)
    nodes["degree"] = 2
    nodes["radius_mm"] = rng.uniform(1.0, 2.0, n_nodes)
    nodes["aneurysm_probability"] = rng.uniform(0, 0.2, n_nodes)
    nodes["radius_change"] = 0.0
    nodes["artery"] = 5
    if bulge_at is not None:
        nodes.loc[bulge_at, ["radius_mm", "radius_change"]] = (4.5, 1.5)
    edges = pd.DataFrame({"src": np.arange(n_nodes - 1), "dst": np.arange(1, n_nodes)})
    for c in EDGE_FEATURES:
        edges[c] = rng.uniform(1.0, 3.0, n_nodes - 1)
    return VesselGraph(nodes, edges)


def test_edge_features_reach_the_gat():
    """torch_geometric ignores edge_attr without edge_dim: the model must be built with it, and see it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    graph = _chain(8, rng)
    model = NodeGAT(GATConfig().in_channels, len(EDGE_FEATURES))
    data = graph.to_pyg()
    before = model(data.x, data.edge_index, data.edge_attr)
    after = model(data.x, data.edge_index, data.edge_attr * 3 + 1)
    assert (before - after).abs().max() > 1e-4
    assert all(conv.lin_edge is not None for conv in model.convs)


def test_gat_learns_that_a_sac_is_where_the_radius_jumps(tmp_path):
    rng = np.random.default_rng(1)
    graphs, labels = [], []
    for n in range(24):
        bulge = int(rng.integers(1, 9)) if n % 2 else None
        graph = _chain(10, rng, bulge)
        points = graph.nodes.loc[[bulge], ["z_mm", "y_mm", "x_mm"]].to_numpy(float) if bulge is not None else []
        graphs.append(graph)
        labels.append(node_labels(graph, np.asarray(points).reshape(-1, 3), 1.0))
    scorer = train_gat(graphs, labels, GATConfig(epochs=80))
    scorer.save(tmp_path / "fold_0")
    loaded = GATScorer.load(tmp_path / "fold_0")
    test = _chain(10, np.random.default_rng(99), bulge_at=4)
    scores = loaded.score(test)
    assert scores.argmax() == 4 and scores[4] > 0.5
    np.testing.assert_allclose(scores, scorer.score(test), rtol=1e-6)  # saved and loaded alike
    readout = graph_readout(test, scores)
    assert readout["gat_max_5"] == pytest.approx(scores.max()) and readout["gat_candidates"] >= 1


def test_node_labels_mark_nodes_near_a_localizer():
    graph = _chain(5, np.random.default_rng(0))  # nodes at z = 0, 5, 10, 15, 20 mm
    labels = node_labels(graph, np.array([[9.0, 0.0, 0.0]]), 2.0)
    assert labels.tolist() == [0, 0, 1, 0, 0]
    assert graph.to_pyg().x.shape[1] == len(NODE_FEATURES) + 14


def _toy_table(n: int, seed: int) -> pd.DataFrame:
    """Three features, each the 'present' label plus its own noise; locations random."""
    rng = np.random.default_rng(seed)
    present = (rng.random(n) < 0.4).astype(int)
    table = pd.DataFrame({c: (rng.random(n) < 0.1).astype(int) for c in SUBMISSION_COLUMNS[:-1]})
    table[SUBMISSION_COLUMNS[-1]] = present
    for name in ("a", "b", "c"):
        table[name] = present + rng.normal(0, 1.0, n)
    table["fold"] = table["source_fold"] = rng.integers(0, 5, n)
    return table


def test_the_stacker_beats_the_best_single_feature():
    train, test = _toy_table(400, 0), _toy_table(400, 1)
    stacker = train_stacker(train, ["a", "b", "c"])
    predicted = stacker.predict(test)[:, -1]
    truth = test[SUBMISSION_COLUMNS[-1]]
    best_single = max(roc_auc_score(truth, test[c]) for c in ("a", "b", "c"))
    assert roc_auc_score(truth, predicted) > best_single + 0.03


def test_the_stacker_refuses_a_leaking_row(tmp_path):
    table = _toy_table(100, 2)
    table.loc[7, "source_fold"] = (table.loc[7, "fold"] + 1) % 5  # that fold's model trained on series 7
    with pytest.raises(LeakageError, match="trained on them"):
        train_stacker(table, ["a", "b", "c"])
    with pytest.raises(LeakageError, match="source_fold"):
        train_stacker(table.drop(columns="source_fold"), ["a", "b", "c"])


def test_a_saved_stacker_predicts_the_same(tmp_path):
    table = _toy_table(200, 3)
    stacker = train_stacker(table, ["a", "b", "c"])
    stacker.save(tmp_path)
    np.testing.assert_allclose(Stacker.load(tmp_path).predict(table), stacker.predict(table), rtol=1e-6)


def test_a_fold_models_own_scale_is_taken_out_of_its_read_outs(tmp_path):
    """The demo's order parameter was 0.901 in every fold-0 series and 0.942 in fold 1: raw, it names the fold;
    relative to its fold model's out-of-fold mean it no longer does, and the series part stays."""
    rng = np.random.default_rng(5)
    table = _toy_table(300, 4)
    signal = rng.normal(size=len(table))
    table["order_parameter"] = 0.901 + 0.041 * (table["fold"] % 2) + 0.002 * signal
    fold_one = (table["source_fold"] % 2).to_numpy()
    assert roc_auc_score(fold_one, table["order_parameter"]) == 1.0
    stacker = train_stacker(table, ["a", "b", "c", "order_parameter"])
    relative = fold_relative(table, stacker.config.fold_statistics)["order_parameter"]
    assert 0.4 < roc_auc_score(fold_one, relative) < 0.6
    assert np.corrcoef(relative, signal)[0, 1] > 0.97
    stacker.save(tmp_path)  # the statistics travel with the stacker; an unknown fold gets the pooled ones
    again = Stacker.load(tmp_path)
    np.testing.assert_allclose(again.predict(table), stacker.predict(table), rtol=1e-6)
    unknown = table.assign(source_fold=17)
    assert np.isfinite(fold_relative(unknown, again.config.fold_statistics)["order_parameter"]).all()
