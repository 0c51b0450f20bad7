"""Masked-volume pretraining of WaveFormer: SparK (Tian et al., ICLR 2023) for our hierarchical backbone.

A seeded share of the ROI's blocks (``block`` voxels a side, the backbone's total stride, so every block is one
bottleneck voxel and the encoder's Haar steps never mix a masked block with a visible one) is hidden, and the
network learns to fill in the hidden image from what it sees:

* sparse encoder (SparK's sparse convolution on a dense tensor): EVERY convolution of the encoder (the stem,
  each down-step's mix, each Mix-FFN's depthwise conv) sees zeros at the hidden positions (its input masked
  before it) and writes zeros there (its output masked after it), so a visible voxel beside a hidden block
  sees only visible voxels; every GroupNorm of the encoder takes its statistics over the visible voxels only
  and leaves the hidden ones at zero. The hidden image never reaches a visible position of any level
  (nnssl's SparK leaves the stem's input unmasked and stages coarser than /16 unmasked; here the stem is
  masked and the block is the total stride). The input's hidden voxels are simply zero: a learnt input
  token would be masked away before the stem anyway;
* densify: before the decoder, each level's hidden positions take a learnt mask token of that level's width
  (SparK's mask tokens), and the decoder, unmasked, fills them in;
* the loss is the squared error of a reconstruction head on the HIDDEN voxels of the image channel only.

MiM (Mask in Mask, Zhuang et al., IEEE TMI 2025), adapted to a total stride of 16 (``mask_in_mask_loss``): level 1
is the patch as above; level 2 is ONE cell that level 1 hid, zoomed in to a cube the size of the patch's shortest
side and masked again with blocks of the same voxel count (so 1/3 of a cell a side at the patch's 48 voxels);
the network fills in both, and a cross-level alignment asks level 2's pooled features to find, among the cells
level 1 hid, the one they show (InfoNCE over those cells, level 1's side detached: MiM's parent is the target;
the visible cells are left out, or telling mask-token features from seen ones would pass for alignment). MiM
zooms into its 16^3 tokens the same way (x6 to 96^3); its parent-child BYOL term (2 - 2 cos, no negatives)
would collapse through the projector here, where only reconstruction guards it, so the cells are the negatives.

Everything added (tokens, reconstruction head, alignment projector) has names of its own, so the pretrained
checkpoint holds every key of the plain network with the same shape: nnU-Net's ``-pretrained_weights`` loads it
(extra keys ignored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_aneurysm.networks.fast_conv import PointwiseConv3d
from nnunet_aneurysm.networks.waveformer import WaveFormer


def block_visibility(batch: int, shape: Sequence[int], block: int, mask_ratio: float,
                     generator: torch.Generator) -> torch.Tensor:
    """[B, 1, *shape] float, 1 visible and 0 hidden: ``mask_ratio`` of each sample's ``block``-sided blocks hidden,
    drawn from ``generator`` (the same seed, the same masks)."""
    grid = [math.ceil(s / block) for s in shape]
    cells = math.prod(grid)
    hidden = min(cells - 1, max(1, round(mask_ratio * cells)))
    order = torch.stack([torch.randperm(cells, generator=generator) for _ in range(batch)])
    visible = (order >= hidden).float().reshape(batch, 1, *grid)
    for axis, size in enumerate(shape):
        visible = visible.repeat_interleave(block, dim=2 + axis).narrow(2 + axis, 0, size)
    return visible


def visibility_at(visible: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """The visibility mask on a feature map of ``spatial`` size (blocks aligned: each cell wholly one or the other)."""
    if tuple(visible.shape[2:]) == tuple(spatial):
        return visible
    return (F.adaptive_avg_pool3d(visible, tuple(spatial)) > 0.5).to(visible.dtype)


def _visible_group_norm(norm: nn.GroupNorm, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """GroupNorm with each group's mean and variance over the visible voxels only; hidden voxels stay 0."""
    b, c = x.shape[:2]
    mask = visibility_at(visible, x.shape[2:])
    groups = x.reshape(b, norm.num_groups, c // norm.num_groups, -1)
    m = mask.reshape(b, 1, 1, -1)
    count = (m.sum(-1, keepdim=True) * groups.shape[2]).clamp_min(1.0)
    mean = (groups * m).sum((2, 3), keepdim=True) / count
    var = (((groups - mean) * m) ** 2).sum((2, 3), keepdim=True) / count
    out = ((groups - mean) / torch.sqrt(var + norm.eps)).reshape_as(x)
    if norm.affine:
        out = out * norm.weight.view(1, c, *([1] * (x.dim() - 2))) + norm.bias.view(1, c, *([1] * (x.dim() - 2)))
    return out * mask


@contextmanager
def sparse_encoder(modules: Sequence[nn.Module], visible: torch.Tensor):
    """Within the block, every convolution in ``modules`` sees zeros at the hidden positions of its input and
    has its hidden outputs set to zero, and every GroupNorm takes visible-only statistics (``visible``
    [B, 1, *shape] at the input's resolution)."""
    hooks, patched = [], []
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv3d):  # PointwiseConv3d and DepthwiseConv3d are Conv3d too
                hooks.append(module.register_forward_pre_hook(
                    lambda _m, args: (args[0] * visibility_at(visible, args[0].shape[2:]), *args[1:])))
                hooks.append(module.register_forward_hook(
                    lambda _m, _i, out: out * visibility_at(visible, out.shape[2:])))
            elif isinstance(module, nn.GroupNorm):
                patched.append(module)
                module.forward = (lambda x, norm=module: _visible_group_norm(norm, x, visible))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for module in patched:
            del module.forward  # back to the class's forward


