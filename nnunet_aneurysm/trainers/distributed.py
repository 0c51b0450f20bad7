"""What our trainers add for nnU-Net's multi-GPU training (``-num_gpus``: DDP, one process per GPU).

nnU-Net wraps the network in ``DistributedDataParallel`` without ``find_unused_parameters``: every parameter of
the network must receive a gradient on every step, or the next forward fails ("Expected to have finished
reduction in the prior iteration"). Parameters outside the network (learnt loss weights, the AUC-margin loss's
a and b) are not reduced by DDP at all, nor is state our losses keep (UW-SO's running means, AUC-M's dual
step); without averaging them the ranks drift apart. Outside DDP every function here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def average_across_ranks(tensors: Iterable[torch.Tensor | None]) -> None:
    """Replace each tensor (gradients, buffers) by its mean over the ranks, in place."""
    if not distributed():
        return
    for tensor in tensors:
        if tensor is not None:
            dist.all_reduce(tensor)
            tensor /= dist.get_world_size()


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks (metrics counted per process: true/false positive voxels...), on the device the
    process group's backend needs (NCCL reduces CUDA tensors only), returned where ``values`` was."""
    if not distributed():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
    reduced = values.to(device, copy=True)
    dist.all_reduce(reduced)
    return reduced.to(values.device)


def zero_term(module: torch.nn.Module) -> torch.Tensor:
    """0 * (the sum of every parameter of ``module``): keeps a part used only on some steps (the PINN head's field
    when a batch has no vessel lumen) in the backward graph of every step, with zero gradients."""
    return sum((0.0 * p.sum() for p in module.parameters()), torch.zeros(()))
