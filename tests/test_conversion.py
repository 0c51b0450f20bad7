"""The converter against independent readers, the localizer round trip, nnU-Net's integrity check,
and damaged input that must end up in the report instead of a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_aneurysm.dataset_conversion.convert import convert, dataset_folders
from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
from nnunet_aneurysm.dataset_conversion.localizers import localizer_to_patient
from nnunet_aneurysm.dataset_conversion.synthetic import ORIENTATIONS, generate
from nnunet_aneurysm.labels import TRAIN_CSV_COLUMNS

DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
FORCED = [{"modality": m, "orientation": o, "multiframe": mf, "n_aneurysms": 1 + i % 2}
          for i, (o, mf, m) in enumerate((o, mf, m) for o in ORIENTATIONS for mf in (False, True)
                                          for m in (("CTA",) if mf else ("MRA",)))]


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    truths = generate(root, len(FORCED), seed=3, size=48, segmentation_fraction=1.0, progress=False, forced=FORCED)
    return root, {t.series_uid: t for t in truths}


@pytest.fixture(scope="module")
def converted(rsna, tmp_path_factory):
    root, _ = rsna
    raw = tmp_path_factory.mktemp("raw")
    report = convert(root, 801, 802, raw=raw, workers=2, progress=False)
    return raw, report


def _same_world_grid(reference: sitk.Image, other: sitk.Image) -> np.ndarray:
    """``other`` sampled at the voxel centres of ``reference`` (nearest neighbour, -9999 outside)."""
    resampled = sitk.Resample(sitk.Cast(other, sitk.sitkFloat32), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, -9999.0)
    return sitk.GetArrayFromImage(resampled)


def _ours(raw: Path, uid: str) -> sitk.Image:
    _, aneurysms = dataset_folders(raw, 801, 802)
    return sitk.ReadImage(str(aneurysms / "imagesTr" / f"{uid}_0000.nii.gz"))


def test_all_synthetic_series_convert_cleanly(converted, rsna):
    _, report = converted
    assert (report["status"] == "ok").all(), report[["status", "reason"]]
    assert report["has_vessel_labels"].all()
    assert (report["warnings"].fillna("") == "").all()


def test_geometry_matches_simpleitk_series_reader(converted, rsna):
    raw, _ = converted
    root, truths = rsna
    checked = 0
    for uid, truth in truths.items():
        if truth.multiframe:
            continue  # SimpleITK misplaces frames of enhanced multi-frame files (shared/docs/rsna-data.md)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(root / "series" / uid)))
        reference = reader.Execute()
        ours = _ours(raw, uid)
        resampled = _same_world_grid(ours, reference)
        np.testing.assert_array_equal(resampled, sitk.GetArrayFromImage(ours))
        checked += 1
    assert checked == len(ORIENTATIONS)


@pytest.mark.skipif(not DCM2NIIX.exists(), reason="dcm2niix is a test dependency (pip install .[test])")
def test_geometry_matches_dcm2niix_single_and_multiframe(converted, rsna, tmp_path):
    raw, _ = converted
    root, truths = rsna
    for uid, truth in truths.items():
        out = tmp_path / uid
        out.mkdir()
        subprocess.run([str(DCM2NIIX), "-z", "n", "-b", "n", "-f", "img", "-o", str(out),
                        str(root / "series" / uid)], check=True, capture_output=True)
        (nifti,) = out.glob("img*.nii")
        reference = sitk.ReadImage(str(nifti))
        ours = _ours(raw, uid)
        resampled = _same_world_grid(ours, reference)
        np.testing.assert_allclose(resampled, sitk.GetArrayFromImage(ours), atol=1e-3,
                                   err_msg=f"{truth.orientation} multiframe={truth.multiframe}")


def test_voxels_match_highdicom_single_and_multiframe(rsna):
    """highdicom (the DICOM standard's own volume model) places every voxel where our reader does.

    Compared in patient space: each of our voxel centres is looked up in highdicom's volume."""
    root, truths = rsna
    for uid, truth in truths.items():
        files = sorted((root / "series" / uid).iterdir())
        if truth.multiframe:
            theirs = highdicom.imread(str(files[0])).get_volume()
        else:
            theirs = highdicom.get_volume_from_series([pydicom.dcmread(f) for f in files])
        ours = read_series(root / "series" / uid)
        voxels = np.argwhere(np.ones(ours.array.shape, bool)).astype(float)
        indices = np.round(theirs.map_reference_to_indices(ours.geometry.voxel_to_patient(voxels),
                                                           round_output=False)).astype(int)
        theirs_array = np.asarray(theirs.array, np.float32)
        assert np.all((indices >= 0) & (indices < theirs_array.shape)), f"{truth.orientation}: outside highdicom's"
        np.testing.assert_array_equal(ours.array[tuple(voxels.astype(int).T)], theirs_array[tuple(indices.T)],
                                      err_msg=f"{truth.orientation} multiframe={truth.multiframe}")


def test_localizers_round_trip_to_the_aneurysm_centre(rsna):
    root, truths = rsna
    localizers = pd.read_csv(root / "train_localizers.csv", dtype=str)
    n = 0
    for uid, truth in truths.items():
        volume = read_series(root / "series" / uid)
        rows = localizers[localizers["SeriesInstanceUID"] == uid]
        assert len(rows) == len(truth.aneurysms)
        for (_, row), aneurysm in zip(rows.iterrows(), truth.aneurysms):
            error = localizer_to_patient(volume, row["SOPInstanceUID"], row["coordinates"]) - aneurysm.centre
            g = volume.geometry
            per_axis = np.abs([error @ g.normal, error @ g.col_dir, error @ g.row_dir]) / np.array(g.spacing)
            assert np.all(per_axis <= 0.5 + 1e-6), per_axis  # within half a voxel on every axis
            n += 1
    assert n >= len(FORCED)


def test_sphere_labels_sit_on_the_aneurysms(converted, rsna):
    raw, _ = converted
    _, truths = rsna
    _, aneurysms = dataset_folders(raw, 801, 802)
    for uid, truth in truths.items():
        label = sitk.ReadImage(str(aneurysms / "labelsTr" / f"{uid}.nii.gz"))
        array = sitk.GetArrayFromImage(label)
        for aneurysm in truth.aneurysms:
            others = [a for a in truth.aneurysms if a is not aneurysm]
            if any(np.linalg.norm(a.centre - aneurysm.centre) < 8.0 for a in others):
                continue  # overlapping balls: the later one wins
            index = label.TransformPhysicalPointToIndex(tuple(float(v) for v in aneurysm.centre))
            assert array[index[::-1]] == aneurysm.class_id


def test_nnunet_accepts_both_datasets(converted):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw, _ = converted
    for folder in dataset_folders(raw, 801, 802):
        verify_dataset_integrity(str(folder), num_processes=1)
        metadata = pd.read_csv(folder / "metadata.csv")
        splits = json.loads((folder / "splits_final.json").read_text())
        assert len(splits) == 5
        assert sorted(sum((s["val"] for s in splits), [])) == sorted(metadata["case_id"])
        for column in TRAIN_CSV_COLUMNS[1:]:
            assert column in metadata.columns


def test_rerun_resumes_without_rewriting(rsna, converted):
    root, _ = rsna
    raw, _ = converted
    _, aneurysms = dataset_folders(raw, 801, 802)
    image = next((aneurysms / "imagesTr").glob("*.nii.gz"))
    before = image.stat().st_mtime_ns
    report = convert(root, 801, 802, raw=raw, workers=1, progress=False)
    assert (report["status"] == "resumed").all()
    assert image.stat().st_mtime_ns == before


# ---------------------------------------------------------------- damaged input

def _damaged_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Six synthetic single-frame series, five of them damaged, plus pydicom's odd test files."""
    root = tmp_path / "damaged"
    forced = [{"multiframe": False, "modality": "CTA"}] * 5 + [{"multiframe": True, "modality": "MRA"}]
    truths = generate(root, len(forced), seed=7, size=32, segmentation_fraction=1.0, progress=False, forced=forced)
    uid = [t.series_uid for t in truths]
    expected = {}

    files = sorted((root / "series" / uid[0]).iterdir())
    by_position = sorted(files, key=lambda f: np.dot(np.array(pydicom.dcmread(f).ImagePositionPatient, float),
                                                     truths[0].geometry.normal))
    by_position[len(by_position) // 2].unlink()
    expected[uid[0]] = "uneven slice spacing"

    for f in (root / "series" / uid[1]).iterdir():
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    expected[uid[1]] = "lacks PixelSpacing"

    seg = root / "segmentations" / f"{uid[2]}_cowseg.nii"
    sitk.WriteImage(sitk.Image(5, 6, 7, sitk.sitkUInt8), str(seg))
    expected[uid[2]] = "ok:does not match"

    scout = pydicom.dcmread(next((root / "series" / uid[3]).iterdir()))
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    scout.save_as(root / "series" / uid[3] / f"{scout.SOPInstanceUID}.dcm")
    expected[uid[3]] = "ok:dropped 1 image"

    for f in (root / "series" / uid[4]).iterdir():
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = 0
        ds.save_as(f)
    expected[uid[4]] = "invalid rescale"

    (multi,) = (root / "series" / uid[5]).iterdir()
    ds = pydicom.dcmread(multi)
    wrong = pydicom.Dataset()
    wrong.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.PerFrameFunctionalGroupsSequence[3].PlaneOrientationSequence = pydicom.Sequence([wrong])
    ds.save_as(multi)
    expected[uid[5]] = "ok:disagrees with the shared one"

    from pydicom.data import get_testdata_file

    train = pd.read_csv(root / "train.csv", dtype={"SeriesInstanceUID": str})
    extra = []
    # files bundled with pydicom: single slice, big endian, JPEG 2000 (no decoder installed),
    # truncated pixel data, an RT plan without pixels
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "MR_truncated.dcm", "rtplan.dcm"):
        path = get_testdata_file(name)
        series = f"1.2.3.999.{len(extra)}"
        (root / "series" / series).mkdir()
        shutil.copy(path, root / "series" / series / name)
        row = train.iloc[0].copy()
        row["SeriesInstanceUID"] = series
        extra.append(row)
        expected[series] = "failed"
    missing = train.iloc[0].copy()
    missing["SeriesInstanceUID"] = "1.2.3.999.missing"
    extra.append(missing)
    expected["1.2.3.999.missing"] = "no files"
    pd.concat([train, pd.DataFrame(extra)]).to_csv(root / "train.csv", index=False)
    return root, expected


def test_damaged_series_become_report_rows(tmp_path):
    root, expected = _damaged_root(tmp_path)
    report = convert(root, 811, 812, raw=tmp_path / "raw", workers=2, progress=False).set_index("SeriesInstanceUID")
    assert set(report.index) == set(expected)
    for uid, what in expected.items():
        row = report.loc[uid]
        if what.startswith("ok:"):
            assert row["status"] == "ok", row["reason"]
            assert what[3:] in row["warnings"], row["warnings"]
        elif what == "failed":
            assert row["status"] == "failed" and row["reason"], uid
        else:
            assert row["status"] == "failed" and what in row["reason"], (uid, row["reason"])
    assert not report.loc[list(expected)[2], "has_vessel_labels"]


def test_cli_exit_status_counts_failures(tmp_path):
    root, expected = _damaged_root(tmp_path)
    failures = sum(1 for v in expected.values() if not v.startswith("ok:"))
    proc = subprocess.run([str(Path(sys.executable).parent / "nnunet-aneurysm"), "convert", str(root),
                           "--vessels-id", "821", "--aneurysms-id", "822", "--raw", str(tmp_path / "raw"),
                           "--workers", "1"], capture_output=True, text=True)
    assert proc.returncode == failures, proc.stderr
    assert f"{failures} failed" in proc.stdout


def test_geometry_survives_a_nifti_round_trip_read_from_the_header(rsna, tmp_path):
    from nnunet_aneurysm.geometry import read_geometry, write_nifti

    _, truths = rsna
    for i, truth in enumerate(truths.values()):
        path = tmp_path / f"{i}.nii.gz"
        write_nifti(np.zeros(truth.shape, np.float32), truth.geometry, path)
        back = read_geometry(path)
        assert sitk.ReadImage(str(path)).GetSize() == truth.shape[::-1]
        for name in ("origin", "row_dir", "col_dir", "normal", "spacing"):
            np.testing.assert_allclose(getattr(back, name), getattr(truth.geometry, name), atol=1e-4, err_msg=name)


def test_uneven_slices_are_resampled_exactly_in_float32():
    """Slices at 0, 1, 3, 4 mm, each holding its own position: linear resampling at 1 mm must give every
    position back exactly (a ramp is linear), as float32."""
    from types import SimpleNamespace

    from nnunet_aneurysm.dataset_conversion.dicom_reader import _regular_grid

    distance = np.array([0.0, 1.0, 3.0, 4.0])
    planes = [SimpleNamespace(shape=(2, 3), sop_uid=str(d), load=lambda d=d: np.full((2, 3), d, np.int16))
              for d in distance]
    array, target = _regular_grid(planes, distance, 1.0)
    assert array.dtype == np.float32 and target.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(array[:, 0, 0], target, atol=1e-6)
