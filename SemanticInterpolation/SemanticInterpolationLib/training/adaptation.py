"""Adaptation to the scan being upsampled: fine-tune the engine's copy of the model on the scan's own
acquired slices for a time budget, keep it only if it predicts held-out acquired slices better.

ASI's principle (learn from the low-resolution scan itself) applied at upsampling time::

    engine = ASIEngine(load_checkpoint("model.pt"), "cpu")
    report = adapt_engine(engine, volume, axis=0, seconds=120, seed=0)   # volume: [k, j, i] numpy
    print(report.summary())           # held-out score before / after, linear and B-spline
    upsampled = engine.upsample(volume, 4, axis=0)
    engine.restore()                  # back to the checkpoint's weights for the next scan

What is trained: the pair U-Net (model type ``pair-unet``) predicting acquired slice ``m`` from its
neighbours ``m - 1`` and ``m + 1`` (alpha 0.5), on random in-plane patches with rotations and flips,
MSE, Adam at a small learning rate; by default only the decoder half of the U-Net (``layers="decoder"``:
the up-sampling blocks and the head, so the encoder's features stay those learned on many volumes;
``"all"`` trains every weight). Told thick slices (thickness / spacing at least :data:`PROFILE_TARGET_FROM`),
an acquired slice is not a sharp slice but the through-plane mean of the anatomy over its thickness, so
it is predicted as the network would make it from sharp slices: the slice profile's weighted mean (a
Gaussian of FWHM the told thickness) of the new slices at nine positions between its neighbours, as the
thick hypothesis of :mod:`..engine.profile_estimate` does; training the middle new slice on a thick
target would teach the network to make thick slices. These triplets span twice the gap the upsampling
fills (a model that learns to blur across them scores better on them and worse on the real task), so
above K = :data:`LARGEST_ADAPTED_FACTOR` nothing is trained, and a scan has
few of them, so the result is checked: every ``holdout_every``-th middle slice (at least one) is
never a training target; the model before and after, linear and B-spline interpolation predict it
from its neighbours, and the adapted weights are kept only when their PSNR on those slices beats
the model before by at least ``min_gain_db`` *and* their SSIM is not lower (a PSNR gain bought by
blurring is declined). The check runs every ``check_every`` steps and the best checked weights are
kept (early stopping on the held-out acquired slices, which belong to the input scan, never to a
ground truth). Otherwise the engine keeps
the original weights and the report says adaptation was declined and why.

The engine's model is its own copy: the checkpoint (and the bundled file) is never modified.
Deterministic for a given ``seed`` when the run ends at ``max_steps`` (a time budget ends after a
number of steps that depends on the machine; the report gives the number).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..engine.profile_estimate import THICK_POSITIONS, lattice_anchor, lattice_bsplines, profile_weights
from ..engine.synthesis import ASIEngine, validate_volume
from ..errors import InputError, OperationCancelled
from .data import bspline_anchor, pad_to_multiple
from .losses import psnr, ssim

logger = logging.getLogger("SemanticInterpolation")

#: model types that can be adapted to a scan
ADAPTABLE_TYPES = ("pair-unet", "profile-routed")
MIN_SLICE_SIZE = 16
#: the largest upsampling factor adapted to: the scan's own triplets are 2 K new-slice gaps wide, and the default's
#: networks were trained on gaps 2-6 (``max_gap``). Beyond, the check on the scan's own slices rose while the
#: upsampling got worse (ROBEX, validation, thick K = 5, 6: -0.26 / -0.30 dB; Docs/Experiments.md, session 8), so
#: a larger K is upsampled without adaptation, with a warning
LARGEST_ADAPTED_FACTOR = 3
#: from this told thickness / spacing on (thick slices, as the profile-routed default routes them), the acquired
#: middle slice is predicted as the slice profile's weighted mean of the sharp slices synthesised around it
PROFILE_TARGET_FROM = 0.75


@dataclass
class AdaptationReport:
    """What adaptation did. Scores are on the held-out acquired slices, in [0, 1] units of the scan's
    intensity range (PSNR in dB)."""

    seconds: float
    steps: int
    held_out_slices: list[int]
    before_psnr: float
    after_psnr: float
    linear_psnr: float
    bspline_psnr: float
    before_ssim: float
    after_ssim: float
    linear_ssim: float
    bspline_ssim: float
    accepted: bool
    reason: str
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """Several lines for logs and the Slicer status text."""
        verdict = "kept the adapted model" if self.accepted else "kept the original model"
        return (f"adaptation: {self.steps} steps in {self.seconds:.0f} s; {verdict}: {self.reason}\n"
                f"  held-out acquired slices {self.held_out_slices}: PSNR before {self.before_psnr:.2f} dB, after "
                f"{self.after_psnr:.2f} dB, linear {self.linear_psnr:.2f} dB, B-spline {self.bspline_psnr:.2f} dB; "
                f"SSIM before {self.before_ssim:.4f}, after {self.after_ssim:.4f}, linear {self.linear_ssim:.4f}, "
                f"B-spline {self.bspline_ssim:.4f}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_adaptable(engine: ASIEngine, volume: np.ndarray, axis: int, patch_size: int = 64) -> int:
    """Raise :class:`InputError` before any work when ``volume`` cannot be adapted to; returns the patch size used."""
    if engine.model_type not in ADAPTABLE_TYPES:
        raise InputError(f"adaptation is available for {', '.join(ADAPTABLE_TYPES)} models; this checkpoint is a "
                         f"{engine.model_type} model. Upsample without --adapt, or use a pair-unet or profile-routed "
                         "checkpoint (the default)")
    axis = validate_volume(volume, axis)
    n = volume.shape[axis]
    if n < 4:
        raise InputError(f"adaptation needs at least 4 acquired slices along the slice axis (training triplets and "
                         f"a held-out one); this volume has {n}. Upsample without --adapt")
    h, w = [s for i, s in enumerate(volume.shape) if i != axis]
    if min(h, w) < MIN_SLICE_SIZE:
        raise InputError(f"adaptation needs slices of at least {MIN_SLICE_SIZE}x{MIN_SLICE_SIZE} pixels; these are "
                         f"{h}x{w}. Upsample without --adapt")
    multiple = engine.size_multiple
    return max(multiple, min(int(patch_size), min(h, w)) // multiple * multiple)


def _held_out_middles(n: int, every: int) -> list[int]:
    middles = list(range(1, n - 1))
    held = middles[every // 2::every] or middles[len(middles) // 2:len(middles) // 2 + 1]
    return held


@dataclass(frozen=True)
class _TripletTask:
    """How an acquired middle slice is predicted from its two neighbours: at ``alphas`` (the new slices'
    positions, 0 and 1 the neighbours), summed with ``weights``; ``thickness`` told (thickness / the pair's gap);
    ``anchors`` the B-spline anchors, None for networks without them: with one position, the anchor of each
    middle slice (``bspline_anchor``, as in training), else the scan's ``lattice_bsplines``."""

    alphas: tuple[float, ...]
    weights: tuple[float, ...]
    thickness: float | None
    anchors: dict[int, np.ndarray] | None

    def anchor(self, middle: int, position: int) -> np.ndarray:
        if len(self.alphas) == 1:
            return self.anchors[middle]
        return lattice_anchor(self.anchors, middle - 1, self.alphas[position])


@torch.no_grad()
def _score(model: torch.nn.Module, unit: np.ndarray, middles: list[int], device: torch.device,
           multiple: int, task: _TripletTask) -> tuple[float, float]:
    h, w = unit.shape[1:]
    firsts = pad_to_multiple(unit[[m - 1 for m in middles]], multiple)
    seconds = pad_to_multiple(unit[[m + 1 for m in middles]], multiple)
    a = torch.from_numpy(firsts).unsqueeze(1).to(device)
    b = torch.from_numpy(seconds).unsqueeze(1).to(device)
    predicted = None
    for position, (alpha, weight) in enumerate(zip(task.alphas, task.weights)):
        anchor = None
        if task.anchors is not None:
            anchor = torch.from_numpy(pad_to_multiple(np.stack([task.anchor(m, position) for m in middles]),
                                                      multiple)).unsqueeze(1).to(device)
        out = weight * model.synthesize(a, b, alpha, anchor, task.thickness).float()[..., :h, :w].cpu()
        predicted = out if predicted is None else predicted + out
    truth = torch.from_numpy(unit[middles]).unsqueeze(1)
    return float(psnr(predicted, truth, reduction="none").mean()), float(ssim(predicted, truth))


def adapt_engine(
    engine: ASIEngine,
    volume: np.ndarray,
    *,
    axis: int = 0,
    seconds: float = 120.0,
    max_steps: int | None = None,
    seed: int = 0,
    learning_rate: float = 2e-5,
    batch_size: int = 8,
    patch_size: int = 64,
    holdout_every: int = 4,
    min_gain_db: float = 0.01,
    layers: str = "decoder",
    check_every: int = 20,
    thickness_ratio: float | None = None,
    factor: int | None = None,
    largest_factor: int = LARGEST_ADAPTED_FACTOR,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AdaptationReport:
    """Fine-tune ``engine``'s model on ``volume`` (numpy, slice axis ``axis``; not modified) for at most
    ``seconds`` (and ``max_steps``), then keep the result only if it helps on held-out acquired slices.

    ``progress(done, total)`` is called in per-mille of the budget; ``should_cancel()`` stops the run with
    :class:`OperationCancelled` (the engine then keeps its original weights). See the module documentation.

    ``thickness_ratio``: the slice profile the upsampling will tell the network (slice thickness / slice
    spacing of the scan, None = not known), for networks with a slice-profile input. The scan's own triplets
    are two spacings wide, so they are told half of it, as :mod:`..engine.profile_estimate` does.
    ``factor``: the upsampling factor the adapted model will be used for (recorded in the report); above
    ``largest_factor`` nothing is trained: the report (held-out scores of the model as it is) says why.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (0 < float(seconds) <= 24 * 3600):
        raise InputError(f"the adaptation time must be a number of seconds above 0 (at most a day), got {seconds!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise InputError(f"max adaptation steps must be a whole number >= 1, got {max_steps!r}")
    if layers not in ("decoder", "all"):
        raise InputError(f"layers must be 'decoder' or 'all', got {layers!r}")
    patch = check_adaptable(engine, volume, axis, patch_size)
    axis = validate_volume(volume, axis)
    slices = np.moveaxis(volume, axis, 0)
    n = slices.shape[0]
    unit = np.ascontiguousarray(engine.normalization.to_unit_range(slices, engine.normalization.fit(volume)),
                                dtype=np.float32)
    held = _held_out_middles(n, max(2, int(holdout_every)))
    targets = [m for m in range(1, n - 1) if m not in held]
    if not targets:
        raise InputError(f"adaptation needs at least one training triplet besides the held-out slices; {n} slices "
                         "are too few. Upsample without --adapt")
    device, multiple = engine.device, engine.size_multiple
    model = engine.model
    if callable(getattr(model, "member_for", None)):
        # a model of several networks (profile-routed): adapt the one that will upsample this scan
        model = model.member_for(thickness_ratio)
    #: what the network is told of the triplets' slice profile (thickness / distance of the two inputs)
    triplet_thickness = None
    if thickness_ratio is not None and getattr(model, "takes_thickness", False):
        triplet_thickness = 0.5 * float(thickness_ratio)
    #: thick slices: the acquired middle slice is the profile's mean of the sharp slices around it
    profile_target = triplet_thickness is not None and float(thickness_ratio) >= PROFILE_TARGET_FROM
    alphas, weights = (0.5,), (1.0,)
    if profile_target:
        alphas = tuple(float(a) for a in 0.5 + THICK_POSITIONS / 2.0)
        weights = tuple(float(v) for v in profile_weights(float(thickness_ratio)))
    #: B-spline anchors at every position (from the lattice of every second slice), for networks that take them
    anchors = None
    if getattr(model, "needs_anchor", False):
        anchors = lattice_bsplines(unit) if profile_target else {m: bspline_anchor(unit, m, 1) for m in range(1, n - 1)}
    task = _TripletTask(alphas, weights, triplet_thickness, anchors)

    timer = time.perf_counter()
    before_psnr, before_ssim = _score(model, unit, held, device, multiple, task)
    #: one check of the held-out slices takes about this long: the last one must fit in the budget
    check_seconds = time.perf_counter() - timer
    truth = torch.from_numpy(unit[held]).unsqueeze(1)
    linear = torch.from_numpy(0.5 * (unit[[m - 1 for m in held]] + unit[[m + 1 for m in held]])).unsqueeze(1)
    spline = torch.from_numpy(np.stack([bspline_anchor(unit, m, 1) for m in held])).unsqueeze(1)
    linear_psnr, linear_ssim = float(psnr(linear, truth, reduction="none").mean()), float(ssim(linear, truth))
    bspline_psnr, bspline_ssim = float(psnr(spline, truth, reduction="none").mean()), float(ssim(spline, truth))

    settings = {"seconds": float(seconds), "max_steps": max_steps, "seed": seed, "learning_rate": learning_rate,
                "batch_size": batch_size, "patch_size": patch, "holdout_every": holdout_every,
                "min_gain_db": min_gain_db, "layers": layers, "check_every": check_every, "device": str(device),
                "thickness_ratio": thickness_ratio, "factor": factor, "largest_factor": largest_factor,
                "target": "slice-profile mean of 9 new slices" if profile_target else "middle slice",
                "network": getattr(getattr(model, "config", None), "name", None)}

    def finished(seconds_used: float, steps_done: int, after: tuple[float, float], accepted: bool, reason: str,
                 kept_step: int | None) -> AdaptationReport:
        return AdaptationReport(
            seconds=seconds_used, steps=steps_done, held_out_slices=held, before_psnr=before_psnr,
            after_psnr=after[0], linear_psnr=linear_psnr, bspline_psnr=bspline_psnr, before_ssim=before_ssim,
            after_ssim=after[1], linear_ssim=linear_ssim, bspline_ssim=bspline_ssim, accepted=accepted,
            reason=reason, settings={**settings, "kept_step": kept_step})

    if factor is not None and int(factor) > int(largest_factor):
        reason = (f"not run for K = {int(factor)}: the scan's own triplets are {2 * int(factor)} new-slice gaps wide, "
                  f"beyond the 2-{2 * int(largest_factor)} the networks were trained on; there the adapted weights "
                  "scored better on the scan's own slices and worse on the upsampling (validation volume)")
        logger.warning("adaptation %s; upsampling with the model as it is", reason)
        if progress is not None:
            progress(1000, 1000)
        return finished(0.0, 0, (before_psnr, before_ssim), False, reason, None)

    engine.remember_weights()
    original = copy.deepcopy(model.state_dict())
    rng = np.random.default_rng(seed)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    trained = [p for name, p in model.named_parameters()
               if layers == "all" or name.startswith(("up.", "head."))] or list(model.parameters())
    optimizer = torch.optim.Adam(trained, lr=float(learning_rate))
    h, w = unit.shape[1:]
    started = time.perf_counter()
    deadline = started + float(seconds)
    steps = 0
    logger.info("adapting %s model (network %s) to the scan: %d training triplets, held-out slices %s, patch %d, "
                "batch %d, lr %g, budget %g s%s, seed %d, %s", engine.model_type,
                getattr(getattr(model, "config", None), "name", "?"), len(targets), held, patch, batch_size,
                learning_rate, seconds, f" / {max_steps} steps" if max_steps else "", seed, engine.describe())
    best_state, best_psnr, best_ssim, best_step = None, before_psnr, before_ssim, 0
    last_checked = (before_psnr, before_ssim)  # the scores of the weights as they are after the last check

    def check() -> None:
        nonlocal best_state, best_psnr, best_ssim, best_step, last_checked
        model.eval()
        value, structure = _score(model, unit, held, device, multiple, task)
        model.train()
        last_checked = (value, structure)
        if value >= best_psnr + (float(min_gain_db) if best_state is None else 0.0) and structure >= before_ssim:
            best_state, best_psnr, best_ssim, best_step = copy.deepcopy(model.state_dict()), value, structure, steps

    model.train()
    try:
        while time.perf_counter() + check_seconds < deadline and (max_steps is None or steps < max_steps):
            if should_cancel is not None and should_cancel():
                raise OperationCancelled("adaptation was cancelled")
            middles = rng.choice(targets, size=batch_size)
            positions = len(task.alphas)
            batch = np.empty((batch_size, 3 + (positions if task.anchors is not None else 0), patch, patch),
                             dtype=np.float32)
            for i, m in enumerate(middles):
                top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
                item = unit[[m - 1, m, m + 1], top:top + patch, left:left + patch]
                if task.anchors is not None:
                    item = np.concatenate([item, np.stack([task.anchor(m, j)[top:top + patch, left:left + patch]
                                                           for j in range(positions)])])
                item = np.rot90(item, int(rng.integers(0, 4)), axes=(1, 2))
                if rng.integers(0, 2):
                    item = item[:, :, ::-1]
                if rng.integers(0, 2):  # the pair in the other order: the positions (symmetric) run backwards
                    item = np.concatenate([item[2::-1], item[:2:-1]]) if task.anchors is not None else item[::-1]
                batch[i] = item
            x = torch.from_numpy(batch).to(device)
            # every position of every sample in one call: [positions * batch] new slices, then the profile's sum
            first = x[:, 0:1].repeat(positions, 1, 1, 1)
            second = x[:, 2:3].repeat(positions, 1, 1, 1)
            alpha = torch.tensor(task.alphas, device=device).repeat_interleave(batch_size)
            anchor = (x[:, 3:].transpose(0, 1).reshape(positions * batch_size, 1, patch, patch)
                      if task.anchors is not None else None)
            new = model(first, second, alpha, anchor, task.thickness).reshape(positions, batch_size, 1, patch, patch)
            predicted = (torch.tensor(task.weights, device=device).reshape(positions, 1, 1, 1, 1) * new).sum(0)
            loss = torch.nn.functional.mse_loss(predicted, x[:, 1:2])
            if not bool(torch.isfinite(loss)):
                raise InputError("adaptation diverged (the loss is not finite); upsample without --adapt")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % max(1, int(check_every)) == 0:
                check()
            if progress is not None:
                fraction = (time.perf_counter() - started) / float(seconds)
                if max_steps:
                    fraction = max(fraction, steps / max_steps)
                progress(min(999, int(1000 * fraction)), 1000)
    except BaseException:
        model.load_state_dict(original)
        model.eval()
        raise
    finally:
        torch.set_rng_state(generator_state)
    if steps % max(1, int(check_every)):
        check()
    model.eval()
    last_psnr, last_ssim = last_checked
    accepted = best_state is not None
    if accepted:
        model.load_state_dict(best_state)
        after_psnr, after_ssim = best_psnr, best_ssim
        reason = (f"held-out PSNR rose by {after_psnr - before_psnr:.2f} dB and SSIM by "
                  f"{after_ssim - before_ssim:+.4f} (weights of step {best_step})")
    else:
        model.load_state_dict(original)
        after_psnr, after_ssim = last_psnr, last_ssim
        reason = (f"no checked step raised the held-out PSNR by at least {min_gain_db:g} dB without lowering SSIM "
                  f"(last step: {last_psnr - before_psnr:+.2f} dB, SSIM {last_ssim - before_ssim:+.4f}), so the "
                  "adapted weights were discarded")
    if progress is not None:
        progress(1000, 1000)
    report = finished(time.perf_counter() - started, steps, (after_psnr, after_ssim), accepted, reason,
                      best_step if accepted else None)
    logger.info("%s", report.summary())
    return report
