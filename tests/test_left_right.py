"""Left/right flip augmentation: the axis found per case, and labels swapped to their partners."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_aneurysm.labels import BY_CLASS_ID, BY_NAME
from nnunet_aneurysm.trainers.left_right import flip_left_right, left_right_axis

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
