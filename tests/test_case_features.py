"""Pooling of per-patch read-outs into one case's features (no model needed)."""

import numpy as np
import pytest

from nnunet_aneurysm.inference.case_features import _pool
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS


def _patch(probabilities, order, residual, vessel_voxels):
    return {"class_probabilities": np.array(probabilities, float), "order_parameter": order,
            "pinn_residual": residual, "vessel_voxels": vessel_voxels}


def test_patches_pool_by_max_mean_and_vessel_weight():
    low, high = [0.1] * 14, [0.1] * 13 + [0.9]
    pooled = _pool([_patch(low, 0.2, 1.0, 300.0), _patch(high, 0.6, 4.0, 100.0)])
    assert pooled["patches"] == 2
    assert pooled["class_probabilities"][SUBMISSION_COLUMNS[-1]] == pytest.approx(0.9)  # an aneurysm lives in one patch
    assert pooled["class_probabilities"][SUBMISSION_COLUMNS[0]] == pytest.approx(0.1)
    assert pooled["order_parameter"] == pytest.approx(0.4)
    assert pooled["pinn_residual"] == pytest.approx((300 * 1.0 + 100 * 4.0) / 400)  # where the vessel is


def test_networks_without_akorn_or_pinn_pool_to_none():
    pooled = _pool([_patch([0.5] * 14, None, None, 10.0)])
    assert pooled["order_parameter"] is None and pooled["pinn_residual"] is None
