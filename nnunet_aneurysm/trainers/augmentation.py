"""nnU-Net's augmentation for inputs that are not all intensities.

Stage 2's input holds the image, a probability and a label map (``stages.STAGE2_CHANNELS``).
nnU-Net 2.8.1 augments every input channel alike: its spatial transform interpolates them
linearly (an artery label between 5 and 7 would become 6, another artery) and its noise, blur,
brightness, contrast, low-resolution and gamma transforms change their values. So:

* label channels travel through the spatial transform as extra segmentation channels, which
  it resamples label by label, and come back to the image afterwards;
* the intensity transforms see the intensity channels only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

INTENSITY_TRANSFORMS = ("GaussianNoiseTransform", "GaussianBlurTransform", "MultiplicativeBrightnessTransform",
                        "ContrastTransform", "SimulateLowResolutionTransform", "GammaTransform")


class LabelChannelsToSegmentation(BasicTransform):
    """Move image channels ``channels`` (class ids) behind the segmentation's channels."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.channels = list(channels)

    def apply(self, data_dict, **params):
        image, seg = data_dict["image"], data_dict["segmentation"]
        keep = [c for c in range(image.shape[0]) if c not in self.channels]
        data_dict["segmentation"] = torch.cat([seg, image[self.channels].round().to(seg.dtype)])
        data_dict["image"] = image[keep]
        return data_dict


class LabelChannelsToImage(BasicTransform):
    """Undo :class:`LabelChannelsToSegmentation` after the spatial transform (padding labels become 0)."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.channels = list(channels)

    def apply(self, data_dict, **params):
        image, seg = data_dict["image"], data_dict["segmentation"]
        n = len(self.channels)
        labels = seg[-n:].to(image.dtype).clamp(min=0)
        out = [None] * (image.shape[0] + n)
        others = iter(image)
        for c in range(len(out)):
            out[c] = labels[self.channels.index(c)] if c in self.channels else next(others)
        data_dict["image"], data_dict["segmentation"] = torch.stack(out), seg[:-n]
        return data_dict


class OnChannels(BasicTransform):
    """Apply ``transform`` to the image channels ``channels`` only."""

    def __init__(self, transform: BasicTransform, channels: Sequence[int]):
        super().__init__()
        self.transform, self.channels = transform, list(channels)

    def apply(self, data_dict, **params):
        image = data_dict["image"]
        part = self.transform(image=image[self.channels].clone())["image"]
        image = image.clone()
        image[self.channels] = part
        data_dict["image"] = image
        return data_dict


def _name(transform: BasicTransform) -> str:
    inner = transform.transform if isinstance(transform, RandomTransform) else transform
    return type(inner).__name__


def for_mixed_channels(transforms: ComposeTransforms, label_channels: Sequence[int],
                       intensity_channels: Sequence[int]) -> ComposeTransforms:
    """nnU-Net's training transforms rewritten so label channels are resampled as labels and only
    ``intensity_channels`` are intensity-augmented."""
    out = []
    for transform in transforms.transforms:
        if isinstance(transform, SpatialTransform) and label_channels:
            out += [LabelChannelsToSegmentation(label_channels), transform, LabelChannelsToImage(label_channels)]
        elif _name(transform) in INTENSITY_TRANSFORMS:
            out.append(OnChannels(transform, intensity_channels))
        else:
            out.append(transform)
    missing = set(INTENSITY_TRANSFORMS) - {_name(t) for t in transforms.transforms}
    if missing or not any(isinstance(t, SpatialTransform) for t in transforms.transforms):
        raise RuntimeError(f"nnU-Net's training transforms changed (missing {sorted(missing)} or the spatial "
                           "transform): review trainers/augmentation.py")
    return ComposeTransforms(out)
