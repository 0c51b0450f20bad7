"""Stage 1 on one scan: artery-label probabilities from the fold models (ensembled), with left/right
flip test-time augmentation that swaps the labels of the flipped prediction back.

The network was trained with the same flip (``left_right.flip_left_right``), never with plain
mirroring, so its labels keep their sides; nnU-Net's own mirror TTA would average a left ICA with
a right one and is left off. The series' metadata (modality above all: T2 vessels are dark) reach the
network's FiLM layers through ``SegFormer3D.conditioned``, since nnU-Net's predictor passes the image alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties
from nnunet_aneurysm.left_right import left_right_axis, swap_class_channels


def scan_left_right_axis(geometry: Geometry) -> int:
    """The array axis ([k, j, i] order) of a scan that runs closest to patient left-right."""
    return left_right_axis(nnunet_properties(geometry)["sitk_stuff"]["direction"], [0, 1, 2])


@dataclass
class VesselPrediction:
    probabilities: np.ndarray  # [14, k, j, i] float32: background + the 13 artery labels (class ids)

    @property
    def vessel_probability(self) -> np.ndarray:
        """P(any artery) = 1 - P(background), [k, j, i]."""
        return 1.0 - self.probabilities[0]

    def artery_labels(self, vessel_threshold: float) -> np.ndarray:
        """uint8 [k, j, i]: each voxel of the union vessel mask (vessel probability >= ``vessel_threshold``,
        stage 1's operating point) labelled with its most probable artery (class id), 0 elsewhere. Below 0.5
        the mask holds voxels whose single most probable class is background: they keep their artery."""
        mask = self.vessel_probability >= vessel_threshold
        return np.where(mask, self.probabilities[1:].argmax(0) + 1, 0).astype(np.uint8)


class Stage1Model:
    """Stage 1's fold models, loaded once; :meth:`predict` one scan on its own grid."""

    def __init__(self, model_dir: Path, folds, device: torch.device = torch.device("cpu"), flip_tta: bool = True):
        self.predictor = load_predictor(model_dir, folds, device)
        self.flip_tta = flip_tta

    def _probabilities(self, image: np.ndarray, properties: dict) -> np.ndarray:
        _, probabilities = self.predictor.predict_single_npy_array(image[None].astype(np.float32), properties,
                                                                   None, None, True)
        return np.asarray(probabilities, np.float32)

    @contextmanager
    def _conditioned(self, metadata: np.ndarray | None):
        network = getattr(self.predictor.network, "_orig_mod", self.predictor.network)
        if not getattr(network, "metadata_dim", 0):
            yield
            return
        with network.conditioned(None if metadata is None else torch.as_tensor(metadata, dtype=torch.float32)):
            yield

    def predict(self, image: np.ndarray, geometry: Geometry, metadata: np.ndarray | None = None) -> VesselPrediction:
        """``metadata``: the series' vector (``metadata.encode_metadata``); None is the unknown vector."""
        properties = nnunet_properties(geometry)
        with self._conditioned(metadata):
            probabilities = self._probabilities(image, properties)
            if self.flip_tta:
                axis = scan_left_right_axis(geometry)
                flipped = self._probabilities(np.flip(image, axis).copy(), properties)
                back = swap_class_channels(torch.from_numpy(np.flip(flipped, axis + 1).copy()), dim=0).numpy()
                probabilities = (probabilities + back) / 2
        return VesselPrediction(probabilities)
