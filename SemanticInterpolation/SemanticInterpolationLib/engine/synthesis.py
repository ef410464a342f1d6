"""Through-plane upsampling of numpy volumes with a learned model of any registered type (numpy in, numpy out).

Axis order: the engine works on any 3-D array and takes the slice axis as a *numpy* axis
index. For arrays from SimpleITK (``GetArrayFromImage``) and from MRML
(``slicer.util.arrayFromVolume``) the order is ``[k, j, i]``, so ITK/IJK axis ``a`` is numpy
axis ``2 - a``.

For ``n`` acquired slices and factor ``K`` the result has ``(n - 1) * K + 1`` slices along the
axis. Output slice ``s * K`` is acquired slice ``s`` (bit-exact by default), and output slice
``s * K + i`` (``i = 1 .. K-1``) is decoded from ``(1 - i/K) z_s + (i/K) z_{s+1}`` where
``z`` are the latent maps (journal eq. 1 and 2): the first new slice is the one closest to
slice ``s``.

Three synthesis modes (``synthesis=``):

* ``"plain"`` (the paper): the new slice is the decoded latent mix, ``g((1-a) z_s + a z_{s+1})``.
* ``"residual"`` (detail-preserving): the linear mix of the two acquired slices plus the
  autoencoder's semantic correction, ``(1-a) x_s + a x_{s+1} + [g(mix) - ((1-a) g(z_s) + a g(z_{s+1}))]``.
  The bracket is what the latent mix adds beyond cross-fading the autoencoder's own
  reconstructions, so the autoencoder's reconstruction error (blur) cancels, while motion and
  shape change learned in the latent space stay. It costs one extra decode per acquired slice.
* ``"residual-bspline"``: the same correction added to cubic B-spline interpolation (SimpleITK,
  as the ``bspline`` baseline) instead of the linear mix. The B-spline values of the whole output
  are computed up front, so this mode holds one more output-sized float32 array.

Every model type offers the same three calls (see :mod:`..models.registry`): ``encode`` (the
state kept per acquired slice: ASI's latent map; for ``pair-unet`` the slice itself),
``synthesize(state_first, state_second, alpha)`` (ASI: decode the latent mix; ``pair-unet``: its
network on the pair) and ``reconstruct(state)``. A state is one tensor or a list of tensors (``hrinet``:
its maps of several scales), each with the batch axis first. A type lists the synthesis modes it supports in
``synthesis_modes``; the residual modes need ASI's reconstructions, so ``pair-unet`` (whose output
already is a correction to the linear mix) offers ``plain`` only.

Every acquired slice is encoded exactly once. Slices are streamed in chunks of
``batch_size``, so memory is bounded by the batch size (plus the output array), not by the
number of slices.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..models.checkpoint import Checkpoint
from .devices import autocast, describe_device, resolve_device, resolve_precision
from ..errors import CheckpointError, InputError, OperationCancelled
from .integer_offset import integer_offset
from .test_time_augmentation import TTA_MODES, augmented_synthesis, validate_tta
from ..models.normalization import IntensityNormalization, IntensityRange

logger = logging.getLogger("SemanticInterpolation")

#: ``progress(done, total)``: work units (slices encoded + slices decoded) done so far.
ProgressCallback = Callable[[int, int], None]
#: ``should_cancel()`` returns True to stop; the operation raises :class:`OperationCancelled`.
CancelCallback = Callable[[], bool]

MAX_FACTOR = 32
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
SYNTHESIS_MODES = ("plain", "residual", "residual-bspline")


def validate_factor(factor: int) -> int:
    """Return ``factor`` as int when it is an integer in [2, 32], else raise :class:`InputError`."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        if isinstance(factor, float) and factor.is_integer():
            factor = int(factor)
        else:
            raise InputError(f"upsampling factor must be a whole number, got {factor!r}")
    factor = int(factor)
    if factor < 2:
        raise InputError(f"upsampling factor must be at least 2 (got {factor}): K=2 halves the slice spacing")
    if factor > MAX_FACTOR:
        raise InputError(
            f"upsampling factor {factor} is unreasonably large (maximum {MAX_FACTOR}): the slices synthesized "
            "between two acquired slices would be almost all invented; use a smaller factor"
        )
    return factor


