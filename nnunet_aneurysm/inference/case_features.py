"""Per-case meta-features for the stacker, taken while nnU-Net's predictor runs.

Stock ``nnUNetv2_predict`` writes segmentations and probabilities. The stacker also wants, per
case and per fold, the WaveFormer's 14 series-level probabilities, the AKOrN order parameter and
the PINN residual. ``CaseFeaturePredictor`` is nnU-Net's predictor with one addition: every
sliding-window patch also returns the network's auxiliary outputs, which are pooled per case and
fold and written as ``<case>_features.json`` beside the case's segmentation. One pass, so the
features cost a few extra head evaluations, not a second prediction.

Pooling over patches: class probabilities take the maximum (an aneurysm lives in one patch), the
order parameter the mean, the PINN residual the mean weighted by each patch's vessel voxels (a
patch without vessel has no flow to judge).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.losses.collocation import sample_in, vessel_mask
from nnunet_aneurysm.losses.physics import REYNOLDS_CURRICULUM, navier_stokes_residual
from nnunet_aneurysm.metadata import MetadataTable
from nnunet_aneurysm.stages import VESSEL_CHANNEL

FEATURES_SUFFIX = "_features.json"


class CaseFeaturePredictor(nnUNetPredictor):
    def __init__(self, *args, metadata: MetadataTable | None = None, physics_points: int = 512,
                 reynolds: float = REYNOLDS_CURRICULUM[1], seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.metadata = metadata or MetadataTable()
        self.physics_points = physics_points
        self.reynolds = reynolds
        self.seed = seed
        self._case_id: str | None = None
        self._per_fold: list[list[dict]] = []

    def initialize_from_trained_model_folder(self, model_training_output_dir, use_folds,
                                             checkpoint_name="checkpoint_final.pth"):
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        if not hasattr(self.network, "classifier"):
            raise ValueError(f"{self.trainer_name} has no auxiliary outputs; case features need an "
                             "AneurysmWaveFormer* trainer")
        self.fold_names = [str(f) for f in (use_folds or self.auto_detect_available_folds(
            model_training_output_dir, checkpoint_name))]

    def predict_from_data_iterator(self, data_iterator, *args, **kwargs):
        return super().predict_from_data_iterator(self._recording(data_iterator), *args, **kwargs)

    def _recording(self, data_iterator):
        """Yields the cases unchanged; once nnU-Net asks for the next one, the previous is predicted."""
        for item in data_iterator:
            ofile = item.get("ofile")
            self._case_id = os.path.basename(ofile) if ofile else None
            self._per_fold = []
            yield item
            if ofile is not None:
                summary = self.case_summary()
                Path(f"{ofile}{FEATURES_SUFFIX}").write_text(json.dumps(summary, indent=2))

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        self._per_fold.append([])  # nnU-Net calls this once per case and parameter set (fold)
        return super().predict_sliding_window_return_logits(input_image)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        metadata = torch.from_numpy(self.metadata.lookup([self._case_id] * len(x))).to(x.device)
        logits, aux = self.network(x, metadata=metadata, return_aux=True)
        self._per_fold[-1].append(self.patch_statistics(x, aux))
        if self.use_mirroring and self.allowed_mirroring_axes is not None:
            return super()._internal_maybe_mirror_and_predict(x)
        return logits

    def patch_statistics(self, x: torch.Tensor, aux: dict) -> dict:
        mask = vessel_mask(x, VESSEL_CHANNEL)
        stats = {"class_probabilities": torch.sigmoid(aux["class_logits"].float()).amax(0).cpu().numpy(),
                 "vessel_voxels": float(mask.sum())}
        order = aux.get("order_parameter")
        stats["order_parameter"] = float(order.float().mean()) if order is not None else None
        head = self.network.pinn_head  # torch.compile's wrapper forwards attributes too
        stats["pinn_residual"] = self._pinn_residual(head, mask, aux["pinn_features"]) if head is not None else None
        return stats

    def _pinn_residual(self, head, mask: torch.Tensor, features: torch.Tensor) -> float:
        """Mean Navier-Stokes residual norm at points drawn in the patch's vessel channel."""
        generator = torch.Generator(device=mask.device).manual_seed(self.seed)
        with torch.inference_mode(False), torch.enable_grad():
            features = features.clone().float()  # out of inference mode, so autograd may use it
            coords = sample_in(mask, self.physics_points, generator)
            coords = coords.to(torch.float64).requires_grad_(True)
            residual = navier_stokes_residual(head(coords, features), coords, self.reynolds)
            return float(residual.detach().norm(dim=-1).mean())

    def case_summary(self) -> dict:
        per_fold = [_pool(patches) for patches in self._per_fold]
        names = self.fold_names if len(self.fold_names) == len(per_fold) else [str(i) for i in range(len(per_fold))]
        summary = {"case_id": self._case_id, "folds": names, "per_fold": per_fold}
        summary["class_probabilities"] = {
            name: float(np.mean([f["class_probabilities"][name] for f in per_fold])) for name in SUBMISSION_COLUMNS}
        for key in ("order_parameter", "pinn_residual"):
            values = [f[key] for f in per_fold if f[key] is not None]
            summary[key] = float(np.mean(values)) if values else None
        return summary


def _pool(patches: list[dict]) -> dict:
    probabilities = np.max([p["class_probabilities"] for p in patches], axis=0)
    out = {"patches": len(patches),
           "class_probabilities": {name: float(v) for name, v in zip(SUBMISSION_COLUMNS, probabilities)}}
    orders = [p["order_parameter"] for p in patches if p["order_parameter"] is not None]
    out["order_parameter"] = float(np.mean(orders)) if orders else None
    residuals = [p["pinn_residual"] for p in patches if p["pinn_residual"] is not None]
    if residuals:
        weights = np.array([p["vessel_voxels"] for p in patches if p["pinn_residual"] is not None])
        out["pinn_residual"] = float(np.average(residuals, weights=weights if weights.sum() > 0 else None))
    else:
        out["pinn_residual"] = None
    return out
