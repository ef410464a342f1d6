"""Slice-axis choice and output-grid geometry, shared by the image-file path and the MRML path.

Axis numbers here are ITK/SimpleITK/IJK index order (0 = i/x, 1 = j/y, 2 = k/z). The matching
numpy axis of an array from ``GetArrayFromImage`` or ``arrayFromVolume`` (``[k, j, i]``) is
``2 - axis`` (see :func:`numpy_axis`).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import InputError


def choose_slice_axis(spacing: Sequence[float]) -> int:
    """The index axis (0, 1, 2) with the largest spacing, i.e. the through-plane axis.

    Ties are broken towards the highest axis (k), the usual slice axis. The number of slices is
    not considered: a single thick slice is an error later, never a reason to pick another axis.
    """
    if len(spacing) != 3:
        raise InputError(f"expected 3 spacings, got {len(spacing)}")
    largest = max(float(s) for s in spacing)
    # relative tolerance: spacings read from headers are rarely bit-identical
    tied = [a for a in (0, 1, 2) if float(spacing[a]) >= largest * (1.0 - 1e-6)]
    return max(tied)


def parse_axis(axis: int | str | None, spacing: Sequence[float]) -> int:
    """``"auto"``/``None`` -> :func:`choose_slice_axis`; ``0``/``1``/``2`` (int or str) -> that axis."""
    if axis is None or (isinstance(axis, str) and axis.strip().lower() == "auto"):
        return choose_slice_axis(spacing)
    try:
        value = int(axis)
    except (TypeError, ValueError):
        raise InputError(f"slice axis must be auto, 0, 1 or 2 (ITK order: 0 = i/x, 1 = j/y, 2 = k/z), got {axis!r}") from None
    if value not in (0, 1, 2) or isinstance(axis, bool):
        raise InputError(f"slice axis must be auto, 0, 1 or 2 (ITK order: 0 = i/x, 1 = j/y, 2 = k/z), got {axis!r}")
    return value


def numpy_axis(index_axis: int) -> int:
    """Numpy axis of a ``[k, j, i]`` array for ITK/IJK index axis ``index_axis``."""
    return 2 - int(index_axis)


def upsampled_spacing(spacing: Sequence[float], axis: int, factor: int) -> tuple[float, float, float]:
    """Spacing after upsampling: the slice-axis spacing divided by ``factor``, the others kept."""
    result = [float(s) for s in spacing]
    result[axis] /= factor
    return tuple(result)  # type: ignore[return-value]


def upsampled_size(size: Sequence[int], axis: int, factor: int) -> tuple[int, int, int]:
    """Size after upsampling: ``(n - 1) * factor + 1`` slices along ``axis``."""
    result = [int(s) for s in size]
    result[axis] = (result[axis] - 1) * factor + 1
    return tuple(result)  # type: ignore[return-value]
