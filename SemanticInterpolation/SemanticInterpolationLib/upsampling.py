"""Through-plane upsampling of SimpleITK images with ASI or a conventional baseline.

This is what the command line and the evaluation run. Axis numbers are ITK index order
(0 = i/x, 1 = j/y, 2 = k/z); ``"auto"`` picks the axis with the largest spacing. The output has
``(n - 1) K + 1`` slices along that axis at spacing/K with the input's origin and direction, so
acquired slice ``s`` is output slice ``s * K`` at the same physical position, also for oblique
scans. The output pixel type is the input's (rounded and clipped) unless ``output_type="float32"``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from .engine.baselines import BASELINE_METHODS, interpolate_array, upsampled_reference
from .models.checkpoint import Checkpoint, resolve_checkpoint
from .engine.synthesis import ASIEngine, CancelCallback, ProgressCallback, convert_to_dtype, validate_factor
from .errors import InputError, OperationCancelled
from .volumes.geometry import numpy_axis, parse_axis
from .volumes.imageio import validate_scalar_volume

logger = logging.getLogger("SemanticInterpolation")

METHODS = ("asi", *BASELINE_METHODS)
OUTPUT_TYPES = ("input", "float32")


def validate_method(method: str) -> str:
    method = str(method).strip().lower()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return method


def _output_dtype(input_dtype: np.dtype, output_type: str) -> np.dtype:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    return np.dtype(np.float32) if output_type == "float32" else np.dtype(input_dtype)


def upsample_image(
    image: sitk.Image,
    factor: int,
    method: str = "asi",
    *,
    checkpoint: "str | os.PathLike | Checkpoint | None" = None,
    axis: int | str | None = "auto",
    keep_acquired: bool = True,
    output_type: str = "input",
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    synthesis: str | None = None,
    engine: ASIEngine | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCallback | None = None,
) -> sitk.Image:
    """Upsample a 3-D scalar SimpleITK image by ``factor`` through-plane; the input is not modified.

    ``method``: ``asi`` (needs ``checkpoint``; None = the bundled default model), ``linear``,
    ``bspline`` or ``lanczos``. ``keep_acquired=False`` (ASI only) replaces the acquired slices
    by the autoencoder's reconstructions. ``synthesis`` (ASI only): ``"plain"`` or ``"residual"``
    (see :mod:`.engine`); None = the checkpoint's recommendation. ``engine`` reuses an :class:`ASIEngine` (model already
    on its device) instead of building one from ``checkpoint``/``device``/``batch_size``.
    Header fields other than the geometry (e.g. DICOM tags) are not copied: the output is a new image.
    """
    method = validate_method(method)
    factor = validate_factor(factor)
    validate_scalar_volume(image)
    index_axis = parse_axis(axis, image.GetSpacing())
    if image.GetSize()[index_axis] < 2:
        raise InputError(
            f"need at least 2 slices along the slice axis {index_axis} to interpolate; the image size is "
            f"{image.GetSize()}. Choose another --axis or a volume with more slices"
        )
    array = sitk.GetArrayViewFromImage(image)  # [k, j, i], no copy
    out_dtype = _output_dtype(array.dtype, output_type)
    axis_np = numpy_axis(index_axis)
    started = time.perf_counter()

    if method == "asi":
        if engine is None:
            engine = ASIEngine(resolve_checkpoint(checkpoint), device, batch_size=batch_size, precision=precision,
                               synthesis=synthesis)
        elif synthesis is not None and synthesis != engine.synthesis:
            raise InputError(f"synthesis={synthesis!r} differs from the given engine's {engine.synthesis!r}")
        values = engine.upsample(array, factor, axis=axis_np, keep_acquired=keep_acquired, output_dtype=out_dtype,
                                 progress=progress, should_cancel=should_cancel)
        settings = engine.describe()
    else:
        if should_cancel is not None and should_cancel():
            raise OperationCancelled("upsampling was cancelled")
        if progress is not None:
            progress(0, 1)
        values = convert_to_dtype(interpolate_array(array, axis_np, factor, method), out_dtype)
        # the interpolants pass through the samples; copy them so acquired slices are bit-exact
        np.moveaxis(values, axis_np, 0)[::factor] = np.moveaxis(array, axis_np, 0)
        if progress is not None:
            progress(1, 1)
        settings = "SimpleITK " + sitk.Version.VersionString()

    result = sitk.GetImageFromArray(values)
    result.CopyInformation(upsampled_reference(image, index_axis, factor))
    logger.info("%s x%d along axis %d: %s -> %s (spacing %s mm -> %s mm) in %.2f s; %s",
                method, factor, index_axis, image.GetSize(), result.GetSize(),
                _fmt(image.GetSpacing()), _fmt(result.GetSpacing()), time.perf_counter() - started, settings)
    return result


def _fmt(values: Any) -> str:
    return "x".join(f"{v:g}" for v in values)
