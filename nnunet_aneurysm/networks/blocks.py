"""Building blocks shared by our 3-D transformers (token <-> volume plumbing, Mix-FFN, attention).

Tokens are ``[B, N, C]`` with ``N = D * H * W`` in C order; every block is told the spatial
shape explicitly, so nothing assumes a cubic volume.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_aneurysm.networks.fast_conv import DepthwiseConv3d


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, D, H, W] -> [B, D*H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def to_volume(tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """[B, N, C] -> [B, C, D, H, W] for the given spatial shape."""
    b, n, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, *shape)


def norm3d(channels: int) -> nn.Module:
    """Per-sample GroupNorm (16 channels a group): batch-size independent like nnU-Net's
    InstanceNorm, but still defined on a 1x1x1 feature map (deepest stage of a 32^3 patch)."""
    return nn.GroupNorm(channels // 16 if channels % 16 == 0 else 1, channels)


class MixFFN(nn.Module):
    """SegFormer's Mix-FFN: Linear -> depthwise 3x3x3 conv -> norm -> GELU -> Linear.

    The depthwise conv leaks position into the tokens, so no positional encoding is needed.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv3d(hidden, 3)
        self.norm = norm3d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        h = to_volume(self.fc1(tokens), shape)
        h = to_tokens(self.norm(self.dwconv(h)))
        return self.fc2(self.act(h))


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a volume reduced by a strided conv.

    ``sr_ratio`` > 1 shrinks the key/value set by ``sr_ratio**3`` (SegFormer's trick); it is
    clamped per axis so a thin axis (e.g. 2 voxels deep) is never reduced below one voxel.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key_value = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv3d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def _reduce(self, tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        if self.sr_ratio == 1:
            return tokens
        vol = to_volume(tokens, shape)
        if min(shape) < self.sr_ratio:  # too thin to reduce with the learnt kernel: pool instead
            vol = nn.functional.adaptive_avg_pool3d(vol, [max(1, s // self.sr_ratio) for s in shape])
            return self.sr_norm(to_tokens(vol))
        return self.sr_norm(to_tokens(self.sr(vol)))

    def forward(self, tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        b, n, c = tokens.shape
        h = self.num_heads
        q = self.query(tokens).reshape(b, n, h, c // h).transpose(1, 2)
        kv = self.key_value(self._reduce(tokens, shape))
        k, v = kv.reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # [B, heads, N, C/heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)); x + MixFFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, mlp_ratio)

    def forward(self, tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens), shape)
        return tokens + self.mlp(self.norm2(tokens), shape)
