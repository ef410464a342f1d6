"""Thin or thick slices? An estimate from the scan itself, for networks with a slice-profile input.

NIfTI, NRRD and MHA files do not record the slice thickness. A network told the slice profile can
test both hypotheses on the acquired slices (analysis by synthesis): each tested acquired slice ``i``
is predicted from its neighbours ``i - 1`` and ``i + 1`` (two spacings apart),

* *thin* (thickness = spacing / K, the thin slices of a finer acquisition, K the requested factor):
  the network's slice half-way between them, told thickness / gap = 1 / (2K);
* *thick* (thickness = spacing): the acquired slice is the through-plane average of the anatomy over
  its thickness, so the network, told thickness / gap = 1/2, synthesises sharp slices at nine
  positions from ``i - 1`` to ``i + 1`` and they are averaged with the Gaussian slice profile of FWHM
  one spacing;

and the prediction errors are compared (mean squared error on a central crop of each tested slice):
*thick* when its error is lower than thin's by more than :data:`THICK_MARGIN` (a relative margin),
*thin* when thin's is lower, and *unknown* in between (the network then works without the profile).
Thick slices win by a wide margin when they are thick (6-30 % lower error on the volumes tried), while
smooth thin-slice volumes can come out close, hence the margin.

For networks that take test-time augmentation the comparison is made twice, once with the network's
plain answers and once with the mean over the :data:`AGREEMENT_VIEWS` views
(:mod:`.test_time_augmentation`), and a side is taken only when both agree (*rule of agreement*;
otherwise *unknown*). The two err in different directions: on the validation and training volumes
(ROBEX and MNI152, axes k and i, K = 2..6, both settings, 40 cases) the plain comparison took 8 thin
cases for thick and the views' comparison 4 thick cases for thin, while the rule made no wrong call
(15 cases not told; ``Docs/Experiments.md``, session 5). It is an estimate: a known thickness
(``--slice-thickness``, a DICOM header) always wins over it.

Arrays are ``[n, H, W]`` slices along the slice axis (numpy axis 0), normalised to [0, 1].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .baselines import interpolate_slices
from .test_time_augmentation import augmented_synthesis

logger = logging.getLogger("SemanticInterpolation")

#: positions (in spacings from the tested slice) at which the thick hypothesis synthesises slices
THICK_POSITIONS = np.linspace(-1.0, 1.0, 9)
#: steps per spacing of the B-spline lattices the thick hypothesis reads its anchors from (THICK_POSITIONS' grid)
LATTICE_STEPS = 8


def profile_weights(ratio: float) -> np.ndarray:
    """Weights of :data:`THICK_POSITIONS` for a Gaussian slice profile of FWHM ``ratio`` spacings (thickness /
    spacing; 1 gives :data:`THICK_WEIGHTS`), summing to 1."""
    sigma = float(ratio) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    weights = np.exp(-0.5 * (THICK_POSITIONS / sigma) ** 2)
    return weights / weights.sum()


#: the thick-slice profile: a Gaussian of FWHM one spacing, sampled at :data:`THICK_POSITIONS`
THICK_WEIGHTS = profile_weights(1.0)


def lattice_bsplines(slices: np.ndarray) -> dict[int, np.ndarray]:
    """Cubic B-spline of each parity's lattice (every second slice of ``slices`` ``[n, H, W]``, float32), in steps
    of 1 / :data:`LATTICE_STEPS` of the lattice's spacing: the anchor of a new slice between slices ``i - 1`` and
    ``i + 1`` without slice ``i`` (:func:`lattice_anchor`)."""
    return {parity: interpolate_slices(slices[parity::2], LATTICE_STEPS, "bspline", dtype=np.float32)
            for parity in (0, 1) if slices[parity::2].shape[0] >= 2}


def lattice_anchor(lattices: dict[int, np.ndarray], first: int, alpha: float) -> np.ndarray:
    """The B-spline anchor ``[H, W]`` at ``alpha`` (a multiple of 1 / :data:`LATTICE_STEPS`) between slices
    ``first`` and ``first + 2``, from :func:`lattice_bsplines`."""
    return lattices[first % 2][LATTICE_STEPS * (first // 2) + int(round(LATTICE_STEPS * alpha))]


#: fewest acquired slices for an estimate (a tested slice needs two on each side)
MIN_SLICES = 5
#: thick only when its prediction error is this much (relative) below thin's
THICK_MARGIN = 0.03
#: the test-time views whose comparison must agree with the plain one (networks that take them)
AGREEMENT_VIEWS = "pair-flip"


@dataclass(frozen=True)
class ProfileEstimate:
    """The outcome: ``choice`` ``"thin"``, ``"thick"`` or ``"unknown"``, the ``ratio`` (thickness / spacing) to
    tell the network (None for unknown), and the prediction errors of both hypotheses (mean squared error,
    unit intensity range) with the network's plain answers and, where the network takes test-time views,
    with their mean (``view_thin_error``, ``view_thick_error``; None otherwise)."""

    choice: str
    ratio: float | None
    thin_error: float
    thick_error: float
    slices_tested: int
    view_thin_error: float | None = None
    view_thick_error: float | None = None

    def summary(self) -> str:
        told = f"thickness/spacing {self.ratio:.3g}" if self.ratio is not None else "the model is not told"
        errors = f"thin {self.thin_error:.3g}, thick {self.thick_error:.3g}"
        if self.view_thin_error is not None and self.view_thick_error is not None:
            errors += (f" ({hypothesis_choice(self.thin_error, self.thick_error)}); with {AGREEMENT_VIEWS} views: "
                       f"thin {self.view_thin_error:.3g}, thick {self.view_thick_error:.3g} "
                       f"({hypothesis_choice(self.view_thin_error, self.view_thick_error)})")
        choice = f"{self.choice} slices" if self.choice != "unknown" else "not decided"
        return (f"slice profile estimated from the scan: {choice} ({told}; prediction error of "
                f"{self.slices_tested} acquired slices: {errors})")


def hypothesis_choice(thin_error: float, thick_error: float) -> str:
    """``"thick"`` when ``thick_error`` is below ``thin_error`` by more than :data:`THICK_MARGIN` (relative),
    ``"thin"`` when ``thin_error <= thick_error``, else ``"unknown"``."""
    if thick_error < (1.0 - THICK_MARGIN) * thin_error:
        return "thick"
    if thin_error <= thick_error:
        return "thin"
    return "unknown"


def agreed_choice(*choices: str) -> str:
    """The rule of agreement: the common choice when all ``choices`` agree, else ``"unknown"``."""
    return choices[0] if len(set(choices)) == 1 else "unknown"


def estimate_slice_profile(model: torch.nn.Module, unit_slices: np.ndarray, factor: int, *,
                           max_slices: int = 16, crop: int = 96, device: torch.device | str = "cpu",
                           ) -> ProfileEstimate | None:
    """:class:`ProfileEstimate` for ``unit_slices`` ``[n, H, W]`` (float32 in [0, 1]) to be upsampled by
    ``factor``, or None when there are fewer than :data:`MIN_SLICES` slices. ``model``: a pair U-Net with
    ``thickness_input`` (and optionally the B-spline anchor input), in eval mode. At most ``max_slices``
    slices are tested, each on its central ``crop`` x ``crop`` pixels (a multiple of the network's size)."""
    n, height, width = unit_slices.shape
    if n < MIN_SLICES:
        return None
    multiple = int(model.config.size_multiple)
    ch = max(multiple, min(crop, height) // multiple * multiple)
    cw = max(multiple, min(crop, width) // multiple * multiple)
    top, left = max(0, (height - ch) // 2), max(0, (width - cw) // 2)
    region = unit_slices[:, top:top + ch, left:left + cw]
    if region.shape[1] != ch or region.shape[2] != cw:  # smaller than one network block: edge-pad
        region = np.pad(region, ((0, 0), (0, ch - region.shape[1]), (0, cw - region.shape[2])), mode="edge")
    candidates = list(range(2, n - 2)) or [n // 2]
    tested = candidates[:: max(1, math.ceil(len(candidates) / max_slices))][:max_slices]
    needs_anchor = bool(getattr(model, "needs_anchor", False))
    anchors = lattice_bsplines(region) if needs_anchor else {}  # each parity's lattice (the slices kept at gap two)
    thin_alphas, thin_weights = [0.5], [1.0]
    thick_alphas, thick_weights = list(0.5 + THICK_POSITIONS / 2.0), list(THICK_WEIGHTS)
    plain = model.synthesize
    answers = {"plain": plain}
    if getattr(model, "supports_test_time_augmentation", False):
        answers["views"] = lambda *args, **keywords: augmented_synthesis(plain, AGREEMENT_VIEWS, *args, **keywords)
    errors = {(way, name): [] for way in answers for name in ("thin", "thick")}
    with torch.inference_mode():
        for i in tested:
            first = torch.from_numpy(np.ascontiguousarray(region[i - 1]))[None, None].to(device)
            second = torch.from_numpy(np.ascontiguousarray(region[i + 1]))[None, None].to(device)
            for name, alphas, weights, ratio in (("thin", thin_alphas, thin_weights, 1.0 / (2 * factor)),
                                                 ("thick", thick_alphas, thick_weights, 0.5)):
                extras = [()] * len(alphas)
                if needs_anchor:  # the B-spline at each alpha, shared by the plain answers and the views
                    extras = [(torch.from_numpy(np.ascontiguousarray(
                        lattice_anchor(anchors, i - 1, alpha)))[None, None].to(device),) for alpha in alphas]
                for way, synthesize in answers.items():
                    prediction = np.zeros((ch, cw), dtype=np.float64)
                    for alpha, weight, extra in zip(alphas, weights, extras):
                        out = synthesize(first, second, float(alpha), *extra, thickness=float(ratio))
                        prediction += weight * out[0, 0].double().cpu().numpy()
                    errors[way, name].append(float(np.mean((prediction - region[i]) ** 2)))
    mean = {key: float(np.mean(values)) for key, values in errors.items()}
    choice = agreed_choice(*(hypothesis_choice(mean[way, "thin"], mean[way, "thick"]) for way in answers))
    ratio = {"thick": 1.0, "thin": 1.0 / factor, "unknown": None}[choice]
    return ProfileEstimate(choice, ratio, mean["plain", "thin"], mean["plain", "thick"], len(tested),
                           mean.get(("views", "thin")), mean.get(("views", "thick")))
