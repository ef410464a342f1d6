"""Simulate a thick-slice (low through-plane resolution) acquisition from a fine-slice volume.

As in the journal paper's brain experiments (section VI-C): optionally blur through-plane with a
Gaussian whose full width at half maximum is the simulated slice thickness (K times the fine
spacing), then keep every K-th slice. Slice ``s`` of the simulated volume is fine slice ``s K``,
so upsampling it by K puts synthesized slice ``s K + i`` (``0 < i < K``) exactly where the
removed fine slice ``s K + i`` was: the removed slices are the ground truth.

Fine slices after the last kept one (``n - 1`` not a multiple of K) cannot be interpolated
(only extrapolated); they are dropped from the reference, see :func:`usable_slice_count`.
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

    @property
    def synthesized_indices(self) -> np.ndarray:
        """Indices (along the slice axis of ``reference``) of the removed slices that are scored."""
        n = self.reference.shape[self.axis_np]
        indices = np.arange(n)
        return indices[indices % self.factor != 0]


def simulate_thick_slices(image: sitk.Image, factor: int, index_axis: int, thick_slices: bool = False) -> SimulatedAcquisition:
    """Keep every ``factor``-th slice of ``image`` along ITK axis ``index_axis`` (after a
    through-plane Gaussian blur with FWHM = ``factor`` slices when ``thick_slices``)."""
    factor = int(factor)
    axis_np = numpy_axis(index_axis)
    fine = sitk.GetArrayViewFromImage(image)
    n = fine.shape[axis_np]
    check_length(n, factor)
    usable = usable_slice_count(n, factor)
    source = blur_through_plane(fine, axis_np, factor) if thick_slices else fine
    kept = np.ascontiguousarray(np.take(source, np.arange(0, usable, factor), axis=axis_np))
    low = sitk.GetImageFromArray(kept)
    spacing = list(image.GetSpacing())
    spacing[index_axis] *= factor
    low.SetSpacing(spacing)
    low.SetOrigin(image.GetOrigin())
    low.SetDirection(image.GetDirection())
    reference = np.take(np.asarray(fine, dtype=np.float64), np.arange(usable), axis=axis_np)
    return SimulatedAcquisition(low, reference, factor, int(index_axis), axis_np, bool(thick_slices))
