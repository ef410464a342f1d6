"""Through-plane upsampling with a 3-D volume model (model type ``sr-generator``), tile by tile.

:meth:`~.synthesis.ASIEngine.upsample` comes here when its model is a volume model
(``model.is_volume_model``); arguments and result are the engine's (numpy axis ``axis`` is the slice
axis; arrays from SimpleITK/MRML are ``[k, j, i]``).

Steps: cubic B-spline interpolation of the slices onto the output grid (``(n - 1) K + 1`` slices,
the engine's ``bspline`` baseline, float32), then the generator on overlapping 3-D tiles. Each tile
is a cube of ``tile_size`` output voxels (the core) read with a halo of ``receptive_radius`` voxels
on every side (clipped at the volume's faces); only the core is kept. The halo is at least the
network's receptive field and the network has no normalisation, so the tiles' overlaps do not need
blending: the result equals running the generator on the whole volume at once (to float rounding),
while memory for the network is bounded by one tile. Acquired slices are copied bit-exactly unless
``keep_acquired`` is False. Progress counts tiles; cancel is polled before each tile.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import CheckpointError, InputError, OperationCancelled
from .devices import autocast

logger = logging.getLogger("SemanticInterpolation")


def check_factor(model: torch.nn.Module, factor: int) -> None:
    """:class:`InputError` when ``model`` was not trained for ``factor``."""
    factors = tuple(model.config.factors)
    if factor not in factors:
        raise InputError(
            f"this sr-generator checkpoint was trained for K = {', '.join(map(str, factors))} only, not K = {factor}: "
            f"use --factor {factors[0]}, train one for K = {factor} (train-sr --factor {factor}), or use a "
            "slice model (asi, pair-unet, xuan-vae), which work at any factor")


def tile_ranges(size: int, core: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """``(read_start, read_end, core_start, core_end)`` along one axis: cores of ``core`` voxels tile
    ``[0, size)``, each read with ``halo`` voxels more on both sides (clipped to the axis)."""
    for start in range(0, size, core):
        end = min(start + core, size)
        yield max(start - halo, 0), min(end + halo, size), start, end


def run_tiled(model: torch.nn.Module, unit: Callable[[tuple[slice, slice, slice]], np.ndarray],
              shape: tuple[int, int, int], device: torch.device, compute_dtype: torch.dtype, *,
              tile_size: int, halo: int, output: np.ndarray,
              progress: Callable[[int, int], None] | None = None,
              should_cancel: Callable[[], bool] | None = None) -> None:
    """Fill ``output`` (``shape``, float32) with ``model`` applied tile by tile to the volume that
    ``unit(region)`` returns ([D, H, W] float32 of a region given as three slices)."""
    ranges = [list(tile_ranges(s, tile_size, halo)) for s in shape]
    tiles = list(itertools.product(*ranges))
    if progress is not None:
        progress(0, len(tiles))
    with torch.inference_mode():
        for done, tile in enumerate(tiles, start=1):
            if should_cancel is not None and should_cancel():
                raise OperationCancelled("upsampling was cancelled")
            read = tuple(slice(r0, r1) for r0, r1, _, _ in tile)
            core = tuple(slice(c0 - r0, c1 - r0) for r0, _, c0, c1 in tile)
            block = torch.from_numpy(np.ascontiguousarray(unit(read), dtype=np.float32))[None, None].to(device)
            with autocast(device, compute_dtype):
                result = model(block).float()
            output[tuple(slice(c0, c1) for _, _, c0, c1 in tile)] = result[0, 0][core].cpu().numpy()
            if progress is not None:
                progress(done, len(tiles))


def upsample_volume(engine, volume: np.ndarray, factor: int, *, axis: int, keep_acquired: bool,
                    out_dtype: np.dtype, progress=None, should_cancel=None) -> np.ndarray:
    """The engine's upsampling for a volume model (see the module notes); ``factor`` and ``axis``
    are already validated by the caller."""
    from .baselines import interpolate_slices
    from .synthesis import convert_to_dtype, output_slice_count

    model = engine.model
    check_factor(model, factor)
    started = time.perf_counter()
    slices = np.moveaxis(volume, axis, 0)
    n_slices = slices.shape[0]
    out_shape = list(volume.shape)
    out_shape[axis] = output_slice_count(n_slices, factor)
    output = np.empty(out_shape, dtype=out_dtype)
    out_slices = np.moveaxis(output, axis, 0)
    intensity_range = engine.normalization.fit(volume)
    logger.info("Upsampling %s volume of shape %s along axis %d by %d with a 3-D generator (%s)",
                volume.dtype, volume.shape, axis, factor, engine.describe())
    anchor = interpolate_slices(slices, factor, "bspline", dtype=np.float32)  # [n_out, H, W] input units
    values = np.empty(anchor.shape, dtype=np.float32)

    def unit(region: tuple[slice, slice, slice]) -> np.ndarray:
        return engine.normalization.to_unit_range(anchor[region], intensity_range).astype(np.float32, copy=False)

    run_tiled(model, unit, anchor.shape, engine.device, engine.compute_dtype,
              tile_size=int(getattr(engine, "volume_tile_size", None) or model.config.tile_size),
              halo=int(model.config.receptive_radius), output=values, progress=progress,
              should_cancel=should_cancel)
    del anchor
    values = engine.normalization.to_input_units(values, intensity_range)
    if not np.isfinite(values).all():
        raise CheckpointError(f"the {engine.model_type} network produced NaN or infinite values: the checkpoint is "
                              "broken or the precision overflowed; try --precision float32 or another checkpoint. "
                              "Nothing was written")
    out_slices[...] = convert_to_dtype(values, out_dtype)
    if keep_acquired:
        for s in range(n_slices):
            out_slices[s * factor] = slices[s]
    logger.info("Upsampling done in %.2f s", time.perf_counter() - started)
    return output


def check_volume_for_patch(shape: tuple[int, ...], patch: int, name: str) -> None:
    """:class:`InputError` when a training volume of ``shape`` (D, H, W on the output grid) is smaller
    than the cubic training patch ``patch``."""
    if min(shape) < patch:
        raise InputError(
            f"{name}: the volume is {'x'.join(map(str, shape))} voxels on the upsampled grid, smaller than the 3-D "
            f"training patch of {patch} voxels per side: give a smaller --patch-size (at most {min(shape)}) or "
            "larger volumes")
