"""Upsampling numpy volumes: the engine that runs a model, the conventional baselines, devices.

* :mod:`.synthesis`: :class:`ASIEngine`, streaming slice synthesis with a model (numpy in, numpy out);
* :mod:`.baselines`: linear, cubic B-spline and Lanczos interpolation with SimpleITK on the same grid;
* :mod:`.devices`: choice of the compute device and precision.

``from SemanticInterpolationLib.engine import ASIEngine`` keeps working (names load on first use).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {name: "synthesis" for name in (
    "ASIEngine", "CancelCallback", "ProgressCallback", "MAX_FACTOR", "SYNTHESIS_MODES", "MEMORY_FORMATS",
    "convert_to_dtype", "default_batch_size", "output_slice_count", "synthesis_choice", "upsample_array",
    "validate_factor", "validate_synthesis", "validate_volume")}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
