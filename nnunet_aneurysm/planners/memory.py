"""Training-memory estimate of *our* networks, measured on PyTorch's meta device.

nnU-Net sizes patches with PlainConvUNet's feature-map count, which says nothing about a
transformer. Instead we run one forward pass of the real network on meta tensors (shapes, no
storage, about a second) and add up every tensor autograd saves for the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

# Calibrated on an H100 (benchmarks/memory_calibration.py, batch 2): with 0.75 the real peak was
# 0.90-1.52x the estimate for SegFormer3D and 1.36-1.42x for WaveFormer+AKOrN+PINN; 1.1 makes the
# estimate an upper bound for both at patches of 96^3 and more (autocast keeps float32 copies
# for norms, softmax and the float64 physics path).
AMP_ACTIVATION_FACTOR = 1.1
# weights + gradients + nnU-Net's SGD momentum buffer, all float32
PARAMETER_COPIES = 3
# CUDA context, cuDNN workspaces and allocator slack
CUDA_OVERHEAD_BYTES = 1.0e9


def saved_activation_bytes(build_network: Callable[[], nn.Module], input_shape: Sequence[int]) -> int:
    """Bytes of the tensors autograd keeps for backward in float32, for one forward pass."""
    with torch.device("meta"):
        network = build_network()
        x = torch.empty(*input_shape)
    saved: dict[int, torch.Tensor] = {}
    parameters = {id(p) for p in network.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in parameters and id(t._base) not in parameters:  # weights are counted apart
            saved[id(t)] = t  # the same tensor saved by several ops counts once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = network(x)
    outputs = out if isinstance(out, (list, tuple)) else [out]
    total = sum(t.numel() * 4 for t in saved.values())
    return int(total + sum(o.numel() * 4 for o in outputs))


def training_memory_bytes(build_network: Callable[[], nn.Module], input_channels: int,
                          patch_size: Sequence[int], batch_size: int) -> float:
    """Estimated peak GPU memory (bytes) of one mixed-precision training step."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_network().parameters())
    activations = saved_activation_bytes(build_network, (batch_size, input_channels, *patch_size))
    return CUDA_OVERHEAD_BYTES + PARAMETER_COPIES * 4 * n_params + AMP_ACTIVATION_FACTOR * activations


def round_patch(patch, divisible_by: int) -> list[int]:
    """Each side to the nearest multiple of the network's stride (at least one stride)."""
    return [max(divisible_by, int(round(p / divisible_by)) * divisible_by) for p in patch]


def initial_patch(spacing, median_shape, voxels: float, divisible_by: int) -> list[int]:
    """A patch of about ``voxels`` voxels whose physical aspect is cubic, capped at the median image shape."""
    aspect = 1 / np.asarray(spacing, dtype=float)
    patch = aspect * (voxels / np.prod(aspect)) ** (1 / 3)
    return round_patch(np.minimum(patch, median_shape), divisible_by)


def fit_patch_and_batch(build_network: Callable[[], nn.Module], input_channels: int, spacing, median_shape,
                        budget_bytes: float, divisible_by: int, initial_voxels: float = 256**3,
                        min_batch_size: int = 2, max_batch_voxels: float = np.inf) -> tuple[list[int], int, float]:
    """Largest patch (aspect from spacing, capped at the median shape) whose batch of ``min_batch_size``
    fits ``budget_bytes``, then the largest batch that fits, capped so a batch holds at most
    ``max_batch_voxels`` (nnU-Net: 5 % of the dataset). Returns (patch, batch, estimated bytes)."""
    def memory(patch, batch):
        return training_memory_bytes(build_network, input_channels, patch, batch)

    patch = initial_patch(spacing, median_shape, initial_voxels, divisible_by)
    used = memory(patch, min_batch_size)
    while used > budget_bytes and max(patch) > divisible_by:
        ratios = [p / m for p, m in zip(patch, median_shape)]
        candidates = [i for i in np.argsort(ratios)[::-1] if patch[i] > divisible_by]
        patch[candidates[0]] -= divisible_by
        used = memory(patch, min_batch_size)
    per_sample = used - memory(patch, min_batch_size - 1) if min_batch_size > 1 else used
    batch = min_batch_size + int(max(0.0, budget_bytes - used) // max(per_sample, 1.0))
    cap = round(max_batch_voxels / np.prod(patch, dtype=float)) if np.isfinite(max_batch_voxels) else batch
    batch = max(min_batch_size, min(batch, cap))
    return patch, batch, memory(patch, batch)
