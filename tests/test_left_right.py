"""Left/right flips: the axis found per case, and labels, label channels, probability channels and series
columns swapped to their partners."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_aneurysm.labels import BY_CLASS_ID, BY_NAME
from nnunet_aneurysm.left_right import (
    flip_left_right,
    left_right_axis,
    swap_class_channels,
    swap_labels,
    swap_series_columns,
)

AXIAL = (1, 0, 0, 0, 1, 0, 0, 0, 1)
SAGITTAL = (0, 0, -1, 1, 0, 0, 0, -1, 0)  # columns: rows run A->P, columns S->I, slices R->L
CORONAL = (1, 0, 0, 0, 0, 1, 0, -1, 0)
OBLIQUE = tuple(sitk.VersorTransform((0, 0, 1), 0.3).GetMatrix())  # axial, rotated 17 degrees


def _numpy_axis_along_x(direction) -> int:
    """Independent answer: step one voxel along each numpy axis, see which moves farthest in x (L/R)."""
    image = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    image.SetDirection(direction)
    start = np.array(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 0.0)))
    moves = []
    for numpy_axis in range(3):
        index = [0.0, 0.0, 0.0]
        index[2 - numpy_axis] = 1.0
        moves.append(abs(np.array(image.TransformContinuousIndexToPhysicalPoint(index))[0] - start[0]))
    return int(np.argmax(moves))


@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, CORONAL, OBLIQUE])
@pytest.mark.parametrize("transpose_forward", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_left_right_axis_follows_the_direction_matrix(direction, transpose_forward):
    expected = transpose_forward.index(_numpy_axis_along_x(direction))
    assert left_right_axis(direction, transpose_forward) == expected


def test_orientations_put_left_right_on_different_axes():
    assert len({left_right_axis(d, [0, 1, 2]) for d in (AXIAL, SAGITTAL)}) == 2


def test_flip_mirrors_image_and_swaps_side_labels_per_sample():
    left_mca, acom = BY_NAME["Left Middle Cerebral Artery"], BY_NAME["Anterior Communicating Artery"]
    data = torch.rand(2, 2, 6, 6, 6)
    target = torch.zeros(2, 1, 6, 6, 6)
    target[:, 0, 2, 2, 0] = left_mca.class_id
    target[:, 0, 3, 3, 3] = acom.class_id
    low = target[:, :, ::2, ::2, ::2].clone()  # a deep-supervision level
    out, (t, t_low) = flip_left_right(data, [target, low], axes=[2, 0], flip=[True, False])
    torch.testing.assert_close(out[0], torch.flip(data[0], (3,)))
    torch.testing.assert_close(out[1], data[1])
    torch.testing.assert_close(t[1], target[1])
    right_mca = BY_CLASS_ID[left_mca.partner_id]
    assert right_mca.name == "Right Middle Cerebral Artery"
    assert t[0, 0, 2, 2, 5] == right_mca.class_id and t[0, 0, 2, 2, 0] == 0
    assert t[0, 0, 3, 3, 2] == acom.class_id  # the midline keeps its label
    assert t_low[0, 0, 1, 1, 2] == right_mca.class_id
    assert set(torch.unique(t).tolist()) == {0.0, float(acom.class_id), float(left_mca.class_id),
                                              float(right_mca.class_id)}


def test_flip_twice_is_the_identity():
    data = torch.rand(1, 1, 5, 4, 3)
    target = torch.randint(0, 14, (1, 1, 5, 4, 3)).float()
    once = flip_left_right(data, [target], [1], [True])
    twice = flip_left_right(once[0], once[1], [1], [True])
    torch.testing.assert_close(twice[0], data)
    torch.testing.assert_close(twice[1][0], target)
    assert not torch.equal(once[1][0], target)


def test_a_left_only_artery_map_flipped_gives_right_labels():
    """Stage 1's augmentation: every left artery of a left-only label map becomes its right partner."""
    lefts = [loc.class_id for loc in BY_NAME.values() if loc.name.startswith("Left")]
    labels = torch.zeros(1, 1, 4, 4, 6)
    for i, class_id in enumerate(lefts):
        labels[0, 0, i % 4, i // 4, 0] = class_id  # all on one side (axis 2 = left-right)
    _, (flipped,) = flip_left_right(torch.zeros(1, 1, 4, 4, 6), [labels], [2], [True])
    names = {BY_CLASS_ID[int(v)].name for v in torch.unique(flipped) if v > 0}
    assert names == {BY_CLASS_ID[c].name.replace("Left", "Right") for c in lefts}
    assert (flipped[..., 5] > 0).sum() == len(lefts) and (flipped[..., 0] > 0).sum() == 0


def test_label_input_channels_are_swapped_and_intensity_channels_only_mirrored():
    """Stage 2's input holds stage 1's artery labels in a channel: flipped, they must swap like targets."""
    data = torch.zeros(1, 3, 2, 2, 4)
    data[0, 0, ..., 0] = 7.5  # an intensity: mirrored, value kept
    data[0, 2, ..., 0] = BY_NAME["Left Middle Cerebral Artery"].class_id
    out, _ = flip_left_right(data, [], [2], [True], label_channels=[2])
    assert (out[0, 0, ..., 3] == 7.5).all()
    assert (out[0, 2, ..., 3] == BY_NAME["Right Middle Cerebral Artery"].class_id).all()


def test_probability_channels_and_series_columns_move_to_their_partners():
    probabilities = torch.arange(14.0).view(1, 14, 1, 1, 1)  # channel k holds the value k
    swapped = swap_class_channels(probabilities)
    left_mca, right_mca = BY_NAME["Left Middle Cerebral Artery"], BY_NAME["Right Middle Cerebral Artery"]
    assert swapped[0, left_mca.class_id].item() == right_mca.class_id and swapped[0, 0].item() == 0
    series = torch.arange(14.0)  # submission column j holds the value j
    moved = swap_series_columns(series)
    assert moved[left_mca.class_id - 1].item() == right_mca.class_id - 1
    assert moved[13].item() == 13  # 'Aneurysm Present' has no side
    torch.testing.assert_close(swap_series_columns(moved), series)
    assert swap_labels(torch.tensor([0.0, 12.0])).tolist() == [0.0, 12.0]  # the basilar tip is on the midline
