"""Run an evaluation: volumes x factors K x methods, through the same upsampling users run.

For each fine-slice volume and factor K, :func:`~.simulate.simulate_thick_slices` keeps every
K-th slice (optionally after a thick-slice blur), :func:`~..upsampling.upsample_image` upsamples
the result back by K with each method (ASI through one shared :class:`~..engine.ASIEngine`), and
only the synthesized slices are scored against the removed real ones, on the reference's
1st/99th-percentile [0, 1] scale (both clamped), with the measures of :mod:`.metrics`. Removed
slices whose reference is constant (e.g. empty background) carry no structure to recover and
are not scored; they are counted in :attr:`EvaluationResult.notes`.

No Qt, no Slicer: the command line, the Slicer module and notebooks call :func:`run_evaluation`.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..engine.baselines import BASELINE_METHODS
from ..models.checkpoint import Checkpoint, resolve_checkpoint
from ..engine.synthesis import ASIEngine, validate_factor
from ..errors import InputError, OperationCancelled
from ..volumes.geometry import numpy_axis, parse_axis
from ..volumes.imageio import validate_scalar_volume
from ..upsampling import METHODS, upsample_image, validate_method
from .metrics import METRICS, SSIM_WINDOW, VIF_MIN_SIZE, percentile_range, scale_to_unit_range, score_slices
from .simulate import check_length, check_noise_fraction, simulate_thick_slices

logger = logging.getLogger("SemanticInterpolation")

DEFAULT_FACTORS = (2, 3, 4, 5, 6)
ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]
_UNITS_PER_STEP = 1000


def parse_factors(factors: "str | Iterable[int]") -> tuple[int, ...]:
    """``"2,3,4"``, ``"2-6"``, ``"2,4-6"`` or a list of ints -> sorted unique factors, each validated."""
    if isinstance(factors, str):
        text = factors.strip()
        if not text:
            raise InputError("give at least one upsampling factor, e.g. --factors 2,3,4,5,6")
        values: list[int] = []
        for part in text.split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if match:
                first, last = int(match.group(1)), int(match.group(2))
                if last < first:
                    raise InputError(f"factor range {part!r} runs backwards: write it as {last}-{first}")
                values.extend(range(first, last + 1))
            elif re.fullmatch(r"\d+", part):
                values.append(int(part))
            else:
                raise InputError(
                    f"bad factor list {factors!r}: {part!r} is not a whole number; write factors as e.g. 2,3,4,5,6 or 2-6"
                )
    else:
        values = list(factors)
        if not values:
            raise InputError("give at least one upsampling factor, e.g. --factors 2,3,4,5,6")
    return tuple(sorted({validate_factor(v) for v in values}))


def parse_methods(methods: "str | Iterable[str]") -> tuple[str, ...]:
    """``"asi,bspline"`` or a list -> validated, duplicates removed, ASI first, then the given order."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [str(m).strip().lower() for m in items if str(m).strip()]
    if not names:
        raise InputError(f"give at least one method: {', '.join(METHODS)}")
    result: list[str] = []
    for name in names:
        validated = validate_method(name)
        if validated not in result:
            result.append(validated)
    result.sort(key=lambda m: 0 if m == "asi" else 1)
    return tuple(result)


#: the learned model after adaptation to the thinned volume (``EvaluationSettings.adapt_seconds``)
ADAPTED_METHOD = "asi+adapt"


