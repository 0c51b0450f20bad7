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
returns the series-level logits (location-aware heads), the AKOrN order parameter and the
patch code of the PINN head's flow field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_aneurysm.networks.akorn import AKOrNLayer
from nnunet_aneurysm.networks.blocks import EfficientSelfAttention, MixFFN, norm3d, to_tokens, to_volume
from nnunet_aneurysm.networks.fast_conv import DepthwiseConv3d, PointwiseConv3d
from nnunet_aneurysm.networks.film import FiLM
from nnunet_aneurysm.networks.haar import dwt3d, idwt3d
from nnunet_aneurysm.networks.location_heads import LocationHeads, dilate, territories
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
        """Attention on the low band, taken at the scale of the input: the orthonormal Haar low band of
        L levels is 2^(1.5 L) times the block mean for a smooth field, and attending on it unscaled
        saturates the softmax at initialisation (max weight 0.91 at three levels); dividing by that
        gain attends on the block mean, and multiplying back keeps the inverse transform exact."""
        stack = []
        levels = dwt_levels(h.shape[2:], self.max_tokens)
        for _ in range(levels):
            bands, shape = dwt3d(h)
            stack.append((bands[:, 1:], shape))
            h = bands[:, 0]
        shape, gain = tuple(h.shape[2:]), 2.0 ** (1.5 * levels)
        h = gain * to_volume(self.attention(to_tokens(h / gain), shape), shape)
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

    def forward(self, skips: list[torch.Tensor], highs: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits and decoder features per level, highest resolution first."""
        x = skips[-1]
        outputs, features = [], []
        for up, head, skip, hs in zip(self.ups, self.heads, reversed(skips[:-1]), reversed(highs)):
            x = up(x, skip, hs)
            outputs.append(head(x))
            features.append(x)
        return outputs[::-1], features[::-1]


def gpu_config() -> dict:
    """The full network for 3d_fullres (2.7 M parameters without AKOrN and PINN, 1 input channel)."""
    return {"embed_dims": (32, 64, 128, 256), "depths": (1, 1, 2, 2), "num_heads": (1, 2, 4, 8), "stem_channels": 16}


def cpu_config() -> dict:
    """Half the widths: what the CPU configuration (demos, tests) trains."""
    return {"embed_dims": (16, 32, 64, 128), "depths": (1, 1, 2, 2), "num_heads": (1, 2, 4, 8), "stem_channels": 8}


class WaveFormer(nn.Module):
    """nnU-Net contract: ``(input_channels, num_classes, deep_supervision, **arch_kwargs)``.

    Stage 2's input holds the image, stage 1's vessel probability and, in ``artery_channel``,
    stage 1's artery labels (class ids 1..``num_locations``): those enter the stem one-hot, and
    define the territories the :class:`LocationHeads` pool over (at half resolution, dilated by
    ``territory_margin`` half-resolution voxels). Without an artery channel every territory is
    the whole patch. The heads read the half-resolution segmentation: P(any aneurysm), each
    location's probability, and ``head_features`` learnt channels of the decoder; few inputs per
    territory, so the heads read the maps rather than memorise the training series (with all
    decoder channels pooled, they fitted their training series and stayed at chance on others).
    Metadata enter by FiLM at the output of every encoder stage, bottleneck included: the
    decoder's skips, the heads and the PINN head all read FiLM-ed features, and no normalisation
    follows a FiLM before a convolution mixes its channels (so none cancels it).
    ``classification_outputs`` must be ``num_locations + 1`` (the planner fills both).
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
        artery_channel: int | None = None,
        territory_margin: int = 2,
        head_hidden: int = 32,
        head_features: int = 4,
    ):
        super().__init__()
        self.num_locations = classification_outputs - 1
        self.artery_channel, self.territory_margin = artery_channel, territory_margin
        stem_in = input_channels if artery_channel is None else input_channels - 1 + self.num_locations
        self.stem = nn.Sequential(nn.Conv3d(stem_in, stem_channels, 3, padding=1), norm3d(stem_channels), nn.GELU())
        dims = [stem_channels, *embed_dims]
        self.downs = nn.ModuleList(WaveletDown(dims[i], dims[i + 1]) for i in range(len(embed_dims)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[WaveletAttentionBlock(d, h, max_tokens, mlp_ratio, akorn) for _ in range(n)])
            for d, h, n in zip(embed_dims, num_heads, depths)
        )
        self.films = nn.ModuleList(FiLM(d, metadata_dim) for d in embed_dims) if metadata_dim else None
        self.decoder = WaveFormerDecoder(dims, num_classes, deep_supervision)
        self.head_features = PointwiseConv3d(dims[1], head_features)  # a few learnt channels beside the maps
        self.heads = LocationHeads(head_features + 1 + num_classes, self.num_locations, head_hidden)
        self.pinn_head = PINNHead(embed_dims[-1], **pinn) if pinn is not None else None
        self.total_stride = 2 ** len(embed_dims)
        self.deep_supervision_scales = [1.0 / 2**i for i in range(len(embed_dims))]

    def akorn_layers(self) -> list[AKOrNLayer]:
        return [m for m in self.modules() if isinstance(m, AKOrNLayer)]

    def _stem_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stem's input (artery labels one-hot) and the artery labels [B, D, H, W] (None without them)."""
        if self.artery_channel is None:
            return x, None
        labels = x[:, self.artery_channel]
        ids = torch.arange(1, self.num_locations + 1, device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)
        onehot = (labels.round()[:, None] == ids).to(x.dtype)
        others = [c for c in range(x.shape[1]) if c != self.artery_channel]
        return torch.cat([x[:, others], onehot], dim=1), labels

    def territory_masks(self, labels: torch.Tensor | None, shape, like: torch.Tensor) -> torch.Tensor:
        """[B, K, *shape] territories at the heads' resolution (all ones without artery labels)."""
        if labels is None:
            return like.new_ones(like.shape[0], self.num_locations, *shape)
        masks = territories(labels, self.num_locations, 0)
        masks = F.adaptive_max_pool3d(masks, shape)
        return dilate(masks, self.territory_margin)

    def encode(self, x: torch.Tensor, metadata: torch.Tensor | None = None
               ) -> tuple[list[torch.Tensor], list, torch.Tensor | None]:
        """The encoder: skips (stem, then each FiLM-ed stage, highest resolution first), the Haar high bands of
        each down-step (for the decoder) and the artery labels (None without an artery channel)."""
        stem_input, labels = self._stem_input(x)
        if self.films is not None and metadata is None:  # stock nnU-Net prediction passes none: the unknown vector
            metadata = x.new_zeros(x.shape[0], self.films[0].mlp[0].in_features)
        skips, highs = [self.stem(stem_input)], []
        for i, (down, stage) in enumerate(zip(self.downs, self.stages)):
            h, hs = down(skips[-1])
            h = stage(h)
            skips.append(self.films[i](h, metadata.to(h.dtype)) if self.films is not None else h)
            highs.append(hs)
        return skips, highs, labels

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None, return_aux: bool = False):
        skips, highs, labels = self.encode(x, metadata)
        outputs, features = self.decoder(skips, highs)
        seg = outputs if self.decoder.deep_supervision else outputs[0]
        if not return_aux:
            return seg
        probabilities = outputs[1].float().softmax(1)  # half resolution: P(background), P(location k)
        half = torch.cat([self.head_features(features[1]).float(), 1 - probabilities[:, :1], probabilities], dim=1)
        layers = self.akorn_layers()
        aux = {
            "class_logits": self.heads(half, self.territory_masks(labels, half.shape[2:], half)),
            "order_parameter": layers[-1].last_order_parameter if layers else None,
            "pinn_code": self.pinn_head.patch_code(skips[-1]) if self.pinn_head is not None else None,
        }
        return seg, aux
