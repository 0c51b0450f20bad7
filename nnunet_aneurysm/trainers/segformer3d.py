"""Stage 1: SegFormer3D on the vessel dataset, recall first."""

from __future__ import annotations

import numpy as np
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunet_aneurysm.losses.tversky import TverskyCELoss
from nnunet_aneurysm.trainers.base import AneurysmTrainerBase


class AneurysmSegFormer3DTrainer(AneurysmTrainerBase):
    """SegFormer3D from the plans; Tversky (alpha on FN above beta on FP) + CE; logs vessel recall."""

    tversky_alpha = 0.7
    tversky_beta = 0.3
    extra_metrics = ("vessel_recall", "vessel_dice")

    def _build_loss(self):
        return self.deep_supervised(TverskyCELoss(self.tversky_alpha, self.tversky_beta))

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        out = collate_outputs(val_outputs)
        tp, fp, fn = (np.sum(out[k], 0) for k in ("tp_hard", "fp_hard", "fn_hard"))
        recall = float(tp.sum() / max(tp.sum() + fn.sum(), 1))
        dice = float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))
        self.logger.log("vessel_recall", recall, self.current_epoch)
        self.logger.log("vessel_dice", dice, self.current_epoch)
        self.print_to_log_file(f"vessel recall {recall:.4f}, vessel Dice {dice:.4f} (all artery labels pooled)")
