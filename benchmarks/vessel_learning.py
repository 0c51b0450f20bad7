"""How fast does stage 2's network learn arteries, at the CPU configuration's width and at the full width?

Vessel pretraining (``AneurysmWaveFormerVesselPretrainer``) reached an artery Dice of only 0.075 in the
pretraining benchmark's 375 iterations (with nnU-Net's poly decay; 0.174 with the learning rate held, as now).
This separates the network from the trainer: each named configuration's network of a vessel ROI dataset's plans
(``3d_cpu``: the demo's; ``3d_fullres``: twice as wide) learns the arteries of fold 0's training crops in a plain
loop (the pretrainer's loss without deep supervision, AdamW at a constant learning rate, no augmentation, batch 2,
the same seeded batches for every configuration), and every ``--every`` steps the held-out crops of fold 0 (its
validation half, never trained on; not the held-out test set) are segmented whole: union artery Dice (any artery
against background, mean over crops) and artery Dice (each artery's Dice pooled over the crops, mean over the 13;
one in no crop and no prediction counts 0), beside the training seconds so far.

    python benchmarks/vessel_learning.py --workdir accuracy_run/seed_0 [--steps 300]
        [--configurations 3d_cpu 3d_fullres]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_aneurysm.labels import LOCATIONS
from nnunet_aneurysm.losses.sparse_targets import SparseTargetLoss
from nnunet_aneurysm.metadata import METADATA_DIM
from nnunet_aneurysm.networks.waveformer import WaveFormer
from nnunet_aneurysm.stages import FILE_ENDING, STAGE2, channel_file, dataset_name
from nnunet_aneurysm.trainers.waveformer import AneurysmWaveFormerTrainer

N_CLASSES = 1 + len(LOCATIONS)


def read_crop(raw: Path, case: str, patch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The image channel, z-scored per case as nnU-Net's ZScoreNormalization does, and the artery labels, both
    zero-padded to ``patch`` (the ROI crops are at most that size)."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTr" / channel_file(case, 0)))).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}{FILE_ENDING}")))
    if any(s > p for s, p in zip(image.shape, patch)):
        raise SystemExit(f"{case}: crop {image.shape} is larger than the patch {patch}")
    image = (image - image.mean()) / max(float(image.std()), 1e-8)
    pad = [(0, p - s) for p, s in zip(patch, image.shape)]
    return np.pad(image, pad), np.pad(labels, pad)


def batch(crops: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2's three input channels with stage 1's blank (as the pretrainer feeds them), and the labels."""
    images = torch.from_numpy(np.stack([c[0] for c in crops]))
    data = torch.zeros(len(crops), 3, *images.shape[1:])
    data[:, 0] = images
    return data, torch.from_numpy(np.stack([c[1] for c in crops])).long()[:, None]


@torch.no_grad()
def held_out_dice(network: WaveFormer, crops: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(union artery Dice, mean over crops; artery Dice, pooled over crops per artery, mean over arteries)."""
    network.eval()
    union, hits, totals = [], np.zeros(N_CLASSES - 1), np.zeros(N_CLASSES - 1)
    for crop in crops:
        data, labels = batch([crop])
        logits = network(data, metadata=torch.zeros(1, METADATA_DIM))
        predicted, truth = logits.argmax(1)[0].numpy(), labels[0, 0].numpy()
        union.append(2 * ((predicted > 0) & (truth > 0)).sum() / max((predicted > 0).sum() + (truth > 0).sum(), 1))
        for k in range(1, N_CLASSES):
            hits[k - 1] += 2 * ((predicted == k) & (truth == k)).sum()
            totals[k - 1] += (predicted == k).sum() + (truth == k).sum()
    network.train()
    return float(np.mean(union)), float(np.mean(hits / np.maximum(totals, 1)))


def learn(plans: dict, configuration: str, train: list, held_out: list, steps: int, every: int, lr: float,
          seed: int) -> list[dict]:
    manager = PlansManager(plans).get_configuration(configuration)
    torch.manual_seed(seed)
    network = WaveFormer(3, N_CLASSES, False, **AneurysmWaveFormerTrainer.network_kwargs(manager))  # as trained
    optimizer = torch.optim.AdamW(network.parameters(), lr, weight_decay=AneurysmWaveFormerTrainer.adamw_weight_decay,
                                  betas=(0.9, 0.98))
    loss = SparseTargetLoss()
    draws, seconds, rows = np.random.default_rng(seed), 0.0, []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        data, labels = batch([train[i] for i in draws.choice(len(train), 2, replace=False)])
        value = loss(network(data, metadata=torch.zeros(len(data), METADATA_DIM)), labels)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % every == 0:
            union, arteries = held_out_dice(network, held_out)
            rows.append({"configuration": configuration, "embed_dims": manager.network_arch_init_kwargs["embed_dims"],
                         "step": step, "training_s": round(seconds), "train_loss": round(float(value.detach()), 3),
                         "union_dice": round(union, 3), "artery_dice": round(arteries, 3)})
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a finished demo with a vessel ROI dataset")
    parser.add_argument("--dataset", default=dataset_name(104, "RSNAVesselsROI"))
    parser.add_argument("--configurations", nargs="+", default=["3d_cpu", "3d_fullres"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--train-cases", type=int, default=60)
    parser.add_argument("--held-out-cases", type=int, default=12)
    parser.add_argument("--lr", type=float, default=AneurysmWaveFormerTrainer.adamw_lr)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    raw = args.workdir / "nnUNet_raw" / args.dataset
    plans = json.loads((args.workdir / "nnUNet_preprocessed" / args.dataset / f"{STAGE2.plans}.json").read_text())
    split = json.loads((raw / "splits_final.json").read_text())[0]
    rows = []
    for configuration in args.configurations:
        manager = PlansManager(plans).get_configuration(configuration)
        spacing = sitk.ReadImage(str(raw / "labelsTr" / f"{split['val'][0]}{FILE_ENDING}")).GetSpacing()[::-1]
        if not np.allclose(spacing, manager.spacing):  # the raw crops are read as they are, not resampled
            raise SystemExit(f"{configuration} plans {manager.spacing} mm; the crops are {spacing} mm")
        patch = tuple(manager.patch_size)
        train = [read_crop(raw, c, patch) for c in split["train"][:args.train_cases]]
        held_out = [read_crop(raw, c, patch) for c in split["val"][:args.held_out_cases]]
        rows += learn(plans, configuration, train, held_out, args.steps, args.every, args.lr, args.seed)
    pd.set_option("display.width", 200)
    print(f"\n{args.dataset}, fold 0: {len(train)} training crops, {len(held_out)} held-out crops")
    print(pd.DataFrame(rows).to_string(index=False))
    (args.workdir / "vessel_learning.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
