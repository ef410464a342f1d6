"""Integer volumes whose values floats cannot hold exactly: compute relative to the volume's minimum.

float32 holds integers exactly up to 2**24, float64 up to 2**53. An int32 volume around 10**9, or an
int64/uint64 volume near its type's limits, would lose its low bits when the engine (float32) or the
baselines (float64) convert it, and the conversion back could even wrap around at the type's limits.
So such a volume is shifted first: ``delta = volume - minimum`` (exact, in 64-bit modular integer
arithmetic), the interpolation runs on ``delta``, and the minimum is added back exactly, again in
integers, after rounding and clipping to the output type's range. Acquired slices are copied from the
input itself, bit-exactly.

A volume whose range (maximum - minimum) exceeds 2**53 cannot be interpolated in float64 without
losing its low bits; it is refused with a message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: integers of magnitude above this are not all exact in float32 (the engine's precision)
FLOAT32_EXACT = 2 ** 24
#: ranges above this cannot be held exactly in float64 (the baselines' precision)
FLOAT64_EXACT = 2 ** 53
_WRAP = 2 ** 64


@dataclass(frozen=True)
class IntegerOffset:
    """The minimum of an integer volume (exact, a Python int) and its range, the maximum minus it."""

    minimum: int
    span: int

    def shifted(self, values: np.ndarray, dtype=np.float64) -> np.ndarray:
        """``values - minimum`` as ``dtype`` (exact integers first, so float64 is exact for spans up to 2**53)."""
        unsigned = np.asarray(values).astype(np.uint64)  # two's complement for signed types: modular arithmetic
        delta = unsigned - np.uint64(self.minimum % _WRAP)
        return delta.astype(dtype)

    def restored(self, delta: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``delta + minimum`` as ``dtype``: integers rounded and clipped to the type's range, exactly."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "iu":
            return (np.asarray(delta, dtype=np.float64) + float(self.minimum)).astype(dtype)
        info = np.iinfo(dtype)
        low = max(int(info.min) - self.minimum, -(2 ** 62))  # the output type's range as deltas
        high = min(int(info.max) - self.minimum, 2 ** 62)
        rounded = np.clip(np.rint(np.asarray(delta, dtype=np.float64)), _float_at_least(low), _float_at_most(high))
        whole = np.clip(rounded.astype(np.int64), low, high)
        result = whole.astype(np.uint64) + np.uint64(self.minimum % _WRAP)  # exact modulo 2**64
        return (result.view(np.int64) if dtype.kind == "i" else result).astype(dtype)


def _float_at_most(value: int) -> float:
    result = float(value)
    return result if int(result) <= value else float(np.nextafter(result, -np.inf))


def _float_at_least(value: int) -> float:
    result = float(value)
    return result if int(result) >= value else float(np.nextafter(result, np.inf))


def integer_offset(volume: np.ndarray, what: str = "the volume") -> IntegerOffset | None:
    """The offset to compute ``volume`` with, or None when floats hold its values exactly as they are
    (not an integer type, or every value within +-2**24).

    Raises :class:`InputError` when the range exceeds 2**53 (float64 cannot hold it).
    """
    if volume.dtype.kind not in "iu" or volume.size == 0:
        return None
    low, high = int(volume.min()), int(volume.max())
    if -FLOAT32_EXACT <= low and high <= FLOAT32_EXACT:
        return None
    span = high - low
    if span > FLOAT64_EXACT:
        raise InputError(
            f"the intensities of {what} ({volume.dtype}) range from {low} to {high}, a range of {span} (more than "
            f"2^53): interpolation computes in floating point and cannot keep such a range exact; rescale the "
            "intensities (or convert them to float64 if the rounding is acceptable) first")
    return IntegerOffset(low, span)
