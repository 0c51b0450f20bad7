"""The names our pipeline uses in nnU-Net's world, each defined once: datasets, file ending,
planner / plans / trainer of each stage, and the input channels of stage 2.

Anything that builds a dataset folder name, a ``-tr``/``-p`` argument or a channel index reads it
here (cli, demo, inference, tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

FILE_ENDING = ".nii.gz"  # of every image and label file we write for nnU-Net


@dataclass(frozen=True)
class Stage:
    """What a user types for one stage: ``nnunet-aneurysm plan --planner``, ``-p``, ``-tr``."""

    planner: str
    plans: str
    trainer: str


STAGE1 = Stage("SegFormer3DPlanner", "AneurysmSegFormer3DPlans", "AneurysmSegFormer3DTrainer")
STAGE2 = Stage("WaveFormerPlanner", "AneurysmWaveFormerPlans", "AneurysmWaveFormerTrainer")
# nnU-Net's own trainer and network on our plans' schedule: the baseline of benchmarks and ablations
BASELINE_TRAINER = "AneurysmScheduledNNUNetTrainer"
CPU_CONFIGURATION = "3d_cpu"

VESSELS_NAME = "RSNAVessels"
ANEURYSMS_NAME = "RSNAAneurysms"
STAGE2_SUFFIX = "ROI"

# Stage 2's input channels, in nnU-Net's channel order (``_0000``, ``_0001``...): the image, then
# stage 1's out-of-fold output, all on the region-of-interest grid (``roi.py``). Channels after
# the image are never intensity-normalised (nor intensity-augmented: see the stage-2 trainer).
STAGE2_CHANNELS: tuple[tuple[str, str], ...] = (
    ("image", "image"),
    ("vessel_probability", "noNorm"),  # stage 1's P(any artery)
    ("artery_labels", "noNorm"),  # stage 1's class id per voxel (0 = no vessel)
)
VESSEL_CHANNEL = 1
ARTERY_CHANNEL = 2
CHANNELS_KEY = "nnunet_aneurysm_channels"  # dataset.json entry naming the channels (nnU-Net ignores it)
ROI_FILE = "roi.csv"  # beside stage 2's raw dataset: where each case's ROI lies in its scan


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, e.g. ``Dataset101_RSNAVessels``."""
    return f"Dataset{dataset_id:03d}_{name}"


def stage2_dataset_name(dataset_id: int, aneurysms_dataset: str) -> str:
    """The stage-2 dataset derived from an aneurysm dataset: ``Dataset103_RSNAAneurysmsROI``."""
    return dataset_name(dataset_id, aneurysms_dataset.split("_", 1)[1] + STAGE2_SUFFIX)


def stage2_dataset_json_entries() -> dict:
    """What stage 2's ``dataset.json`` says of its channels: nnU-Net's normalisation per channel, our names."""
    return {"channel_names": {str(i): normalisation for i, (_, normalisation) in enumerate(STAGE2_CHANNELS)},
            CHANNELS_KEY: [name for name, _ in STAGE2_CHANNELS]}


def channel_file(case_id: str, channel: int) -> str:
    """nnU-Net's image file name of one channel of a case."""
    return f"{case_id}_{channel:04d}{FILE_ENDING}"
