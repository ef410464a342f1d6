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
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from .engine.baselines import BASELINE_METHODS, interpolate_array, upsampled_reference
from .models.checkpoint import Checkpoint, resolve_checkpoint
from .engine.integer_offset import integer_offset
from .engine.synthesis import (ASIEngine, CancelCallback, ProgressCallback, convert_to_dtype, validate_factor,
                               validate_thickness_ratio)
from .errors import InputError, OperationCancelled
from .volumes.geometry import numpy_axis, parse_axis
from .volumes.imageio import validate_scalar_volume
from .volumes.slice_profile import slice_thickness_ratio

if TYPE_CHECKING:
    from .engine.profile_estimate import ProfileEstimate

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
    adapt: float | None = None,
    adapt_steps: int | None = None,
    adapt_seed: int = 0,
    save_adapted: "str | os.PathLike | None" = None,
    slice_thickness: "float | str | None" = "auto",
    profile_estimate: "ProfileEstimate | None" = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCallback | None = None,
) -> sitk.Image:
    """Upsample a 3-D scalar SimpleITK image by ``factor`` through-plane; the input is not modified.

    ``method``: ``asi`` (needs ``checkpoint``; None = the bundled default model), ``linear``,
    ``bspline`` or ``lanczos``. ``keep_acquired=False`` (ASI only) replaces the acquired slices
    by the autoencoder's reconstructions. ``synthesis`` (ASI only): ``"plain"`` or ``"residual"``
    (see :mod:`.engine`); None = the checkpoint's recommendation. ``engine`` reuses an :class:`ASIEngine` (model already
    on its device) instead of building one from ``checkpoint``/``device``/``batch_size``.
    ``adapt`` (learned method only): first adapt the model to this scan for at most ``adapt`` seconds
    (and ``adapt_steps`` steps; see :mod:`.training.adaptation`), keeping the adapted weights only
    when they predict held-out acquired slices better; the report is ``engine.adaptation`` (None
    without adaptation) and is logged. The engine goes back to its weights afterwards, so a reused
    engine is not changed. ``save_adapted``: also write the adapted model to this checkpoint path
    (only when adaptation was kept). The checkpoint file is never modified.
    ``slice_thickness`` (learned method only): the acquisition's slice thickness in mm, for networks with a
    slice-profile input (see :mod:`.volumes.slice_profile`); ``"auto"`` = the DICOM Slice Thickness when the
    image carries it, else thin or thick slices estimated from the scan (:mod:`.engine.profile_estimate`;
    the estimate is ``engine.profile_estimate``); None = not known (the network works without it).
    ``profile_estimate``: an estimate this engine already made for this image and factor
    (:meth:`ASIEngine.estimate_slice_profile`), used instead of estimating again where ``"auto"`` would.
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

    if adapt is not None and method != "asi":
        raise InputError("adaptation (adapt=, --adapt) applies to the learned method only (method asi)")
    if method == "asi":
        if engine is None:
            engine = ASIEngine(resolve_checkpoint(checkpoint), device, batch_size=batch_size, precision=precision,
                               synthesis=synthesis)
        elif synthesis is not None and synthesis != engine.synthesis:
            raise InputError(f"synthesis={synthesis!r} differs from the given engine's {engine.synthesis!r}")
        engine.adaptation = None
        ratio = validate_thickness_ratio(slice_thickness_ratio(image, index_axis, slice_thickness))
        engine.profile_estimate = None
        if ratio is None and isinstance(slice_thickness, str) and engine.takes_slice_profile:  # "auto", no header
            engine.profile_estimate = profile_estimate if profile_estimate is not None else \
                engine.estimate_slice_profile(array, factor, axis_np)
            if engine.profile_estimate is not None:
                ratio = engine.profile_estimate.ratio
                logger.info("%s", engine.profile_estimate.summary())
        if adapt is not None:
            values = _adapt_and_upsample(engine, array, factor, axis_np, keep_acquired, out_dtype, adapt, adapt_steps,
                                         adapt_seed, save_adapted, progress, should_cancel, ratio)
        else:
            values = engine.upsample(array, factor, axis=axis_np, keep_acquired=keep_acquired, output_dtype=out_dtype,
                                     progress=progress, should_cancel=should_cancel, slice_thickness_ratio=ratio)
        settings = engine.describe()
        if engine.takes_slice_profile:
            settings += (f", slice profile thickness/spacing {ratio:.3g}" if ratio is not None
                         else ", slice profile not known")
    else:
        if should_cancel is not None and should_cancel():
            raise OperationCancelled("upsampling was cancelled")
        if progress is not None:
            progress(0, 1)
        offset = integer_offset(array, "the image")  # integers beyond float32's exact range: see .engine.integer_offset
        if offset is None:
            values = convert_to_dtype(interpolate_array(array, axis_np, factor, method), out_dtype)
        else:
            values = offset.restored(interpolate_array(offset.shifted(array), axis_np, factor, method), out_dtype)
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


def _adapt_and_upsample(engine: ASIEngine, array: np.ndarray, factor: int, axis_np: int, keep_acquired: bool,
                        out_dtype: np.dtype, seconds: float, steps: int | None, seed: int,
                        save_adapted: "str | os.PathLike | None", progress: ProgressCallback | None,
                        should_cancel: CancelCallback | None, thickness_ratio: float | None = None) -> np.ndarray:
    """Adaptation (first half of the progress), then upsampling (second half); the engine's weights are
    restored afterwards, also on errors and cancel."""
    from .training.adaptation import adapt_engine  # checks the model and the volume before any work

    destination = None
    if save_adapted is not None:
        from .volumes.fileio import check_writable_destination

        destination = check_writable_destination(save_adapted)

    def first_half(done: int, total: int) -> None:
        if progress is not None:
            progress(done, 2 * total)

    def second_half(done: int, total: int) -> None:
        if progress is not None:
            progress(total + done, 2 * total)

    try:
        report = adapt_engine(engine, array, axis=axis_np, seconds=float(seconds), max_steps=steps, seed=int(seed),
                              thickness_ratio=thickness_ratio, factor=factor, progress=first_half,
                              should_cancel=should_cancel)
        engine.adaptation = report
        if destination is not None:
            if report.accepted:
                from .models.checkpoint import save_checkpoint

                save_checkpoint(destination, engine.model, normalization=engine.normalization,
                                training={"adapted_to_scan": report.to_dict()},
                                metadata={"inference": {"synthesis": engine.synthesis}})
                logger.info("wrote the adapted model to %s", destination)
            else:
                logger.warning("adaptation was declined (%s): no adapted checkpoint written to %s",
                               report.reason, destination)
        return engine.upsample(array, factor, axis=axis_np, keep_acquired=keep_acquired, output_dtype=out_dtype,
                               progress=second_half, should_cancel=should_cancel, slice_thickness_ratio=thickness_ratio)
    finally:
        engine.restore()


def _fmt(values: Any) -> str:
    return "x".join(f"{v:g}" for v in values)
