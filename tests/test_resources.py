"""Workers sized from the free memory: never more than fit, never fewer than one, and saying so."""

from __future__ import annotations

from nnunet_aneurysm.resources import USABLE_SHARE, largest_series_voxels, workers_for_memory


def test_workers_are_capped_by_the_free_memory_and_the_cap_is_said():
    assert workers_for_memory(8, 1e9, available=100e9) == (8, "")
    workers, reason = workers_for_memory(8, 2e9, available=10e9)
    assert workers == int(USABLE_SHARE * 10e9 // 2e9) == 4 and "4 worker(s) instead of 8" in reason
    assert workers_for_memory(4, 50e9, available=10e9)[0] == 1  # one, even when one does not fit


def test_the_largest_series_is_found_from_file_sizes(tmp_path):
    for name, sizes in (("a", [1000, 1000]), ("b", [5000, 3000, 2000])):
        (tmp_path / name).mkdir()
        for i, size in enumerate(sizes):
            (tmp_path / name / f"{i}.dcm").write_bytes(b"\0" * size)
    assert largest_series_voxels([tmp_path / "a", tmp_path / "b", tmp_path / "missing"]) == 5000
