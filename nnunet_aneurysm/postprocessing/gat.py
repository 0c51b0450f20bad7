"""Graph attention over the vessel graph: a score per node for "an aneurysm is here".

Model: GATv2 layers (torch_geometric ``GATv2Conv``) with ``edge_dim`` set, so the edge features
(length, tortuosity, radii) enter every attention coefficient; without ``edge_dim`` torch_geometric
ignores ``edge_attr`` silently. Node labels: 1 within ``label_radius_mm`` of a localizer point.
One model per fold, trained on the out-of-fold graphs of that fold's training cases, saved like
nnU-Net's models: ``<folder>/fold_<f>/model.pt`` with ``config.json`` (features, sizes, plugin
version) beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from nnunet_aneurysm import __version__
from nnunet_aneurysm.labels import NUM_LOCATIONS
from nnunet_aneurysm.postprocessing.vessel_graph import EDGE_FEATURES, NODE_FEATURES, VesselGraph

# a candidate table's columns (patient mm, location, score, volume in mm^3, which step found it): the GAT's
# nodes here, stage 2's map regions in ``inference/outputs.py``, one candidates.csv per series
CANDIDATE_COLUMNS = ("x_mm", "y_mm", "z_mm", "location", "class_id", "score", "volume_mm3", "source")

@dataclass
class GATConfig:
    node_features: tuple[str, ...] = NODE_FEATURES
    edge_features: tuple[str, ...] = EDGE_FEATURES
    hidden: int = 32
    heads: int = 4
    layers: int = 2
    label_radius_mm: float = 6.0  # a node within this distance of a localizer point is a positive
    epochs: int = 60
    learning_rate: float = 3e-3
    seed: int = 0

    @property
    def in_channels(self) -> int:
        return len(self.node_features) + NUM_LOCATIONS + 1  # + one-hot artery label


class NodeGAT(nn.Module):
    """Stacked GATv2 layers (edge features in the attention) -> one logit per node."""

    def __init__(self, in_channels: int, edge_dim: int, hidden: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        from torch_geometric.nn import GATv2Conv

        self.convs = nn.ModuleList()
        width = in_channels
        for _ in range(layers):
            self.convs.append(GATv2Conv(width, hidden, heads=heads, edge_dim=edge_dim, add_self_loops=True))
            width = hidden * heads
        self.out = nn.Linear(width, 1)

    def forward(self, x, edge_index, edge_attr) -> torch.Tensor:
        for conv in self.convs:
            x = torch.nn.functional.elu(conv(x, edge_index, edge_attr))
        return self.out(x)[:, 0]


def node_labels(graph: VesselGraph, points_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """1 for nodes within ``radius_mm`` of any point (points in the graph's mm frame), else 0."""
    if graph.nodes.empty or len(points_mm) == 0:
        return np.zeros(len(graph.nodes), np.float32)
    nodes = graph.nodes[["z_mm", "y_mm", "x_mm"]].to_numpy(float)
    distance = np.linalg.norm(nodes[:, None, :] - np.asarray(points_mm, float)[None], axis=-1).min(1)
    return (distance <= radius_mm).astype(np.float32)


def _standardiser(graphs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.cat([g.x for g in graphs])
    e = torch.cat([g.edge_attr for g in graphs]) if any(len(g.edge_attr) for g in graphs) else torch.zeros(1, 1)
    return x.mean(0), x.std(0).clamp(min=1e-6), e.mean(0), e.std(0).clamp(min=1e-6)


class GATScorer:
    """A trained fold model with its feature standardisation; scores the nodes of a graph in [0, 1]."""

    def __init__(self, config: GATConfig, model: NodeGAT, scale: tuple[torch.Tensor, ...]):
        self.config, self.model, self.scale = config, model.eval(), scale

    def data(self, graph: VesselGraph):
        data = graph.to_pyg(self.config.node_features, self.config.edge_features)
        x_mean, x_std, e_mean, e_std = self.scale
        data.x = (data.x - x_mean) / x_std
        if len(data.edge_attr):
            data.edge_attr = (data.edge_attr - e_mean) / e_std
        return data

    @torch.no_grad()
    def score(self, graph: VesselGraph) -> np.ndarray:
        if graph.nodes.empty:
            return np.zeros(0, np.float32)
        d = self.data(graph)
        return torch.sigmoid(self.model(d.x, d.edge_index, d.edge_attr)).numpy()

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": self.model.state_dict(), "scale": [t.tolist() for t in self.scale]},
                   folder / "model.pt")
        (folder / "config.json").write_text(json.dumps({**asdict(self.config), "plugin_version": __version__},
                                                       indent=2))

    @classmethod
    def load(cls, folder: Path) -> GATScorer:
        body = json.loads((folder / "config.json").read_text())
        body.pop("plugin_version", None)
        config = GATConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})
        saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model = NodeGAT(config.in_channels, len(config.edge_features), config.hidden, config.heads, config.layers)
        model.load_state_dict(saved["state_dict"])
        return cls(config, model, tuple(torch.tensor(v) for v in saved["scale"]))


