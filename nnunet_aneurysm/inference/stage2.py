"""Stage 2 on one region of interest: per fold model, the aneurysm maps, the 14 series probabilities
from the location-aware heads, and the read-outs the stacker uses (the maximum of each location's
map, the AKOrN order parameter, the PINN physics loss).

The ROI is one patch (the trainer trained the heads on whole ROIs), so each fold model runs once
per view: as given and, with ``flip_tta``, mirrored left-right with its artery-label channel
swapped; the mirrored view's maps and series outputs are swapped back to their partners
(``flip_tta``). Where the plans' patch is smaller than the ROI the views are tiled and the
series probabilities are the maximum over tiles, as those heads were trained on patch targets.
Preprocessing and the return to the ROI grid are nnU-Net's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties
from nnunet_aneurysm.left_right import left_right_axis, swap_class_channels, swap_labels, swap_series_columns
from nnunet_aneurysm.losses.collocation import interior_mask, sample_in, to_nondimensional, vessel_mask, wall_mask
from nnunet_aneurysm.losses.physics import LENGTH_SCALE_MM, REYNOLDS_CURRICULUM, physics_loss
from nnunet_aneurysm.stages import ARTERY_CHANNEL, VESSEL_CHANNEL

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, dict]]


def flip_tta(forward: Forward, x: torch.Tensor, axis: int, label_channels=(ARTERY_CHANNEL,)) -> dict:
    """Segmentation probabilities [B, K, ...], series probabilities [B, 14] and read-outs of ``x`` [B, C, ...],
    averaged over the view as given and the left-right mirrored view (``axis``: a spatial axis), whose
    labels are swapped on the way in and its outputs swapped back on the way out."""
    mirrored = torch.flip(x, (2 + axis,))
    for c in label_channels:
        mirrored[:, c] = swap_labels(mirrored[:, c])
    views = []
    for view, back in ((x, False), (mirrored, True)):
        seg, aux = forward(view)
        probabilities, series = seg.float().softmax(1), torch.sigmoid(aux["class_logits"].float())
        if back:
            probabilities = swap_class_channels(torch.flip(probabilities, (2 + axis,)), dim=1)
            series = swap_series_columns(series)
        views.append((probabilities, series, aux))
    out = {"probabilities": (views[0][0] + views[1][0]) / 2, "series": (views[0][1] + views[1][1]) / 2}
    for key in ("order_parameter", "pinn_code"):
        values = [v[2].get(key) for v in views]
        out[key] = None if values[0] is None else (values[0].float() + values[1].float()) / 2
    return out


def single_view(forward: Forward, x: torch.Tensor) -> dict:
    seg, aux = forward(x)
    return {"probabilities": seg.float().softmax(1), "series": torch.sigmoid(aux["class_logits"].float()),
            "order_parameter": aux.get("order_parameter"), "pinn_code": aux.get("pinn_code")}


@dataclass
class FoldReadout:
    series: np.ndarray  # [14] head probabilities, submission column order
    map_max: np.ndarray  # [13] maximum of each location's segmentation probability
    order_parameter: float | None  # AKOrN synchrony of the deepest layer (None without AKOrN)
    pinn_loss: float | None  # physics loss of the fold's flow field in this ROI (None without PINN or vessel)


@dataclass
class Stage2Prediction:
    probabilities: np.ndarray  # [14, z, y, x] on the ROI grid, mean over folds
    folds: list[FoldReadout] = field(default_factory=list)
    fold_probabilities: list[np.ndarray] = field(default_factory=list)  # each fold's [14, z, y, x] on the ROI grid

    @property
    def series(self) -> np.ndarray:
        return np.mean([f.series for f in self.folds], axis=0)


class Stage2Model:
    """Stage 2's fold models, loaded once; :meth:`predict` one ROI (its channels on the ROI grid)."""

    def __init__(self, model_dir: Path, folds, device: torch.device = torch.device("cpu"), flip_tta: bool = True,
                 physics_points: int = 1024, seed: int = 0, checkpoint: str = "checkpoint_final.pth"):
        self.predictor = load_predictor(model_dir, folds, device, checkpoint)
        self.device, self.flip_tta = device, flip_tta
        self.physics_points, self.seed = physics_points, seed
        self.network = self.predictor.network
        self.patch = list(self.predictor.configuration_manager.patch_size)

    def _preprocess(self, channels: list[np.ndarray], roi: Geometry) -> tuple[torch.Tensor, dict]:
        p = self.predictor
        preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(np.stack(channels).astype(np.float32), None,
                                                        nnunet_properties(roi), p.plans_manager,
                                                        p.configuration_manager, p.dataset_json)
        return torch.from_numpy(data), properties

    def _windows(self, shape) -> list[tuple[slice, ...]]:
        """One window when the data fits the patch; nnU-Net's sliding windows otherwise."""
        if all(s <= p for s, p in zip(shape, self.patch)):
            return [tuple(slice(0, s) for s in shape)]
        return [tuple(w[1:]) for w in self.predictor._internal_get_sliding_window_slicers(shape)]

    @torch.inference_mode()
    def _fold(self, data: torch.Tensor, metadata: torch.Tensor, axis: int) -> tuple[torch.Tensor, dict]:
        """Probabilities [K, *shape] over the whole (cropped) input and the fold's read-outs."""
        shape = data.shape[1:]
        total = torch.zeros(len(self.predictor.label_manager.all_labels), *shape)
        count = torch.zeros(1, *shape)
        series, orders, codes = [], [], []
        forward = lambda x: self.network(x, metadata=metadata, return_aux=True)  # noqa: E731
        for window in self._windows(shape):
            tile = data[(slice(None), *window)]
            pad = [p - s for p, s in zip(self.patch, tile.shape[1:])]
            padded = F.pad(tile, [v for p in reversed(pad) for v in (p // 2, p - p // 2)])[None].to(self.device)
            out = flip_tta(forward, padded, axis) if self.flip_tta else single_view(forward, padded)
            crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, tile.shape[1:]))
            total[(slice(None), *window)] += out["probabilities"][0][(slice(None), *crop)].cpu()
            count[(slice(None), *window)] += 1
            series.append(out["series"][0].cpu())
            if out["order_parameter"] is not None:
                orders.append(float(out["order_parameter"].mean()))
            codes.append(out["pinn_code"])
        readout = {"series": torch.stack(series).amax(0).numpy(),
                   "order_parameter": float(np.mean(orders)) if orders else None,
                   "pinn_code": codes[0] if len(codes) == 1 else None}
        return total / count.clamp(min=1), readout

    def _pinn_loss(self, code: torch.Tensor | None, data: torch.Tensor) -> float | None:
        """The physics loss of the fold's flow field at seeded lumen and wall points of this ROI (final Re)."""
        head = getattr(self.network, "pinn_head", None)
        if head is None or code is None:
            return None
        mask = vessel_mask(data[None], VESSEL_CHANNEL)
        interior, wall = interior_mask(mask)[0], wall_mask(mask)[0]
        if not interior.any() or not wall.any():
            return None
        g = torch.Generator().manual_seed(self.seed)
        nd = lambda index: to_nondimensional(index, data.shape[1:], self.predictor.configuration_manager.spacing,  # noqa: E731
                                             LENGTH_SCALE_MM)[None]
        code = code.to("cpu", torch.float64)
        with torch.inference_mode():
            head = head.to("cpu")
            terms = physics_loss(lambda c: head.field(c, code),
                                 nd(sample_in(interior, self.physics_points, g, continuous=True)),
                                 nd(sample_in(wall, self.physics_points // 4, g)), REYNOLDS_CURRICULUM[1],
                                 field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
            head.to(self.device)
        return float(terms["total"])

    def predict(self, channels: list[np.ndarray], roi: Geometry, metadata: np.ndarray) -> Stage2Prediction:
        """``channels``: stage 2's inputs on the ROI grid (``STAGE2_CHANNELS`` order), ``metadata``: the
        series' vector (``metadata.encode_metadata``)."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        p = self.predictor
        data, properties = self._preprocess(channels, roi)
        axis = left_right_axis(properties["sitk_stuff"]["direction"], p.plans_manager.transpose_forward)
        metadata = torch.from_numpy(np.asarray(metadata, np.float32))[None].to(self.device)

        def on_roi(probabilities: torch.Tensor) -> np.ndarray:  # nnU-Net's way back: uncrop, untranspose
            _, out = convert_predicted_logits_to_segmentation_with_correct_shape(
                probabilities.clamp(min=1e-8).log(), p.plans_manager, p.configuration_manager, p.label_manager,
                properties, return_probabilities=True)
            return np.asarray(out, np.float32)

        folds, maps = [], []
        for parameters in p.list_of_parameters:
            self.network.load_state_dict(parameters)
            self.network.eval()
            probabilities, readout = self._fold(data, metadata, axis)
            maps.append(on_roi(probabilities))
            folds.append(FoldReadout(readout["series"], probabilities[1:].flatten(1).amax(1).numpy(),
                                     readout["order_parameter"], self._pinn_loss(readout["pinn_code"], data)))
        return Stage2Prediction(np.mean(maps, axis=0), folds, maps)
