"""Work split as nnUNetv2_predict -num_parts / -part_id splits it, and merged back exactly once."""

from __future__ import annotations

import pandas as pd
import pytest

from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.parts import merge_submissions, part_of


def test_the_parts_cover_every_item_exactly_once():
    items = [f"s{i}" for i in range(11)]
    parts = [part_of(items, 3, k) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(items) and parts[1] == ["s1", "s4", "s7", "s10"]
    with pytest.raises(ValueError, match="-part_id must lie in 0..2"):
        part_of(items, 3, 3)


def _part(folder, stem: str, uids: list[str]):
    submission = pd.DataFrame({ID_COLUMN: uids, **{c: 0.5 for c in SUBMISSION_COLUMNS}})
    submission.to_csv(folder / f"{stem}.csv", index=False)
    pd.DataFrame({ID_COLUMN: uids, "folder": [str(folder / u) for u in uids], "source": "stacker"}).to_csv(
        folder / f"{stem}_log.csv", index=False)
    return folder / f"{stem}.csv"


def test_merge_checks_every_series_is_there_exactly_once(tmp_path):
    for u in ("a", "b", "c"):
        (tmp_path / u).mkdir()
    parts = [_part(tmp_path, "p0", ["a", "c"]), _part(tmp_path, "p1", ["b"])]
    merged = merge_submissions(parts, tmp_path / "all.csv", [tmp_path / u for u in "abc"])
    assert sorted(merged[ID_COLUMN]) == ["a", "b", "c"] and (tmp_path / "all_log.csv").is_file()
    with pytest.raises(ValueError, match="in no part"):
        merge_submissions(parts[:1], tmp_path / "all.csv", [tmp_path / u for u in "abc"])
    with pytest.raises(ValueError, match="more than one part"):
        merge_submissions([parts[0], _part(tmp_path, "p2", ["c"])], tmp_path / "all.csv")
    with pytest.raises(ValueError, match="did that part finish"):
        merge_submissions([tmp_path / "p9.csv"], tmp_path / "all.csv")


def test_a_part_without_series_writes_its_header_and_merges(tmp_path):
    """More parts than series: the empty part still leaves its (header-only) submission and log, so the merge
    can tell a part that had nothing to do from one that died."""
    from nnunet_aneurysm.inference.submission import predict_series

    summary = predict_series(None, [], tmp_path / "p1.csv", progress=False)  # no series: the model is never called
    assert summary.total == 0 and summary.systemic_failure() is None
    assert pd.read_csv(tmp_path / "p1.csv").columns.tolist() == [ID_COLUMN, *SUBMISSION_COLUMNS]
    (tmp_path / "a").mkdir()
    merged = merge_submissions([_part(tmp_path, "p0", ["a"]), tmp_path / "p1.csv"], tmp_path / "all.csv",
                               [tmp_path / "a"])
    assert merged[ID_COLUMN].tolist() == ["a"]
