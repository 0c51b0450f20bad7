"""Left/right flips that keep location labels true: one implementation for both stages' training
augmentation and for test-time augmentation.

Mirroring a head swaps its sides, so a mirrored 'Left MCA' is a right one: the flip must map
every location label to its partner (``labels.FLIP_CLASS``), in the targets, in input channels
that hold labels (stage 2's artery labels), and in per-class outputs (probability channels,
series logits). nnU-Net's own mirroring cannot (it flips without relabelling), and the converter
keeps each series in its acquired orientation, so which array axis runs left-right differs per
case (axial vs sagittal vs coronal). It is read from the case's direction matrix.
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


def swap_labels(labels: torch.Tensor) -> torch.Tensor:
    """Every class id to its partner's (a label outside 0..13 raises)."""
    return _PARTNER.to(labels.device)[labels.round().long()].to(labels.dtype)


def swap_class_channels(per_class: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Values indexed by class id (e.g. probabilities [B, 14, ...], background first) moved to the partner's index."""
    return per_class.index_select(dim, _PARTNER.to(per_class.device))


# submission column j (0..12) is class id j + 1; the last column, 'Aneurysm Present', has no side
_SERIES_PARTNER = torch.cat([_PARTNER[1:] - 1, torch.tensor([len(_PARTNER) - 1])])


def swap_series_columns(series: torch.Tensor) -> torch.Tensor:
    """Series values in submission column order [..., 14] with each location moved to its partner's column."""
    return series.index_select(-1, _SERIES_PARTNER.to(series.device))


def flip_left_right(data: torch.Tensor, targets: list[torch.Tensor], axes: Sequence[int], flip: Sequence[bool],
                    label_channels: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mirror the samples with ``flip[b]`` along spatial axis ``axes[b]``; swap their side labels.

    ``data`` [B, C, ...] (its ``label_channels`` hold class ids and are swapped too) and each
    target [B, 1, ...] (every deep-supervision level) are changed per sample; the others are
    returned untouched. Returns new tensors.
    """
    data, targets = data.clone(), [t.clone() for t in targets]
    for b, (axis, do) in enumerate(zip(axes, flip)):
        if not do:
            continue
        data[b] = torch.flip(data[b], (1 + axis,))
        for c in label_channels:
            data[b, c] = swap_labels(data[b, c])
        for t in targets:
            t[b] = swap_labels(torch.flip(t[b], (1 + axis,)))
    return data, targets
