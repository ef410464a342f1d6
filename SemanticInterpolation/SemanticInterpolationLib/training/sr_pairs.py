"""Stage II of Xuan et al.'s recipe: synthesise V(Y) with a stage-I model, thin it, train the 3-D generator.

Python use (the ``train-sr`` command is the same)::

    from SemanticInterpolationLib.training.sr_pairs import SRTrainingConfig, train_sr
    result = train_sr(SRTrainingConfig(["scan1.nii.gz", "scan2.nrrd"], output="sr.pt",
                                       stage1="xuan-vae.pt", factor=4))

1. Every low-resolution scan ``Y`` (slice axis: the largest spacing, or ``slice_axis``) is upsampled
   by ``factor`` K with the stage-I model through the ordinary engine
   (:class:`~..engine.ASIEngine`; any slice model type: asi, pair-unet, xuan-vae, ...): ``V(Y)``,
   float32, ``(n - 1) K + 1`` slices.
2. ``T`` keeps every K-th slice of ``V(Y)`` (:func:`thin`); the generator's input is the cubic
   B-spline interpolation of ``T V(Y)`` back onto the grid of ``V(Y)``, its target ``V(Y)``
   (:func:`make_pair`). Both are scaled to [0, 1] units with the range fitted on ``T V(Y)``, as
   the engine fits it on the input at inference.
   With ``real_pairs`` the scans are fine-slice volumes ``X`` and the pairs are ``(T X, X)`` along
   each of the three axes: the "real HR supervision" reference of the paper.
3. The :class:`~..models.sr_generator.SRGenerator` is trained with L1 on random cubic patches
   (``patch_size`` voxels per side, random in-plane flips), Adam.

Files: ``output`` (atomically rewritten every ``checkpoint_every`` steps, at the end and when
cancelled, with the optimiser and step in ``extra_state`` so that ``resume=True`` continues), and with
validation volumes ``output`` with ``.best.pt`` (best validation PSNR). Validation: each fine-slice
validation volume (central crop) thinned by K, upsampled by the generator through the engine,
PSNR of the removed slices in [0, 1] units, beside cubic B-spline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import InputError, OperationCancelled
from ..models.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from ..models.normalization import IntensityNormalization
from ..volumes.fileio import check_writable_destination

logger = logging.getLogger("SemanticInterpolation")

SR_STATE_VERSION = 1
VALIDATION_CROP = 96


@dataclass
class SRTrainingConfig:
    """Settings of a stage-II run (the ``train-sr`` options map one to one)."""

    scans: Sequence[Any]
    output: str | os.PathLike
    factor: int
    stage1: str | os.PathLike | Checkpoint | None = None
    real_pairs: bool = False
    steps: int = 1500
    batch_size: int = 4
    patch_size: int = 32
    learning_rate: float = 1e-3
    features: int = 16
    layers: int = 6
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    slice_axis: int | str = "auto"
    synthesis: str | None = None
    validation_volumes: Sequence[Any] = ()
    validate_every: int = 250
    checkpoint_every: int = 100
    #: keep the training pairs in this .npz (None: do not) and reuse them when the pairs' settings match,
    #: so that a resumed run does not run stage I again
    pairs_cache: str | os.PathLike | None = None

    def settings(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["scans"] = [str(s) for s in self.scans]
        d["validation_volumes"] = [str(s) for s in self.validation_volumes]
        d["output"] = str(self.output)
        d["pairs_cache"] = None if self.pairs_cache is None else str(self.pairs_cache)
        d["stage1"] = None if self.stage1 is None else (self.stage1.path if isinstance(self.stage1, Checkpoint)
                                                        else str(self.stage1))
        return d


@dataclass
class SRTrainingResult:
    status: str  # "finished" or "cancelled"
    output: Path
    best_output: Path | None
    steps_done: int
    last_loss: float | None
    best_psnr: float | None = None

    def __str__(self) -> str:
        best = f", best validation PSNR {self.best_psnr:.2f} dB in {self.best_output}" if self.best_psnr else ""
        return f"{self.status}: {self.steps_done} steps, last loss {self.last_loss}; checkpoint {self.output}{best}"


# --------------------------------------------------------------------------- pairs
def thin(volume: np.ndarray, factor: int) -> np.ndarray:
    """``T``: every ``factor``-th slice along axis 0, starting with slice 0 (a view)."""
    return volume[::factor]


def make_pair(high: np.ndarray, factor: int, normalization: IntensityNormalization) -> tuple[np.ndarray, np.ndarray]:
    """``(input, target)`` float32 ``[D, H, W]`` in [0, 1] units from a high-resolution volume ``high``
    (slice axis first): target = ``high`` cut to ``(m - 1) K + 1`` slices (m = kept slices), input =
    cubic B-spline of :func:`thin` ``(high)`` back on that grid; the range is fitted on the thinned volume."""
    from ..engine.baselines import interpolate_slices

    low = np.ascontiguousarray(thin(high, factor), dtype=np.float32)
    if low.shape[0] < 2:
        raise InputError(f"a volume of {high.shape[0]} slices keeps {low.shape[0]} slice at K = {factor}: "
                         "two are needed to interpolate; use a larger volume or a smaller factor")
    target = high[: (low.shape[0] - 1) * factor + 1].astype(np.float32)
    spline = interpolate_slices(low, factor, "bspline", dtype=np.float32)
    r = normalization.fit(low)
    return (normalization.to_unit_range(spline, r).astype(np.float32),
            normalization.to_unit_range(target, r).astype(np.float32))


def _read(source: Any, axis: int | str) -> tuple[str, np.ndarray, int, tuple[float, float, float]]:
    """(name, [k, j, i] array, ITK slice axis, spacing) of a path or SimpleITK image."""
    import SimpleITK as sitk

    from ..volumes.geometry import parse_axis
    from .data import read_volume_image

    image = read_volume_image(source) if isinstance(source, (str, os.PathLike)) else source
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source}: give a scalar 3-D volume")
    spacing = tuple(float(s) for s in image.GetSpacing())
    return str(source), sitk.GetArrayFromImage(image).astype(np.float32), parse_axis(axis, spacing), spacing


def stage1_engine(stage1: Any, device: str, synthesis: str | None = None):
    """The engine of a stage-I checkpoint; :class:`InputError` when it is not a slice model."""
    from ..engine.synthesis import ASIEngine

    checkpoint = stage1 if isinstance(stage1, Checkpoint) else resolve_checkpoint(
        None if str(stage1).lower() == "default" else stage1)
    if getattr(checkpoint.model, "is_volume_model", False):
        raise InputError(f"the stage-I checkpoint {checkpoint.path!r} is a {checkpoint.model_type} model; stage I must "
                         "be a slice synthesis model (asi, pair-unet, xuan-vae, ...) whose output V(Y) the generator "
                         "learns from: give such a checkpoint to --stage1")
    return ASIEngine(checkpoint, device, synthesis=synthesis), checkpoint


def synthesised_pairs(scans: Sequence[Any], factor: int, engine, normalization: IntensityNormalization, *,
                      axis: int | str = "auto", progress: Callable[[str], None] | None = None,
                      should_cancel: Callable[[], bool] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, input, target)`` per scan: ``V(Y)`` = the stage-I ``engine`` upsampling ``Y`` by ``factor``,
    then :func:`make_pair` (T keeps every K-th slice of ``V(Y)``)."""
    from ..volumes.geometry import numpy_axis

    pairs = []
    for source in scans:
        name, array, itk_axis, _ = _read(source, axis)
        if progress is not None:
            progress(f"stage I: synthesising V(Y) of {name} (K = {factor})")
        high = engine.upsample(array, factor, axis=numpy_axis(itk_axis), output_dtype=np.float32,
                               should_cancel=should_cancel)
        pairs.append((name, *make_pair(np.moveaxis(high, numpy_axis(itk_axis), 0), factor, normalization)))
    return pairs


