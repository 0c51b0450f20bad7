"""Splitting work over machines as ``nnUNetv2_predict -num_parts N -part_id K`` does, and merging the parts back.

Part K of N takes items K, K + N, K + 2N, ... of the sorted work list, so N jobs (a cluster's job array, or N
processes on one machine, each sized by ``resources.py``) together do every item exactly once. The merge
refuses an item found in two parts or missing from all of them: a part that died is named, not papered over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nnunet_aneurysm.labels import ID_COLUMN


def write_whole(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes as they are) to ``path`` under a temporary name, then rename it
    into place: two parts finishing at once (each completes the dataset) and a reader never see half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(partial, path)


def check_part(num_parts: int, part_id: int) -> None:
    """One-line ValueError for a part that does not exist."""
    if num_parts < 1:
        raise ValueError(f"-num_parts must be at least 1, not {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"-part_id must lie in 0..{num_parts - 1} for -num_parts {num_parts}, not {part_id}")


def part_of(items: Sequence, num_parts: int = 1, part_id: int = 0) -> list:
    """Items ``part_id``, ``part_id + num_parts``, ... of ``items`` (nnU-Net's split)."""
    check_part(num_parts, part_id)
    return list(items)[part_id::num_parts]


def merge_submissions(parts: Sequence[Path], output: Path, expected_folders: Sequence[Path] | None = None
                      ) -> pd.DataFrame:
    """The parts' submissions (and their ``_log.csv`` and ``_features.csv``) as one; a series in two parts, a
    part without its log, or an expected series folder in no part's log is a one-line ValueError."""
    tables, logs, features = [], [], []
    for part in map(Path, parts):
        log = part.with_name(part.stem + "_log.csv")
        if not part.is_file() or not log.is_file():
            raise ValueError(f"{part if not part.is_file() else log} does not exist: did that part finish?")
        tables.append(pd.read_csv(part, dtype={ID_COLUMN: str}))
        logs.append(pd.read_csv(log, dtype={ID_COLUMN: str}))
        extra = part.with_name(part.stem + "_features.csv")
        if extra.is_file():
            features.append(pd.read_csv(extra, dtype={ID_COLUMN: str}))
    submission, log = pd.concat(tables, ignore_index=True), pd.concat(logs, ignore_index=True)
    twice = submission[ID_COLUMN][submission[ID_COLUMN].duplicated()].tolist()
    if twice:
        raise ValueError(f"{len(twice)} series are in more than one part (e.g. {twice[0]}): merge each part once")
    if expected_folders is not None:
        seen = {str(Path(f).resolve()) for f in log["folder"]}
        missing = [str(f) for f in expected_folders if str(Path(f).resolve()) not in seen]
        if missing:
            raise ValueError(f"{len(missing)} series folders are in no part (e.g. {missing[0]}): run the missing "
                             f"part(s) again with --continue")
    output.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(output, index=False)
    log.to_csv(output.with_name(output.stem + "_log.csv"), index=False)
    if features:
        pd.concat(features, ignore_index=True).to_csv(output.with_name(output.stem + "_features.csv"), index=False)
    return submission
