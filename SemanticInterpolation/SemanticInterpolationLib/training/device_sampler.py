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

Which samples an epoch visits is decided as for the DataLoader: the trainer's
:class:`.data.TripletSampler` (same start slices, same order); :meth:`DeviceGapSampler.batches`
turns them into batches. Every random choice of epoch ``e`` on process ``r`` comes from a generator
seeded with ``(seed, e, r)``: runs are reproducible and a resumed epoch is drawn again identically.

:func:`save_packed_volumes` / :func:`load_packed_volumes` store ready training volumes (normalised
slices, float16) in one compressed ``.npz`` and read them back without SimpleITK, for machines that
only have torch and numpy (``Resources/Scripts/pack_training_data.py``, ``bench/gpu_train_default.sh``).
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
from .data import Augmentation, TrainingVolume, blur_weights, setup_gap_sampling

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


@dataclass
class GapDraws:
    """The random choices of one batch (tensors ``[B]`` on the device; ``noise`` ``[B, 2, P, P]`` or None)."""

    volume: torch.Tensor  # volume index
    first: torch.Tensor  # first slice
    gap: torch.Tensor
    offset: torch.Tensor  # middle = first + offset
    top: torch.Tensor
    left: torch.Tensor
    thick: torch.Tensor  # bool: endpoints from the blurred copy
    rotation: torch.Tensor  # k of np.rot90(patch, k, axes=(1, 2))
    flip: torch.Tensor  # bool: patch[:, :, ::-1] after the rotation
    change: torch.Tensor  # bool: intensity change
    gamma: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor
    swap: torch.Tensor  # bool: (second, middle, first), alpha mirrored
    #: ``[B, L, P, P]`` noise field (already scaled by each sample's sigma; zero without noise) on the fine
    #: slices ``first - R + l`` (R = the blur radius at FWHM = gap, :func:`blur_weights`), in the output's
    #: orientation. Plain samples: the endpoints get the field at their slices, the middle none. Thick-slice
    #: samples: the endpoints get it blurred like their signal, the middle the field at its slice.
    noise: torch.Tensor | None


