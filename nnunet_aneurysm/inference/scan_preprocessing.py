"""nnU-Net's preprocessing of one scan for prediction, a slab of slices at a time.

``DefaultPreprocessor.run_case_npy`` copies the scan to float32, normalises it, copies it to float64 and lets
scikit-image/SciPy resample it with a float64 spline-coefficient copy of the whole volume: about 30 bytes per
scan voxel, 3 GB for a 512 x 512 x 400 CTA, before any network runs. The steps are separable, so here
they run one axis at a time on slabs:

* the non-zero box is found from per-slab projections (filling holes, as nnU-Net does, never moves it);
* normalisation (z-score or nnU-Net's CT scheme, as the plans say) is applied to each slab, in float32,
  exactly as nnU-Net's normaliser does, with the z-score's mean and standard deviation taken first;
* SciPy's cubic spline resampling with ``grid_mode`` (what ``skimage.transform.resize`` calls) is the
  prefilter ``F`` and the evaluation ``E`` along every axis, and ``E_z F_z E_y F_y E_x F_x`` equals the
  3-D operator since operators along different axes commute: the two in-plane axes are resampled per slab
  (the prefilter padded by 12 edge voxels along its axis, as SciPy pads), the third on the reduced volume;
* nnU-Net's separate-z path (anisotropic scans) resamples in-plane per slice and takes the nearest slice
  along z (``order_z`` 0), as nnU-Net does; the output is clipped to the input's range, as skimage clips.

The result equals ``run_case_npy``'s to float round-off (tested), at about the scan's own 4 bytes per voxel
plus the much smaller resampled arrays. Plans this does not cover (normalisation inside the non-zero mask,
other schemes, resampling functions or orders) return None and the caller uses nnU-Net's own preprocessor.
"""

from __future__ import annotations

import numpy as np
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, determine_do_sep_z_and_axis
from scipy import ndimage

SLAB_VOXELS = 1_000_000  # voxels per slab: its float64 working copies are ~8 MB each
SPLINE_PAD = 12  # SciPy pads this many edge voxels before its spline prefilter (mode 'nearest')
SUPPORTED_SCHEMES = ("ZScoreNormalization", "CTNormalization")


def bspline_weights(n_in: int, n_out: int, order: int) -> np.ndarray:
    """[n_out, n_in + 2 * SPLINE_PAD] (order 3, on padded coefficients) or [n_out, n_in] (order 1): the
    evaluation of a B-spline at output voxel centres, ``x = (o + 0.5) * n_in / n_out - 0.5`` (grid mode)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    if order == 1:
        x = np.clip(x, 0, n_in - 1)
        lo = np.minimum(np.floor(x).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
        t = x - lo
        weights = np.zeros((n_out, n_in))
        np.add.at(weights, (np.arange(n_out), lo), 1 - t)
        if n_in > 1:
            np.add.at(weights, (np.arange(n_out), lo + 1), t)
        return weights
    base = np.floor(x).astype(int)
    t = x - base
    taps = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    weights = np.zeros((n_out, n_in + 2 * SPLINE_PAD))
    for offset, tap in zip(range(-1, 3), taps):
        np.add.at(weights, (np.arange(n_out), base + offset + SPLINE_PAD), tap)
    return weights


def resample_axis(data: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """One axis of SciPy's ``zoom(..., order, mode='nearest', grid_mode=True)`` (float64 out)."""
    n_in = data.shape[axis]
    if n_in == n_out:
        return data.astype(np.float64, copy=False)
    data = np.moveaxis(data.astype(np.float64, copy=False), axis, -1)
    if order == 3:
        pad = [(0, 0)] * (data.ndim - 1) + [(SPLINE_PAD, SPLINE_PAD)]
        data = ndimage.spline_filter1d(np.pad(data, pad, mode="edge"), 3, axis=-1, mode="nearest",
                                       output=np.float64)
    return np.moveaxis(data @ bspline_weights(n_in, n_out, order).T, -1, axis)


