"""Depthwise and pointwise 3-D convolutions that train fast on the CPU.

Both keep the parameters of the ``nn.Conv3d`` they replace, so checkpoints are interchangeable.

Pointwise (1x1x1): oneDNN's backward of a 1x1x1 conv over a full-resolution volume is about 5x
slower than the same product written as a matmul over flattened voxels (measured here: 574 vs
105 ms for 22 -> 8 channels at 96^3), so we write it as one.

Depthwise: PyTorch's CPU backward of a depthwise (groups = channels) 3-D conv is about 20x slower than its
forward (measured here: 300 ms vs 16 ms for 128 channels at 24^3), and it dominates
SegFormer3D's training step on CPU. Its gradients are cheap to write down:

* grad_input is the depthwise conv of grad_output with the spatially flipped kernel (another
  fast forward conv);
* grad_weight[c] is the correlation of the padded input of channel c with grad_output[c],
  summed over the batch: a grouped conv whose *kernel* is grad_output (batch as channels).

On other devices, and without autograd, the stock convolution is used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _DepthwiseConv3dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv3d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        p, channels = ctx.padding, x.shape[1]
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv3d(grad_out, weight.flip(2, 3, 4), padding=p, groups=channels)
        if ctx.needs_input_grad[1]:
            batch = x.shape[0]
            padded = F.pad(x, (p,) * 6).transpose(0, 1)  # [C, B, D + 2p, H + 2p, W + 2p]
            grad_w = F.conv3d(padded.reshape(1, channels * batch, *padded.shape[2:]),
                              grad_out.transpose(0, 1), groups=channels)  # [1, C, k, k, k]
            grad_w = grad_w.view_as(weight)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(channels, channels, kernel, padding=kernel // 2, groups=channels)``, faster to train on CPU."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        return _DepthwiseConv3dFunction.apply(x, self.weight, self.bias, self.padding[0])


class PointwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(in_channels, out_channels, 1)`` computed as a matmul over flattened voxels."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, *spatial = x.shape
        y = torch.matmul(self.weight.flatten(1), x.flatten(2))  # [B, out, voxels]
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.view(b, -1, *spatial)
