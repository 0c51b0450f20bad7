"""Stage 1 on one scan: artery-label probabilities from the fold models (ensembled), with left/right
flip test-time augmentation that swaps the labels of the flipped prediction back, kept on stage 1's
OWN grid.

nnU-Net's export brings every class probability back to the scan's grid: 14 float32 channels of a
512 x 512 x 368 CTA are 5.4 GB per copy, and one clinical series was killed for memory at 24 GB.
What follows stage 1 needs far less: the region of interest (from the vessel mask, at any grid) and
stage 1's channels on the ROI's grid. So the probabilities stay on the grid the network ran on
(nnU-Net's preprocessing: crop to the non-zero box, resample to the plans' spacing; 1.3-1.7 mm in
the demo), described by a :class:`Geometry` in the scan's axis order, and only what a consumer
needs is resampled from there (:meth:`VesselPrediction.on_grid`).

The network was trained with the same flip (``left_right.flip_left_right``), never with plain
mirroring, so its labels keep their sides; nnU-Net's own mirror TTA would average a left ICA with
a right one and is left off. The flip is applied to the preprocessed array (the grids are
scan-aligned, so flipping before or after preprocessing is the same). The series' metadata
(modality above all: T2 vessels are dark) reach the network's FiLM layers through
``SegFormer3D.conditioned``, since nnU-Net's predictor passes the image alone.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_aneurysm.geometry import Geometry, to_sitk
from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties
from nnunet_aneurysm.inference.scan_preprocessing import preprocess_scan
from nnunet_aneurysm.left_right import left_right_axis, swap_class_channels
from nnunet_aneurysm.roi import covering_crop


def scan_left_right_axis(geometry: Geometry) -> int:
    """The array axis ([k, j, i] order) of a scan that runs closest to patient left-right."""
    return left_right_axis(nnunet_properties(geometry)["sitk_stuff"]["direction"], [0, 1, 2])


def preprocessed_grid(scan: Geometry, properties: dict, shape: tuple[int, ...], transpose_forward) -> Geometry:
    """The grid of an nnU-Net-preprocessed array (transposed, cropped to ``bbox_used_for_cropping``, resampled to
    ``shape``), in the scan's axis order. nnU-Net resamples with pixel-centre alignment (skimage ``resize`` and its
    own separate-z path alike): new voxel u lies at old index ``lo + (u + 0.5) * n / m - 0.5`` for n voxels
    resampled to m, so its spacing is ``spacing * n / m``."""
    offset, spacing = np.zeros(3), np.zeros(3)
    for t, axis in enumerate(transpose_forward):
        lo, hi = properties["bbox_used_for_cropping"][t]
        n, m = hi - lo, shape[t]
        offset[axis] = lo + 0.5 * n / m - 0.5
        spacing[axis] = scan.spacing[axis] * n / m
    origin = scan.voxel_to_patient(offset[None])[0]
    return Geometry(origin, scan.row_dir.copy(), scan.col_dir.copy(), tuple(float(s) for s in spacing))


def resample_channels(channels: np.ndarray, source: Geometry, target: Geometry, shape) -> np.ndarray:
    """[C, k, j, i] on ``source`` -> [C, *shape] float32 on ``target`` (linear; 0 outside the source)."""
    image = to_sitk(np.ascontiguousarray(np.moveaxis(channels, 0, -1), np.float32), source, vector=True)
    reference = to_sitk(np.zeros(tuple(shape), np.uint8), target)
    out = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                                              sitk.sitkVectorFloat32))
    return np.moveaxis(out.reshape(*shape, len(channels)), -1, 0)  # one component comes back without its axis


@dataclass
class VesselPrediction:
    probabilities: np.ndarray  # [14, k, j, i] float32 on ``geometry``: background + the 13 artery labels (class ids)
    geometry: Geometry  # stage 1's own grid (scan-aligned); any voxel maps to patient mm

    @property
    def vessel_probability(self) -> np.ndarray:
        """P(any artery), [k, j, i] on stage 1's grid."""
        return any_artery(self.probabilities[0])

    def artery_labels(self, vessel_threshold: float) -> np.ndarray:
        """uint8 [k, j, i]: each voxel of the union vessel mask (vessel probability >= ``vessel_threshold``,
        stage 1's operating point) labelled with its most probable artery (class id), 0 elsewhere. Below 0.5
        the mask holds voxels whose single most probable class is background: they keep their artery."""
        return labels_at_threshold(self.vessel_probability, self.probabilities[1:], vessel_threshold)

    def on_grid(self, geometry: Geometry, shape, vessel_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """The vessel probability (float32) and artery labels (uint8) on another grid (an ROI's): the artery
        probabilities are resampled linearly there and the labels taken there; 0 outside stage 1's grid. Only
        the part of stage 1's grid the ROI reads is copied (the 14 channels of a whole head, copied for
        SimpleITK, were the pipeline's peak: 0.5 GB, 5 bytes per voxel of a 512 x 512 x 400 scan)."""
        crop = covering_crop(self.probabilities.shape[1:], self.geometry, geometry, shape)
        if crop is None:
            return np.zeros(tuple(shape), np.float32), np.zeros(tuple(shape), np.uint8)
        part = self.probabilities[(slice(None), *crop[0])]
        on = resample_channels(np.concatenate([any_artery(part[:1]), part[1:]]), crop[1], geometry, shape)
        return on[0], labels_at_threshold(on[0], on[1:], vessel_threshold)

    def vessel_probability_on(self, geometry: Geometry, shape) -> np.ndarray:
        """P(any artery) on another grid (the scan's, to score against labels drawn there): 4 bytes a voxel."""
        return resample_channels(self.vessel_probability[None], self.geometry, geometry, shape)[0]


def any_artery(background: np.ndarray) -> np.ndarray:
    """P(any artery) = 1 - P(background): stage 1's vessel probability, wherever it is taken."""
    return 1.0 - background


def labels_at_threshold(vessel_probability: np.ndarray, artery_probabilities: np.ndarray,
                        vessel_threshold: float) -> np.ndarray:
    """Class id (1..13) of the most probable artery inside the union mask, 0 outside it."""
    mask = vessel_probability >= vessel_threshold
    return np.where(mask, artery_probabilities.argmax(0) + 1, 0).astype(np.uint8)


class Stage1Model:
    """Stage 1's fold models, loaded once; :meth:`predict` one scan, the result on stage 1's own grid."""

    def __init__(self, model_dir: Path, folds, device: torch.device = torch.device("cpu"), flip_tta: bool = True,
                 checkpoint: str = "checkpoint_final.pth"):
        self.predictor = load_predictor(model_dir, folds, device, checkpoint)
        self.flip_tta = flip_tta
        self.seconds: dict[str, float] = {}  # of the last prediction: preprocessing, network (all folds and views)

    def preprocess(self, image: np.ndarray, geometry: Geometry) -> tuple[torch.Tensor, dict]:
        """nnU-Net's preprocessing of the scan (as ``nnUNetv2_predict`` does it): [1, *grid] and its properties;
        slab by slab (``scan_preprocessing``: same numbers, a few bytes per scan voxel) where the plans allow."""
        p = self.predictor
        lean = preprocess_scan(image, nnunet_properties(geometry), p.plans_manager, p.configuration_manager)
        if lean is not None:
            return torch.from_numpy(lean[0]), lean[1]
        if not getattr(self, "_said_full_preprocessing", False):
            print("stage 1: these plans need nnU-Net's own preprocessor (whole-scan copies: about 30 bytes per scan "
                  "voxel more than the slab-wise path)")
            self._said_full_preprocessing = True
        preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(image[None], None, nnunet_properties(geometry),
                                                        p.plans_manager, p.configuration_manager, p.dataset_json)
        return torch.from_numpy(data), properties

    def _probabilities(self, data: torch.Tensor) -> torch.Tensor:
        """Softmax of the fold-averaged logits (nnU-Net's ensembling) on the preprocessed grid."""
        return torch.softmax(self.predictor.predict_logits_from_preprocessed_data(data).float(), 0)

    @contextmanager
    def _conditioned(self, metadata: np.ndarray | None):
        network = getattr(self.predictor.network, "_orig_mod", self.predictor.network)
        if not getattr(network, "metadata_dim", 0):
            yield
            return
        with network.conditioned(None if metadata is None else torch.as_tensor(metadata, dtype=torch.float32)):
            yield

    def predict(self, image: np.ndarray, geometry: Geometry, metadata: np.ndarray | None = None) -> VesselPrediction:
        """``image`` [k, j, i] on ``geometry``; ``metadata``: the series' vector (``metadata.encode_metadata``),
        None is the unknown vector."""
        transpose_forward = list(self.predictor.plans_manager.transpose_forward)
        start = time.perf_counter()
        data, properties = self.preprocess(image, geometry)
        self.seconds["preprocess"] = time.perf_counter() - start
        with self._conditioned(metadata):
            probabilities = self._probabilities(data)
            if self.flip_tta:
                axis = left_right_axis(properties["sitk_stuff"]["direction"], transpose_forward)
                flipped = self._probabilities(torch.flip(data, (1 + axis,)))
                probabilities += swap_class_channels(torch.flip(flipped, (1 + axis,)), dim=0)
                probabilities /= 2
        self.seconds["network"] = time.perf_counter() - start - self.seconds["preprocess"]
        grid = preprocessed_grid(geometry, properties, tuple(data.shape[1:]), transpose_forward)
        backward = [transpose_forward.index(a) for a in range(3)]
        scan_order = probabilities.numpy().transpose([0, *[1 + b for b in backward]])
        return VesselPrediction(np.ascontiguousarray(scan_order, np.float32), grid)
