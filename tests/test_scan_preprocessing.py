"""Our slab-by-slab preprocessing of a scan gives nnU-Net's own preprocessor's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

from nnunet_aneurysm.inference import scan_preprocessing
from nnunet_aneurysm.inference.scan_preprocessing import preprocess_scan
from tests.tiny_plans import plans_manager

CT = {"mean": 300.0, "std": 200.0, "percentile_00_5": -50.0, "percentile_99_5": 900.0}


def _scan(shape, zero_margin: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (rng.normal(100, 60, shape) + np.linspace(-400, 800, shape[-1])).astype(np.float32)
    if zero_margin:
        mask = np.zeros(shape, bool)
        mask[1:-1, zero_margin:-zero_margin - 3, zero_margin + 2:-zero_margin] = True
        image[~mask] = 0
    return image


CASES = {
    "CT, transposed, one volume (order 3)": (_scan((40, 70, 64), 0), (0.7, 0.5, 0.45), [2, 0, 1], [1.3, 1.4, 1.1],
                                             "CTNormalization", 3),
    "MR, zero margin cropped, z-score": (_scan((30, 64, 60), 5), (0.9, 0.6, 0.6), [0, 1, 2], [1.6, 1.5, 1.4],
                                         "ZScoreNormalization", 3),
    "thick slices: nnU-Net's separate-z path": (_scan((14, 60, 66), 4), (4.0, 0.5, 0.5), [0, 1, 2],
                                                [3.0, 1.3, 1.2], "ZScoreNormalization", 3),
    "thick axis last, transposed": (_scan((50, 52, 12), 0), (0.5, 0.55, 4.5), [1, 2, 0], [1.3, 3.5, 1.2],
                                    "ZScoreNormalization", 3),
    "linear resampling plans": (_scan((30, 40, 44), 3), (0.7, 0.6, 0.6), [0, 1, 2], [1.2, 1.1, 1.3],
                                "CTNormalization", 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_slabwise_preprocessing_equals_nnunets_preprocessor(name, monkeypatch):
    image, spacing, transpose, target, scheme, order = CASES[name]
    monkeypatch.setattr(scan_preprocessing, "SLAB_VOXELS", 20_000)  # many slabs, even at test size
    plans = plans_manager(transpose, target, scheme, order=order, intensity=CT)
    configuration = plans.get_configuration("3d_fullres")
    properties = {"spacing": list(spacing), "sitk_stuff": {}}
    expected, _, expected_properties = DefaultPreprocessor(verbose=False).run_case_npy(
        image[None], None, dict(properties), plans, configuration, {})
    data, ours = preprocess_scan(image, dict(properties), plans, configuration)
    assert data.shape == expected.shape and data.dtype == np.float32
    assert np.abs(data - expected).max() < 1e-4
    for key in ("bbox_used_for_cropping", "shape_before_cropping", "shape_after_cropping_and_before_resampling"):
        assert [list(np.atleast_1d(v)) for v in ours[key]] == [list(np.atleast_1d(v)) for v in expected_properties[key]]


def test_plans_it_does_not_cover_go_to_nnunets_preprocessor():
    plans = plans_manager([0, 1, 2], [1.0, 1.0, 1.0], use_mask=True)
    assert preprocess_scan(np.ones((8, 8, 8), np.float32), {"spacing": [1.0] * 3}, plans,
                           plans.get_configuration("3d_fullres")) is None