def hidden_cells(visible: torch.Tensor, block: int, generator: torch.Generator) -> torch.Tensor:
    """[B] index (C order on the cell grid) of one cell per sample that ``visible`` hides wholly, drawn from
    ``generator``: where MiM's level 2 looks. The patch must be whole cells (nnU-Net's patch sizes are multiples
    of the network's total stride)."""
    shape = visible.shape[2:]
    if any(s % block for s in shape):
        raise ValueError(f"patch {tuple(shape)} is not whole {block}-voxel cells: MiM needs the network's stride")
    picks = []
    for row in hidden_cell_mask(visible, block):  # cells wholly one or the other
        choices = row.nonzero().flatten().cpu()
        picks.append(choices[torch.randint(len(choices), (1,), generator=generator)])
    return torch.cat(picks).to(visible.device)


def zoom_into_cells(x: torch.Tensor, cells: torch.Tensor, block: int, size: int) -> torch.Tensor:
    """[B, C, size, size, size]: each sample's cell ``cells[b]`` (``block`` voxels a side) enlarged trilinearly
    to ``size`` voxels a side (MiM's level-2 input)."""
    grid = [s // block for s in x.shape[2:]]
    crops = []
    for b, cell in enumerate(cells.tolist()):
        corner = [block * int(i) for i in torch.unravel_index(torch.tensor(cell), grid)]
        crop = x[b:b + 1, :, corner[0]:corner[0] + block, corner[1]:corner[1] + block, corner[2]:corner[2] + block]
        crops.append(F.interpolate(crop, size=(size,) * 3, mode="trilinear", align_corners=False))
    return torch.cat(crops)


def cell_features(features: torch.Tensor, block: int) -> torch.Tensor:
    """[B, N, C]: the mean of full-resolution ``features`` [B, C, *patch] over each ``block``-sided cell, cells
    in the C order ``hidden_cells`` and ``zoom_into_cells`` number them by."""
    grid = tuple(s // block for s in features.shape[2:])
    return F.adaptive_avg_pool3d(features, grid).flatten(2).transpose(1, 2)


def cell_alignment_loss(child: torch.Tensor, parent_cells: torch.Tensor, cells: torch.Tensor,
                        candidates: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over level 1's HIDDEN cells: ``child`` [B, D] (level 2's pooled features) should be nearest, in
    cosine, to ``parent_cells`` [B, N, D] at index ``cells`` [B] (the cell it shows) among the cells
    ``candidates`` [B, N] (bool) marks. The candidates are the cells level 1 hid: the right one always is, and
    level 1's features there come from mask tokens, so against every cell "hidden or not" alone would score.
    Returns the loss and the share of samples whose nearest candidate is the right one (chance 1/candidates)."""
    logits = torch.einsum("bd,bnd->bn", F.normalize(child, dim=1), F.normalize(parent_cells, dim=2)) / temperature
    logits = logits.masked_fill(~candidates, float("-inf"))
    return F.cross_entropy(logits, cells), (logits.argmax(1) == cells).float().mean()


def hidden_cell_mask(visible: torch.Tensor, block: int) -> torch.Tensor:
    """[B, N] bool: which cells ``visible`` hides (C order)."""
    grid = tuple(s // block for s in visible.shape[2:])
    return F.adaptive_max_pool3d(1.0 - visible, grid).flatten(1) > 0.5


class MaskedPretrainingParts(nn.Module):
    """What masked pretraining adds to a WaveFormer: one mask token per encoder level, the reconstruction head,
    and for MiM the alignment projector (MiM's 2-layer GELU MLP). Kept as ``masked_pretraining.*`` keys, which
    the plain network does not have."""

    def __init__(self, dims: Sequence[int], alignment: bool = False):
        super().__init__()
        self.level_tokens = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in dims)
        self.reconstruction = PointwiseConv3d(dims[0], 1)
        self.alignment = nn.Sequential(nn.Linear(dims[0], dims[0]), nn.GELU(), nn.Linear(dims[0], dims[0])) \
            if alignment else None


def masked_reconstruction_loss(reconstruction: torch.Tensor, image: torch.Tensor, visible: torch.Tensor
                               ) -> torch.Tensor:
    """Mean squared error over the HIDDEN voxels only ([B, 1, ...] each; visible voxels count for nothing)."""
    hidden = 1.0 - visible
    return (((reconstruction - image) ** 2) * hidden).sum() / hidden.sum().clamp_min(1.0)


class MaskedWaveFormer(WaveFormer):
    """WaveFormer with the parts masked pretraining needs (``masked_pretraining``); ``forward`` is WaveFormer's,
    :meth:`reconstruct` the pretraining pass."""

    def __init__(self, input_channels: int = 1, num_classes: int = 14, deep_supervision: bool = False,
                 alignment: bool = False, **kwargs):
        super().__init__(input_channels, num_classes, deep_supervision, **kwargs)
        dims = [self.stem[0].out_channels, *[down.mix[0].out_channels for down in self.downs]]
        self.masked_pretraining = MaskedPretrainingParts(dims, alignment)

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None, return_aux: bool = False,
                visible: torch.Tensor | None = None, return_features: bool = False):
        """WaveFormer's forward; with ``visible``, the pretraining pass (under DDP it must go through forward)."""
        if visible is not None:
            return self.reconstruct(x, visible, metadata, return_features)
        return super().forward(x, metadata, return_aux)

    def encoder_modules(self) -> list[nn.Module]:
        """The encoder's modules whose convolutions and norms are made sparse (AKOrN's region grid is not)."""
        return [self.stem, *self.downs, *[block.mlp for stage in self.stages for block in stage]]

    def reconstruct(self, x: torch.Tensor, visible: torch.Tensor, metadata: torch.Tensor | None = None,
                    return_features: bool = False):
        """[B, 1, *shape]: the image channel as the network fills it in from the ``visible`` voxels (and, with
        ``return_features``, the decoder's full-resolution features it is read from)."""
        parts = self.masked_pretraining
        x = x * visible  # the hidden image is gone before anything sees it
        with sparse_encoder(self.encoder_modules(), visible):
            skips, highs, _ = self.encode(x, metadata)
        dense = []
        for skip, level_token in zip(skips, parts.level_tokens):
            v = visibility_at(visible, skip.shape[2:])
            dense.append(skip * v + level_token.view(1, -1, 1, 1, 1).to(skip.dtype) * (1 - v))
        _, features = self.decoder(dense, highs)
        reconstruction = parts.reconstruction(features[0])
        return (reconstruction, features[0]) if return_features else reconstruction


def mask_in_mask_loss(network: nn.Module, data: torch.Tensor, metadata: torch.Tensor, generator: torch.Generator,
                      block: int = 16, mask_ratios: tuple[float, float] = (0.5, 0.6), alignment_weight: float = 0.1,
                      temperature: float = 0.1, projector: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
    """MiM's loss for one batch ``data`` [B, C, *patch] (channel 0 the image): both levels' hidden-voxel
    reconstruction + ``alignment_weight`` x the cross-level alignment. ``network`` is a MaskedWaveFormer built
    with ``alignment`` (or the DDP module around one: its forward is called; ``projector`` is then the plain
    network's ``masked_pretraining.alignment``). Also returns the terms as floats for the log."""
    projector = projector if projector is not None else network.masked_pretraining.alignment
    size = min(data.shape[2:])
    if size < 2 * block:
        raise ValueError(f"MiM's level 2 needs a patch of at least {2 * block} voxels a side, not {size}")
    visible = block_visibility(len(data), data.shape[2:], block, mask_ratios[0], generator).to(data.device)
    reconstruction, parent = network(data, metadata=metadata, visible=visible, return_features=True)
    cells = hidden_cells(visible, block, generator)
    zoomed = zoom_into_cells(data, cells, block, size)
    visible2 = block_visibility(len(data), zoomed.shape[2:], block, mask_ratios[1], generator).to(data.device)
    reconstruction2, child = network(zoomed, metadata=metadata, visible=visible2, return_features=True)
    parent_cells = cell_features(parent.detach(), block)  # MiM: the parent is the target
    alignment, accuracy = cell_alignment_loss(projector(child.mean((2, 3, 4))), projector(parent_cells), cells,
                                              hidden_cell_mask(visible, block), temperature)
    level1 = masked_reconstruction_loss(reconstruction, data[:, :1], visible)
    level2 = masked_reconstruction_loss(reconstruction2, zoomed[:, :1], visible2)
    parts = {"loss_level1": float(level1.detach()), "loss_level2": float(level2.detach()),
             "loss_alignment": float(alignment.detach()), "alignment_accuracy": float(accuracy)}
    return level1 + level2 + alignment_weight * alignment, parts
