"""Per-volume intensity normalisation (journal paper: intensities scaled into [0, 1]).

The lower and upper percentiles of the whole volume (1st and 99th by default) map to 0 and 1;
values outside are clipped for the network, whose sigmoid output cannot leave [0, 1].
:meth:`IntensityNormalization.to_input_units` maps network output back to the volume's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError


@dataclass(frozen=True)
class IntensityRange:
    """The intensities (in the input's units) that map to 0 and 1."""

    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class IntensityNormalization:
    """Percentile scaling into [0, 1]; stored in checkpoints so inference matches training."""

    lower_percentile: float = 1.0
    upper_percentile: float = 99.0
    clip: bool = True

    def validate(self) -> None:
        if not (0.0 <= self.lower_percentile < self.upper_percentile <= 100.0):
            raise ValueError(
                "percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile} and {self.upper_percentile}"
            )

    def fit(self, volume: np.ndarray) -> IntensityRange:
        """Intensity range of ``volume`` (any shape). A constant volume gets a width of 1."""
        low, high = np.percentile(volume, [self.lower_percentile, self.upper_percentile])
        low, high = float(low), float(high)
        if not high > low:
            # constant (or nearly) volume: fall back to the full range, then to a unit width
            low, high = float(np.min(volume)), float(np.max(volume))
            if not high > low:
                high = low + 1.0
        return IntensityRange(low, high)

    def to_unit_range(self, values: np.ndarray, intensity_range: IntensityRange) -> np.ndarray:
        """``values`` as float32 scaled so that the range maps to [0, 1] (clipped if ``clip``)."""
        scaled = (np.asarray(values, dtype=np.float32) - np.float32(intensity_range.low)) / np.float32(
            intensity_range.width
        )
        if self.clip:
            np.clip(scaled, 0.0, 1.0, out=scaled)
        return scaled

    def to_input_units(self, unit_values: np.ndarray, intensity_range: IntensityRange) -> np.ndarray:
        """Inverse of :meth:`to_unit_range` (float32; clipped values stay at the range ends)."""
        return np.asarray(unit_values, dtype=np.float32) * np.float32(intensity_range.width) + np.float32(
            intensity_range.low
        )

    def to_dict(self) -> dict[str, Any]:
        return {"method": "percentile", "lower_percentile": float(self.lower_percentile),
                "upper_percentile": float(self.upper_percentile), "clip": bool(self.clip)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IntensityNormalization":
        if not isinstance(data, dict) or data.get("method", "percentile") != "percentile":
            raise CheckpointError(f"unsupported intensity normalisation in checkpoint: {data!r}")
        try:
            result = cls(float(data["lower_percentile"]), float(data["upper_percentile"]), bool(data.get("clip", True)))
            result.validate()
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid intensity normalisation in checkpoint: {exc}") from exc
        return result
