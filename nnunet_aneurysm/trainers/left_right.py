"""Left/right flip augmentation that keeps location labels true.

Mirroring a head swaps its sides, so a mirrored 'Left MCA' aneurysm is a right one: the flip must
map every location label to its partner (``labels.FLIP_CLASS``). nnU-Net's own mirroring cannot
(it flips without relabelling), and the converter keeps each series in its acquired orientation,
so which array axis runs left-right differs per case (axial vs sagittal vs coronal). We read it
from the case's direction matrix in nnU-Net's preprocessed properties and flip in ``train_step``,
after nnU-Net's augmentation, where the case keys are known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnunet_aneurysm.labels import FLIP_CLASS


def left_right_axis(direction: Sequence[float], transpose_forward: Sequence[int]) -> int:
    """Spatial axis (0-2) of a preprocessed nnU-Net array that is closest to patient left-right.

    ``direction`` is SimpleITK's row-major 3x3: column c is the patient (LPS) direction of image
    index axis c, and index axis c is numpy axis 2 - c. nnU-Net then transposes numpy axes by
    ``transpose_forward``.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    numpy_axis = 2 - int(np.argmax(np.abs(matrix[0])))  # row 0: the L/R (x) component of each axis
    return list(transpose_forward).index(numpy_axis)


_PARTNER = torch.from_numpy(FLIP_CLASS.astype(np.int64))


def flip_left_right(data: torch.Tensor, targets: list[torch.Tensor], axes: Sequence[int],
                    flip: Sequence[bool]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mirror the samples with ``flip[b]`` along spatial axis ``axes[b]``; swap their side labels.

    ``data`` [B, C, ...] and each target [B, 1, ...] (every deep-supervision level) are changed
    per sample; the others are returned untouched. Returns new tensors.
    """
    data, targets = data.clone(), [t.clone() for t in targets]
    partner = _PARTNER.to(targets[0].device) if targets else None
    for b, (axis, do) in enumerate(zip(axes, flip)):
        if not do:
            continue
        data[b] = torch.flip(data[b], (1 + axis,))
        for t in targets:
            flipped = torch.flip(t[b], (1 + axis,))
            t[b] = partner[flipped.long()].to(t.dtype)  # a label outside the table raises
    return data, targets