def train_gat(graphs: list[VesselGraph], labels: list[np.ndarray], config: GATConfig = GATConfig()) -> GATScorer:
    """Fit one GAT on graphs with node labels (full batch over all graphs, class-balanced BCE, Adam)."""
    from torch_geometric.data import Batch

    torch.manual_seed(config.seed)
    usable = [(g, y) for g, y in zip(graphs, labels) if not g.nodes.empty]
    datas = [g.to_pyg(config.node_features, config.edge_features) for g, _ in usable]
    model = NodeGAT(config.in_channels, len(config.edge_features), config.hidden, config.heads, config.layers)
    scale = _standardiser(datas) if datas else (torch.zeros(config.in_channels), torch.ones(config.in_channels),
                                                torch.zeros(len(config.edge_features)),
                                                torch.ones(len(config.edge_features)))
    scorer = GATScorer(config, model, scale)
    if not datas:
        return scorer
    batch = Batch.from_data_list([scorer.data(g) for g, _ in usable])
    target = torch.tensor(np.concatenate([y for _, y in usable]), dtype=torch.float32)
    positives = float(target.sum())
    weight = torch.tensor((len(target) - positives) / max(positives, 1.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    model.train()
    for _ in range(config.epochs):
        optimiser.zero_grad()
        logits = model(batch.x, batch.edge_index, batch.edge_attr)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
        loss.backward()
        optimiser.step()
    model.eval()
    return scorer


def graph_readout(graph: VesselGraph, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Series-level features of one scored graph: max score per location (artery label) and overall,
    candidate count (nodes above ``threshold``), graph size."""
    out = {f"gat_max_{k}": 0.0 for k in range(1, NUM_LOCATIONS + 1)}
    out.update(gat_max=float(scores.max(initial=0.0)), gat_candidates=float((scores > threshold).sum()),
               graph_nodes=float(len(graph.nodes)), graph_edges=float(len(graph.edges)))
    if len(scores):
        table = pd.DataFrame({"artery": graph.nodes["artery"].to_numpy(int), "score": scores})
        for artery, best in table.groupby("artery")["score"].max().items():
            if artery > 0:
                out[f"gat_max_{artery}"] = float(best)
    return out


def graph_candidates(graph: VesselGraph, scores: np.ndarray, roi_geometry, threshold: float = 0.5) -> pd.DataFrame:
    """Nodes scoring above ``threshold``: position in patient coordinates (mm), location (artery label), score."""
    from nnunet_aneurysm.labels import BY_CLASS_ID

    keep = np.flatnonzero(scores > threshold)
    rows = []
    for n in keep:
        node = graph.nodes.iloc[n]
        centre = roi_geometry.voxel_to_patient(node[["k", "j", "i"]].to_numpy(float)[None])[0]
        artery = int(node["artery"])
        rows.append((*map(float, centre), BY_CLASS_ID[artery].name if artery else "", artery, float(scores[n]),
                     float(4 / 3 * np.pi * node["radius_mm"] ** 3), "GAT node"))
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS)).sort_values("score", ascending=False)
