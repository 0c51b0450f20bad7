"""Seconds per series of each postprocessing step on a clinical-size mask, on this machine's cores.

A vessel tree (the generator's Circle-of-Willis phantom, scaled to a head) is rasterised on a
300 x 512 x 512 grid of 0.6 x 0.45 x 0.45 mm (a CTA), then: distance transform (edt), skeleton
(scikit-image), graph (skan) and node/edge features; the GAT's scoring of that graph and the
stacker's prediction of a row (both untrained: their cost does not depend on what they learnt).
Target from the issue: distance transform + skeleton + graph under 8 s.

    python benchmarks/postprocessing.py [--shape 300 512 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch


def vessel_mask(shape, spacing, seed: int = 0) -> np.ndarray:
    """The phantom's tubes rasterised segment by segment (only each segment's bounding box is visited)."""
    from nnunet_aneurysm.dataset_conversion.phantom import vessel_tree

    mask = np.zeros(shape, bool)
    spacing = np.asarray(spacing)
    centre = (np.array(shape) - 1) / 2 * spacing
    for segment in vessel_tree(np.random.default_rng(seed)):
        a = segment.start[::-1] + centre  # phantom mm (x, y, z) -> array mm (z, y, x) around the grid's centre
        b = segment.end[::-1] + centre
        lo = np.maximum(np.floor((np.minimum(a, b) - segment.radius) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + segment.radius) / spacing).astype(int) + 1, shape)
        axes = [np.arange(low, high) * s for low, high, s in zip(lo, hi, spacing)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        t = np.clip(((grid - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        inside = np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1) <= segment.radius
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= inside
    return mask


def main():
    from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
    from nnunet_aneurysm.postprocessing.features import feature_columns
    from nnunet_aneurysm.postprocessing.gat import GATConfig, GATScorer, NodeGAT
    from nnunet_aneurysm.postprocessing.stacker import train_stacker
    from nnunet_aneurysm.postprocessing.vessel_graph import build_vessel_graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.6, 0.45, 0.45])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    mask = vessel_mask(tuple(args.shape), args.spacing)
    print(f"mask {tuple(args.shape)}, {mask.mean() * 100:.2f} % vessel, rasterised in "
          f"{time.perf_counter() - start:.1f} s")
    warm_up = np.zeros((24, 24, 24), np.float32)  # a Y of 3-voxel bars: skan's numba code compiles once
    warm_up[4:12, 11:14, 11:14] = warm_up[11:14, 11:14, 4:20] = warm_up[11:20, 11:14, 11:14] = 1
    start = time.perf_counter()
    assert len(build_vessel_graph(warm_up, args.spacing).edges) > 0
    print(f"first graph of the process (numba compiles skan): {time.perf_counter() - start:.1f} s")
    probability = mask.astype(np.float32)
    arteries = (mask * 5).astype(np.uint8)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    graph = build_vessel_graph(probability, args.spacing, arteries, probability * 0.1, seconds=seconds)
    total = time.perf_counter() - start
    print(f"graph: {len(graph.nodes)} nodes, {len(graph.edges)} edges")
    for step, value in seconds.items():
        print(f"  {step:20s} {value:6.2f} s")
    core = sum(seconds[s] for s in ("distance transform", "skeleton", "graph"))
    print(f"  distance transform + skeleton + graph: {core:.2f} s (target < 8 s); with features {total:.2f} s")

    config = GATConfig()
    gat = GATScorer(config, NodeGAT(config.in_channels, len(config.edge_features)),
                    (torch.zeros(config.in_channels), torch.ones(config.in_channels),
                     torch.zeros(len(config.edge_features)), torch.ones(len(config.edge_features))))
    start = time.perf_counter()
    for _ in range(10):
        gat.score(graph)
    print(f"GAT scoring of this graph: {(time.perf_counter() - start) / 10 * 1000:.1f} ms")
    rng = np.random.default_rng(0)
    columns = feature_columns()
    table = pd.DataFrame(rng.random((200, len(columns))), columns=columns)
    for c in SUBMISSION_COLUMNS:
        table[c] = (rng.random(200) < 0.3).astype(int)
    table["fold"] = table["source_fold"] = rng.integers(0, 5, 200)
    stacker = train_stacker(table, columns)
    start = time.perf_counter()
    for _ in range(10):
        stacker.predict(table.iloc[:5])  # one series, five fold models
    print(f"stacker, one series x 5 fold models: {(time.perf_counter() - start) / 10 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
