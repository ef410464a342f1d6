"""Simulate a thick-slice (low through-plane resolution) acquisition from a fine-slice volume.

As in the journal paper's brain experiments (section VI-C): optionally blur through-plane with a
Gaussian whose full width at half maximum is the simulated slice thickness (K times the fine
spacing), then keep every K-th slice. Slice ``s`` of the simulated volume is fine slice ``s K``,
so upsampling it by K puts synthesized slice ``s K + i`` (``0 < i < K``) exactly where the
removed fine slice ``s K + i`` was: the removed slices are the ground truth.

Fine slices after the last kept one (``n - 1`` not a multiple of K) cannot be interpolated
(only extrapolated); they are dropped from the reference, see :func:`usable_slice_count`.

Noise. A noisy fine volume blurred into thick slices gives each simulated thick slice part of the noise
of the removed slices beside it, so an interpolator that passes its inputs' noise through is scored
against a reference whose noise it partly holds (a real thick acquisition shares no noise with thin
slices that were never measured). ``acquisition_noise`` simulates a noisy acquisition without that leak:
Rician noise (:func:`add_rician_noise`) is added to the kept slices only, after the blur, and the removed
slices are scored as they are in the (clean) fine volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volumes.geometry import numpy_axis

#: FWHM = 2 sqrt(2 ln 2) sigma
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def usable_slice_count(n_slices: int, factor: int) -> int:
    """Fine slices that lie between kept slices: ``floor((n - 1) / K) K + 1``."""
    return (int(n_slices) - 1) // int(factor) * int(factor) + 1


def minimum_slices(factor: int) -> int:
    """Fewest fine slices that allow an evaluation at ``factor``: 2 kept slices and the K-1 removed between them."""
    return int(factor) + 1


def check_length(n_slices: int, factor: int, what: str = "the volume") -> None:
    """Raise :class:`InputError` when ``n_slices`` is too few for an evaluation at ``factor``."""
    if n_slices < minimum_slices(factor):
        raise InputError(
            f"{what} has {n_slices} slices along the slice axis: too few to evaluate K={factor}, which needs at "
            f"least {minimum_slices(factor)} (2 kept slices and the {factor - 1} removed between them). Use smaller "
            "factors (--factors), another --axis, or a volume with more slices"
        )


def thick_slice_sigma(factor: int) -> float:
    """Gaussian sigma, in fine slices, whose FWHM is ``factor`` fine slices (the simulated thickness)."""
    return float(factor) / FWHM_PER_SIGMA


def blur_through_plane(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Float32 copy of ``volume`` blurred along numpy ``axis`` with FWHM = ``factor`` slices.

    The Gaussian is sampled at the slice positions and normalised to sum 1, truncated at 4 sigma;
    borders repeat the edge slice (``mode="nearest"``).
    """
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(volume, dtype=np.float32), thick_slice_sigma(factor), axis=axis,
                             mode="nearest", truncate=4.0)


def add_rician_noise(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Float32 magnitude of ``(values + n1, n2)`` with ``n1, n2 ~ N(0, sigma)`` independent per voxel: the noise
    of a magnitude MR image of standard deviation ``sigma`` (intensity units) per channel. Any array shape."""
    values = np.asarray(values, dtype=np.float64)
    real = values + rng.normal(0.0, sigma, values.shape)
    return np.sqrt(real ** 2 + rng.normal(0.0, sigma, values.shape) ** 2).astype(np.float32)


def noise_sigma(fine: np.ndarray, fraction: float) -> float:
    """Noise standard deviation, in intensity units, of ``fraction`` x the 99th percentile of ``fine``."""
    return float(fraction) * float(np.percentile(np.asarray(fine, dtype=np.float32), 99))


def check_noise_fraction(fraction: float, what: str = "acquisition noise") -> float:
    """``fraction`` as a float, or :class:`InputError` (naming it ``what``) unless it is a number in [0, 1)."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(fraction, bool) or not 0.0 <= value < 1.0:
        raise InputError(f"{what} must be a fraction of the 99th percentile in [0, 1) (e.g. 0.03), got "
                         f"{fraction!r}")
    return value


@dataclass
class SimulatedAcquisition:
    """A simulated thick-slice volume and its fine-slice ground truth.

    ``low``: the simulated image (every K-th slice; float32 when blurred, else the input's type),
    with spacing K times the fine spacing along the slice axis and the input's origin and
    direction. ``reference``: the fine volume as float64 numpy ``[k, j, i]``, cropped to
    :func:`usable_slice_count` slices along ``axis_np``. ``index_axis``: the ITK slice axis.
    """

    low: sitk.Image
    reference: np.ndarray
    factor: int
    index_axis: int
    axis_np: int
    thick_slices: bool
    #: standard deviation (intensity units) of the Rician noise added to the kept slices; 0 = none
    noise_sigma: float = 0.0

    @property
    def synthesized_indices(self) -> np.ndarray:
        """Indices (along the slice axis of ``reference``) of the removed slices that are scored."""
        n = self.reference.shape[self.axis_np]
        indices = np.arange(n)
        return indices[indices % self.factor != 0]


def simulate_thick_slices(image: sitk.Image, factor: int, index_axis: int, thick_slices: bool = False,
                          acquisition_noise: float = 0.0, seed: int = 0) -> SimulatedAcquisition:
    """Keep every ``factor``-th slice of ``image`` along ITK axis ``index_axis`` (after a
    through-plane Gaussian blur with FWHM = ``factor`` slices when ``thick_slices``).

    ``acquisition_noise`` > 0: Rician noise of standard deviation ``acquisition_noise`` x the 99th
    percentile of ``image`` is then added to the kept slices only (float32), drawn from a generator seeded
    with ``(seed, factor)``, so each K gets its own reproducible noise; the reference stays ``image``.
    """
    factor = int(factor)
    acquisition_noise = check_noise_fraction(acquisition_noise)
    axis_np = numpy_axis(index_axis)
    fine = sitk.GetArrayViewFromImage(image)
    n = fine.shape[axis_np]
    check_length(n, factor)
    usable = usable_slice_count(n, factor)
    source = blur_through_plane(fine, axis_np, factor) if thick_slices else fine
    kept = np.ascontiguousarray(np.take(source, np.arange(0, usable, factor), axis=axis_np))
    sigma = noise_sigma(fine, acquisition_noise) if acquisition_noise > 0 else 0.0
    if sigma > 0:
        kept = add_rician_noise(kept, sigma, np.random.default_rng([int(seed), factor]))
    low = sitk.GetImageFromArray(kept)
    spacing = list(image.GetSpacing())
    spacing[index_axis] *= factor
    low.SetSpacing(spacing)
    low.SetOrigin(image.GetOrigin())
    low.SetDirection(image.GetDirection())
    reference = np.take(np.asarray(fine, dtype=np.float64), np.arange(usable), axis=axis_np)
    return SimulatedAcquisition(low, reference, factor, int(index_axis), axis_np, bool(thick_slices), sigma)
