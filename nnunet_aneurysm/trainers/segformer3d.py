"""Stage 1: SegFormer3D on the vessel dataset, recall first on the union vessel mask.

* Loss: CE over the 13 artery labels + Tversky of the UNION vessel mask with false negatives
  weighed above false positives + Dice of the artery classes present in the batch
  (``TverskyCELoss(union=True, weight_class_dice=1)``). The per-class Tversky over all 13 tiny
  classes collapsed to "all background" (every class absent from a batch scores a perfect
  index): vessel recall 0.0 in every epoch.
* Optimiser: AdamW with a linear warm-up then poly decay, nnU-Net's own transformer recipe
  (Primus), at a learning rate for short schedules.
* Training cases are drawn so that each modality is drawn equally often: with uniform draws
  the 1-5 T1post cases of a fold were seldom seen (union recall 0.41 on T1post validation
  cases against 0.85 balanced, fold 0 of the accuracy benchmark's data, 25 x 20 iterations).
* Series metadata (modality above all) reach the network (a learnt input gain that starts at each
  modality's vessel polarity, and FiLM), looked up by case id in the raw dataset's ``metadata.csv``
  for every training batch and every validation case; a case without a row is counted per epoch
  (``metadata_missing``). Vessels are dark flow voids on T2 and bright on the other modalities:
  without being told which it sees, stage 1 found no T2 vessel at all (fold 0 of the accuracy
  benchmark's data, 25 x 20 iterations, validation cases: T2 recall 0.000 -> 0.763, union recall
  0.837 -> 0.861; FiLM alone left T2 at 0.000).
* Left/right flips swap the artery labels (the base trainer); nnU-Net's mirroring is off.
* Logged per epoch: recall and Dice of the union vessel mask (what stage 2 and the graph
  consume; seed targets > 0.98 and ~0.90) beside the per-class figures pooled over labels.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunet_aneurysm.losses.tversky import TverskyCELoss
from nnunet_aneurysm.metadata import MetadataTable
from nnunet_aneurysm.stages import STAGE1
from nnunet_aneurysm.trainers.base import AneurysmTrainerBase
from nnunet_aneurysm.trainers.distributed import sum_across_ranks


def union_counts(logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(TP, FP, FN) voxels of the union foreground: argmax != background vs label != 0."""
    predicted, truth = logits.argmax(1) != 0, target[:, 0] != 0
    return np.array([(predicted & truth).sum().item(), (predicted & ~truth).sum().item(),
                     (~predicted & truth).sum().item()], dtype=np.float64)


def conditioning_dataset(base: type, network, metadata: MetadataTable) -> type:
    """``base`` (an nnU-Net dataset class) whose ``load_case`` also sets the case's metadata vector as the
    network's ``condition``: nnU-Net's validation loads a case, then predicts it with the image alone."""

    class ConditioningDataset(base):
        def load_case(self, identifier):
            network.condition = torch.from_numpy(metadata.lookup([identifier])[0])
            return super().load_case(identifier)

    return ConditioningDataset


class AneurysmSegFormer3DTrainer(AneurysmTrainerBase):
    """SegFormer3D from the plans; CE + union Tversky (recall first); AdamW with warm-up; union metrics logged."""

    planner = STAGE1.planner
    fn_weight = 0.7
    fp_weight = 0.3
    adamw_lr = 1e-3
    modality_balanced_sampling = True
    extra_metrics = ("union_recall", "union_dice", "vessel_recall", "vessel_dice", "metadata_missing")

    def initialize(self):
        super().initialize()
        path = self.raw_metadata_path()
        if path.is_file():
            self.metadata = MetadataTable.read(path)
        else:
            self.metadata = MetadataTable()
            self.print_to_log_file(f"no {path}: every case's metadata enter FiLM as the unknown vector (zeros)")

    def _build_loss(self):
        return self.deep_supervised(TverskyCELoss(self.fn_weight, self.fp_weight, union=True, weight_class_dice=1.0))

    @contextmanager
    def conditioned(self, keys):
        """The network sees these cases' metadata in the block (nnU-Net's steps call it with the image alone)."""
        network = self.plain_network()
        if not getattr(network, "metadata_dim", 0):
            yield
            return
        with network.conditioned(torch.from_numpy(self.metadata.lookup([str(k) for k in keys]))):
            yield

    def train_step(self, batch: dict) -> dict:
        self.flip_batch(batch)
        with self.conditioned(batch["keys"]):
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        captured = {}
        hook = self.network.register_forward_hook(lambda module, args, output: captured.setdefault("out", output))
        try:
            with self.conditioned(batch["keys"]):
                result = super().validation_step(batch)
        finally:
            hook.remove()
        out, target = captured["out"], batch["target"]
        out = out[0] if isinstance(out, (list, tuple)) else out
        target = (target[0] if isinstance(target, list) else target).to(out.device)
        result["union"] = union_counts(out, target)
        return result

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation, with each case's metadata set on the network as the case is loaded (its
        sliding-window predictor calls the network with the image alone)."""
        network, base = self.plain_network(), self.dataset_class
        if getattr(network, "metadata_dim", 0):
            self.dataset_class = conditioning_dataset(base, network, self.metadata)
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.dataset_class, network.condition = base, None

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        self.logger.log("metadata_missing", float(self.metadata.take_missing()), self.current_epoch)

    def on_validation_epoch_end(self, val_outputs):
        out = collate_outputs(val_outputs)
        local = np.concatenate([np.sum([o["union"] for o in val_outputs], axis=0),
                                [np.sum(out[k]) for k in ("tp_hard", "fp_hard", "fn_hard")]])
        counts = sum_across_ranks(torch.from_numpy(local)).numpy()  # every rank's voxels, not rank 0's
        super().on_validation_epoch_end(val_outputs)
        union, (tp, fp, fn) = counts[:3], counts[3:]
        metrics = {"union_recall": union[0] / max(union[0] + union[2], 1),
                   "union_dice": 2 * union[0] / max(2 * union[0] + union[1] + union[2], 1),
                   "vessel_recall": tp.sum() / max(tp.sum() + fn.sum(), 1),
                   "vessel_dice": 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)}
        for key, value in metrics.items():
            self.logger.log(key, float(value), self.current_epoch)
        self.print_to_log_file(f"union vessel mask: recall {metrics['union_recall']:.4f}, Dice "
                               f"{metrics['union_dice']:.4f} (seed targets > 0.98, ~0.90); artery labels pooled: "
                               f"recall {metrics['vessel_recall']:.4f}, Dice {metrics['vessel_dice']:.4f}")
