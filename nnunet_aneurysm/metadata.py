"""Series metadata (age, sex, modality) as the vector the networks' FiLM layers take.

The converter writes ``metadata.csv`` beside each raw dataset (one row per case); trainers and
inference read it here and look rows up by case id. A case without a row is not silently
zero-filled: :class:`MetadataTable` counts every miss so trainers can report them per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_aneurysm.labels import MODALITIES, SUBMISSION_COLUMNS

METADATA_COLUMNS = ("PatientAge", "PatientSex", "Modality")
# age / 100, female, male, one-hot modality (CSV spelling of labels.MODALITIES)
METADATA_DIM = 3 + len(MODALITIES)


# How arteries look against their surroundings: bright on CTA, TOF-MRA and contrast T1, dark flow voids on T2
VESSEL_POLARITY = {"CTA": 1.0, "MRA": 1.0, "MRI T2": -1.0, "MRI T1post": 1.0}


def polarity_gain_weights() -> list[float]:
    """Weights ``w`` [METADATA_DIM] such that ``1 + w . encode_metadata(...)`` is the modality's vessel
    polarity (+1, or -1 for T2) and 1 where the modality is unknown: stage 1's initial input gain."""
    weights = [0.0] * METADATA_DIM
    for i, modality in enumerate(MODALITIES):
        weights[3 + i] = VESSEL_POLARITY[modality] - 1.0
    return weights


def metadata_from_header(header: dict[str, str]) -> tuple[float | None, str | None, str | None]:
    """(age in years, 'Female'/'Male', modality as train.csv spells it) from a series' DICOM header.

    Inference sees DICOM only (the competition's test series come without train.csv): the modality
    is read from the Modality tag (CT -> CTA) and, for MR, from SeriesDescription (TOF/MRA/angio ->
    MRA, T2 -> MRI T2, T1 -> MRI T1post); what cannot be told is None (encoded as zeros).
    """
    age_text = header.get("PatientAge", "")
    age = float(age_text[:-1]) if age_text[:-1].isdigit() and age_text.endswith("Y") else None
    sex = {"F": "Female", "M": "Male"}.get(header.get("PatientSex", ""))
    description = header.get("SeriesDescription", "").upper()
    modality = None
    if header.get("Modality") == "CT":
        modality = "CTA"
    elif header.get("Modality") == "MR":
        if any(word in description for word in ("TOF", "MRA", "ANGIO")):
            modality = "MRA"
        elif "T2" in description:
            modality = "MRI T2"
        elif "T1" in description:
            modality = "MRI T1post"
    return age, sex, modality


def encode_metadata(age: float | None, sex: str | None, modality: str | None) -> np.ndarray:
    """One series' vector [METADATA_DIM] float32; an unknown field encodes as zeros."""
    vec = np.zeros(METADATA_DIM, np.float32)
    if age is not None and np.isfinite(float(age)):
        vec[0] = float(age) / 100.0
    vec[1], vec[2] = float(sex == "Female"), float(sex == "Male")
    if modality in MODALITIES:
        vec[3 + MODALITIES.index(modality)] = 1.0
    return vec


class MetadataTable:
    """case id -> metadata vector, with a count of look-ups that found no row."""

    def __init__(self, vectors: dict[str, np.ndarray] | None = None):
        self.vectors = dict(vectors or {})
        self.missing = 0

    @classmethod
    def read(cls, path: Path | str) -> MetadataTable:
        """From the converter's ``metadata.csv`` or any table with ``case_id`` and the metadata columns."""
        table = pd.read_csv(path, dtype={"case_id": str})
        absent = {"case_id", *METADATA_COLUMNS} - set(table.columns)
        if absent:
            raise ValueError(f"{path} lacks the columns {sorted(absent)}")
        return cls({row.case_id: encode_metadata(row.PatientAge, row.PatientSex, row.Modality)
                    for row in table.itertuples()})

    def __len__(self) -> int:
        return len(self.vectors)

    def lookup(self, case_ids: Iterable[str]) -> np.ndarray:
        """[len(case_ids), METADATA_DIM]; rows of unknown cases are zeros and counted in ``missing``."""
        rows = []
        for case in case_ids:
            vector = self.vectors.get(str(case))
            if vector is None:
                self.missing += 1
                vector = np.zeros(METADATA_DIM, np.float32)
            rows.append(vector)
        return np.stack(rows) if rows else np.zeros((0, METADATA_DIM), np.float32)

    def take_missing(self) -> int:
        """Misses since the last call (a trainer reports them once per epoch)."""
        count, self.missing = self.missing, 0
        return count


def read_modalities(path: Path | str) -> dict[str, str]:
    """case id -> modality as train.csv spells it, from ``metadata.csv`` (an empty cell is left out)."""
    table = pd.read_csv(path, dtype={"case_id": str})
    if {"case_id", "Modality"} - set(table.columns):
        raise ValueError(f"{path} lacks the columns case_id and Modality")
    return {row.case_id: row.Modality for row in table.itertuples() if isinstance(row.Modality, str)}


def modality_groups(modalities: Sequence[str | None]) -> pd.Series:
    """Each case's modality, "unknown" where there is none (one group of its own)."""
    return pd.Series([m or "unknown" for m in modalities], dtype=object)


def modality_balanced_probabilities(modalities: Sequence[str | None]) -> np.ndarray:
    """Sampling probability of each case such that every modality is drawn equally often.

    Why: a rare modality whose vessels look different (dark flow voids on T2, a single T1post
    case in a fold) is otherwise drawn too seldom to be learnt in a short schedule.
    """
    groups = modality_groups(modalities)
    weights = 1.0 / groups.map(groups.value_counts()).to_numpy(float)
    return weights / weights.sum()


def read_series_targets(path: Path | str) -> dict[str, np.ndarray]:
    """case id -> the series' 14 labels in submission column order (float32 0/1), from ``metadata.csv``."""
    table = pd.read_csv(path, dtype={"case_id": str})
    absent = {"case_id", *SUBMISSION_COLUMNS} - set(table.columns)
    if absent:
        raise ValueError(f"{path} lacks the columns {sorted(absent)}")
    values = table[list(SUBMISSION_COLUMNS)].to_numpy(np.float32)
    return dict(zip(table["case_id"], values))