def compared_methods(checkpoints: "Sequence[str]") -> tuple[str, ...]:
    """Method names of the compared checkpoints: ``model:<file stem>``, made unique with a number."""
    names: list[str] = []
    for path in checkpoints:
        base = f"model:{Path(str(path)).name.split('.')[0]}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class EvaluationSettings:
    """What to evaluate. ``checkpoint`` (path, :class:`Checkpoint` or None = default model) is used only for ASI."""

    factors: tuple[int, ...] = DEFAULT_FACTORS
    methods: tuple[str, ...] = ("asi", *BASELINE_METHODS)
    axis: "int | str" = "auto"
    thick_slices: bool = False
    checkpoint: "str | Checkpoint | None" = None
    device: str = "auto"
    batch_size: "int | None" = None  #: None = the engine's default for the device
    synthesis: "str | None" = None  #: ASI synthesis mode; None = the checkpoint's recommendation
    #: seconds of adaptation to each thinned volume (see :mod:`..training.adaptation`); adds the method
    #: ``asi+adapt`` beside ``asi``. None = no adaptation. Adaptation sees only the thinned volume.
    adapt_seconds: "float | None" = None
    adapt_steps: "int | None" = None  #: also stop adaptation after this many steps (deterministic)
    #: more checkpoints scored side by side, as methods ``model:<name>`` (name: the file's stem); each
    #: in its own recommended synthesis mode. The Wilcoxon tests stay ASI (``checkpoint``) against the rest.
    compare: "tuple[str, ...]" = ()
    #: what networks with a slice-profile input are told: ``"auto"`` (as for a NIfTI file: estimated from the
    #: thinned volume), ``"told"`` (the simulated thickness, as a DICOM header would say: the fine spacing,
    #: or K x it with thick slices) or ``"unknown"`` (nothing)
    slice_profile: str = "auto"
    #: test-time augmentation of the ASI model (:mod:`..engine.test_time_augmentation`); None = the checkpoint's
    test_time_augmentation: "str | None" = None
    #: Rician noise added to the kept slices after the optional blur, as a fraction of the volume's 99th
    #: percentile (0 = none); the removed slices are scored as they are in the volume (see :mod:`.simulate`)
    acquisition_noise: float = 0.0
    noise_seed: int = 2026  #: seed of that noise (with K: each factor its own reproducible draw)

    def validated(self) -> "EvaluationSettings":
        """A copy with factors and methods parsed and checked (fields not named here are kept as they are)."""
        if self.slice_profile not in SLICE_PROFILE_CHOICES:
            raise InputError(f"slice profile must be one of {', '.join(SLICE_PROFILE_CHOICES)}, got {self.slice_profile!r}")
        return replace(self, factors=parse_factors(self.factors), methods=parse_methods(self.methods),
                       thick_slices=bool(self.thick_slices),
                       acquisition_noise=check_noise_fraction(self.acquisition_noise), noise_seed=int(self.noise_seed),
                       batch_size=None if self.batch_size is None else int(self.batch_size))


#: what ``EvaluationSettings.slice_profile`` may say
SLICE_PROFILE_CHOICES = ("auto", "told", "unknown")


@dataclass
class MethodRun:
    """Timing of one upsampling: ``seconds`` of ``method`` on ``volume`` at ``factor``; ``scored`` slices."""

    volume: str
    factor: int
    method: str
    seconds: float
    scored: int


@dataclass
class MontageSlice:
    """One removed slice shown in the montage: reference and each method's synthesized slice on [0, 1]."""

    volume: str
    factor: int
    slice_index: int
    offset: int
    reference: np.ndarray
    predictions: dict[str, np.ndarray]
    pixel_aspect: float  # physical height / width of one pixel, for display


