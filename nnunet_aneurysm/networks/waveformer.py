"""WaveFormer for 3-D segmentation with optional AKOrN layers and series-level heads.

Every transformer block works in the wavelet domain: it Haar-transforms the normed features
as many times as needed for the low-frequency (LLL) band to hold at most ``max_tokens``
tokens, runs *global* self-attention on that band only, and inverts the transform with the
untouched high-frequency bands. Downsampling is a Haar DWT whose 8 sub-bands are mixed by a
1x1 conv (lossless); the decoder upsamples by inverse DWT using the encoder's high-frequency
sub-bands of that level. Positional information comes from Mix-FFN's depthwise conv, so the
network is built for no image size in particular: any shape works (odd sizes are padded
inside the DWT), and nnU-Net patches are divisible by ``total_stride``.

``forward(x)`` follows nnU-Net's contract; ``forward(x, metadata, return_aux=True)`` also
returns the 14 series-level logits, the AKOrN order parameter and the features the PINN head
samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from nnunet_aneurysm.networks.akorn import AKOrNLayer
from nnunet_aneurysm.networks.blocks import EfficientSelfAttention, MixFFN, norm3d, to_tokens, to_volume
from nnunet_aneurysm.networks.classification_head import ClassificationHead
from nnunet_aneurysm.networks.fast_conv import DepthwiseConv3d, PointwiseConv3d
from nnunet_aneurysm.networks.haar import dwt3d, idwt3d
from nnunet_aneurysm.networks.pinn_head import PINNHead


def dwt_levels(shape: Sequence[int], max_tokens: int) -> int:
    """How many Haar levels until the LLL band has at most ``max_tokens`` voxels (0 if it already has)."""
    levels = 0
    while math.prod(math.ceil(s / 2**levels) for s in shape) > max_tokens:
        levels += 1
    return levels


class WaveletAttentionBlock(nn.Module):
    """x + IDWT(Attn(LLL), highs); x + MixFFN(x); optionally x + AKOrN(x)."""

    def __init__(self, dim: int, num_heads: int, max_tokens: int = 512, mlp_ratio: float = 4.0,
                 akorn: dict | None = None):
        super().__init__()
        self.max_tokens = max_tokens
        self.norm1 = nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, num_heads, sr_ratio=1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, mlp_ratio)
        self.akorn = AKOrNLayer(dim, **akorn) if akorn is not None else None

    def _wavelet_attention(self, h: torch.Tensor) -> torch.Tensor:
        stack = []
        for _ in range(dwt_levels(h.shape[2:], self.max_tokens)):
            bands, shape = dwt3d(h)
            stack.append((bands[:, 1:], shape))
            h = bands[:, 0]
        shape = tuple(h.shape[2:])
        h = to_volume(self.attention(to_tokens(h), shape), shape)
        for highs, shape in reversed(stack):
            h = idwt3d(torch.cat([h.unsqueeze(1), highs], dim=1), shape)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[2:])
        x = x + self._wavelet_attention(to_volume(self.norm1(to_tokens(x)), shape))
        x = x + to_volume(self.mlp(self.norm2(to_tokens(x)), shape), shape)
        if self.akorn is not None:
            x = x + self.akorn(x)
        return x


class WaveletDown(nn.Module):
    """Haar DWT -> 8 sub-bands stacked as channels -> 1x1 conv. Keeps the high bands for the decoder."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.mix = nn.Sequential(PointwiseConv3d(8 * in_dim, out_dim), norm3d(out_dim))

    def forward(self, x: torch.Tensor):
        bands, shape = dwt3d(x)  # [B, 8, C, S/2]
        return self.mix(bands.flatten(1, 2)), (bands[:, 1:], shape)


