"""The vessel graph against shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_aneurysm.postprocessing.vessel_graph import EDGE_FEATURES, NODE_FEATURES, build_vessel_graph


def capsules(shape, segments, spacing=(1.0, 1.0, 1.0), sphere=None) -> np.ndarray:
    """Tubes (start mm, end mm, radius mm) on a grid of ``spacing``, plus an optional (centre, radius) ball."""
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"), -1)
    mask = np.zeros(shape, bool)
    for a, b, r in segments:
        a, b = np.asarray(a, float), np.asarray(b, float)
        t = np.clip(((grid - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        mask |= np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1) <= r
    if sphere is not None:
        mask |= np.linalg.norm(grid - np.asarray(sphere[0], float), axis=-1) <= sphere[1]
    return mask


Y_SEGMENTS = [((5, 30, 30), (30, 30, 30), 4.0), ((30, 30, 30), (55, 12, 30), 3.0), ((30, 30, 30), (55, 48, 30), 3.0)]


def test_a_y_shaped_tube_gives_one_junction_three_branches_and_their_radii():
    graph = build_vessel_graph(capsules((60, 60, 60), Y_SEGMENTS).astype(np.float32), (1.0, 1.0, 1.0))
    assert sorted(graph.nodes["degree"]) == [1, 1, 1, 3]
    assert len(graph.edges) == 3
    trunk = graph.edges.loc[graph.edges["length_mm"].idxmin()]
    branches = graph.edges.drop(index=trunk.name)
    assert trunk["mean_radius_mm"] == pytest.approx(4.0, rel=0.2)
    assert np.allclose(branches["mean_radius_mm"], 3.0, rtol=0.2)
    assert trunk["length_mm"] == pytest.approx(25.0, rel=0.1)
    assert (graph.edges["tortuosity"] >= 1.0 - 1e-9).all()


def test_a_saccular_bulge_gives_its_node_the_largest_radius():
    mask = capsules((60, 40, 40), [((5, 20, 20), (55, 20, 20), 2.5)], sphere=((30, 20, 26.5), 5.0))
    graph = build_vessel_graph(mask.astype(np.float32), (1.0, 1.0, 1.0))
    biggest = graph.nodes.loc[graph.nodes["radius_mm"].idxmax()]
    assert np.linalg.norm(biggest[["z_mm", "y_mm", "x_mm"]].to_numpy(float) - [30, 20, 26.5]) < 5.0
    assert biggest["radius_mm"] > 1.5 * 2.5 and biggest["radius_change"] == graph.nodes["radius_change"].max()


def test_a_loop_stays_a_loop():
    """The Circle of Willis is a cycle: a ring of tubes must give as many edges as nodes (or more)."""
    corners = [(10, 10, 20), (10, 50, 20), (50, 50, 20), (50, 10, 20)]
    ring = [(corners[i], corners[(i + 1) % 4], 3.0) for i in range(4)] + [((50, 50, 20), (58, 58, 20), 3.0)]
    graph = build_vessel_graph(capsules((62, 62, 40), ring).astype(np.float32), (1.0, 1.0, 1.0))
    assert len(graph.edges) >= len(graph.nodes)  # a tree has one edge fewer than nodes
    assert graph.edges["length_mm"].sum() == pytest.approx(4 * 40 + 11, rel=0.15)


def test_anisotropic_spacing_gives_the_graph_of_the_resampled_mask():
    """The same Y sampled at 2 x 1 x 1 mm and at 1 mm: the same topology, lengths and radii."""
    iso = build_vessel_graph(capsules((60, 60, 60), Y_SEGMENTS).astype(np.float32), (1.0, 1.0, 1.0))
    aniso = build_vessel_graph(capsules((30, 60, 60), Y_SEGMENTS, spacing=(2.0, 1.0, 1.0)).astype(np.float32),
                               (2.0, 1.0, 1.0))
    assert sorted(aniso.nodes["degree"]) == sorted(iso.nodes["degree"])
    assert aniso.edges["length_mm"].sum() == pytest.approx(iso.edges["length_mm"].sum(), rel=0.1)
    assert sorted(aniso.edges["mean_radius_mm"]) == pytest.approx(sorted(iso.edges["mean_radius_mm"]), rel=0.2)
    junction = lambda g: g.nodes.loc[g.nodes["degree"] == 3, ["z_mm", "y_mm", "x_mm"]].to_numpy(float)[0]  # noqa: E731
    assert np.linalg.norm(junction(aniso) - junction(iso)) <= 2 * 2.0  # within two of the coarse voxels


def test_node_labels_and_stage2_probabilities_come_from_a_ball_around_the_node():
    mask = capsules((60, 60, 60), Y_SEGMENTS)
    arteries = np.where(mask, 5, 0)
    arteries[40:, 30:] = np.where(mask[40:, 30:], 6, 0)
    aneurysm = np.zeros(mask.shape, np.float32)
    aneurysm[54, 12, 32] = 0.9  # beside one end point, within the ball
    graph = build_vessel_graph(mask.astype(np.float32), (1.0, 1.0, 1.0), arteries, aneurysm, ball_mm=3.0)
    ends = graph.nodes[graph.nodes["degree"] == 1].set_index("j")
    assert ends.loc[12, "artery"] == 5 and ends.loc[48, "artery"] == 6
    assert ends.loc[12, "aneurysm_probability"] == pytest.approx(0.9) and ends.loc[48, "aneurysm_probability"] == 0


def test_to_pyg_keeps_both_edge_directions_and_every_feature():
    graph = build_vessel_graph(capsules((60, 60, 60), Y_SEGMENTS).astype(np.float32), (1.0, 1.0, 1.0))
    data = graph.to_pyg()
    assert data.x.shape == (4, len(NODE_FEATURES) + 14)
    assert data.edge_index.shape == (2, 6) and data.edge_attr.shape == (6, len(EDGE_FEATURES))
    assert torch.isfinite(data.x).all() and torch.isfinite(data.edge_attr).all()


def test_no_vessel_gives_an_empty_graph():
    graph = build_vessel_graph(np.zeros((10, 10, 10), np.float32), (1.0, 1.0, 1.0))
    assert graph.nodes.empty and graph.edges.empty


def test_background_around_the_vessels_changes_nothing_but_the_node_positions():
    """The graph is built on the mask's bounding box: padding the array only moves the nodes by the pad."""
    mask = capsules((60, 60, 60), Y_SEGMENTS)
    padded = np.pad(mask, ((7, 40), (0, 25), (13, 0)))
    spacing = (0.8, 0.5, 0.6)
    small, large = build_vessel_graph(mask.astype(np.float32), spacing), build_vessel_graph(
        padded.astype(np.float32), spacing)
    np.testing.assert_array_equal(large.nodes[["k", "j", "i"]].to_numpy(),
                                  small.nodes[["k", "j", "i"]].to_numpy() + [7, 0, 13])
    np.testing.assert_allclose(large.nodes["radius_mm"], small.nodes["radius_mm"])
    features = list(EDGE_FEATURES)
    np.testing.assert_allclose(large.edges[features].to_numpy(float), small.edges[features].to_numpy(float))
