"""Stage 1's recall-first operating point: the vessel-probability threshold of the union vessel mask,
chosen on out-of-fold predictions of training cases with vessel labels.

Why: stage 1 is trained recall first (Tversky), but 0.5 on its probability is still a symmetric
choice. The threshold that maximises F-beta with beta = 2 (recall weighed four times precision in
the harmonic mean) is the recall-first operating point the seed asks for; choosing it on
out-of-fold predictions keeps every held-out and every training-case input honest, like nnU-Net's
cascade. The mask at that threshold places the ROI, labels the arteries stage 2 reads and measures
the vessel volume.

Counts are kept per probability bin (``BINS`` equal bins on [0, 1]), so any number of scans is
summarised in two short vectors and every candidate threshold is a bin edge.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nnunet_aneurysm.roi import RoiSettings

BINS = 100
BETA = 2.0  # recall first
OPERATING_POINT_FILE = "vessel_operating_point.json"


@dataclass
class VesselCounts:
    """Voxels of true vessel and of background per probability bin, summed over scans."""

    vessel: np.ndarray
    background: np.ndarray
    scans: int = 0

    @classmethod
    def empty(cls) -> VesselCounts:
        return cls(np.zeros(BINS, np.int64), np.zeros(BINS, np.int64))

    def add(self, probability: np.ndarray, truth: np.ndarray) -> None:
        """One scan: ``probability`` of vessel and the ``truth`` mask, on the same grid."""
        if probability.shape != truth.shape:
            raise ValueError(f"probability {probability.shape} and vessel labels {truth.shape} differ in shape")
        bins = np.clip((np.asarray(probability, np.float64) * BINS).astype(np.int64), 0, BINS - 1)
        truth = np.asarray(truth, bool)
        self.vessel += np.bincount(bins[truth], minlength=BINS)
        self.background += np.bincount(bins[~truth], minlength=BINS)
        self.scans += 1

    def at(self, threshold: float) -> dict:
        """Recall, precision and Dice of ``probability >= threshold`` (``threshold`` a bin edge)."""
        edge = int(round(threshold * BINS))
        tp, fp = int(self.vessel[edge:].sum()), int(self.background[edge:].sum())
        fn = int(self.vessel[:edge].sum())
        return {"threshold": edge / BINS, "recall": tp / max(tp + fn, 1), "precision": tp / max(tp + fp, 1),
                "dice": 2 * tp / max(2 * tp + fp + fn, 1)}


def choose_threshold(counts: VesselCounts, beta: float = BETA) -> float:
    """The bin edge in (0, 1) that maximises F-beta of the union mask (the highest one on ties)."""
    if counts.vessel.sum() == 0:
        raise ValueError("no vessel voxel in the scans counted: cannot choose a vessel threshold")
    tp = np.cumsum(counts.vessel[::-1])[::-1][1:]  # voxels at or above edge k = 1 .. BINS - 1
    fp = np.cumsum(counts.background[::-1])[::-1][1:]
    fn = counts.vessel.sum() - tp
    score = (1 + beta**2) * tp / np.maximum((1 + beta**2) * tp + beta**2 * fn + fp, 1)
    best = len(score) - 1 - int(np.argmax(score[::-1]))
    return (best + 1) / BINS


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    beta: float
    scans: int
    chosen: dict  # recall, precision, Dice at the threshold (out-of-fold)
    at_half: dict  # the same at 0.5, for comparison
    vessel_counts: tuple[int, ...]  # VesselCounts per bin, kept for the report's curves
    background_counts: tuple[int, ...]

    @classmethod
    def from_counts(cls, counts: VesselCounts, beta: float = BETA) -> OperatingPoint:
        threshold = choose_threshold(counts, beta)
        return cls(threshold, beta, counts.scans, counts.at(threshold), counts.at(0.5),
                   tuple(map(int, counts.vessel)), tuple(map(int, counts.background)))

    def counts(self) -> VesselCounts:
        return VesselCounts(np.array(self.vessel_counts, np.int64), np.array(self.background_counts, np.int64),
                            self.scans)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / OPERATING_POINT_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def read(cls, folder: Path) -> OperatingPoint | None:
        path = Path(folder) / OPERATING_POINT_FILE
        if not path.is_file():
            return None
        fields = json.loads(path.read_text())
        return cls(**{**fields, "vessel_counts": tuple(fields["vessel_counts"]),
                      "background_counts": tuple(fields["background_counts"])})

    def describe(self) -> str:
        return (f"vessel threshold {self.threshold:.2f} (F{self.beta:g}, out-of-fold, {self.scans} scans): recall "
                f"{self.chosen['recall']:.3f}, Dice {self.chosen['dice']:.3f}; at 0.5: recall "
                f"{self.at_half['recall']:.3f}, Dice {self.at_half['dice']:.3f}")


def vessel_threshold_of(stage2_raw: Path) -> float:
    """The vessel threshold a stage-2 ROI dataset was written with."""
    point = OperatingPoint.read(stage2_raw)
    return point.threshold if point else RoiSettings.vessel_threshold  # written before the choice existed
