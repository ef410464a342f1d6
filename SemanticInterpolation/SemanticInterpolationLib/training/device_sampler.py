"""Training data on the compute device: whole pair-unet batches drawn by tensor indexing (no DataLoader).

:class:`DeviceGapSampler` holds the normalised slices of all training volumes in one flat tensor on
the device (float16 on GPUs), with the simulated thick-slice copies it needs (Gaussian blur along the
slices, FWHM = gap, computed there), and draws a batch of ``(first, middle, second)`` patches and
their alphas with a few vectorised operations: the random choices of every sample of the batch are
drawn at once from a :class:`torch.Generator` on the device, and the patches are gathered through
an index grid that already includes the 90-degree rotation and the flip. A GPU then spends its time
on the network, not waiting for CPU workers.

The sampling rules are those of :class:`.data.GapDataset`, choice by choice (its docstring has them):
gap ``g`` uniform in ``[min_gap, min(max_gap, n - 1 - first)]`` and middle offset uniform in
``[1, g - 1]`` on fine volumes, the two neighbours (``g = 2``) on anisotropic stacks; endpoints from
the copy blurred with FWHM = ``g`` with ``thick_slice_probability``; patch position uniform; rotation,
flip, intensity change (gamma, contrast, brightness), noise on the two endpoints only, and the pair in
either order (alpha mirrored). Given the same choices both give the same patch (checked by the tests);
the random numbers differ (a torch generator per epoch and process instead of a numpy one per item).

The default model's inputs are drawn too (GapDataset's ``bspline_anchor`` and ``slice_profile``):

* ``bspline_anchor``: each sample also reads the 2T slices of its lattice (:func:`lattice_context_rows`,
  GapDataset's :func:`.data.lattice_context_indices`), which are blurred, augmented and made noisy like
  the endpoints (the same slice gets the same noise), and mixes them into the fourth channel with the
  :func:`~SemanticInterpolationLib.engine.baselines.bspline_fraction_weights` of its gap and offset;
* ``slice_profile``: thick samples are blurred per sample with FWHM = ratio x gap (ratio 1 on half of
  them, uniform in [MIN_THICK_RATIO, 1] on the rest; weights :func:`gaussian_blur_taps`, the formulas
  of :func:`.data.blur_weights`, zero-padded to the widest radius) when drawn, instead of read from
  copies; the batch has a third item, the ratio (1 / gap on thin samples, NaN on anisotropic stacks
  and, with ``unknown_profile_probability``, when withheld).

In thick samples the noise is put on the fine slices before the blur (a noise field per sample over
the slices its rows and their blur reach, :class:`GapDraws` ``noise``). The device path needs torch
and numpy only; the anchor's weights come from ``engine.baselines`` (measured with SimpleITK, or
installed from a packed file by :func:`install_bspline_weight_tables` where SimpleITK is missing).

Which samples an epoch visits is decided as for the DataLoader: the trainer's
:class:`.data.TripletSampler` (same start slices, same order); :meth:`DeviceGapSampler.batches`
turns them into batches. Every random choice of epoch ``e`` on process ``r`` comes from a generator
seeded with ``(seed, e, r)``: runs are reproducible and a resumed epoch is drawn again identically.

:func:`save_packed_volumes` / :func:`load_packed_volumes` store ready training volumes (normalised
slices, float16) in one compressed ``.npz`` and read them back without SimpleITK, for machines that
only have torch and numpy (``Resources/Scripts/pack_training_data.py``, ``bench/gpu_train_default.sh``).
The in-plane and slice spacings are stored with each volume: they decide which volumes are fine
(:func:`.data.is_fine`), hence the gaps, thick-slice samples and thickness ratios.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import InputError
from .data import (ANCHOR_TAPS_PER_SIDE, MIN_THICK_RATIO, Augmentation, TrainingVolume, blur_weights,
                   setup_gap_sampling)

PACK_FORMAT = "semantic-interpolation-training-pack/1"


def blur_slices_torch(slices: torch.Tensor, fwhm_slices: float) -> torch.Tensor:
    """:func:`.data.blur_slices` on a ``[n, H, W]`` tensor (any device; edges repeated), float32."""
    offsets, weights = blur_weights(fwhm_slices)
    n, radius = slices.shape[0], int(offsets[-1])
    rows = torch.arange(-radius, n + radius, device=slices.device).clamp(0, n - 1)
    padded = slices.float()[rows]  # [n + 2r, H, W], the end slices repeated
    out = torch.zeros(slices.shape, dtype=torch.float32, device=slices.device)
    for offset, weight in zip(offsets.tolist(), weights.tolist()):
        out.add_(padded[radius + offset:radius + offset + n], alpha=float(np.float32(weight)))
    return out


#: source coordinates of output pixel (i, j) of ``np.rot90(patch, k, axes=(1, 2))`` as coefficients of
#: (i, j, 1): rows k = 0..3; before the flip, which maps j to P - 1 - j (the constant P - 1 is added below)
_ROW_OF_K = ((1, 0, 0), (0, 1, 0), (-1, 0, 1), (0, -1, 1))
_COL_OF_K = ((0, 1, 0), (-1, 0, 1), (0, -1, 1), (1, 0, 0))

#: FWHM = this many sigma of a Gaussian (as :func:`.data.blur_weights`)
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def lattice_context_rows(first: torch.Tensor, gap: torch.Tensor, n_slices: torch.Tensor,
                         taps_per_side: int = ANCHOR_TAPS_PER_SIDE) -> torch.Tensor:
    """:func:`.data.lattice_context_indices` of every sample at once: ``first``, ``gap``, ``n_slices``
    int64 ``[B]`` -> slice indices int64 ``[B, 2T]`` (the lattice ``first + j * gap``, ``j = -(T-1) .. T``,
    mirrored about its end slices inside the volume, then clamped)."""
    t = int(taps_per_side)
    f, g = first.view(-1, 1), gap.view(-1, 1)
    j = torch.arange(-(t - 1), t + 1, dtype=torch.int64, device=first.device).view(1, -1)
    j_low = -torch.div(f, g, rounding_mode="floor")
    j_high = torch.div(n_slices.view(-1, 1) - 1 - f, g, rounding_mode="floor")
    j = torch.where(j < j_low, 2 * j_low - j, j)
    j = torch.where(j > j_high, 2 * j_high - j, j)
    j = torch.minimum(torch.maximum(j, j_low), j_high)
    return f + j * g


def gaussian_blur_taps(fwhm_slices: torch.Tensor, max_radius: int) -> torch.Tensor:
    """:func:`.data.blur_weights` of one FWHM per sample (float64 ``[B]``, slices), as float32 ``[B, 2R + 1]``
    weights at the offsets ``-R .. R`` (R = ``max_radius``), zero beyond each sample's own radius
    (``max(1, int(4 sigma + 0.5))``); each row sums to 1. Same formulas as ``blur_weights``, in float64."""
    sigma = fwhm_slices.double().view(-1, 1) / _FWHM_PER_SIGMA
    radius = torch.clamp(torch.floor(4.0 * sigma + 0.5), min=1.0)
    if bool((radius > max_radius).any()):
        raise ValueError(f"a FWHM of up to {float(fwhm_slices.max()):g} slices needs more than {max_radius} taps per side")
    offsets = torch.arange(-max_radius, max_radius + 1, dtype=torch.float64, device=fwhm_slices.device).view(1, -1)
    weights = torch.where(offsets.abs() <= radius, torch.exp(-0.5 * (offsets / sigma) ** 2), 0.0)
    return (weights / weights.sum(1, keepdim=True)).float()


@dataclass
class GapDraws:
    """The random choices of one batch (tensors ``[B]`` on the device; ``noise`` ``[B, L, P, P]`` or None)."""

    volume: torch.Tensor  # volume index
    first: torch.Tensor  # first slice
    gap: torch.Tensor
    offset: torch.Tensor  # middle = first + offset
    top: torch.Tensor
    left: torch.Tensor
    thick: torch.Tensor  # bool: simulated thick endpoints (and anchor context)
    rotation: torch.Tensor  # k of np.rot90(patch, k, axes=(1, 2))
    flip: torch.Tensor  # bool: patch[:, :, ::-1] after the rotation
    change: torch.Tensor  # bool: intensity change
    gamma: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor
    swap: torch.Tensor  # bool: (second, middle, first), alpha mirrored
    #: ``[B, L, P, P]`` noise field (already scaled by each sample's sigma; zero without noise) on the fine
    #: slices ``min(rows) - R + l`` (rows: :meth:`DeviceGapSampler.rows`; R = :attr:`DeviceGapSampler.max_radius`,
    #: the widest blur's radius), in the output's orientation. Plain samples: each input row (endpoints, anchor
    #: context) gets the field at its slice, the middle none. Thick-slice samples: the input rows get it blurred
    #: like their signal, the middle the field at its slice.
    noise: torch.Tensor | None
    #: ``slice_profile``: slice thickness / gap of the endpoints as drawn, float64: thick samples 1 or
    #: U(MIN_THICK_RATIO, 1), thin samples of fine volumes 1 / gap, NaN on anisotropic stacks (None without)
    ratio: torch.Tensor | None = None
    #: ``slice_profile``: bool, the ratio is withheld (NaN in the batch)
    withheld: torch.Tensor | None = None


class DeviceGapSampler:
    """:class:`.data.GapDataset`'s samples drawn a whole batch at a time on ``device``.

    ``len(sampler)`` and :attr:`index` equal the GapDataset's for the same volumes and gaps, so the
    trainer's :class:`.data.TripletSampler` picks the start slices of each epoch for both.
    ``bspline_anchor``, ``slice_profile`` and ``unknown_profile_probability`` are GapDataset's (a fourth
    patch channel, the B-spline anchor; items ``(patch, alpha, ratio)``).
    ``storage_dtype``: dtype of the slices held on the device (default float16 on CUDA, float32
    elsewhere; patches are returned as float32).
    """

    def __init__(self, volumes: Sequence[TrainingVolume], patch_size: int, *, min_gap: int = 2, max_gap: int = 6,
                 augmentation: Augmentation | None = None, seed: int = 0, thick_slice_probability: float = 0.0,
                 bspline_anchor: bool = False, slice_profile: bool = False, unknown_profile_probability: float = 0.3,
                 device: str | torch.device = "cpu", storage_dtype: torch.dtype | None = None) -> None:
        # the same settings checks and sample list as GapDataset: (volume index, first slice)
        setup_gap_sampling(self, volumes, patch_size, min_gap, max_gap, augmentation, seed, thick_slice_probability)
        self.with_anchor = bool(bspline_anchor)
        self.slice_profile = bool(slice_profile)
        self.unknown_profile_probability = float(unknown_profile_probability)
        if not 0.0 <= self.unknown_profile_probability <= 1.0:
            raise InputError(f"unknown-profile probability must be from 0 to 1, got {unknown_profile_probability!r}")
        self.device = torch.device(device)
        if storage_dtype is None:
            storage_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.storage_dtype = storage_dtype

        # ---- one flat tensor: every volume, then the blurred copies (FWHM = gap; with the slice profile the
        # thickness varies per sample and the inputs are blurred when drawn instead); per-volume tables
        dev = self.device
        sizes = [v.slices.size for v in self.volumes]
        copies = self.thick_slice_probability > 0 and not self.slice_profile
        n_thick = (self.max_gap - self.min_gap + 1) if copies else 0
        thick_size = n_thick * sum(v.slices.size for v, fine in zip(self.volumes, self.fine) if fine)
        self.storage = torch.empty(sum(sizes) + thick_size, dtype=storage_dtype, device=dev)
        bases, position = [], 0
        for v in self.volumes:
            flat = torch.from_numpy(np.ascontiguousarray(v.slices, dtype=np.float32).reshape(-1))
            self.storage[position:position + flat.numel()] = flat.to(dev, storage_dtype)
            bases.append(position)
            position += flat.numel()
        #: [V, max_gap + 1]: where the copy blurred with FWHM = gap starts (-1: none)
        thick_base = torch.full((len(self.volumes), self.max_gap + 1), -1, dtype=torch.int64)
        if n_thick:
            for vi, (v, fine) in enumerate(zip(self.volumes, self.fine)):
                if not fine:
                    continue
                n, h, w = v.slices.shape
                sharp = torch.from_numpy(np.ascontiguousarray(v.slices, dtype=np.float32)).to(dev)
                for gap in range(self.min_gap, self.max_gap + 1):
                    blurred = blur_slices_torch(sharp, gap).reshape(-1)
                    self.storage[position:position + blurred.numel()] = blurred.to(storage_dtype)
                    thick_base[vi, gap] = position
                    position += blurred.numel()
                del sharp
        self.base = torch.tensor(bases, dtype=torch.int64, device=dev)
        self.thick_base = thick_base.to(dev)
        self.n_slices = torch.tensor([v.n_slices for v in self.volumes], dtype=torch.int64, device=dev)
        self.height = torch.tensor([v.slice_shape[0] for v in self.volumes], dtype=torch.int64, device=dev)
        self.width = torch.tensor([v.slice_shape[1] for v in self.volumes], dtype=torch.int64, device=dev)
        self.is_fine = torch.tensor(self.fine, dtype=torch.bool, device=dev)
        self.item_volume = torch.tensor([vi for vi, _ in self.index], dtype=torch.int64, device=dev)
        self.item_first = torch.tensor([n for _, n in self.index], dtype=torch.int64, device=dev)
        self._arange = torch.arange(self.patch_size, dtype=torch.int64, device=dev)
        self._row_of_k = torch.tensor(_ROW_OF_K, dtype=torch.int64, device=dev)
        self._col_of_k = torch.tensor(_COL_OF_K, dtype=torch.int64, device=dev)

        # ---- the rows of a sample (first, middle, second[, the anchor's 2T lattice slices]); the network's inputs
        # are all but the middle (GapDataset's ``inputs``)
        taps_per_side = ANCHOR_TAPS_PER_SIDE
        self.n_rows = 3 + (2 * taps_per_side if self.with_anchor else 0)
        self._input_rows = torch.tensor([0, 2] + list(range(3, self.n_rows)), dtype=torch.int64, device=dev)
        self._swapped_channels = torch.tensor([2, 1, 0] + ([3] if self.with_anchor else []), dtype=torch.int64,
                                              device=dev)

        # ---- blur and noise tables: thick-slice signal and noise are blurred along the slices with FWHM <= max_gap
        #: radius of the widest blur (FWHM = max_gap): the blur taps are zero-padded to 2 * max_radius + 1
        self.max_radius = max(int(blur_weights(g)[0][-1]) for g in range(2, self.max_gap + 1))
        taps = np.zeros((self.max_gap + 1, 2 * self.max_radius + 1), np.float32)
        for g in range(2, self.max_gap + 1):
            offsets, weights = blur_weights(g)
            taps[g, offsets + self.max_radius] = weights.astype(np.float32)
        self._taps = torch.from_numpy(taps).to(dev)
        self._tap_offsets = torch.arange(-self.max_radius, self.max_radius + 1, dtype=torch.int64, device=dev)
        self._delta = torch.zeros(2 * self.max_radius + 1, dtype=torch.float32, device=dev)
        self._delta[self.max_radius] = 1.0
        # the noise field covers min(rows) - R .. max(rows) + R: the widest span of a sample's rows on any volume
        spans = []
        for v, fine in zip(self.volumes, self.fine):
            widest = min(self.max_gap, v.n_slices - 1) if fine else 2
            spans.append(min((2 * taps_per_side - 1) * widest, v.n_slices - 1) if self.with_anchor else widest)
        #: slices of the noise field of a sample (:class:`GapDraws` ``noise``)
        self.field_slices = max(spans) + 2 * self.max_radius + 1
        self._fraction = None
        if self.with_anchor:  # [max_gap + 1, max_gap, 2T]: bspline_fraction_weights(gap, offset) (anisotropic: 2, 1)
            from ..engine.baselines import bspline_fraction_weights

            fraction = np.zeros((self.max_gap + 1, self.max_gap, 2 * taps_per_side), np.float32)
            for g in range(2, self.max_gap + 1):
                for o in range(1, g):
                    fraction[g, o] = bspline_fraction_weights(g, o, taps_per_side).astype(np.float32)
            self._fraction = torch.from_numpy(fraction).to(dev)

    # ----------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        """Bytes the slices and their blurred copies take on the device."""
        return self.storage.numel() * self.storage.element_size()

    def generator(self, epoch: int, rank: int = 0) -> torch.Generator:
        """The generator of epoch ``epoch`` on process ``rank`` (seeded with ``(seed, epoch, rank)``)."""
        state = np.random.SeedSequence([self.seed, int(epoch), int(rank)]).generate_state(2, np.uint32)
        g = torch.Generator(device=self.device)
        g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        return g

    # ----------------------------------------------------------------- drawing
    def draw(self, items: torch.Tensor, generator: torch.Generator) -> GapDraws:
        """The random choices for the samples ``items`` (indices into :attr:`index`, on the device)."""
        aug, p, dev = self.augmentation, self.patch_size, self.device
        items = items.to(dev, torch.int64)
        b = items.shape[0]
        vi = self.item_volume[items]
        first = self.item_first[items]
        u = torch.rand((14, b), generator=generator, device=dev, dtype=torch.float64)
        fine = self.is_fine[vi]
        # gap uniform in [min_gap, min(max_gap, n - 1 - first)] (>= min_gap by the index), offset in [1, gap - 1]
        high = torch.clamp(self.n_slices[vi] - 1 - first, max=self.max_gap)
        gap = self.min_gap + torch.floor(u[0] * (high - self.min_gap + 1).clamp(min=1)).long()
        gap = torch.minimum(gap, high.clamp(min=self.min_gap))
        offset = torch.minimum(1 + torch.floor(u[1] * (gap - 1)).long(), gap - 1)
        gap = torch.where(fine, gap, torch.full_like(gap, 2))
        offset = torch.where(fine, offset, torch.ones_like(offset))
        top = torch.minimum(torch.floor(u[2] * (self.height[vi] - p + 1)).long(), self.height[vi] - p)
        left = torch.minimum(torch.floor(u[3] * (self.width[vi] - p + 1)).long(), self.width[vi] - p)
        if self.slice_profile:  # fine volumes only; blurred when rendered
            thick = fine & (u[4] < self.thick_slice_probability)
        else:
            thick = (self.thick_base[vi, gap.clamp(max=self.max_gap)] >= 0) & (u[4] < self.thick_slice_probability)
        rotation = torch.floor(u[5] * 4).long().clamp(max=3) if aug.rotate else torch.zeros_like(gap)
        flip = (u[6] < 0.5) if aug.flip else torch.zeros_like(fine)
        change = u[7] < aug.intensity_probability
        log_g0, log_g1 = math.log(aug.gamma_range[0]), math.log(aug.gamma_range[1])
        gamma = torch.exp(log_g0 + u[8] * (log_g1 - log_g0)).float()
        contrast = (aug.contrast_range[0] + u[9] * (aug.contrast_range[1] - aug.contrast_range[0])).float()
        brightness = (aug.brightness_range[0] + u[10] * (aug.brightness_range[1] - aug.brightness_range[0])).float()
        swap = (u[11] < 0.5) if aug.flip else torch.zeros_like(fine)
        ratio = withheld = None
        if self.slice_profile:
            v = torch.rand((3, b), generator=generator, device=dev, dtype=torch.float64)
            thick_ratio = torch.where(v[0] < 0.5, 1.0, MIN_THICK_RATIO + v[1] * (1.0 - MIN_THICK_RATIO))
            thin_ratio = torch.where(fine, 1.0 / gap.double(), math.nan)
            ratio = torch.where(thick, thick_ratio, thin_ratio)
            withheld = v[2] < self.unknown_profile_probability
        noise = None
        if aug.noise_std_max > 0:
            on = u[12] < aug.noise_probability
            sigma = torch.where(on, u[13] * aug.noise_std_max, torch.zeros_like(u[13])).float()
            noise = torch.randn((b, self.field_slices, p, p), generator=generator, device=dev) * sigma[:, None, None, None]
        return GapDraws(vi, first, gap, offset, top, left, thick, rotation, flip, change, gamma, contrast,
                        brightness, swap, noise, ratio, withheld)

    def rows(self, d: GapDraws) -> torch.Tensor:
        """The slices each sample reads, int64 ``[B, R]``, in GapDataset's order: first, middle, second, then
        with ``bspline_anchor`` the anchor's lattice context (:func:`lattice_context_rows`); before the swap."""
        rows = torch.stack([d.first, d.first + d.offset, d.first + d.gap], 1)
        if self.with_anchor:
            rows = torch.cat([rows, lattice_context_rows(d.first, d.gap, self.n_slices[d.volume])], 1)
        return rows

    def blur_taps(self, d: GapDraws) -> torch.Tensor:
        """Per-sample weights along the slices (float32 ``[B, 2R + 1]``, offsets ``-R .. R``) of the input rows:
        thick samples :func:`.data.blur_weights` of FWHM = ratio x gap (``slice_profile``) or gap, others one
        tap at offset 0."""
        if self.slice_profile:
            fwhm = torch.where(d.thick, d.ratio * d.gap.double(), 1.0)
            taps = gaussian_blur_taps(fwhm, self.max_radius)
        else:
            taps = self._taps[d.gap.clamp(max=self.max_gap)]
        return torch.where(d.thick.view(-1, 1), taps, self._delta)

    def render(self, d: GapDraws) -> tuple[torch.Tensor, ...]:
        """The batch the choices ``d`` give, exactly as :meth:`.data.GapDataset.__getitem__` makes it: patches
        float32 ``[B, 3, P, P]`` (first, middle, second; ``[B, 4, P, P]`` with the B-spline anchor), alpha
        float32 ``[B]``, and with ``slice_profile`` the thickness ratio float32 ``[B]`` (NaN: not told)."""
        p = self.patch_size
        ar = self._arange
        b = d.volume.shape[0]
        # the source pixel of output pixel (i, j) is affine in (i, j) for each sample: row = a i + b j1 + c,
        # column = a' i + b' j1 + c' with j1 = f j + g (f = -1, g = P - 1 when flipped; constants c in units of P - 1)
        k = d.rotation
        rows_k = self._row_of_k[k]  # [B, 3]
        cols_k = self._col_of_k[k]
        f = torch.where(d.flip, -1, 1)
        g = torch.where(d.flip, p - 1, 0)
        width = self.width[d.volume]
        row_i, row_j, row_c = rows_k[:, 0], rows_k[:, 1] * f, rows_k[:, 2] * (p - 1) + rows_k[:, 1] * g
        col_i, col_j, col_c = cols_k[:, 0], cols_k[:, 1] * f, cols_k[:, 2] * (p - 1) + cols_k[:, 1] * g
        step_i = row_i * width + col_i
        step_j = row_j * width + col_j
        corner = (d.top + row_c) * width + d.left + col_c
        plane = (corner.view(-1, 1, 1) + (step_i.view(-1, 1) * ar).view(-1, p, 1)
                 + (step_j.view(-1, 1) * ar).view(-1, 1, p))  # [B, P, P]: in-plane offsets of the output pixels
        slice_size = self.height[d.volume] * width
        sharp = self.base[d.volume]
        rows = self.rows(d)  # [B, R]
        bases = sharp.view(-1, 1).expand(-1, self.n_rows)
        if not self.slice_profile:  # thick samples read their input rows from the copy blurred with FWHM = gap
            ends = torch.where(d.thick, self.thick_base[d.volume, d.gap.clamp(max=self.max_gap)], sharp)
            is_input = torch.ones(self.n_rows, dtype=torch.bool, device=self.device)
            is_input[1] = False
            bases = torch.where(is_input.view(1, -1), ends.view(-1, 1), bases)
        index = (bases + rows * slice_size.view(-1, 1)).view(b, -1, 1, 1) + plane.view(b, 1, p, p)
        patch = self.storage[index].float()  # [B, R, P, P]
        low = rows.min(1).values - self.max_radius  # first slice of each sample's noise field and slab
        mixing = None  # [B, R - 1, L]: for the per-sample blur and the noise
        if self.slice_profile or d.noise is not None:
            mixing = self._input_mixing(d, rows, self.blur_taps(d), low)
        if self.slice_profile and bool(d.thick.any()):
            chosen = torch.nonzero(d.thick).view(-1)
            patch[chosen.view(-1, 1), self._input_rows.view(1, -1)] = self._blurred_inputs(
                d, plane, slice_size, mixing, low, chosen)
        # intensity change in place; unchanged samples get gamma 1, contrast 1, brightness 0 and no clamp
        # (equal to leaving them alone up to the rounding of (x - 0.5) + 0.5, below 6e-8)
        one = torch.ones_like(d.gamma)
        patch = torch.maximum(patch, torch.where(d.change, 0.0, -math.inf).view(-1, 1, 1, 1))
        patch.pow_(torch.where(d.change, d.gamma, one).view(-1, 1, 1, 1))
        patch.sub_(0.5).mul_(torch.where(d.change, d.contrast, one).view(-1, 1, 1, 1))
        patch.add_((0.5 + torch.where(d.change, d.brightness, one * 0)).view(-1, 1, 1, 1))
        if d.noise is not None:
            patch += self._noise(d, rows, mixing, low)
        if self.with_anchor:  # from the augmented, noisy (and thick) context rows, as GapDataset; elementwise in float32
            weights = self._fraction[d.gap, d.offset]  # [B, 2T]
            anchor = (weights.view(b, -1, 1, 1) * patch[:, 3:]).sum(1, keepdim=True)
            patch = torch.cat([patch[:, :3], anchor], 1)
        # the pair in either order: swapped samples hold (second, middle, first[, anchor]), alpha mirrored
        patch = torch.where(d.swap.view(-1, 1, 1, 1), patch[:, self._swapped_channels], patch)
        alpha = torch.where(d.swap, d.gap - d.offset, d.offset).double() / d.gap.double()
        if self.slice_profile:
            ratio = torch.where(d.withheld, math.nan, d.ratio).float()
            return patch.contiguous(), alpha.float(), ratio
        return patch.contiguous(), alpha.float()

    def _input_mixing(self, d: GapDraws, rows: torch.Tensor, taps: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """How each input row (endpoints, anchor context) mixes the slices ``low + l`` (``l < field_slices``) along
        the slice axis: float32 ``[B, R - 1, L]``, ``taps`` (:meth:`blur_taps`) at its slice and around it, the
        slices beyond the volume's ends replaced by its end slices (as :func:`.data.blur_slices`)."""
        last = (self.n_slices[d.volume] - 1).view(-1, 1, 1)
        inputs = rows[:, self._input_rows].unsqueeze(2)  # [B, R - 1, 1]
        source = torch.minimum((inputs + self._tap_offsets.view(1, 1, -1)).clamp(min=0), last) - low.view(-1, 1, 1)
        mixing = torch.zeros((rows.shape[0], inputs.shape[1], self.field_slices), dtype=torch.float32,
                             device=self.device)
        return mixing.scatter_add_(2, source, taps.unsqueeze(1).expand(-1, inputs.shape[1], -1).contiguous())

    def _blurred_inputs(self, d: GapDraws, plane: torch.Tensor, slice_size: torch.Tensor, mixing: torch.Tensor,
                        low: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """The input rows of the thick samples ``chosen`` blurred with their own taps: the slab of slices
        ``low .. low + L - 1`` of each (clamped into the volume) read once and mixed with ``mixing``
        (:meth:`_input_mixing`); float32 ``[len(chosen), R - 1, P, P]``."""
        p, length = self.patch_size, self.field_slices
        volume = d.volume[chosen]
        slab_rows = torch.minimum((low[chosen].view(-1, 1) + torch.arange(length, device=self.device)).clamp(min=0),
                                  (self.n_slices[volume] - 1).view(-1, 1))  # [C, L]
        starts = self.base[volume].view(-1, 1) + slab_rows * slice_size[chosen].view(-1, 1)
        slab = self.storage[starts.view(-1, length, 1, 1) + plane[chosen].view(-1, 1, p, p)].float()  # [C, L, P, P]
        return torch.bmm(mixing[chosen], slab.view(chosen.shape[0], length, -1)).view(chosen.shape[0], -1, p, p)

    def _noise(self, d: GapDraws, rows: torch.Tensor, mixing: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """The noise of the sample's rows ``[B, R, P, P]`` from the field ``d.noise`` (see :class:`GapDraws`): the
        input rows mix it with ``mixing`` (:meth:`_input_mixing`), the middle gets the field at its slice when
        thick. Rows that are the same slice get the same noise, as in GapDataset."""
        b, length = d.noise.shape[0], d.noise.shape[1]
        full = torch.zeros((b, self.n_rows, length), dtype=torch.float32, device=self.device)
        full[:, self._input_rows] = mixing
        full[:, 1].scatter_(1, (rows[:, 1] - low).view(-1, 1), d.thick.float().view(-1, 1))
        return torch.bmm(full, d.noise.reshape(b, length, -1)).view(b, self.n_rows, *d.noise.shape[2:])

    def sample(self, items: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """:meth:`draw` then :meth:`render`."""
        return self.render(self.draw(items, generator))

    def batches(self, order, batch_size: int) -> "DeviceBatches":
        """An iterable like a DataLoader over ``order`` (a :class:`.data.TripletSampler` of this sampler or of
        the matching GapDataset): each pass draws the epoch the sampler is set to."""
        return DeviceBatches(self, order, batch_size)


class DeviceBatches:
    """Batches of one epoch at a time: the start slices ``order`` lists (in its order, ``batch_size`` at a
    time, the last batch shorter), the random choices from :meth:`DeviceGapSampler.generator` of
    ``order.epoch`` and ``order.rank``. Used by the trainer in place of its DataLoader."""

    def __init__(self, sampler: DeviceGapSampler, order, batch_size: int) -> None:
        self.sampler, self.order, self.batch_size = sampler, order, int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        items = torch.tensor(list(iter(self.order)), dtype=torch.int64).to(self.sampler.device)
        g = self.sampler.generator(getattr(self.order, "epoch", 0), getattr(self.order, "rank", 0))
        for start in range(0, items.shape[0], self.batch_size):
            yield self.sampler.sample(items[start:start + self.batch_size], g)


# --------------------------------------------------------------------------- packed volumes (.npz)
def bspline_weight_tables(max_gap: int = 6) -> dict[str, Any]:
    """The cubic B-spline weights training and validation use (``engine.baselines`` measures them with
    SimpleITK), as plain lists for a packed file: the weights at ``offset / gap`` (the midpoint ones are gap 2, offset 1) for
    gaps ``2..max_gap``, with ``ANCHOR_TAPS_PER_SIDE`` taps."""
    from ..engine import baselines

    taps = ANCHOR_TAPS_PER_SIDE
    # the midpoint weights are the fraction weights of gap 2, offset 1 (engine.baselines derives them so)
    return {"fraction": [[gap, offset, taps, baselines.bspline_fraction_weights(gap, offset, taps).tolist()]
                         for gap in range(2, int(max_gap) + 1) for offset in range(1, gap)]}


def install_bspline_weight_tables(tables: dict[str, Any]) -> None:
    """Put the weights of :func:`bspline_weight_tables` into ``engine.baselines``' caches, so that B-spline
    anchors and the validation's B-spline baseline work where SimpleITK is missing (with a stand-in
    module for its import)."""
    from ..engine import baselines

    entries = list(tables.get("fraction") or [])
    # files packed before the midpoint weights were derived from the fraction weights also list them apart
    entries += [[2, 1, taps, weights] for taps, weights in (tables.get("midpoint") or {}).items()]
    for gap, offset, taps, weights in entries:
        values = np.asarray(weights, dtype=np.float64)
        values.setflags(write=False)
        baselines._FRACTION_CACHE.setdefault((int(gap), int(offset), int(taps)), values)


def save_packed_volumes(path: str | os.PathLike, training: Sequence[TrainingVolume],
                        validation: Sequence[TrainingVolume] = (), *, metadata: dict[str, Any] | None = None,
                        dtype: Any = np.float16) -> dict[str, Any]:
    """Write ready training (and validation) volumes into one compressed ``.npz``.

    Slices are stored as ``dtype`` (float16: 11 significant bits, a rounding error below 5e-4 of the
    normalised range). Views that are the same voxels in another axis order (the isotropic volumes cut
    along each axis) are stored once: a view is kept as ``(array, axis order)``. ``thick_slices`` are
    stored too when a volume has them. Returns a summary (arrays stored, views, bytes).
    """
    sources: list[np.ndarray] = []
    records = []

    def store(slices: np.ndarray) -> tuple[int, list[int]]:
        slices = np.asarray(slices)
        for si, source in enumerate(sources):
            if sorted(source.shape) != sorted(slices.shape):
                continue
            for perm in itertools.permutations(range(3)):
                if tuple(source.shape[a] for a in perm) == slices.shape and np.array_equal(
                        source.transpose(perm), slices.astype(dtype)):
                    return si, list(perm)
        sources.append(np.ascontiguousarray(slices, dtype=dtype))
        return len(sources) - 1, [0, 1, 2]

    for role, volumes in (("training", training), ("validation", validation)):
        for v in volumes:
            si, perm = store(v.slices)
            thick = store(v.thick_slices) if v.thick_slices is not None else None
            records.append({"role": role, "name": v.name, "source": si, "axes": perm,
                            "thick_source": None if thick is None else thick[0],
                            "thick_axes": None if thick is None else thick[1],
                            "in_plane_spacing_mm": [float(s) for s in v.in_plane_spacing_mm],
                            "slice_axis": int(v.slice_axis), "slice_spacing_mm": float(v.slice_spacing_mm),
                            "original_size": [int(s) for s in v.original_size]})
    header = {"format": PACK_FORMAT, "volumes": records, "metadata": metadata or {}}
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    arrays = {f"source{i}": a for i, a in enumerate(sources)}
    np.savez_compressed(partial, header=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays)
    os.replace(partial, path)
    return {"path": str(path), "arrays": len(sources), "views": len(records), "bytes": path.stat().st_size,
            "raw_bytes": int(sum(a.nbytes for a in sources))}


def load_packed_volumes(path: str | os.PathLike) -> tuple[list[TrainingVolume], list[TrainingVolume], dict[str, Any]]:
    """Read a file of :func:`save_packed_volumes`: ``(training volumes, validation volumes, metadata)``.

    The volumes are ready (slices float32, as normalised when packed); no image reader (SimpleITK) is needed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"packed training data {str(path)!r} does not exist; make it with "
                         "Resources/Scripts/pack_training_data.py")
    with np.load(path, allow_pickle=False) as data:
        try:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{str(path)!r} is not a packed training-data file: {exc}") from exc
        if header.get("format") != PACK_FORMAT:
            raise InputError(f"{str(path)!r} has format {header.get('format')!r}, expected {PACK_FORMAT!r}")
        sources: dict[int, np.ndarray] = {}

        def view(index: int, axes: list[int]) -> np.ndarray:
            if index not in sources:
                sources[index] = data[f"source{index}"]
            return np.ascontiguousarray(sources[index].transpose(axes), dtype=np.float32)

        training, validation = [], []
        for r in header["volumes"]:
            volume = TrainingVolume(
                name=r["name"], slices=view(r["source"], r["axes"]),
                in_plane_spacing_mm=tuple(r["in_plane_spacing_mm"]), slice_axis=int(r["slice_axis"]),
                slice_spacing_mm=float(r["slice_spacing_mm"]), original_size=tuple(r["original_size"]),
                thick_slices=None if r["thick_source"] is None else view(r["thick_source"], r["thick_axes"]))
            (training if r["role"] == "training" else validation).append(volume)
    return training, validation, header.get("metadata") or {}
