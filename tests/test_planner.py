from functools import partial

from nnunet_aneurysm.networks.segformer3d import SegFormer3D
from nnunet_aneurysm.planners.memory import (
    fit_patch_and_batch,
    initial_patch,
    saved_activation_bytes,
    training_memory_bytes,
)


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


def test_fit_patch_and_batch_fills_the_budget_and_no_more():
    build = partial(SegFormer3D, 1, 14, False, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), decoder_dim=64)
    spacing, median = (2.0, 1.0, 1.0), (100, 200, 200)  # thick slices: the patch is half as deep in voxels
    budget = training_memory_bytes(build, 1, (64, 128, 128), 2)  # room for a batch of two such patches
    patch, batch, used = fit_patch_and_batch(build, 1, spacing, median, budget, 32, initial_voxels=256**3)
    assert all(p % 32 == 0 for p in patch) and used <= budget
    assert patch[1] == patch[2] and patch[0] == patch[1] // 2  # physically cubic
    assert batch == 2
    bigger = [p + 32 if i == 0 else p for i, p in enumerate(patch)]
    assert training_memory_bytes(build, 1, bigger, 2) > budget or bigger[0] > median[0]
    patch2, batch2, used2 = fit_patch_and_batch(build, 1, spacing, median, 4 * budget, 32, initial_voxels=patch[0] *
                                                patch[1] * patch[2])
    assert patch2 == patch and batch2 > batch and used2 <= 4 * budget  # spare memory goes to the batch
    _, capped, _ = fit_patch_and_batch(build, 1, spacing, median, 4 * budget, 32, initial_voxels=patch[0] * patch[1] *
                                       patch[2], max_batch_voxels=3 * patch[0] * patch[1] * patch[2])
    assert capped == 3  # nnU-Net's cap: a batch covers at most a share of the dataset


def test_initial_patch_is_capped_at_the_median_shape_and_rounded_to_the_stride():
    assert initial_patch((1.0, 1.0, 1.0), (40, 300, 300), 128**3, 32) == [32, 128, 128]
    assert initial_patch((3.0, 1.0, 1.0), (100, 300, 300), 96**3, 16) == [48, 144, 144]
