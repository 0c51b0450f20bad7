"""nnU-Net's training augmentation, told which of stage 2's channels are labels and which intensities."""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_aneurysm.trainers.augmentation import OnChannels, for_mixed_channels


def _transforms(rewrite: bool):
    transforms = nnUNetTrainer.get_training_transforms(
        (32, 32, 32), (-0.5, 0.5), None, None, False, use_mask_for_norm=[False, False, False],
        foreground_labels=[1, 2])
    return for_mixed_channels(transforms, [2], [0]) if rewrite else transforms


def _sample(rng):
    image = torch.from_numpy(rng.normal(size=(3, 32, 32, 32)).astype(np.float32))
    image[1] = 0.7  # a probability channel
    image[2] = 0.0
    image[2, 8:24, 8:16] = 5  # two artery labels side by side
    image[2, 8:24, 16:24] = 7
    seg = torch.zeros(1, 32, 32, 32, dtype=torch.int16)
    seg[0, 12:20, 12:20, 12:20] = 1
    return {"image": image, "segmentation": seg}


def _augment_many(rewrite: bool, n: int = 40):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    transforms = _transforms(rewrite)
    return [transforms(**_sample(rng)) for _ in range(n)]


def test_label_channels_stay_labels_and_probabilities_are_only_moved():
    for out in _augment_many(rewrite=True):
        labels, probability = out["image"][2], out["image"][1]
        assert set(torch.unique(labels).tolist()) <= {0.0, 5.0, 7.0}  # resampled as labels: never a 6
        assert probability.max() <= 0.7 + 1e-5 and probability.min() >= -1e-6  # no noise, gamma, brightness
        assert out["image"].shape == (3, 32, 32, 32) and out["segmentation"].shape == (1, 32, 32, 32)


def test_nnunets_own_augmentation_would_change_them():
    """Unchanged, nnU-Net 2.8.1 interpolates the label channel and intensity-augments the probability."""
    outs = _augment_many(rewrite=False)
    bad_labels = any(not set(torch.unique(o["image"][2]).tolist()) <= {0.0, 5.0, 7.0} for o in outs)
    bad_probability = any(o["image"][1].max() > 0.7 + 1e-3 or o["image"][1].min() < -1e-3 for o in outs)
    assert bad_labels and bad_probability


def test_every_intensity_transform_is_limited_to_the_image():
    rewritten = _transforms(rewrite=True).transforms
    wrapped = [t for t in rewritten if isinstance(t, OnChannels)]
    assert len(wrapped) == 7 and all(t.channels == [0] for t in wrapped)
