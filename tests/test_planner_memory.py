from functools import partial

from nnunet_aneurysm.networks.segformer3d import SegFormer3D
from nnunet_aneurysm.planners.memory import saved_activation_bytes, training_memory_bytes


def test_activation_estimate_grows_with_patch_and_batch():
    build = partial(SegFormer3D, 1, 14, False)
    small = saved_activation_bytes(build, (1, 1, 32, 32, 32))
    large = saved_activation_bytes(build, (1, 1, 64, 64, 64))
    double = saved_activation_bytes(build, (2, 1, 32, 32, 32))
    assert 6 < large / small < 12  # about linear in voxels (8x)
    assert 1.9 < double / small < 2.1  # linear in batch
    # the first stage alone keeps its 32-channel patch embedding at 1/4 resolution
    assert small > 32 * 8**3 * 4


def test_training_memory_includes_optimizer_state():
    build = partial(SegFormer3D, 1, 14, False)
    n_params = sum(p.numel() for p in build().parameters())
    assert training_memory_bytes(build, 1, (32, 32, 32), 1) > 16 * n_params
