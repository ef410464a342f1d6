"""Conventional through-plane interpolation with SimpleITK, on the same grid as ASI.

``linear``, ``bspline`` (cubic B-spline, an interpolating spline) and ``lanczos``
(Lanczos windowed sinc, ITK's default radius). Output slice ``s * K`` lies exactly on acquired
slice ``s``; see :func:`upsampled_reference` for the grid.

Only the through-plane direction is interpolated: the volume is viewed as a 2-D image whose
rows are the slice positions and whose columns are all in-plane voxels, and SimpleITK
resamples that image along the rows only. This is the same result as a 3-D resampling onto the
upsampled grid (in-plane positions coincide with voxel centres, where every interpolator
returns the voxel's value) at a fraction of the cost: a 3-D windowed-sinc kernel evaluates
6x6x6 samples per voxel, this one 6x6.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..volumes.geometry import numpy_axis, upsampled_size, upsampled_spacing

INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": getattr(sitk, "sitkBSpline3", sitk.sitkBSpline),
    "lanczos": sitk.sitkLanczosWindowedSinc,
}
BASELINE_METHODS = tuple(INTERPOLATORS)


def upsampled_reference(image: sitk.Image, axis: int, factor: int) -> sitk.Image:
    """An empty image on the output grid: ITK index axis ``axis`` gets ``(n - 1) K + 1`` slices at
    spacing/K; origin and direction are the input's, so oblique volumes stay in place."""
    reference = sitk.Image(upsampled_size(image.GetSize(), axis, factor), sitk.sitkUInt8)
    reference.SetSpacing(upsampled_spacing(image.GetSpacing(), axis, factor))
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    return reference


#: float64 output bytes per SimpleITK call of :func:`interpolate_slices` (bounds its temporaries)
CHUNK_BYTES = 16 << 20


def interpolate_array(volume: np.ndarray, axis: int, factor: int, method: str) -> np.ndarray:
    """Interpolate a numpy volume along numpy axis ``axis`` by ``factor``; returns float64.

    The result has ``(n - 1) * factor + 1`` samples along ``axis``; sample ``s * factor`` is
    input sample ``s``.
    """
    moved = np.moveaxis(np.asarray(volume), axis, 0)
    return np.moveaxis(interpolate_slices(moved, factor, method, dtype=np.float64), 0, axis)