@dataclass
class EvaluationResult:
    """Per-slice scores (columnar), timings and montage slices of one evaluation run."""

    settings: EvaluationSettings
    volumes: list[str]
    slice_axes: dict[str, int]
    model: str | None
    columns: dict[str, list] = field(default_factory=lambda: {k: [] for k in
                                     ("volume", "factor", "method", "slice_index", "offset", *METRICS)})
    runs: list[MethodRun] = field(default_factory=list)
    montage: list[MontageSlice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: registered model type of the evaluated model (method ``"asi"``); None when no model was evaluated
    model_type: str | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        extra = (ADAPTED_METHOD,) if self.settings.adapt_seconds and "asi" in self.settings.methods else ()
        return (*self.settings.methods, *extra, *compared_methods(self.settings.compare))

    @property
    def factors(self) -> tuple[int, ...]:
        return self.settings.factors

    def scores(self, method: str, factor: int, metric: str, volume: str | None = None) -> np.ndarray:
        """Per-slice ``metric`` of ``method`` at ``factor`` (all volumes, or one), in a fixed slice order."""
        cols = self.columns
        values = [v for vol, k, m, v in zip(cols["volume"], cols["factor"], cols["method"], cols[metric])
                  if k == factor and m == method and (volume is None or vol == volume)]
        return np.asarray(values, dtype=np.float64)

    def add(self, volume: str, factor: int, method: str, indices: np.ndarray, scores: Mapping[str, np.ndarray]) -> None:
        n = len(indices)
        self.columns["volume"].extend([volume] * n)
        self.columns["factor"].extend([factor] * n)
        self.columns["method"].extend([method] * n)
        self.columns["slice_index"].extend(int(i) for i in indices)
        self.columns["offset"].extend(int(i) % factor for i in indices)
        for name in METRICS:
            self.columns[name].extend(float(v) for v in scores[name])


def volume_name(path_or_name: str) -> str:
    """A short label for a volume file: the file name without image extensions."""
    name = str(path_or_name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.gz)$", "", name, flags=re.IGNORECASE) or "volume"


def check_volumes(volumes: Mapping[str, sitk.Image], settings: EvaluationSettings) -> dict[str, int]:
    """Validate every volume for every factor before any work; return each volume's ITK slice axis."""
    if not volumes:
        raise InputError("give at least one fine-slice volume to evaluate")
    largest = max(settings.factors)
    axes = {}
    for name, image in volumes.items():
        validate_scalar_volume(image)
        axis = parse_axis(settings.axis, image.GetSpacing())
        check_length(image.GetSize()[axis], largest, what=f"volume {name!r} (size {image.GetSize()})")
        in_plane = [image.GetSize()[a] for a in range(3) if a != axis]
        if min(in_plane) < SSIM_WINDOW:
            raise InputError(
                f"volume {name!r} has slices of {in_plane[0]}x{in_plane[1]} pixels: SSIM needs at least "
                f"{SSIM_WINDOW}x{SSIM_WINDOW}; choose another --axis"
            )
        axes[name] = axis
    return axes


def _pixel_aspect(image: sitk.Image, index_axis: int) -> float:
    """Height/width of a pixel of a slice shown as a [rows, cols] numpy slice of ``[k, j, i]`` data."""
    in_plane = [a for a in (2, 1, 0) if a != index_axis]  # numpy order: rows then columns
    spacing = image.GetSpacing()
    return float(spacing[in_plane[0]]) / float(spacing[in_plane[1]])


def run_evaluation(
    volumes: "Mapping[str, sitk.Image] | Sequence[tuple[str, sitk.Image]]",
    settings: EvaluationSettings,
    *,
    engine: ASIEngine | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCallback | None = None,
) -> EvaluationResult:
    """Evaluate ``settings.methods`` at ``settings.factors`` on fine-slice ``volumes`` ({name: image}).

    All inputs are checked first (factors, methods, volume lengths for the largest K, the ASI
    checkpoint), so a bad input fails before any work. ``engine`` reuses an ASI engine;
    otherwise one is built from ``settings.checkpoint``. ``progress(done, total)`` reports
    overall progress; ``should_cancel()`` returning True raises :class:`OperationCancelled`.
    """
    started = time.perf_counter()
    settings = settings.validated()
    volumes = dict(volumes)
    axes = check_volumes(volumes, settings)
    model = None
    if "asi" in settings.methods:
        if engine is None:
            checkpoint = resolve_checkpoint(settings.checkpoint)
            engine = ASIEngine(checkpoint, settings.device, batch_size=settings.batch_size,
                               synthesis=settings.synthesis,
                               test_time_augmentation=settings.test_time_augmentation)
            model = f"{checkpoint.summary()}; {engine.synthesis} synthesis" + (
                f", test-time augmentation {engine.test_time_augmentation}"
                if engine.test_time_augmentation != "none" else "")
        else:
            model = f"ASI engine given by the caller ({engine.describe()})"
    result = EvaluationResult(settings, list(volumes), axes, model)
    result.model_type = engine.model_type if engine is not None else None
    engines: dict[str, ASIEngine] = {"asi": engine, ADAPTED_METHOD: engine} if engine is not None else {}
    for method, path in zip(compared_methods(settings.compare), settings.compare):
        compared = resolve_checkpoint(path)
        engines[method] = ASIEngine(compared, settings.device, batch_size=settings.batch_size)
        result.notes.append(f"{method}: {compared.summary()}; {engines[method].synthesis} synthesis")

    if settings.adapt_seconds and engine is not None:
        from ..training.adaptation import ADAPTABLE_TYPES

        if engine.model_type not in ADAPTABLE_TYPES:
            raise InputError(f"adaptation is available for {', '.join(ADAPTABLE_TYPES)} models; the evaluated model is "
                             f"a {engine.model_type} model. Evaluate without --adapt")
    steps = len(volumes) * len(settings.factors) * len(result.methods)
    total = steps * _UNITS_PER_STEP
    step = 0

    def report(fraction: float) -> None:
        if progress is not None:
            progress(min(total, int(round((step + fraction) * _UNITS_PER_STEP))), total)

    def check_cancel() -> None:
        if should_cancel is not None and should_cancel():
            raise OperationCancelled("the evaluation was cancelled")

    report(0.0)
    skipped_constant = 0
    profile_noted: set[tuple[int, str, int]] = set()
    estimates: dict[tuple[int, str, int], Any] = {}  # (engine, volume, K) -> ProfileEstimate or None
    for name, image in volumes.items():
        index_axis = axes[name]
        axis_np = numpy_axis(index_axis)
        low_value, high_value = percentile_range(sitk.GetArrayViewFromImage(image))
        for factor in settings.factors:
            check_cancel()
            simulated = simulate_thick_slices(image, factor, index_axis, settings.thick_slices,
                                              settings.acquisition_noise, settings.noise_seed)
            indices = simulated.synthesized_indices
            reference = scale_to_unit_range(np.moveaxis(np.take(simulated.reference, indices, axis=axis_np), axis_np, 0),
                                            low_value, high_value)
            informative = np.ptp(reference.reshape(len(indices), -1), axis=1) > 0
            skipped_constant += int(np.count_nonzero(~informative))
            indices, reference = indices[informative], reference[informative]
            shown = int(np.argmin(np.abs(indices - simulated.reference.shape[axis_np] / 2.0)
                                 + 1000.0 * (indices % factor != factor // 2))) if len(indices) else None
            montage = None
            if shown is not None:
                montage = MontageSlice(name, factor, int(indices[shown]), int(indices[shown] % factor),
                                       reference[shown].astype(np.float32), {}, _pixel_aspect(image, index_axis))
                result.montage.append(montage)
            for method in result.methods:
                check_cancel()

                def sub_progress(done: int, work: int) -> None:
                    report(0.9 * done / work if work else 0.0)

                t0 = time.perf_counter()
                thickness = {"auto": "auto", "unknown": None}.get(settings.slice_profile)
                if settings.slice_profile == "told" and method in engines:
                    fine_spacing = float(image.GetSpacing()[index_axis])
                    thickness = fine_spacing * (factor if settings.thick_slices else 1)
                estimate = None
                if thickness == "auto" and method in engines and engines[method].takes_slice_profile:
                    # estimated once per engine, volume and K (asi and asi+adapt share the engine and ask the same
                    # question of the same weights); upsample_image uses it where it would estimate
                    key = (id(engines[method]), name, factor)
                    if key not in estimates:
                        estimates[key] = engines[method].estimate_slice_profile(
                            sitk.GetArrayViewFromImage(simulated.low), factor, axis_np)
                    estimate = estimates[key]
                # adaptation goes through upsample_image, as for a user: the profile is estimated (or told) first,
                # the adaptation is told it, and the engine is back to its own weights afterwards
                adapt = float(settings.adapt_seconds) if method == ADAPTED_METHOD else None
                upsampled = upsample_image(simulated.low, factor, "asi" if method in engines else method,
                                           axis=index_axis, output_type="float32", engine=engines.get(method),
                                           slice_thickness=thickness, profile_estimate=estimate, adapt=adapt,
                                           adapt_steps=settings.adapt_steps if adapt is not None else None,
                                           progress=sub_progress, should_cancel=should_cancel)
                if estimate is not None and (id(engines[method]), name, factor) not in profile_noted:
                    profile_noted.add((id(engines[method]), name, factor))  # what the network was told, once
                    result.notes.append(f"{name} K={factor} {method}: {estimate.summary()}")
                if method == ADAPTED_METHOD and engine.adaptation is not None:
                    result.notes.append(f"{name} K={factor}: " + engine.adaptation.summary().replace("\n", ";"))
                seconds = time.perf_counter() - t0
                values = sitk.GetArrayViewFromImage(upsampled)
                if values.shape != simulated.reference.shape:  # the grid contract of upsample_image
                    raise RuntimeError(f"{method} returned shape {values.shape}, expected {simulated.reference.shape}")
                predicted = scale_to_unit_range(np.moveaxis(np.take(values, indices, axis=axis_np), axis_np, 0),
                                                low_value, high_value)
                del upsampled, values
                report(0.9)
                result.add(name, factor, method, indices, score_slices(reference, predicted))
                result.runs.append(MethodRun(name, factor, method, seconds, len(indices)))
                if montage is not None:
                    montage.predictions[method] = predicted[shown].astype(np.float32)
                step += 1
                report(0.0)
                logger.debug("%s K=%d %s: %.2f s, %d slices scored", name, factor, method, seconds, len(indices))
    if skipped_constant:
        result.notes.append(f"{skipped_constant} removed slice(s) with a constant reference (empty background) "
                            "were not scored")
    undefined_vif = int(np.count_nonzero(np.isnan(result.columns["vif"])))
    if undefined_vif:
        result.notes.append(f"VIF is undefined for {undefined_vif} of {len(result.columns['vif'])} scored slices "
                            f"(slices under {VIF_MIN_SIZE}x{VIF_MIN_SIZE} pixels, or no contrast in the reference) and "
                            "left out of the VIF means and tests")
    if settings.thick_slices:
        result.notes.append("thick slices simulated: Gaussian through-plane blur with FWHM = K x slice spacing "
                            "before keeping every K-th slice; scored against the unblurred slices")
    result.seconds = time.perf_counter() - started
    return result