def validate_volume(volume: np.ndarray, axis: int) -> int:
    """Check that ``volume`` can be upsampled along numpy ``axis``; return the axis (0..2)."""
    if not isinstance(volume, np.ndarray):
        raise InputError(f"volume must be a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise InputError(
            f"volume must be 3-D (got {volume.ndim}-D, shape {volume.shape}): give one scalar 3-D volume; "
            "split 4-D series into 3-D frames and vector/RGB images into single components first"
        )
    if volume.dtype.kind not in "iuf":
        raise InputError(f"volume must hold real numbers (integer or float), got dtype {volume.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= int(axis) <= 2:
        raise InputError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    axis = int(axis) % 3
    if volume.shape[axis] < 2:
        raise InputError(
            f"need at least 2 slices along the slice axis to interpolate between them; axis {axis} has "
            f"{volume.shape[axis]} (shape {volume.shape}). Choose another axis or a volume with more slices"
        )
    if min(volume.shape) < 1:
        raise InputError(f"volume is empty (shape {volume.shape})")
    if volume.dtype.kind == "f" and not np.isfinite(volume).all():
        bad = int(np.size(volume) - np.count_nonzero(np.isfinite(volume)))
        raise InputError(
            f"volume contains {bad} NaN or infinite voxel(s): replace them (e.g. with 0 or the background value) first"
        )
    return axis


#: largest slice thickness / spacing accepted (slices overlapping by more than their spacing are unusual)
MAX_THICKNESS_RATIO = 3.0


def validate_thickness_ratio(ratio: float | None) -> float | None:
    """``ratio`` (slice thickness / slice spacing) as a float, or None; :class:`InputError` when it is not a
    positive number up to :data:`MAX_THICKNESS_RATIO`."""
    if ratio is None:
        return None
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise InputError(f"slice thickness ratio must be a number, got {ratio!r}") from None
    if not math.isfinite(value) or not 0.0 < value <= MAX_THICKNESS_RATIO:
        raise InputError(f"slice thickness / slice spacing must be above 0 and at most {MAX_THICKNESS_RATIO:g}, got "
                         f"{value:g}: give the slice thickness in mm (e.g. the DICOM SliceThickness), not in slices")
    return value


def default_batch_size(device: torch.device) -> int:
    """Slices per network call when none is given: small on the CPU, where cache reuse wins
    (batch 2 was fastest of 2..16 in bench/bench_engine.py on 2 cores), large on GPUs."""
    return {"cpu": 2, "mps": 16}.get(device.type, 128)


def validate_synthesis(mode: str) -> str:
    """Return ``mode`` when it is one of :data:`SYNTHESIS_MODES`, else raise :class:`InputError`."""
    if mode not in SYNTHESIS_MODES:
        raise InputError(f"synthesis mode must be one of {', '.join(SYNTHESIS_MODES)}, got {mode!r}")
    return mode


def synthesis_choice(value: str | None) -> str | None:
    """A user's synthesis choice as the engine's ``synthesis`` argument: None for the checkpoint's
    recommendation (None, ``""`` or ``"auto"``), else the mode, checked by :func:`validate_synthesis`."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    return validate_synthesis(str(value).strip().lower())


def output_slice_count(n_slices: int, factor: int) -> int:
    """Number of slices after upsampling ``n_slices`` by ``factor``: ``(n - 1) * K + 1``."""
    return (n_slices - 1) * factor + 1


def convert_to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float values to ``dtype``: integers are rounded and clipped to the type's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        # the float nearest to int64/uint64's maximum is 2**63 / 2**64, which would wrap around: stay below
        top = float(info.max) if int(float(info.max)) <= info.max else float(np.nextafter(float(info.max), 0.0))
        return np.clip(np.rint(values), info.min, top).astype(dtype)
    return values.astype(dtype, copy=False)


# A slice state is one tensor [N, ...] (ASI's latent map, pair-unet's slice) or a list of them (HRINet's
# maps of several scales); these helpers treat both alike, batch axis first.
def _states_apply(states, fn):
    return [fn(t) for t in states] if isinstance(states, (list, tuple)) else fn(states)


def _states_cat(parts: list):
    if isinstance(parts[0], (list, tuple)):
        return [torch.cat(level) for level in zip(*parts)]
    return torch.cat(parts)


def _states_len(states) -> int:
    return len(states[0]) if isinstance(states, (list, tuple)) else len(states)


@dataclass(frozen=True)
class _DecodeJob:
    first: int  # index of the first latent in the current chunk
    second: int  # index of the second latent in the current chunk
    alpha: float  # mixing weight of the second latent
    output_index: int  # slice index in the output volume


class ASIEngine:
    """Holds a model (any registered model type) on a device and upsamples volumes with it.

    Create one engine and call :meth:`upsample` for many volumes (e.g. the frames of a cine
    sequence) to load the model only once.

    ``device``: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    ``precision``: ``"auto"`` (float16 autocast on CUDA, float32 elsewhere) or a dtype name.
    ``batch_size``: slices per encoder/decoder call; bounds memory. None = :func:`default_batch_size`
    for the device (measured with ``bench/bench_engine.py``).
    ``memory_format``: ``"auto"``, ``"contiguous"`` or ``"channels_last"`` for the network tensors.
    ``synthesis``: ``"plain"`` or ``"residual"`` (see the module docstring); None = the mode the
    checkpoint recommends in its metadata (``metadata["inference"]["synthesis"]``), else plain.
    ``test_time_augmentation``: ``"none"``, ``"pair"``, ``"pair-flip"`` or ``"dihedral"`` (:mod:`.test_time_augmentation`; pair-unet
    networks); None or ``"auto"`` = the checkpoint's recommendation (``metadata["inference"]
    ["test_time_augmentation"]``), else none.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | torch.nn.Module,
        device: str | torch.device = "auto",
        *,
        precision: str = "auto",
        batch_size: int | None = None,
        memory_format: str = "auto",
        normalization: IntensityNormalization | None = None,
        synthesis: str | None = None,
        test_time_augmentation: str | None = None,
    ) -> None:
        default_tta = "none"
        if isinstance(checkpoint, Checkpoint):
            model, default_normalization = checkpoint.model, checkpoint.normalization
            default_synthesis = str((checkpoint.metadata.get("inference") or {}).get("synthesis", "plain"))
            default_tta = (checkpoint.metadata.get("inference") or {}).get("test_time_augmentation", "none")
        elif isinstance(checkpoint, torch.nn.Module) and callable(getattr(checkpoint, "synthesize", None)):
            model, default_normalization, default_synthesis = checkpoint, IntensityNormalization(), "plain"
        else:
            raise TypeError(f"checkpoint must be a Checkpoint or a model of a registered type, got "
                            f"{type(checkpoint).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise InputError(f"batch size must be a positive whole number, got {batch_size!r}")
        if memory_format not in MEMORY_FORMATS:
            raise InputError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
        self.synthesis = validate_synthesis(synthesis or default_synthesis)
        supported = tuple(getattr(model, "synthesis_modes", SYNTHESIS_MODES))
        if self.synthesis not in supported:
            from ..models.registry import model_type_of

            raise InputError(f"synthesis mode {self.synthesis!r} does not apply to {model_type_of(model).name} models, "
                             f"which support {', '.join(supported)}: choose one of those (or auto)")
        self.device = resolve_device(device)
        self.compute_dtype = resolve_precision(self.device, precision)
        self.batch_size = int(batch_size) if batch_size is not None else default_batch_size(self.device)
        self.normalization = normalization or default_normalization
        if memory_format == "auto":
            # channels_last was 1.3-1.7x faster than contiguous on the CPU in bench/bench_engine.py
            memory_format = "channels_last" if self.device.type in ("cuda", "cpu") else "contiguous"
        if getattr(model, "is_volume_model", False):  # 3-D networks (engine/volume_sr.py) have 5-D weights
            memory_format = "contiguous"
        self.memory_format = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        # the engine works on its own copy (a few MB): the caller's model keeps its device, memory
        # format and train/eval mode (a model being trained can be used for a preview upsampling)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.model = self.model.to(memory_format=self.memory_format)
        self.size_multiple = self.model.config.size_multiple
        from ..models.registry import model_type_of

        self.model_type = model_type_of(self.model).name
        if not isinstance(default_tta, str) or default_tta not in TTA_MODES:
            raise CheckpointError(f"the checkpoint {getattr(checkpoint, 'path', None) or ''} recommends an unknown "
                                  f"test-time augmentation {default_tta!r} (metadata inference); this program knows "
                                  f"{', '.join(TTA_MODES)}: update SemanticInterpolation or re-export the checkpoint")
        requested = default_tta if test_time_augmentation in (None, "auto") else test_time_augmentation
        if test_time_augmentation in (None, "auto") and not getattr(self.model, "supports_test_time_augmentation",
                                                                    False):
            requested = "none"  # a recommendation that does not apply to this network is not an error
        #: test-time augmentation of each new slice (:mod:`.test_time_augmentation`)
        self.test_time_augmentation = validate_tta(requested, self.model)
        #: report of the last adaptation by ``upsample_image(adapt=...)`` (None: not adapted)
        self.adaptation = None
        #: the network uses the slice profile (``upsample(slice_thickness_ratio=...)``) when it is given
        self.takes_slice_profile = bool(getattr(self.model, "takes_thickness", False))
        #: the slice profile estimated for the last ``upsample_image(slice_thickness="auto")`` (None: not estimated)
        self.profile_estimate = None

    def estimate_slice_profile(self, volume: np.ndarray, factor: int, axis: int = 0):
        """Thin or thick slices, estimated from ``volume`` itself by a network with a slice-profile input
        (:func:`.profile_estimate.estimate_slice_profile`, asked of the model's ``profile_estimator`` network when it
        has one); None for other networks or too few slices.
        ``volume``: 3-D array, slices along numpy axis ``axis``; not modified."""
        if not self.takes_slice_profile:
            return None
        from .profile_estimate import estimate_slice_profile

        axis = validate_volume(volume, axis)
        slices = np.moveaxis(volume, axis, 0)
        unit = self.normalization.to_unit_range(slices, self.normalization.fit(volume)).astype(np.float32)
        # a model of several networks names the one that estimates (profile-routed: its main network)
        estimator = getattr(self.model, "profile_estimator", self.model)
        return estimate_slice_profile(estimator, unit, validate_factor(factor), device=self.device)

    def remember_weights(self) -> None:
        """Keep a copy of the current weights for :meth:`restore` (once; adaptation calls it)."""
        if getattr(self, "_remembered_state", None) is None:
            self._remembered_state = copy.deepcopy(self.model.state_dict())

    def restore(self) -> None:
        """Back to the weights the engine had before adaptation (nothing to do when never adapted)."""
        state = getattr(self, "_remembered_state", None)
        if state is not None:
            self.model.load_state_dict(state)
            self.model.eval()

    def describe(self) -> str:
        """Device and settings, for logs."""
        fmt = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        return (f"{self.model_type} model, {self.synthesis} synthesis, device {describe_device(self.device)}, precision {str(self.compute_dtype).replace('torch.', '')}, "
                f"batch size {self.batch_size}, memory format {fmt}"
                + (f", test-time augmentation {self.test_time_augmentation}"
                   if self.test_time_augmentation != "none" else ""))

    # ------------------------------------------------------------------ helpers
    def _to_network(self, slices: np.ndarray, intensity_range: IntensityRange) -> torch.Tensor:
        """[b, H, W] raw slices -> [b, 1, Hp, Wp] normalised, edge-padded tensor on the device."""
        unit = self.normalization.to_unit_range(slices, intensity_range)
        pad_h = (-unit.shape[1]) % self.size_multiple
        pad_w = (-unit.shape[2]) % self.size_multiple
        if pad_h or pad_w:
            unit = np.pad(unit, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        tensor = torch.from_numpy(np.ascontiguousarray(unit)).unsqueeze(1)
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.compute_dtype):
            return _states_apply(self.model.encode(batch), lambda t: t.float())

    def _reconstruct(self, states: torch.Tensor) -> np.ndarray:
        with autocast(self.device, self.compute_dtype):
            decoded = self.model.reconstruct(_states_apply(states, self._network_format))
        return decoded[:, 0].float().cpu().numpy()

    def _synthesize(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor,
                    anchor: torch.Tensor | None = None, thickness_ratio: float | None = None) -> np.ndarray:
        extra = () if anchor is None else (anchor.contiguous(memory_format=self.memory_format),)
        profile = {"thickness": thickness_ratio} if self.takes_slice_profile else {}
        with autocast(self.device, self.compute_dtype):  # "none" is one plain call
            decoded = augmented_synthesis(self.model.synthesize, self.test_time_augmentation,
                                          _states_apply(first, self._network_format),
                                          _states_apply(second, self._network_format), alpha, *extra, **profile)
        return decoded[:, 0].float().cpu().numpy()

    def _network_format(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.contiguous(memory_format=self.memory_format) if tensor.ndim == 4 else tensor

    @staticmethod
    def _chunks(n_slices: int, chunk: int) -> Iterator[tuple[int, int]]:
        """Inclusive (start, end) slice ranges; consecutive ranges share one slice, so each range
        brings ``chunk`` slices not encoded before (the first one at least two)."""
        start, end = 0, min(max(chunk - 1, 1), n_slices - 1)
        while True:
            yield start, end
            if end >= n_slices - 1:
                return
            start, end = end, min(end + chunk, n_slices - 1)

    # ------------------------------------------------------------------ public
    def upsample(
        self,
        volume: np.ndarray,
        factor: int,
        *,
        axis: int = 0,
        keep_acquired: bool = True,
        output_dtype: np.dtype | type | str | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCallback | None = None,
        slice_thickness_ratio: float | None = None,
    ) -> np.ndarray:
        """Upsample ``volume`` by ``factor`` along numpy axis ``axis``.

        ``slice_thickness_ratio``: the acquisition's slice thickness divided by its slice spacing along
        ``axis`` (1 = contiguous thick slices, 0.2 = thin slices far apart), when known; networks with
        a slice-profile input use it (:attr:`takes_slice_profile`), others ignore it. None = not known.

        ``volume``: 3-D array of any real dtype, not modified. Returns a new array with
        ``(n - 1) * factor + 1`` slices along ``axis`` and the input's other sizes, of
        ``output_dtype`` (default: the input's dtype; integers are rounded and clipped).
        With ``keep_acquired`` (default) the acquired slices are copied bit-exactly;
        otherwise they are replaced by the autoencoder's reconstructions.
        """
        factor = validate_factor(factor)
        axis = validate_volume(volume, axis)
        slice_thickness_ratio = validate_thickness_ratio(slice_thickness_ratio)
        try:
            out_dtype = np.dtype(output_dtype) if output_dtype is not None else volume.dtype
        except TypeError:
            raise InputError(f"output dtype {output_dtype!r} is not a numpy type name: use e.g. 'int16', 'uint8' or "
                             "'float32' (or None for the input's)") from None
        if out_dtype.kind not in "iuf":
            raise InputError(f"output dtype must be an integer or float type, got {out_dtype}")

        if getattr(self.model, "is_volume_model", False):  # e.g. sr-generator: tiles of the whole volume
            from .volume_sr import upsample_volume

            return upsample_volume(self, volume, factor, axis=axis, keep_acquired=keep_acquired, out_dtype=out_dtype,
                                   progress=progress, should_cancel=should_cancel)
        started = time.perf_counter()
        slices = np.moveaxis(volume, axis, 0)  # view [n, H, W]
        # integers beyond float32's exact range: computed relative to the minimum (see .integer_offset)
        offset = integer_offset(volume)
        work = slices if offset is None else offset.shifted(slices, np.float32)

        def to_output(values: np.ndarray) -> np.ndarray:
            return convert_to_dtype(values, out_dtype) if offset is None else offset.restored(values, out_dtype)
        n_slices, height, width = slices.shape
        out_shape = list(volume.shape)
        out_shape[axis] = output_slice_count(n_slices, factor)
        output = np.empty(out_shape, dtype=out_dtype)
        out_slices = np.moveaxis(output, axis, 0)  # view into output

        intensity_range = self.normalization.fit(work)
        alphas = [i / factor for i in range(1, factor)]
        residual = self.synthesis.startswith("residual")
        anchor = None  # [n_out, H, W] float32 view: the B-spline interpolation the correction is added to
        needs_anchor = bool(getattr(self.model, "needs_anchor", False))  # a network that takes it as an input
        if self.synthesis == "residual-bspline" or needs_anchor:
            from .baselines import interpolate_slices  # SimpleITK; only needed for this mode

            # one output-sized float32 array; the B-spline runs in chunks of in-plane voxels
            anchor = interpolate_slices(work, factor, "bspline", dtype=np.float32)
        need_reconstructions = residual or not keep_acquired
        jobs_total = (n_slices - 1) * (factor - 1)
        total = n_slices + jobs_total + (n_slices if need_reconstructions else 0)
        done = 0

        def report(units: int) -> None:
            nonlocal done
            done += units
            if progress is not None:
                progress(done, total)

        def check_cancel() -> None:
            if should_cancel is not None and should_cancel():
                raise OperationCancelled("upsampling was cancelled")

        if keep_acquired:
            for s in range(n_slices):
                out_slices[s * factor] = slices[s]  # exact copy (cast only if output dtype differs)

        logger.info("Upsampling %s volume of shape %s along axis %d by %d (%s)",
                    volume.dtype, volume.shape, axis, factor, self.describe())
        if progress is not None:
            progress(0, total)

        previous_latent: torch.Tensor | None = None
        previous_reconstruction: np.ndarray | None = None
        intensity_width = np.float32(intensity_range.width)
        with torch.inference_mode():
            for start, end in self._chunks(n_slices, self.batch_size):
                check_cancel()
                first_new = start if previous_latent is None else start + 1
                new_latents = _states_cat([
                    self._encode(self._to_network(work[b:min(b + self.batch_size, end + 1)], intensity_range))
                    for b in range(first_new, end + 1, self.batch_size)
                ])
                latents = new_latents if previous_latent is None else _states_cat([previous_latent, new_latents])
                report(end + 1 - first_new)

                reconstructions = None  # [end - start + 1, H, W] in [0, 1], acquired slices start..end
                if need_reconstructions:
                    new_reconstructions = []
                    for b in range(0, _states_len(new_latents), self.batch_size):
                        check_cancel()
                        chunk_states = _states_apply(new_latents, lambda t: t[b:b + self.batch_size])
                        new_reconstructions.append(self._reconstruct(chunk_states)[:, :height, :width])
                        report(len(new_reconstructions[-1]))
                    fresh = np.concatenate(new_reconstructions)
                    if not keep_acquired:
                        values = self.normalization.to_input_units(fresh, intensity_range)
                        for q, image in enumerate(to_output(values), start=first_new):
                            out_slices[q * factor] = image
                    reconstructions = fresh if previous_reconstruction is None else np.concatenate(
                        [previous_reconstruction, fresh])

                jobs = [
                    _DecodeJob(p, p + 1, alpha, (start + p) * factor + i)
                    for p in range(end - start)
                    for i, alpha in enumerate(alphas, start=1)
                ]
                for b in range(0, len(jobs), self.batch_size):
                    check_cancel()
                    batch = jobs[b:b + self.batch_size]
                    first = torch.tensor([j.first for j in batch], device=self.device)
                    second = torch.tensor([j.second for j in batch], device=self.device)
                    alpha = torch.tensor([j.alpha for j in batch], device=self.device, dtype=torch.float32)
                    anchor_batch = None
                    if needs_anchor:
                        anchor_batch = self._to_network(np.stack([anchor[j.output_index] for j in batch]),
                                                        intensity_range)
                    decoded = self._synthesize(_states_apply(latents, lambda t: t.index_select(0, first)),
                                               _states_apply(latents, lambda t: t.index_select(0, second)),
                                               alpha, anchor_batch, slice_thickness_ratio)[:, :height, :width]
                    if residual:
                        values = np.empty_like(decoded)
                        for n, job in enumerate(batch):
                            a = np.float32(job.alpha)
                            if anchor is not None:
                                base = anchor[job.output_index]
                            else:
                                base = (1 - a) * work[start + job.first].astype(np.float32) \
                                    + a * work[start + job.second].astype(np.float32)
                            reconstruction_mix = (1 - a) * reconstructions[job.first] + a * reconstructions[job.second]
                            values[n] = base + intensity_width * (decoded[n] - reconstruction_mix)
                    else:
                        values = self.normalization.to_input_units(decoded, intensity_range)
                    if not np.isfinite(values).all():
                        raise CheckpointError(
                            f"the {self.model_type} network produced NaN or infinite values for output slice "
                            f"{batch[0].output_index}..{batch[-1].output_index}: the checkpoint is broken (e.g. bad "
                            "normalisation statistics) or the precision overflowed; try --precision float32 or "
                            "another checkpoint. Nothing was written")
                    converted = to_output(values)
                    for job, image in zip(batch, converted):
                        out_slices[job.output_index] = image
                    report(len(batch))
                previous_latent = _states_apply(latents, lambda t: t[-1:].clone())
                if reconstructions is not None:
                    previous_reconstruction = reconstructions[-1:].copy()
                del latents, new_latents

        logger.info("Upsampling done: %d slices synthesized in %.2f s",
                    jobs_total, time.perf_counter() - started)
        return output


def upsample_array(
    volume: np.ndarray,
    factor: int,
    checkpoint: Checkpoint | torch.nn.Module,
    *,
    axis: int = 0,
    keep_acquired: bool = True,
    output_dtype: np.dtype | type | str | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    synthesis: str | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCallback | None = None,
) -> np.ndarray:
    """One-call form of :meth:`ASIEngine.upsample` (see there and :class:`ASIEngine` for the arguments)."""
    engine = ASIEngine(checkpoint, device, precision=precision, batch_size=batch_size, synthesis=synthesis)
    return engine.upsample(volume, factor, axis=axis, keep_acquired=keep_acquired, output_dtype=output_dtype,
                           progress=progress, should_cancel=should_cancel)
