"""What our inference needs from nnU-Net's: a quiet predictor for a model folder, and the image
properties nnU-Net's reader would report for an array on a known grid.

Quiet: nnU-Net prints its trainer search ("Trainer ... not found", "Searching in ...", "Using trainer
...") and device notes while a predictor loads, and the modules it imports then raise torch's
deprecation FutureWarnings; all of it goes to the ``nnunet_aneurysm.nnunet`` logger (INFO), which the
verbs write to their log file, never to the terminal.
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.nnunet_env import our_trainers_visible
from nnunet_aneurysm.nnunet_version import require_supported_nnunetv2

require_supported_nnunetv2()  # the predictor internals below are nnunetv2's


def nnunet_properties(geometry: Geometry) -> dict:
    """What nnU-Net's SimpleITK reader would report for an array on this grid ([k, j, i] order)."""
    direction = np.stack([geometry.row_dir, geometry.col_dir, geometry.normal], axis=1)
    return {"spacing": list(geometry.spacing),
            "sitk_stuff": {"spacing": tuple(geometry.spacing[::-1]), "origin": tuple(map(float, geometry.origin)),
                           "direction": tuple(direction.ravel())}}


log = logging.getLogger("nnunet_aneurysm.nnunet")


class _LinesToLog(io.TextIOBase):
    """A text stream whose non-empty lines become INFO records of nnU-Net's logger."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.info("%s", line.rstrip())
        return len(text)


def load_predictor(model_dir: Path, folds, device: torch.device, checkpoint: str = "checkpoint_final.pth"):
    """nnU-Net's predictor for a trained model folder and folds: quiet (see the module docstring), without
    nnU-Net's mirroring (our labels are left/right specific; our own flips swap them). Its sliding-window
    step (``tile_step_size``, a fraction of the patch) is nnU-Net's 0.5; it is read at every prediction."""
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(_LinesToLog()):
        warnings.simplefilter("default")
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        our_trainers_visible()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=tuple(folds),
                                                       checkpoint_name=checkpoint)
    for warning in caught:
        log.info("%s: %s", warning.category.__name__, warning.message)
    return predictor