def interpolate_slices(slices: np.ndarray, factor: int, method: str, dtype=np.float32,
                       chunk_voxels: int | None = None) -> np.ndarray:
    """Interpolate along axis 0 of ``slices`` ``[n, ...]`` by ``factor`` into a new ``dtype`` array
    (:func:`interpolate_array` is this with float64, along any axis).

    ``chunk_voxels`` in-plane voxels are resampled per SimpleITK call (None: as many as give
    :data:`CHUNK_BYTES` of float64 output), so the float64 working copies stay small next to the
    output. Chunking does not change the values: each in-plane voxel is interpolated on its own."""
    if method not in INTERPOLATORS:
        raise ValueError(f"unknown baseline {method!r}: use one of {', '.join(BASELINE_METHODS)}")
    n_slices, in_plane_shape = slices.shape[0], slices.shape[1:]
    rows = slices.reshape(n_slices, -1)
    voxels = rows.shape[1]
    n_out = (n_slices - 1) * factor + 1
    out = np.empty((n_out, voxels), dtype=dtype)
    step = max(1, int(chunk_voxels) if chunk_voxels is not None else CHUNK_BYTES // (8 * n_out))
    for start in range(0, voxels, step):
        block = np.ascontiguousarray(rows[:, start:start + step], dtype=np.float64)
        out[:, start:start + step] = _interpolate_rows(block, factor, method)
    return out.reshape((out.shape[0], *in_plane_shape))


def _interpolate_rows(rows: np.ndarray, factor: int, method: str) -> np.ndarray:
    """``rows`` float64 ``[slice, in-plane voxel]`` -> ``[(n - 1) factor + 1, voxel]`` float64."""
    n_slices = rows.shape[0]
    source = sitk.GetImageFromArray(rows)  # 2-D image: index 0 = in-plane voxel, index 1 = slice
    source.SetSpacing((1.0, 1.0))
    n_out = (n_slices - 1) * factor + 1
    result = sitk.Resample(
        source,
        (rows.shape[1], n_out),
        sitk.Transform(),
        INTERPOLATORS[method],
        (0.0, 0.0),
        (1.0, 1.0 / factor),
        (1.0, 0.0, 0.0, 1.0),
        0.0,
        sitk.sitkFloat64,
        True,  # nearest-neighbour extrapolation: round-off at the last slice never yields the default value
    )
    return sitk.GetArrayFromImage(result).reshape((n_out, rows.shape[1]))


def interpolate_baseline(image: sitk.Image, axis: int, factor: int, method: str) -> sitk.Image:
    """Resample a 3-D SimpleITK image along ITK index axis ``axis``; returns a float64 image on
    :func:`upsampled_reference`'s grid."""
    array = sitk.GetArrayViewFromImage(image)
    out = sitk.GetImageFromArray(interpolate_array(array, numpy_axis(axis), factor, method))
    out.CopyInformation(upsampled_reference(image, axis, factor))
    return out


def bspline_midpoint_weights(taps_per_side: int = 4) -> np.ndarray:
    """Weights of the cubic B-spline interpolation (this module's ``bspline``) halfway between two samples.

    Returns ``2 * taps_per_side`` float64 weights for the samples at offsets
    ``-(2T-1)/2, ..., -1/2, +1/2, ..., +(2T-1)/2`` sample spacings from the midpoint (T =
    ``taps_per_side``), measured on an impulse with SimpleITK (so they are exactly what the
    ``bspline`` baseline does away from the volume's ends) and renormalised to sum to 1 after the
    truncation (the interpolating spline's weights decay by about 0.27 per sample: 4 taps per side
    leave out 0.4 % of the weight). Training uses them to build the B-spline anchor of a triplet's
    middle slice from the slices around it without interpolating the whole volume.
    """
    taps = int(taps_per_side)
    if taps < 1:
        raise ValueError(f"taps per side must be >= 1, got {taps_per_side!r}")
    return _bspline_midpoint_weights(taps).copy()


_FRACTION_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def bspline_fraction_weights(factor: int, offset: int, taps_per_side: int = 6) -> np.ndarray:
    """Weights of the ``bspline`` baseline at ``offset / factor`` of the way from one sample to the next.

    Returns ``2 * taps_per_side`` float64 weights for the samples at offsets ``-(T-1), ..., 0, 1, ..., T``
    sample spacings from the first of the two (T = ``taps_per_side``), measured on an impulse with
    SimpleITK like :func:`bspline_midpoint_weights` (``factor=2, offset=1`` gives the same weights shifted)
    and renormalised to sum to 1. Read-only; cached.
    """
    key = (int(factor), int(offset), int(taps_per_side))
    if not (key[0] >= 2 and 0 < key[1] < key[0] and key[2] >= 1):
        raise ValueError(f"need factor >= 2, 0 < offset < factor and taps >= 1, got {key}")
    if key not in _FRACTION_CACHE:
        factor, offset, taps = key
        length = 4 * taps + 16
        centre = length // 2
        impulse = np.zeros((length, 1, 1))
        impulse[centre] = 1.0
        response = interpolate_array(impulse, 0, factor, "bspline")[:, 0, 0]
        # the target lies offset/factor after sample L; the impulse at `centre` is sample L + j when L = centre - j
        weights = np.array([response[(centre - j) * factor + offset] for j in range(-(taps - 1), taps + 1)])
        weights = weights / weights.sum()
        weights.setflags(write=False)
        _FRACTION_CACHE[key] = weights
    return _FRACTION_CACHE[key]


def _bspline_midpoint_weights(taps: int) -> np.ndarray:
    # halfway between two samples: offsets -(2T-1)/2 .. +(2T-1)/2 are the samples -(T-1) .. T around the first
    return bspline_fraction_weights(2, 1, taps)