class WaveletUp(nn.Module):
    """1x1 conv to the skip's width, inverse DWT with the skip level's high bands, fuse with the skip
    (pointwise + depthwise 3x3x3: cheap enough to run at full resolution)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.to_low = PointwiseConv3d(in_dim, out_dim)
        self.fuse = nn.Sequential(PointwiseConv3d(2 * out_dim, out_dim), norm3d(out_dim), nn.GELU(),
                                  DepthwiseConv3d(out_dim, 3), norm3d(out_dim), nn.GELU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor, highs_and_shape) -> torch.Tensor:
        highs, shape = highs_and_shape
        up = idwt3d(torch.cat([self.to_low(x).unsqueeze(1), highs], dim=1), shape)
        return self.fuse(torch.cat([up, skip], dim=1))


class WaveFormerDecoder(nn.Module):
    def __init__(self, dims: Sequence[int], num_classes: int, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        # dims = (stem, stage 0, ..., stage L-1); one up-step per stage, deepest first
        self.ups = nn.ModuleList(WaveletUp(dims[i + 1], dims[i]) for i in reversed(range(len(dims) - 1)))
        self.heads = nn.ModuleList(PointwiseConv3d(dims[i], num_classes) for i in reversed(range(len(dims) - 1)))

    def forward(self, skips: list[torch.Tensor], highs: list) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = skips[-1]
        outputs = []
        for up, head, skip, hs in zip(self.ups, self.heads, reversed(skips[:-1]), reversed(highs)):
            x = up(x, skip, hs)
            outputs.append(head(x))
        return outputs[::-1], x  # highest resolution first; last decoder features


def gpu_config() -> dict:
    """The full network for 3d_fullres (2.7 M parameters without AKOrN and PINN, 1 input channel)."""
    return {"embed_dims": (32, 64, 128, 256), "depths": (1, 1, 2, 2), "num_heads": (1, 2, 4, 8), "stem_channels": 16}


def cpu_config() -> dict:
    """Half the widths: what the CPU configuration (demos, tests) trains."""
    return {"embed_dims": (16, 32, 64, 128), "depths": (1, 1, 2, 2), "num_heads": (1, 2, 4, 8), "stem_channels": 8}


class WaveFormer(nn.Module):
    """nnU-Net contract: ``(input_channels, num_classes, deep_supervision, **arch_kwargs)``.

    ``classification_outputs`` and ``metadata_dim`` size the series-level head and its FiLM; the
    planner fills them from the label and metadata tables.
    """

    def __init__(
        self,
        input_channels: int = 1,
        num_classes: int = 14,
        deep_supervision: bool = False,
        embed_dims: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 1, 2, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        stem_channels: int = 16,
        max_tokens: int = 512,
        mlp_ratio: float = 4.0,
        akorn: dict | None = None,
        pinn: dict | None = None,
        classification_outputs: int = 14,
        metadata_dim: int = 7,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(input_channels, stem_channels, 3, padding=1),
                                  norm3d(stem_channels), nn.GELU())
        dims = [stem_channels, *embed_dims]
        self.downs = nn.ModuleList(WaveletDown(dims[i], dims[i + 1]) for i in range(len(embed_dims)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[WaveletAttentionBlock(d, h, max_tokens, mlp_ratio, akorn) for _ in range(n)])
            for d, h, n in zip(embed_dims, num_heads, depths)
        )
        self.decoder = WaveFormerDecoder(dims, num_classes, deep_supervision)
        self.classifier = ClassificationHead(embed_dims[-1], classification_outputs, metadata_dim)
        self.pinn_head = PINNHead(stem_channels, **pinn) if pinn is not None else None
        self.total_stride = 2 ** len(embed_dims)
        self.deep_supervision_scales = [1.0 / 2**i for i in range(len(embed_dims))]

    def akorn_layers(self) -> list[AKOrNLayer]:
        return [m for m in self.modules() if isinstance(m, AKOrNLayer)]

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None, return_aux: bool = False):
        skips, highs = [self.stem(x)], []
        for down, stage in zip(self.downs, self.stages):
            h, hs = down(skips[-1])
            skips.append(stage(h))
            highs.append(hs)
        outputs, features = self.decoder(skips, highs)
        seg = outputs if self.decoder.deep_supervision else outputs[0]
        if not return_aux:
            return seg
        layers = self.akorn_layers()
        aux = {
            "class_logits": self.classifier(skips[-1], metadata),
            "order_parameter": layers[-1].last_order_parameter if layers else None,
            "pinn_features": features,  # full-resolution decoder features [B, stem_channels, D, H, W]
        }
        return seg, aux
