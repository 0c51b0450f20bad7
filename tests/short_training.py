"""A short stage-2 training outside nnU-Net, for tests of what a module does once trained.

The network trains on whole ROIs of a ground-truth ROI dataset (``tiny_dataset.write_ground_truth_roi_dataset``)
with the stage-2 trainer's losses (sparse-target segmentation + ASL on the series labels), AdamW as the trainer
configures it; no augmentation. Seconds on 2 cores for a few hundred steps at the CPU configuration's widths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.losses.asymmetric import AsymmetricLoss
from nnunet_aneurysm.losses.sparse_targets import SparseTargetLoss
from nnunet_aneurysm.metadata import MetadataTable, read_series_targets
from nnunet_aneurysm.stages import ARTERY_CHANNEL, channel_file


def load_roi_dataset(folder: Path) -> dict[str, torch.Tensor]:
    """Every case of an ROI dataset: z-scored image + vessel probability + artery labels, labels, series targets,
    metadata vectors."""
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (folder / "imagesTr").glob("*_0000.nii.gz"))
    vectors, targets = MetadataTable.read(folder / "metadata.csv"), read_series_targets(folder / "metadata.csv")
    data, labels = [], []
    for case in cases:
        channels = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / channel_file(case, c))))
                    for c in range(ARTERY_CHANNEL + 1)]
        image = channels[0].astype(np.float32)
        channels[0] = (image - image.mean()) / max(float(image.std()), 1e-6)
        data.append(np.stack(channels).astype(np.float32))
        labels.append(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz")))[None])
    return {"data": torch.from_numpy(np.stack(data)), "labels": torch.from_numpy(np.stack(labels).astype(np.int64)),
            "targets": torch.from_numpy(np.stack([targets[c] for c in cases])).float(),
            "metadata": torch.from_numpy(vectors.lookup(cases)), "cases": cases}


def train(network: torch.nn.Module, dataset: dict, steps: int, seed: int = 0, batch: int = 2,
          metadata_dropout: float = 0.0) -> list[float]:
    """``steps`` AdamW steps on random pairs of cases; returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(network.parameters(), 2e-3, weight_decay=1e-2, betas=(0.9, 0.98))
    seg_loss, cls_loss = SparseTargetLoss(), AsymmetricLoss()
    losses = []
    network.train()
    for _ in range(steps):
        pick = torch.randint(len(dataset["cases"]), (batch,), generator=generator)
        metadata = dataset["metadata"][pick].clone()
        if metadata_dropout:
            metadata[torch.rand(batch, generator=generator) < metadata_dropout] = 0
        seg, aux = network(dataset["data"][pick], metadata=metadata, return_aux=True)
        seg = seg[0] if isinstance(seg, (list, tuple)) else seg
        loss = seg_loss(seg, dataset["labels"][pick]) + cls_loss(aux["class_logits"], dataset["targets"][pick])
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimiser.step()
        losses.append(float(loss.detach()))
    network.eval()
    return losses


@torch.no_grad()
def akorn_spread(network: torch.nn.Module, dataset: dict, cases: int = 12) -> dict[str, float]:
    """How much the oscillators differ between series: the mean cosine between two series' final oscillator
    states (all AKOrN layers, each layer's state scaled to unit norm) and the spread of the order parameter."""
    states, orders = [], []
    for i in range(min(cases, len(dataset["cases"]))):
        _, aux = network(dataset["data"][i:i + 1], metadata=dataset["metadata"][i:i + 1], return_aux=True)
        layers = network.akorn_layers()
        states.append(torch.cat([layer.last_trajectory[1].flatten() / layer.last_trajectory[1].norm()
                                 for layer in layers]))
        orders.append(float(aux["order_parameter"].mean()))
    stacked = torch.nn.functional.normalize(torch.stack(states), dim=1)
    cosine = stacked @ stacked.T
    off = cosine[~torch.eye(len(stacked), dtype=torch.bool)]
    return {"state_cosine": float(off.mean()), "order_std": float(np.std(orders)),
            "order_mean": float(np.mean(orders))}


def series_outputs(network: torch.nn.Module, dataset: dict, zero_metadata: bool = False) -> np.ndarray:
    """[cases, 14] series probabilities, with each case's metadata or the unknown (all-zero) vector."""
    out = []
    with torch.no_grad():
        for i in range(len(dataset["cases"])):
            metadata = dataset["metadata"][i:i + 1]
            _, aux = network(dataset["data"][i:i + 1], metadata=torch.zeros_like(metadata) if zero_metadata
                             else metadata, return_aux=True)
            out.append(torch.sigmoid(aux["class_logits"])[0].numpy())
    return np.stack(out).reshape(-1, len(SUBMISSION_COLUMNS))