def real_pairs(volumes: Sequence[Any], factor: int,
               normalization: IntensityNormalization) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, input, target)`` from fine-slice volumes ``X`` along each of the three axes (``T X``, ``X``)."""
    pairs = []
    for source in volumes:
        name, array, _, _ = _read(source, "auto")
        for np_axis in (0, 1, 2):
            pairs.append((f"{name} axis {2 - np_axis}", *make_pair(np.moveaxis(array, np_axis, 0), factor,
                                                                   normalization)))
    return pairs


class PatchSampler:
    """Random cubic patches ``[B, 1, P, P, P]`` of (input, target) pairs, with random in-plane flips."""

    def __init__(self, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], patch_size: int, seed: int) -> None:
        from ..engine.volume_sr import check_volume_for_patch

        if not pairs:
            raise InputError("no training pairs: give at least one scan")
        for name, source, target in pairs:
            check_volume_for_patch(source.shape, patch_size, name)
        self.pairs, self.patch = list(pairs), int(patch_size)
        sizes = np.array([np.prod(p[1].shape, dtype=np.float64) for p in self.pairs])
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = [], []
        p = self.patch
        for _ in range(size):
            _, source, target = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
            corner = [int(self.rng.integers(0, s - p + 1)) for s in source.shape]
            region = tuple(slice(c, c + p) for c in corner)
            a, b = source[region], target[region]
            if self.rng.integers(0, 2):
                a, b = a[:, :, ::-1], b[:, :, ::-1]
            if self.rng.integers(0, 2):
                a, b = a[:, ::-1], b[:, ::-1]
            inputs.append(np.ascontiguousarray(a))
            targets.append(np.ascontiguousarray(b))
        return (torch.from_numpy(np.stack(inputs))[:, None], torch.from_numpy(np.stack(targets))[:, None])


def _load_pairs(path, key: str):
    if path is None or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            return None
        names = [str(n) for n in data["names"]]
        return [(n, data[f"input{i}"], data[f"target{i}"]) for i, n in enumerate(names)]


def _save_pairs(path, key: str, pairs) -> None:
    from ..volumes.fileio import atomic_output

    arrays = {"key": np.array(key), "names": np.array([n for n, _, _ in pairs])}
    for i, (_, source, target) in enumerate(pairs):
        arrays[f"input{i}"], arrays[f"target{i}"] = source, target
    with atomic_output(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


# --------------------------------------------------------------------------- validation
def _validation_crops(volumes: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
    crops = []
    for source in volumes:
        name, array, _, _ = _read(source, "auto")
        region = tuple(slice(max(0, (s - VALIDATION_CROP) // 2), max(0, (s - VALIDATION_CROP) // 2) + VALIDATION_CROP)
                       for s in array.shape)
        crops.append((name, np.ascontiguousarray(array[region])))
    return crops


def validate_generator(model: torch.nn.Module, crops: Sequence[tuple[str, np.ndarray]], factor: int,
                       normalization: IntensityNormalization, device: str = "cpu") -> dict[str, float]:
    """Mean PSNR (dB, [0, 1] units of the reference's range) of the slices removed by thinning each crop
    along numpy axis 0 by ``factor``: the generator through the engine, and cubic B-spline."""
    from ..engine.baselines import interpolate_slices
    from ..engine.synthesis import ASIEngine

    engine = ASIEngine(model, device, normalization=normalization)
    scores: dict[str, list[float]] = {"val_psnr": [], "val_bspline_psnr": []}
    for _, array in crops:
        low = array[::factor]
        n = (low.shape[0] - 1) * factor + 1
        reference = array[:n]
        r = normalization.fit(reference)
        removed = [i for i in range(n) if i % factor]
        for key, values in (("val_psnr", engine.upsample(low, factor, output_dtype=np.float32)),
                            ("val_bspline_psnr", interpolate_slices(low, factor, "bspline", dtype=np.float32))):
            a = normalization.to_unit_range(values[removed], r)
            b = normalization.to_unit_range(reference[removed], r)
            mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
            scores[key].append(10 * math.log10(1.0 / max(mse, 1e-12)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


# --------------------------------------------------------------------------- training
def _check(config: SRTrainingConfig) -> None:
    from ..engine.synthesis import validate_factor

    validate_factor(config.factor)
    for label, value, low in (("steps", config.steps, 1), ("batch size", config.batch_size, 1),
                              ("patch size", config.patch_size, 4), ("features", config.features, 1),
                              ("layers", config.layers, 2), ("validate every", config.validate_every, 1),
                              ("checkpoint every", config.checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{label} must be a whole number >= {low}, got {value!r}")
    if not isinstance(config.learning_rate, (int, float)) or not 0 < float(config.learning_rate) < 1:
        raise InputError(f"learning rate must be between 0 and 1, got {config.learning_rate!r}")
    if not config.scans:
        raise InputError("give at least one scan")
    if config.real_pairs and config.stage1 is not None:
        raise InputError("real pairs are made from fine-slice volumes without a stage-I model: drop --stage1 or "
                         "--real-pairs")
    if not config.real_pairs and config.stage1 is None:
        raise InputError("give the stage-I checkpoint that synthesises V(Y) (--stage1 CKPT; 'default' = the bundled "
                         "model), or --real-pairs for fine-slice volumes")


def train_sr(config: SRTrainingConfig, *, progress: Callable[[str], None] | None = None,
             should_cancel: Callable[[], bool] | None = None) -> SRTrainingResult:
    """Make the pairs and train the generator (see the module notes). Bad input raises before any training."""
    from ..engine.devices import resolve_device
    from ..models.sr_generator import SRGenerator, SRGeneratorConfig
    from .trainer import TrainingDiverged, default_best_path

    _check(config)
    say = progress or (lambda text: logger.info("%s", text))
    output = check_writable_destination(config.output)
    best_output = check_writable_destination(default_best_path(output))
    for source in [*config.scans, *config.validation_volumes]:
        if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().absolute() in (output, best_output):
            raise InputError(f"--output {str(output)!r} would overwrite the input {str(source)!r}")
    device = resolve_device(config.device)
    normalization = IntensityNormalization(clip=False)
    state = None
    model = SRGenerator(SRGeneratorConfig(features=int(config.features), layers=int(config.layers),
                                          factors=(int(config.factor),),
                                          name=f"sr-generator-{config.features}x{config.layers}-k{config.factor}"))
    model.reset_parameters(torch.Generator().manual_seed(int(config.seed)))
    if config.resume:
        if not output.is_file():
            raise InputError(f"nothing to resume: {str(output)!r} does not exist; start without --resume")
        previous = load_checkpoint(output)
        state = previous.extra_state.get("sr_training_state")
        if previous.model_type != "sr-generator" or not isinstance(state, dict):
            raise InputError(f"{str(output)!r} holds no resumable sr-generator training state")
        if tuple(previous.config.factors) != (int(config.factor),):
            raise InputError(f"{str(output)!r} was trained for K = {previous.config.factors}, not {config.factor}")
        model = previous.model
        if state["step"] >= config.steps:
            raise InputError(f"{str(output)!r} has already been trained for {state['step']} steps: give more --steps")
    stage1_summary = None
    engine = None
    if not config.real_pairs:
        engine, stage1 = stage1_engine(config.stage1, config.device, config.synthesis)
        stage1_summary = {"path": stage1.path, "model_type": stage1.model_type, "synthesis": engine.synthesis}
    crops = _validation_crops(config.validation_volumes)

    # ---- pairs (stage I runs here)
    key = repr((sorted(str(s) for s in config.scans), int(config.factor), bool(config.real_pairs), stage1_summary,
                str(config.slice_axis)))
    pairs = _load_pairs(config.pairs_cache, key)
    if pairs is not None:
        say(f"training pairs read from {config.pairs_cache}")
    elif config.real_pairs:
        pairs = real_pairs(config.scans, int(config.factor), normalization)
    else:
        pairs = synthesised_pairs(config.scans, int(config.factor), engine, normalization, axis=config.slice_axis,
                                  progress=say, should_cancel=should_cancel)
    del engine
    if config.pairs_cache is not None and _load_pairs(config.pairs_cache, key) is None:
        _save_pairs(config.pairs_cache, key, pairs)
    sampler = PatchSampler(pairs, int(config.patch_size), int(config.seed) + (state["step"] if state else 0))
    say(f"{len(pairs)} training pairs: " + "; ".join(f"{n} {'x'.join(map(str, a.shape))}" for n, a, _ in pairs))

    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.learning_rate))
    step, best_psnr, history = 0, None, []
    if state:
        optimizer.load_state_dict(state["optimizer"])
        step, best_psnr, history = int(state["step"]), state.get("best_psnr"), list(state.get("history") or [])
    training_info = {"settings": config.settings(), "stage1": stage1_summary, "factor": int(config.factor),
                     "pairs": [{"name": n, "shape": list(a.shape)} for n, a, _ in pairs],
                     "real_pairs": bool(config.real_pairs)}

    def write(path: Path, with_state: bool) -> None:
        info = dict(training_info, steps_done=step, history=history[-20:])
        extra = {"sr_training_state": {"version": SR_STATE_VERSION, "step": step, "optimizer": optimizer.state_dict(),
                                       "best_psnr": best_psnr, "history": history}} if with_state else None
        save_checkpoint(path, model, normalization=normalization, training=info,
                        metadata={"inference": {"synthesis": "plain"}}, extra_state=extra)

    started, running, last_loss, status = time.perf_counter(), [], None, "finished"
    while step < config.steps:
        inputs, targets = sampler.batch(int(config.batch_size))
        loss = (model(inputs.to(device)) - targets.to(device)).abs().mean()
        if not bool(torch.isfinite(loss)):
            raise TrainingDiverged(f"the L1 loss became {float(loss)} at step {step + 1}: lower the learning rate "
                                   f"(now {config.learning_rate:g}); {str(output)!r} keeps the last written state")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running.append(float(loss.detach()))
        last_loss = float(np.mean(running[-50:]))
        record = None
        if crops and (step % config.validate_every == 0 or step == config.steps):
            model.eval()
            record = {"step": step, "loss": last_loss, **validate_generator(model, crops, int(config.factor),
                                                                           normalization, str(device))}
            model.train()
            history.append(record)
            if best_psnr is None or record["val_psnr"] > best_psnr:
                best_psnr = record["val_psnr"]
                write(best_output, False)
                record["best"] = True
        if step % config.checkpoint_every == 0 or step == config.steps or record is not None:
            write(output, True)
        if record is not None or step % 50 == 0:
            extra = (f" | val {record['val_psnr']:.2f} dB (B-spline {record['val_bspline_psnr']:.2f})"
                     + (" [best]" if record.get("best") else "")) if record else ""
            say(f"step {step}/{config.steps} L1 {last_loss:.5f}{extra} | {time.perf_counter() - started:.0f} s")
        if should_cancel is not None and should_cancel():
            status = "cancelled"
            write(output, True)
            break
    return SRTrainingResult(status, output, best_output if best_output.is_file() and crops else None, step, last_loss,
                            best_psnr)
