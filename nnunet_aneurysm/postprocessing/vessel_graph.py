"""Vessel mask -> skeleton -> graph, in the skan style: arrays and voxel spacing in, tables out.

    vessel probability > threshold (the seed's high-confidence core: 0.8)
    -> radius of every vessel voxel: exact Euclidean distance to the background, anisotropic (``edt``)
    -> 3-D skeleton (scikit-image, Lee's thinning)
    -> graph (skan): nodes at junctions and end points, edges along the skeleton paths between them.
       Cycles are kept: the Circle of Willis is a loop (kimimaro's TEASAR would cut it into a tree).

Nodes (one row each, units in the column names): position (voxel index, mm from the array's
origin, and normalised per series: mm minus the mean over nodes, over the spread), degree,
radius_mm (distance transform at the node), artery (stage 1's most frequent label within
``ball_mm`` of the node, 0 when none), aneurysm_probability (stage 2's maximum within ``ball_mm``),
radius_change (the node's radius over the mean radius of its edges, minus 1: a sac on a vessel
makes it large). Edges: length_mm along the path, tortuosity (path length over the chord, >= 1;
our curvature measure), mean and max radius_mm along the path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import edt
import numpy as np
import pandas as pd
import torch
from skan import Skeleton, summarize
from skimage.morphology import skeletonize

NODE_FEATURES = ("pos_0", "pos_1", "pos_2", "degree", "radius_mm", "aneurysm_probability", "radius_change")
EDGE_FEATURES = ("length_mm", "tortuosity", "mean_radius_mm", "max_radius_mm")


@dataclass
class VesselGraph:
    nodes: pd.DataFrame  # index: node number 0..N-1
    edges: pd.DataFrame  # src, dst: node numbers

    def to_pyg(self, node_features=NODE_FEATURES, edge_features=EDGE_FEATURES, num_arteries: int = 13):
        """A torch_geometric ``Data``: x = node features + one-hot artery (``num_arteries`` + 1 columns), edges
        in both directions with their features (``edge_attr``)."""
        from torch_geometric.data import Data

        numeric = torch.tensor(self.nodes[list(node_features)].to_numpy(np.float32))
        artery = torch.nn.functional.one_hot(torch.tensor(self.nodes["artery"].to_numpy(np.int64)), num_arteries + 1)
        x = torch.cat([numeric, artery.float()], dim=1)
        src, dst = self.edges["src"].to_numpy(), self.edges["dst"].to_numpy()
        edge_index = torch.tensor(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]), dtype=torch.long)
        attr = torch.tensor(self.edges[list(edge_features)].to_numpy(np.float32))
        return Data(x=x, edge_index=edge_index, edge_attr=torch.cat([attr, attr]))


def _ball_offsets(radius_mm: float, spacing) -> np.ndarray:
    extent = np.ceil(radius_mm / np.asarray(spacing)).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij"), -1).reshape(-1, 3)
    return grid[((grid * np.asarray(spacing)) ** 2).sum(1) <= radius_mm**2]


def _around(points: np.ndarray, offsets: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices within the ball around each point, clipped to the array: (point number, [M, 3] index)."""
    index = points[:, None, :] + offsets[None]
    owner = np.repeat(np.arange(len(points)), len(offsets))
    index = index.reshape(-1, 3)
    inside = np.all((index >= 0) & (index < np.asarray(shape)), axis=1)
    return owner[inside], index[inside]


class _Clock:
    """Adds the seconds since the previous call to ``seconds[step]`` (nothing when ``seconds`` is None)."""

    def __init__(self, seconds: dict[str, float] | None):
        self.seconds, self.last = seconds, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        if self.seconds is not None:
            self.seconds[step] = self.seconds.get(step, 0.0) + now - self.last
        self.last = now


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The first voxel and the slices of ``mask``'s bounding box grown by ``margin`` voxels (clipped)."""
    starts, slices = [], []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        start, stop = max(present[0] - margin, 0), min(present[-1] + 1 + margin, mask.shape[axis])
        starts.append(start)
        slices.append(slice(start, stop))
    return np.array(starts), tuple(slices)


def empty_graph() -> VesselGraph:
    return VesselGraph(pd.DataFrame(columns=["k", "j", "i", "z_mm", "y_mm", "x_mm", *NODE_FEATURES, "artery"]),
                       pd.DataFrame(columns=["src", "dst", *EDGE_FEATURES]))


