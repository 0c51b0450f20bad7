"""Workers sized from the free memory: never more than fit, never fewer than one, and saying so."""

from __future__ import annotations

from nnunet_aneurysm.resources import USABLE_SHARE, largest_series_voxels, workers_for_memory


def test_workers_are_capped_by_the_free_memory_and_the_cap_is_said():
    assert workers_for_memory(8, 1e9, available=100e9) == (8, "")
    workers, reason = workers_for_memory(8, 2e9, available=10e9)
    assert workers == int(USABLE_SHARE * 10e9 // 2e9) == 4 and "4 worker(s) instead of 8" in reason
    assert workers_for_memory(4, 50e9, available=10e9)[0] == 1  # one, even when one does not fit


def _dicom(path, rows: int, columns: int, frames: int | None = None) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = rows, columns
    if frames:
        ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)


def test_the_largest_series_is_found_from_its_headers(tmp_path):
    """Rows x Columns x frames x files, read from one header (a compressed series' file sizes would understate
    it); folders without DICOM count for nothing."""
    for name, files, frames in (("a", 3, None), ("b", 1, 40), ("c", 0, None)):
        (tmp_path / name).mkdir()
        for i in range(files):
            _dicom(tmp_path / name / f"{i}.dcm", 64, 32, frames)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not DICOM")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0" * 10)  # sorts first, is no DICOM, counts for nothing
    folders = [tmp_path / n for n in ("a", "b", "c", "junk", "missing")]
    assert largest_series_voxels(folders) == 64 * 32 * 40
    assert largest_series_voxels(folders[:1]) == 64 * 32 * 3