class DeviceGapSampler:
    """:class:`.data.GapDataset`'s samples drawn a whole batch at a time on ``device``.

    ``len(sampler)`` and :attr:`index` equal the GapDataset's for the same volumes and gaps, so the
    trainer's :class:`.data.TripletSampler` picks the start slices of each epoch for both.
    ``storage_dtype``: dtype of the slices held on the device (default float16 on CUDA, float32
    elsewhere; patches are returned as float32).
    """

    def __init__(self, volumes: Sequence[TrainingVolume], patch_size: int, *, min_gap: int = 2, max_gap: int = 6,
                 augmentation: Augmentation | None = None, seed: int = 0, thick_slice_probability: float = 0.0,
                 device: str | torch.device = "cpu", storage_dtype: torch.dtype | None = None) -> None:
        # the same settings checks and sample list as GapDataset: (volume index, first slice)
        setup_gap_sampling(self, volumes, patch_size, min_gap, max_gap, augmentation, seed, thick_slice_probability)
        self.device = torch.device(device)
        if storage_dtype is None:
            storage_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.storage_dtype = storage_dtype

        # ---- one flat tensor: every volume, then the blurred copies; per-volume tables
        dev = self.device
        sizes = [v.slices.size for v in self.volumes]
        n_thick = (self.max_gap - self.min_gap + 1) if self.thick_slice_probability > 0 else 0
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
        # noise of thick-slice samples: a noise field on the fine slices first - R(g) .. first + g + R(g), blurred
        # into the endpoints like their signal (R(g) = the blur radius at FWHM g), the middle keeps its own share
        gaps = range(0, self.max_gap + 1)
        radii = [int(blur_weights(max(g, 1))[0][-1]) for g in gaps]
        self.max_radius = max(radii[g] for g in range(2, self.max_gap + 1))
        self.field_slices = max(g + 2 * radii[g] + 1 for g in range(2, self.max_gap + 1))
        taps = np.zeros((self.max_gap + 1, 2 * self.max_radius + 1), np.float32)
        for g in range(2, self.max_gap + 1):
            offsets, weights = blur_weights(g)
            taps[g, offsets + self.max_radius] = weights.astype(np.float32)
        self._radius = torch.tensor(radii, dtype=torch.int64, device=dev)
        self._taps = torch.from_numpy(taps).to(dev)
        self._tap_offsets = torch.arange(-self.max_radius, self.max_radius + 1, dtype=torch.int64, device=dev)
        self._col_of_k = torch.tensor(_COL_OF_K, dtype=torch.int64, device=dev)

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
        thick = (self.thick_base[vi, gap.clamp(max=self.max_gap)] >= 0) & (u[4] < self.thick_slice_probability)
        rotation = torch.floor(u[5] * 4).long().clamp(max=3) if aug.rotate else torch.zeros_like(gap)
        flip = (u[6] < 0.5) if aug.flip else torch.zeros_like(fine)
        change = u[7] < aug.intensity_probability
        log_g0, log_g1 = math.log(aug.gamma_range[0]), math.log(aug.gamma_range[1])
        gamma = torch.exp(log_g0 + u[8] * (log_g1 - log_g0)).float()
        contrast = (aug.contrast_range[0] + u[9] * (aug.contrast_range[1] - aug.contrast_range[0])).float()
        brightness = (aug.brightness_range[0] + u[10] * (aug.brightness_range[1] - aug.brightness_range[0])).float()
        swap = (u[11] < 0.5) if aug.flip else torch.zeros_like(fine)
        noise = None
        if aug.noise_std_max > 0:
            on = u[12] < aug.noise_probability
            sigma = torch.where(on, u[13] * aug.noise_std_max, torch.zeros_like(u[13])).float()
            noise = torch.randn((b, self.field_slices, p, p), generator=generator, device=dev) * sigma[:, None, None, None]
        return GapDraws(vi, first, gap, offset, top, left, thick, rotation, flip, change, gamma, contrast,
                        brightness, swap, noise)

    def render(self, d: GapDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the choices ``d`` give: patches float32 ``[B, 3, P, P]`` (first, middle, second) and
        alpha float32 ``[B]``, exactly as :meth:`.data.GapDataset.__getitem__` makes them."""
        p = self.patch_size
        ar = self._arange
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
        slice_size = self.height[d.volume] * width
        sharp = self.base[d.volume]
        ends = torch.where(d.thick, self.thick_base[d.volume, d.gap.clamp(max=self.max_gap)], sharp)
        # the pair in either order: swapped samples read (second, middle, first)
        near = torch.where(d.swap, d.first + d.gap, d.first)
        far = torch.where(d.swap, d.first, d.first + d.gap)
        rows = torch.stack([near, d.first + d.offset, far], 1)  # [B, 3]
        starts = torch.stack([ends, sharp, ends], 1) + rows * slice_size.view(-1, 1) + corner.view(-1, 1)
        index = (starts.view(-1, 3, 1, 1) + (step_i.view(-1, 1) * ar).view(-1, 1, p, 1)
                 + (step_j.view(-1, 1) * ar).view(-1, 1, 1, p))
        patch = self.storage[index].float()
        # intensity change in place; unchanged samples get gamma 1, contrast 1, brightness 0 and no clamp
        # (equal to leaving them alone up to the rounding of (x - 0.5) + 0.5, below 6e-8)
        one = torch.ones_like(d.gamma)
        patch = torch.maximum(patch, torch.where(d.change, 0.0, -math.inf).view(-1, 1, 1, 1))
        patch.pow_(torch.where(d.change, d.gamma, one).view(-1, 1, 1, 1))
        patch.sub_(0.5).mul_(torch.where(d.change, d.contrast, one).view(-1, 1, 1, 1))
        patch.add_((0.5 + torch.where(d.change, d.brightness, one * 0)).view(-1, 1, 1, 1))
        if d.noise is not None:
            patch += self._noise(d, rows)
        alpha = torch.where(d.swap, d.gap - d.offset, d.offset).double() / d.gap.double()
        return patch.contiguous(), alpha.float()

    def _noise(self, d: GapDraws, rows: torch.Tensor) -> torch.Tensor:
        """The noise of the three output slices ``[B, 3, P, P]`` from the field ``d.noise`` (see :class:`GapDraws`)."""
        b, length = d.noise.shape[0], d.noise.shape[1]
        low = d.first - self._radius[d.gap]  # the field's first slice
        n = self.n_slices[d.volume]
        delta = torch.zeros_like(self._taps[0])
        delta[self.max_radius] = 1.0
        taps = torch.where(d.thick.view(-1, 1), self._taps[d.gap], delta)  # [B, 2R + 1]
        mixing = torch.zeros((b, 3, length), dtype=torch.float32, device=self.device)
        for c in (0, 2):  # each endpoint: its taps, edge slices repeated as blur_slices does
            source = torch.minimum(torch.maximum(rows[:, c:c + 1] + self._tap_offsets, torch.zeros_like(n).view(-1, 1)),
                                   (n - 1).view(-1, 1)) - low.view(-1, 1)
            mixing[:, c].scatter_add_(1, source.clamp(0, length - 1), taps)
        middle = (rows[:, 1] - low).clamp(0, length - 1)
        mixing[:, 1].scatter_(1, middle.view(-1, 1), d.thick.float().view(-1, 1))
        return torch.bmm(mixing, d.noise.reshape(b, length, -1)).view(b, 3, *d.noise.shape[2:])

    def sample(self, items: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
    from .data import ANCHOR_TAPS_PER_SIDE

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