def build_vessel_graph(vessel_probability: np.ndarray, spacing, artery_labels: np.ndarray | None = None,
                       aneurysm_probability: np.ndarray | None = None, threshold: float = 0.8,
                       ball_mm: float = 3.0, seconds: dict[str, float] | None = None) -> VesselGraph:
    """The vessel graph of an array [D, H, W] with voxel ``spacing`` (mm per axis). ``seconds``, if given,
    receives the time of each step (distance transform, skeleton, graph, features)."""
    clock = _Clock(seconds)
    spacing = tuple(float(s) for s in spacing)
    full_mask = np.asarray(vessel_probability) > threshold
    if full_mask.sum() < 2:
        return empty_graph()
    # the mask's bounding box plus one background voxel: distances and skeleton are those of the whole
    # array (the nearest background is never beyond the margin), at a fraction of the cost
    origin, crop = _bounding_box(full_mask)
    mask = full_mask[crop]
    radius = edt.edt(mask, anisotropy=spacing, black_border=False).astype(np.float32)  # mm to the background
    clock("distance transform")
    skeleton = skeletonize(mask)
    clock("skeleton")
    if skeleton.sum() < 2:
        return empty_graph()
    skel = Skeleton(skeleton, spacing=spacing)
    table = summarize(skel, separator="_")
    clock("graph")
    if table.empty:
        return empty_graph()
    ids = np.unique(table[["node_id_src", "node_id_dst"]].to_numpy())
    number = {int(i): n for n, i in enumerate(ids)}
    in_crop = np.round(skel.coordinates[ids]).astype(int)
    index = in_crop + origin  # [N, 3] voxel index of each node in the whole array
    nodes = pd.DataFrame(index, columns=["k", "j", "i"])
    mm = index * np.asarray(spacing)
    nodes[["z_mm", "y_mm", "x_mm"]] = mm
    spread = mm.std(0).mean() if len(mm) > 1 else 1.0
    nodes[["pos_0", "pos_1", "pos_2"]] = (mm - mm.mean(0)) / max(spread, 1e-6)
    nodes["radius_mm"] = radius[tuple(in_crop.T)]

    edges = pd.DataFrame({"src": table["node_id_src"].map(number), "dst": table["node_id_dst"].map(number),
                          "length_mm": table["branch_distance"],
                          "tortuosity": table["branch_distance"] / table["euclidean_distance"].clip(lower=1e-6)})
    edges["tortuosity"] = edges["tortuosity"].where(table["euclidean_distance"] > 1e-6, 1.0)  # a closed loop
    along = [radius[tuple(np.round(skel.path_coordinates(p)).astype(int).T)] for p in table.index]
    edges["mean_radius_mm"] = [float(r.mean()) for r in along]
    edges["max_radius_mm"] = [float(r.max()) for r in along]
    degree = np.bincount(np.concatenate([edges["src"], edges["dst"]]), minlength=len(nodes))
    nodes["degree"] = degree
    incident = np.bincount(np.concatenate([edges["src"], edges["dst"]]),
                           weights=np.concatenate([edges["mean_radius_mm"]] * 2), minlength=len(nodes))
    nodes["radius_change"] = nodes["radius_mm"] / np.maximum(incident / np.maximum(degree, 1), 1e-3) - 1

    owner, ball = _around(index, _ball_offsets(ball_mm, spacing), full_mask.shape)
    nodes["artery"] = 0
    if artery_labels is not None:
        labels = np.asarray(artery_labels)[tuple(ball.T)].astype(int)  # index first: no whole-array copy
        keep = labels > 0
        counts = np.zeros((len(nodes), labels.max(initial=0) + 1))
        np.add.at(counts, (owner[keep], labels[keep]), 1)
        nodes["artery"] = np.where(counts.sum(1) > 0, counts.argmax(1), 0)
    nodes["aneurysm_probability"] = 0.0
    if aneurysm_probability is not None:
        best = np.zeros(len(nodes))
        np.maximum.at(best, owner, np.asarray(aneurysm_probability)[tuple(ball.T)].astype(float))
        nodes["aneurysm_probability"] = best
    clock("features")
    return VesselGraph(nodes, edges)