def nearest_axis(data: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """``map_coordinates(order=0, mode='nearest')`` along one axis at grid-mode output positions."""
    n_in = data.shape[axis]
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return np.take(data, np.clip(np.floor(x + 0.5).astype(int), 0, n_in - 1), axis=axis)


def nonzero_box(image: np.ndarray) -> list[list[int]]:
    """nnU-Net's crop box ([start, end) per axis) of the non-zero voxels, from per-slab projections."""
    any_axis = [np.zeros(s, bool) for s in image.shape]
    step = max(1, SLAB_VOXELS // max(1, image[0].size))
    for k in range(0, image.shape[0], step):
        nonzero = image[k:k + step] != 0
        any_axis[0][k:k + step] = nonzero.any((1, 2))
        any_axis[1] |= nonzero.any((0, 2))
        any_axis[2] |= nonzero.any((0, 1))
    box = []
    for found, size in zip(any_axis, image.shape):
        where = np.flatnonzero(found)
        box.append([int(where[0]), int(where[-1]) + 1] if len(where) else [0, size])
    return box


def _normaliser(scheme: str, image: np.ndarray, intensity: dict):
    """slab (float32) -> normalised float32, as nnU-Net's ``ZScoreNormalization`` / ``CTNormalization`` (no mask)."""
    eps = 1e-8
    if scheme == "CTNormalization":
        lo, hi = intensity["percentile_00_5"], intensity["percentile_99_5"]
        mean, std = intensity["mean"], max(intensity["std"], eps)

        def ct(slab):
            out = np.clip(slab, lo, hi).astype(np.float32)
            out -= mean
            out /= std
            return out
        return ct
    step = max(1, SLAB_VOXELS // max(1, image[0].size))
    total = sum(float(image[k:k + step].sum(dtype=np.float64)) for k in range(0, len(image), step))
    mean = total / image.size
    squares = sum(float(((image[k:k + step].astype(np.float64) - mean) ** 2).sum())
                  for k in range(0, len(image), step))
    mean32, std32 = np.float32(mean), max(np.float32(np.sqrt(squares / image.size)), eps)

    def zscore(slab):
        out = slab.astype(np.float32, copy=True)
        out -= mean32
        out /= std32
        return out
    return zscore


def preprocess_scan(image: np.ndarray, properties: dict, plans_manager, configuration_manager
                    ) -> tuple[np.ndarray, dict] | None:
    """``run_case_npy`` for one single-channel scan [k, j, i] with nnU-Net's reader ``properties`` (spacing in
    numpy order): ([1, *grid] float32 in the plans' transposed axis order, properties with nnU-Net's crop keys),
    or None where the plans need nnU-Net's own preprocessor."""
    cm = configuration_manager
    kwargs = dict(cm.configuration.get("resampling_fn_data_kwargs", {}))
    if (cm.configuration.get("resampling_fn_data") != "resample_data_or_seg_to_shape" or kwargs.get("is_seg")
            or kwargs.get("order", 3) not in (1, 3) or kwargs.get("order_z", 0) != 0
            or cm.normalization_schemes[0] not in SUPPORTED_SCHEMES or cm.use_mask_for_norm[0]
            or len(cm.patch_size) != 3):  # 2-D configurations: nnU-Net's own path
        return None
    transpose = list(plans_manager.transpose_forward)
    spacing = np.asarray(properties["spacing"], float)  # scan axis order
    target = np.empty(3)
    target[transpose] = cm.spacing  # the plans' spacing is in transposed order
    box = nonzero_box(image)
    cropped = image[tuple(slice(lo, hi) for lo, hi in box)]
    new_shape = compute_new_shape(cropped.shape, spacing, target)
    normalise = _normaliser(cm.normalization_schemes[0], cropped,
                            plans_manager.foreground_intensity_properties_per_channel["0"])
    separate, axis = determine_do_sep_z_and_axis(kwargs.get("force_separate_z", False), spacing[transpose],
                                                 target[transpose],  # nnU-Net's defaults where the plans are silent
                                                 kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD))
    z_axis = transpose[axis] if separate else None  # the anisotropic axis, in scan order
    data = _resample(cropped, new_shape, normalise, kwargs.get("order", 3), z_axis)
    data = np.ascontiguousarray(data.transpose(transpose))[None]
    out = dict(properties)
    out["shape_before_cropping"] = tuple(image.shape[t] for t in transpose)
    out["bbox_used_for_cropping"] = [box[t] for t in transpose]
    out["shape_after_cropping_and_before_resampling"] = tuple(cropped.shape[t] for t in transpose)
    return data, out


def _resample(cropped: np.ndarray, new_shape, normalise, order: int, z_axis: int | None) -> np.ndarray:
    """The normalised scan on ``new_shape`` (float32), slab by slab along the slab axis (``z_axis`` when
    nnU-Net resamples z apart, else axis 0)."""
    slab_axis = 0 if z_axis is None else z_axis
    others = [a for a in range(3) if a != slab_axis]
    if tuple(new_shape) == cropped.shape:
        return np.concatenate([normalise(s) for s in _slabs(cropped, slab_axis)], axis=slab_axis)
    reduced, lo, hi = [], np.inf, -np.inf
    for slab in _slabs(cropped, slab_axis):
        slab = normalise(slab)
        if z_axis is not None:  # skimage.resize per slice: each slice clipped to its own range
            for i in range(slab.shape[slab_axis]):
                plane = np.take(slab, i, axis=slab_axis)
                out = plane.astype(np.float64)
                for a, n in zip((0, 1), (new_shape[others[0]], new_shape[others[1]])):
                    out = resample_axis(out, a, n, order)
                reduced.append(np.expand_dims(np.clip(out, plane.min(), plane.max()), slab_axis))
            continue
        lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
        for a in others:
            slab = resample_axis(slab, a, new_shape[a], order)
        reduced.append(slab)
    reduced = np.concatenate(reduced, axis=slab_axis)
    if z_axis is not None:
        return nearest_axis(reduced, z_axis, new_shape[z_axis]).astype(np.float32)
    return np.clip(resample_axis(reduced, slab_axis, new_shape[slab_axis], order), lo, hi).astype(np.float32)


def _slabs(array: np.ndarray, axis: int):
    step = max(1, SLAB_VOXELS // max(1, array.size // array.shape[axis]))
    for start in range(0, array.shape[axis], step):
        yield np.take(array, range(start, min(start + step, array.shape[axis])), axis=axis)
