"""The spacing of a series without geometry tags, guessed from the matrix and checked against the head's breadth:
on generated whole-head series with their tags stripped, against the spacing the generator used."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
from nnunet_aneurysm.dataset_conversion.spacing_guess import HEAD_FOV_MM, guess_spacing
from nnunet_aneurysm.dataset_conversion.synthetic import HEAD_FOV_MM as GENERATED_FOV
from nnunet_aneurysm.dataset_conversion.synthetic import generate
from tests import defects

IN_PLANE_TOLERANCE = 0.10
THIN_SLICE_TOLERANCE = 0.35


@pytest.mark.parametrize("modality, fov", [("CTA", 200.0), ("MRA", 240.0), ("MRI T2", 230.0), ("MRI T1post", 210.0)])
def test_a_stripped_whole_head_series_gets_its_spacing_back_within_tolerance(tmp_path, modality, fov):
    """Fields of view away from the prior's 220 mm: the head's breadth, not the matrix, sets the in-plane spacing."""
    truth = generate(tmp_path / "rsna", 1, seed=3, size=192, fov_mm=fov, progress=False,
                     forced=[{"modality": modality, "orientation": "axial", "multiframe": True}])[0]
    stripped = defects.multiframe_without_geometry(tmp_path / "rsna" / "series" / truth.series_uid, tmp_path / "bad")
    volume = read_series(stripped, lenient=True)
    guessed, true = volume.geometry.spacing, truth.geometry.spacing
    assert abs(guessed[1] / true[1] - 1) < IN_PLANE_TOLERANCE and abs(guessed[2] / true[2] - 1) < IN_PLANE_TOLERANCE
    if modality == "MRI T2":  # thick slices (3-5 mm)
        assert 3.0 <= guessed[0] <= 5.0 and 3.0 <= true[0] <= 5.0
    else:
        assert abs(guessed[0] / true[0] - 1) < THIN_SLICE_TOLERANCE
    assert any("head's breadth" in w for w in volume.warnings)


def test_a_head_that_fills_the_frame_keeps_the_matrix_prior_and_says_so():
    image = np.full((90, 64, 64), 300.0, np.float32)  # tissue to every edge: the head is not in the frame
    guess = guess_spacing(image)
    assert guess.spacing[1] == pytest.approx(HEAD_FOV_MM / 64) and "fills the frame" in guess.reason
    assert guess.spacing[0] == pytest.approx(1.25 * guess.spacing[1])
    assert guess_spacing(np.zeros((20, 32, 32), np.float32), inplane_mm=0.5).spacing == (5.0, 0.5, 0.5)
    assert GENERATED_FOV == HEAD_FOV_MM
