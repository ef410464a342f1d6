"""Training data: slice triplets of anisotropic volumes (journal paper sections III-D and IV).

Each training volume is read, normalised into [0, 1] exactly as the engine normalises volumes it
upsamples (:class:`~SemanticInterpolationLib.models.normalization.IntensityNormalization` fitted on the
whole volume), and cut into 2-D slices along its slice axis (the axis with the largest spacing,
:func:`~SemanticInterpolationLib.volumes.geometry.choose_slice_axis`, unless given). A training example
is a *triplet* ``(x[n-s], x[n], x[n+s])`` of slices of one volume, ``s`` being the triplet stride
(1 = consecutive acquired slices, the paper's setting). The network encodes the two outer slices,
reconstructs them and synthesises the middle one from the mix of their latents.

Augmentation (section IV): a random square patch (the same location in the three slices), a random
90-degree rotation, a random flip, and a random intensity change (gamma, contrast and brightness),
all applied identically to the three slices of a triplet. The random numbers of item ``i`` in
epoch ``e`` come from ``numpy.random.default_rng([seed, e, i])``: the data do not depend on the
number of data-loader workers, on the process (rank) that draws them, or on resuming.

Volumes of different sizes and spacings mix in one run: the triplet index runs over all volumes.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import InputError
from ..volumes.geometry import choose_slice_axis, numpy_axis, parse_axis
from ..models.normalization import IntensityNormalization

#: smallest patch accepted: the SSIM window is 11x11 and the latent map must not vanish
MIN_PATCH_SIZE = 16

#: slices used on each side of a triplet's middle for its B-spline anchor (see :func:`anchor_context_indices`)
ANCHOR_TAPS_PER_SIDE = 6


def anchor_context_indices(middle: int, stride: int, n_slices: int,
                           taps_per_side: int = ANCHOR_TAPS_PER_SIDE) -> list[int]:
    """Slice indices whose B-spline mix gives the anchor of the triplet ``(middle - s, middle, middle + s)``.

    The anchor is what cubic B-spline interpolation of the volume thinned to every ``2 s``-th slice
    (keeping ``middle +- s``) gives at ``middle``: the slices at ``middle + (2j - 2T + 1) s`` for
    ``j = 0 .. 2T - 1`` (T = ``taps_per_side``), weighted by
    :func:`~SemanticInterpolationLib.engine.baselines.bspline_midpoint_weights`. Positions beyond the volume
    are mirrored on that thinned lattice about its end slice (the spline's mirror boundary), and
    clamped into the volume when it is too short for that.
    """
    s = int(stride)
    # lattice positions middle + (2q + 1) s, q = -T .. T-1; valid q range inside [0, n_slices - 1]
    q_low = -((middle + s) // (2 * s))  # smallest q with middle + (2q + 1)s >= 0
    q_high = (n_slices - 1 - middle - s) // (2 * s)  # largest q with position <= n - 1
    indices = []
    for q in range(-taps_per_side, taps_per_side):
        if q < q_low:
            q = 2 * q_low - q
        if q > q_high:
            q = 2 * q_high - q
        q = min(max(q, q_low), q_high)
        indices.append(middle + (2 * q + 1) * s)
    return indices


def lattice_context_indices(first: int, gap: int, n_slices: int,
                            taps_per_side: int = ANCHOR_TAPS_PER_SIDE) -> list[int]:
    """Slice indices whose B-spline mix gives the anchor of a slice between ``first`` and ``first + gap``.

    The slices of the lattice ``first + j * gap`` (``j = -(T-1) .. T``, the volume thinned to every
    ``gap``-th slice keeping ``first``), weighted by
    :func:`~SemanticInterpolationLib.engine.baselines.bspline_fraction_weights`; positions beyond the
    volume are mirrored on that lattice about its end slices, as in :func:`anchor_context_indices`.
    """
    g = int(gap)
    j_low = -(first // g)
    j_high = (n_slices - 1 - first) // g
    indices = []
    for j in range(-(taps_per_side - 1), taps_per_side + 1):
        if j < j_low:
            j = 2 * j_low - j
        if j > j_high:
            j = 2 * j_high - j
        j = min(max(j, j_low), j_high)
        indices.append(first + j * g)
    return indices


def bspline_fraction_anchor(context: np.ndarray, gap: int, offset: int) -> np.ndarray:
    """The B-spline anchor ``offset / gap`` of the way along, from the slices of :func:`lattice_context_indices`."""
    from ..engine.baselines import bspline_fraction_weights

    weights = bspline_fraction_weights(gap, offset, ANCHOR_TAPS_PER_SIDE).astype(np.float32)
    return np.tensordot(weights, context.astype(np.float32, copy=False), axes=1)


#: a volume is "fine" (its slices may be blurred into simulated thick slices) when its slice spacing is
#: at most this many times its largest in-plane spacing
FINE_SLICE_RATIO = 1.5


def is_fine(volume: "TrainingVolume") -> bool:
    """True when ``volume``'s slice spacing is at most :data:`FINE_SLICE_RATIO` times its largest in-plane
    spacing: its slices may be thinned into wider gaps and blurred into simulated thick slices."""
    return volume.slice_spacing_mm <= FINE_SLICE_RATIO * max(volume.in_plane_spacing_mm)


#: thinnest simulated thick slice, as a fraction of the gap (see :class:`GapDataset` ``slice_profile``)
MIN_THICK_RATIO = 0.3


@functools.lru_cache(maxsize=64)
def blur_weights(fwhm_slices: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (``-radius .. radius``) and float64 weights (sum 1) of :func:`blur_slices`: a Gaussian of
    FWHM ``fwhm_slices`` slices truncated at 4 sigma, as scipy.ndimage.gaussian_filter1d(truncate=4).
    Read-only; cached."""
    sigma = float(fwhm_slices) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    radius = max(1, int(4.0 * sigma + 0.5))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    offsets.setflags(write=False)
    weights.setflags(write=False)
    return offsets, weights


def blur_slices(slices: np.ndarray, fwhm_slices: float) -> np.ndarray:
    """Gaussian blur of ``[n, H, W]`` along the slice axis (FWHM in slices; edges repeated), float32.

    The thick-slice model of the evaluation (:mod:`..evaluation.simulate`) without scipy: a slice of
    thickness FWHM, centred where the fine slice is.
    """
    offsets, weights = blur_weights(fwhm_slices)
    n = slices.shape[0]
    out = np.zeros(slices.shape, dtype=np.float32)
    for offset, weight in zip(offsets, weights):
        source = np.clip(np.arange(n) + offset, 0, n - 1)
        out += np.float32(weight) * slices[source]
    return out


@functools.lru_cache(maxsize=1)
def _anchor_weights() -> np.ndarray:
    from ..engine.baselines import bspline_midpoint_weights

    weights = bspline_midpoint_weights(ANCHOR_TAPS_PER_SIDE).astype(np.float32)
    weights.setflags(write=False)
    return weights


def mix_anchor_context(context: np.ndarray) -> np.ndarray:
    """The B-spline anchor from its context slices ``[2T, ...]`` in the order of
    :func:`anchor_context_indices`; float32 ``[...]``."""
    return np.tensordot(_anchor_weights(), context.astype(np.float32, copy=False), axes=1)


def bspline_anchor(slices: np.ndarray, middle: int, stride: int) -> np.ndarray:
    """The B-spline anchor of ``slices[middle]`` (float32 ``[H, W]``) from ``slices`` ``[n, H, W]``:
    see :func:`anchor_context_indices`."""
    return mix_anchor_context(slices[anchor_context_indices(middle, stride, slices.shape[0])])


def read_volume_image(path: str | os.PathLike):
    """Read an image file or a DICOM folder as a ``SimpleITK.Image``.

    Uses the project's :func:`SemanticInterpolationLib.volumes.imageio.read_image` when it is available,
    otherwise SimpleITK directly. Errors are :class:`InputError` with the path in the message.
    """
    try:  # the lead's reader (files and DICOM folders, clear errors); fall back until it exists
        from ..volumes.imageio import read_image  # type: ignore[attr-defined]
    except ImportError:
        read_image = None
    if read_image is not None:
        return read_image(path)
    import SimpleITK as sitk

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"training volume {str(p)!r} does not exist")
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(p))
            if not series:
                raise InputError(f"folder {str(p)!r} holds no DICOM series")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"cannot read training volume {str(p)!r}: {first[-1] if first else exc}") from exc


VolumeSource = Union[str, os.PathLike, "TrainingVolume", Any]


@dataclass
class TrainingVolume:
    """One volume ready for training: normalised slices stacked along the first axis.

    ``slices``: float32 ``[n, H, W]`` in [0, 1]; ``in_plane_spacing_mm``: spacing of the H and W
    axes of the slices (mm); ``slice_axis``: the ITK index axis the slices were cut along.
    """

    name: str
    slices: np.ndarray
    in_plane_spacing_mm: tuple[float, float]
    slice_axis: int
    slice_spacing_mm: float = float("nan")
    original_size: tuple[int, int, int] = (0, 0, 0)
    #: optional simulated thick-slice version of ``slices`` (same shape), used as network input by
    #: ``TripletDataset(thick_slice_probability > 0)``; None = blurred automatically when the volume is fine
    thick_slices: np.ndarray | None = None

    @property
    def n_slices(self) -> int:
        return int(self.slices.shape[0])

    @property
    def slice_shape(self) -> tuple[int, int]:
        return int(self.slices.shape[1]), int(self.slices.shape[2])

    def describe(self) -> str:
        h, w = self.slice_shape
        sp = "x".join(f"{s:g}" for s in self.in_plane_spacing_mm)
        return f"{self.name}: {self.n_slices} slices of {h}x{w} ({sp} mm) along ITK axis {self.slice_axis}"

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_array(cls, array: np.ndarray, spacing: Sequence[float], *, name: str = "array",
                   axis: int | str | None = "auto",
                   normalization: IntensityNormalization | None = None) -> "TrainingVolume":
        """From a ``[k, j, i]`` numpy array (SimpleITK / ``slicer.util.arrayFromVolume`` order)
        and its spacing in ITK order ``(si, sj, sk)``. ``axis``: ITK slice axis or ``"auto"``."""
        array = np.asarray(array)
        if array.ndim != 3:
            raise InputError(f"{name}: training volumes must be 3-D scalar volumes, got shape {array.shape}")
        if array.dtype.kind not in "iuf":
            raise InputError(f"{name}: voxel type {array.dtype} is not a real number type")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"{name}: the volume contains NaN or infinite values; replace them first")
        spacing = [float(s) for s in spacing]
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"{name}: spacing must be three positive numbers, got {spacing}")
        sizes_itk = (array.shape[2], array.shape[1], array.shape[0])
        slice_axis = parse_axis(axis, spacing)
        norm = normalization or IntensityNormalization()
        unit = norm.to_unit_range(array, norm.fit(array))
        slices = np.ascontiguousarray(np.moveaxis(unit, numpy_axis(slice_axis), 0), dtype=np.float32)
        # in-plane numpy axes of the [n, H, W] stack, in order, map to ITK axes (descending)
        in_plane_itk = [a for a in (2, 1, 0) if a != slice_axis]
        in_plane = (spacing[in_plane_itk[0]], spacing[in_plane_itk[1]])
        return cls(name=name, slices=slices, in_plane_spacing_mm=in_plane, slice_axis=slice_axis,
                   slice_spacing_mm=spacing[slice_axis], original_size=tuple(int(s) for s in sizes_itk))

    @classmethod
    def from_image(cls, image, *, name: str = "image", axis: int | str | None = "auto",
                   normalization: IntensityNormalization | None = None) -> "TrainingVolume":
        """From a ``SimpleITK.Image`` (3-D, scalar)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise InputError(f"{name}: training volumes must be 3-D, got a {image.GetDimension()}-D image; "
                             "split 4-D series into 3-D frames first")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{name}: training volumes must be scalar (one value per voxel), got "
                             f"{image.GetNumberOfComponentsPerPixel()} components; extract one component first")
        return cls.from_array(sitk.GetArrayViewFromImage(image), image.GetSpacing(), name=name, axis=axis,
                              normalization=normalization)

    @classmethod
    def load(cls, source: VolumeSource, *, axis: int | str | None = "auto",
             normalization: IntensityNormalization | None = None) -> "TrainingVolume":
        """From a path (file or DICOM folder), a ``SimpleITK.Image`` or a ready ``TrainingVolume``."""
        if isinstance(source, TrainingVolume):
            return source
        if isinstance(source, (str, os.PathLike)):
            image = read_volume_image(source)
            return cls.from_image(image, name=str(source), axis=axis, normalization=normalization)
        if hasattr(source, "GetSpacing") and hasattr(source, "GetDimension"):
            return cls.from_image(source, axis=axis, normalization=normalization)
        raise InputError(f"cannot use {type(source).__name__} as a training volume: give a file path, a DICOM "
                         "folder, a SimpleITK.Image or TrainingVolume.from_array(array, spacing)")

    # ----------------------------------------------------------------- checks
    def check_usable(self, *, patch_size: int | None, triplet_stride: int = 1, role: str = "training") -> None:
        """Raise :class:`InputError` when no triplet (or no patch of ``patch_size``) fits."""
        needed = 2 * triplet_stride + 1
        if self.n_slices < needed:
            raise InputError(
                f"{role} volume {self.name!r} has {self.n_slices} slice(s) along its slice axis (ITK axis "
                f"{self.slice_axis}, size {tuple(self.original_size)}); a training triplet needs at least {needed} "
                f"(slices n-{triplet_stride}, n, n+{triplet_stride}). Use a volume with more slices"
                + (" or a smaller triplet stride" if triplet_stride > 1 else ""))
        if patch_size is not None:
            h, w = self.slice_shape
            if min(h, w) < MIN_PATCH_SIZE:
                raise InputError(
                    f"the slices of {role} volume {self.name!r} are only {h}x{w} pixels: training needs slices of "
                    f"at least {MIN_PATCH_SIZE}x{MIN_PATCH_SIZE} pixels; use a volume with larger slices (or another "
                    "slice axis)")
            if patch_size > min(h, w):
                raise InputError(
                    f"patch size {patch_size} is larger than the slices of {role} volume {self.name!r} "
                    f"({h}x{w} pixels): choose a patch size of at most {min(h, w) - min(h, w) % 4} "
                    "(a multiple of 4)")


def validate_patch_size(patch_size: int, size_multiple: int = 4) -> int:
    """``patch_size`` as int when it is a multiple of ``size_multiple`` and >= 16."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise InputError(f"patch size must be a whole number, got {patch_size!r}")
    patch_size = int(patch_size)
    if patch_size % size_multiple:
        lower = patch_size - patch_size % size_multiple
        raise InputError(
            f"patch size {patch_size} is not divisible by {size_multiple}: the autoencoder pools "
            f"{int(math.log2(size_multiple))} times by 2; use e.g. {max(lower, MIN_PATCH_SIZE)} or "
            f"{lower + size_multiple}")
    if patch_size < MIN_PATCH_SIZE:
        raise InputError(f"patch size {patch_size} is too small: use at least {MIN_PATCH_SIZE} "
                         "(64 or 128 in the paper)")
    return patch_size


@dataclass(frozen=True)
class Augmentation:
    """Random changes applied to each triplet (all three slices alike)."""

    rotate: bool = True  # random multiple of 90 degrees
    flip: bool = True  # random horizontal flip
    gamma_range: tuple[float, float] = (0.7, 1.4)  # x ** gamma, gamma log-uniform in this range
    contrast_range: tuple[float, float] = (0.9, 1.1)  # multiplied around 0.5
    brightness_range: tuple[float, float] = (-0.05, 0.05)  # added
    intensity_probability: float = 0.8  # share of triplets whose intensities are changed
    #: independent Gaussian noise per slice, standard deviation uniform in [0, noise_std_max] ([0, 1]
    #: units; 0 = off). Teaches the network scans noisier than its training volumes (averaged templates
    #: are nearly noise-free); noisy targets with independent noise have the clean optimum (Noise2Noise).
    noise_std_max: float = 0.0
    noise_probability: float = 0.7  # share of triplets that get noise (when noise_std_max > 0)

    def apply_drawn(self, patch: np.ndarray, rng: np.random.Generator, *, clip: bool) -> np.ndarray:
        """Draw this sample's rotation, flip and intensity change from ``rng`` (always the same draws, in the
        same order, whether used or not) and apply them to ``patch`` ``[C, P, P]`` (all channels alike).
        ``clip``: intensities stay in [0, 1] (the ASI autoencoder's range); else only negatives are cut
        before the gamma."""
        k = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        change = bool(rng.random() < self.intensity_probability)
        gamma = math.exp(rng.uniform(math.log(self.gamma_range[0]), math.log(self.gamma_range[1])))
        contrast = float(rng.uniform(*self.contrast_range))
        brightness = float(rng.uniform(*self.brightness_range))
        if self.rotate and k:
            patch = np.rot90(patch, k, axes=(1, 2))
        if self.flip and flip:
            patch = patch[:, :, ::-1]
        if change:
            patch = np.power(np.clip(patch, 0.0, 1.0 if clip else None), gamma)
            patch = (patch - 0.5) * contrast + 0.5 + brightness
            if clip:
                patch = np.clip(patch, 0.0, 1.0)
        return patch

    @classmethod
    def none(cls) -> "Augmentation":
        return cls(rotate=False, flip=False, intensity_probability=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"rotate": self.rotate, "flip": self.flip, "gamma_range": list(self.gamma_range),
                "contrast_range": list(self.contrast_range), "brightness_range": list(self.brightness_range),
                "intensity_probability": self.intensity_probability, "noise_std_max": self.noise_std_max,
                "noise_probability": self.noise_probability}


class TripletDataset(Dataset):
    """All triplets ``(x[n-s], x[n], x[n+s])`` of all volumes, as random augmented patches.

    Item ``i`` is a float32 tensor ``[3, P, P]`` (previous, middle, next slice); with
    ``bspline_anchor`` it is ``[4, P, P]``, the fourth being the middle slice's B-spline anchor
    (:func:`bspline_anchor`) computed from the augmented slices, so that intensity augmentation
    (not linear) is applied before the spline as it would be to a real volume.

    ``thick_slice_probability``: share of the triplets of *fine* volumes (slice spacing at most
    :data:`FINE_SLICE_RATIO` times the in-plane spacing) whose outer slices (and anchor context) come
    from a copy blurred along the slice axis with FWHM = ``2 s`` slices (the slices the network sees
    are then thick, as in an acquisition with slice thickness = spacing), while the middle slice stays
    the sharp one: the network learns to synthesise fine slices from thick ones. Real anisotropic
    stacks are thick already and are never blurred.
    Call :meth:`set_epoch` at the start of each epoch for new random patches.
    """

    def __init__(self, volumes: Sequence[TrainingVolume], patch_size: int, *, triplet_stride: int = 1,
                 augmentation: Augmentation | None = None, seed: int = 0, bspline_anchor: bool = False,
                 thick_slice_probability: float = 0.0) -> None:
        if not volumes:
            raise InputError("give at least one training volume")
        self.volumes = list(volumes)
        self.patch_size = int(patch_size)
        self.triplet_stride = int(triplet_stride)
        if self.triplet_stride < 1:
            raise InputError(f"triplet stride must be at least 1, got {triplet_stride}")
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.seed = int(seed)
        self.with_bspline_anchor = bool(bspline_anchor)
        self.thick_slice_probability = float(thick_slice_probability)
        if not 0.0 <= self.thick_slice_probability <= 1.0:
            raise InputError(f"thick-slice probability must be from 0 to 1, got {thick_slice_probability!r}")
        self.epoch = 0
        for v in self.volumes:
            v.check_usable(patch_size=self.patch_size, triplet_stride=self.triplet_stride)
        s = self.triplet_stride
        #: blurred copies (simulated thick slices) of the fine volumes, by volume index
        self.thick: dict[int, np.ndarray] = {}
        if self.thick_slice_probability > 0:
            for vi, v in enumerate(self.volumes):
                if v.thick_slices is not None:
                    if v.thick_slices.shape != v.slices.shape:
                        raise InputError(f"{v.name}: thick_slices has shape {v.thick_slices.shape}, slices "
                                         f"{v.slices.shape}: they must match")
                    self.thick[vi] = v.thick_slices
                elif is_fine(v):
                    self.thick[vi] = blur_slices(v.slices, 2 * s)
        self.index: list[tuple[int, int]] = [
            (vi, n) for vi, v in enumerate(self.volumes) for n in range(s, v.n_slices - s)
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> torch.Tensor:
        vi, n = self.index[item]
        volume = self.volumes[vi]
        s, p = self.triplet_stride, self.patch_size
        rng = np.random.default_rng([self.seed, self.epoch, int(item)])
        h, w = volume.slice_shape
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        rows = [n - s, n, n + s]
        if self.with_bspline_anchor:
            rows += anchor_context_indices(n, s, volume.n_slices)
        patch = volume.slices[rows, top:top + p, left:left + p].astype(np.float32, copy=True)
        if vi in self.thick and rng.random() < self.thick_slice_probability:
            inputs = [0, 2] + list(range(3, len(rows)))  # the outer slices and the anchor context
            patch[inputs] = self.thick[vi][[rows[i] for i in inputs], top:top + p, left:left + p]
        aug = self.augmentation
        patch = aug.apply_drawn(patch, rng, clip=True)
        if aug.noise_std_max > 0 and rng.random() < aug.noise_probability:
            sigma = float(rng.uniform(0.0, aug.noise_std_max))
            patch = np.clip(patch + rng.normal(0.0, sigma, patch.shape).astype(np.float32), 0.0, 1.0)
        if self.with_bspline_anchor:
            patch = np.concatenate([patch[:3], mix_anchor_context(patch[3:])[None]])
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))


class TripletSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose epoch may be shorter or longer than the data set.

    ``samples_per_epoch`` (over all processes; default ``len(dataset)``) indices are drawn from
    successive random permutations seeded by ``(seed, epoch)``; process ``rank`` takes every
    ``num_replicas``-th. With one process it is simply a seeded shuffle, so a single-process run
    and a distributed run see the same triplets per epoch in total.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 samples_per_epoch: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        total = int(samples_per_epoch) if samples_per_epoch else len(dataset)  # type: ignore[arg-type]
        self.num_samples = int(math.ceil(total / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        indices: list[int] = []
        while len(indices) < self.total_size:
            indices += torch.randperm(n, generator=g).tolist()
        indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def pad_to_multiple(slices: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-pad ``[n, H, W]`` so H and W are multiples of ``multiple`` (as the engine does)."""
    pad_h = (-slices.shape[1]) % multiple
    pad_w = (-slices.shape[2]) % multiple
    if pad_h or pad_w:
        slices = np.pad(slices, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return slices


def validation_triplets(volume: TrainingVolume, *, triplet_stride: int = 1,
                        max_triplets: int | None = 16) -> list[int]:
    """Middle-slice indices of the validation triplets of ``volume``: evenly spread, at most
    ``max_triplets`` (None: all)."""
    s = triplet_stride
    middles = list(range(s, volume.n_slices - s))
    if max_triplets is not None and len(middles) > max_triplets:
        picks = np.linspace(0, len(middles) - 1, max_triplets).round().astype(int)
        middles = [middles[i] for i in sorted(set(picks.tolist()))]
    return middles


def setup_gap_sampling(sampler: Any, volumes: Sequence[TrainingVolume], patch_size: int, min_gap: int, max_gap: int,
                       augmentation: "Augmentation | None", seed: int, thick_slice_probability: float) -> None:
    """Check the settings of gap sampling and set the attributes :class:`GapDataset` and the device sampler
    share: ``volumes``, ``patch_size``, ``min_gap``, ``max_gap``, ``augmentation``, ``seed``,
    ``thick_slice_probability``, ``fine`` (per volume, :func:`is_fine`) and ``index``: ``(volume index,
    first slice)`` of every sample (a fine volume offers every start with room for ``min_gap``, an
    anisotropic stack every slice with two after it). Raises :class:`InputError` before any work."""
    if not volumes:
        raise InputError("give at least one training volume")
    if not (isinstance(min_gap, int) and isinstance(max_gap, int) and 2 <= min_gap <= max_gap <= 32):
        raise InputError(f"gaps must be whole numbers with 2 <= min gap <= max gap <= 32, got {min_gap} and {max_gap}")
    sampler.thick_slice_probability = float(thick_slice_probability)
    if not 0.0 <= sampler.thick_slice_probability <= 1.0:
        raise InputError(f"thick-slice probability must be from 0 to 1, got {thick_slice_probability!r}")
    sampler.volumes = list(volumes)
    sampler.patch_size = int(patch_size)
    sampler.min_gap, sampler.max_gap = int(min_gap), int(max_gap)
    sampler.augmentation = augmentation if augmentation is not None else Augmentation()
    sampler.seed = int(seed)
    sampler.fine = [is_fine(v) for v in sampler.volumes]
    for v in sampler.volumes:
        v.check_usable(patch_size=sampler.patch_size, triplet_stride=1)
    sampler.index = [(vi, n) for vi, (v, fine) in enumerate(zip(sampler.volumes, sampler.fine))
                     for n in range(0, v.n_slices - (sampler.min_gap if fine else 2))]


class GapDataset(Dataset):
    """Training samples for models that see two slices and alpha (``pair-unet``): random gaps, random middles.

    Item ``i`` is ``(patch, alpha)``: ``patch`` float32 ``[3, P, P]`` = (first, middle, second) and
    ``alpha`` float32 = where the middle lies between them. With ``bspline_anchor`` the patch is
    ``[4, P, P]``, the fourth being the cubic B-spline estimate of the middle from the lattice of
    endpoints (:func:`lattice_context_indices`, the slices kept when every ``g``-th is acquired),
    computed after augmentation from the same (thick, noisy) slices the network sees. On *fine* volumes (slice spacing at most
    :data:`FINE_SLICE_RATIO` times the in-plane spacing) the endpoints are ``g`` slices apart with
    ``g`` uniform in ``[min_gap, max_gap]`` and the middle is any slice strictly between
    (``alpha = r / g``): the gaps the engine fills at factors K = ``min_gap .. max_gap``. On real
    anisotropic stacks (already thick and far apart) the endpoints are the two neighbours of the middle
    (``g = 2``, alpha 0.5), ASI's principle of learning from the scan's own acquired slices.

    ``thick_slice_probability``: share of the fine-volume samples whose endpoints come from a copy
    blurred along the slice axis with FWHM = ``g`` slices (a thick-slice acquisition with thickness =
    spacing, as ``evaluate --thick-slices`` simulates); the middle stays sharp.
    Augmentation: rotations, flips and intensity changes apply to all three slices alike; Gaussian
    noise (std uniform in ``[0, noise_std_max]``, with ``noise_probability``) is added to the two
    endpoints only, independently: the network learns to estimate the clean slice from noisy
    neighbours (the noise of a removed slice cannot be predicted from other slices). In a thick-slice
    sample the noise is put on the fine slices *before* the through-plane blur, as in a real thick-slice
    acquisition: the endpoints carry it blurred, and the middle slice, which is inside their thickness,
    keeps its own share, so the target is noisy too and the network learns not to remove what the
    acquired slices really contain of it. Values are not clipped (the pair U-Net's normalisation does not clip either).
    ``item`` and the epoch (:meth:`set_epoch`) seed every random choice, so runs are reproducible.

    ``slice_profile`` (for networks with ``thickness_input``): items are ``(patch, alpha, ratio)`` with
    ``ratio`` = slice thickness / gap of the endpoints, float32, NaN when withheld. Thin samples of fine
    volumes have ratio ``1 / g`` (the fine slices' own thickness); thick samples are blurred with FWHM =
    ``ratio * g`` slices, ``ratio`` = 1 (contiguous thick slices, as ``evaluate --thick-slices``) on half of
    them and uniform in [:data:`MIN_THICK_RATIO`, 1] on the rest (thick slices with gaps between them);
    real anisotropic stacks never tell theirs (their thickness is not known). With
    ``unknown_profile_probability`` the ratio is withheld (NaN), so the network also learns to work
    without it.
    """

    def __init__(self, volumes: Sequence[TrainingVolume], patch_size: int, *, min_gap: int = 2, max_gap: int = 6,
                 augmentation: Augmentation | None = None, seed: int = 0,
                 thick_slice_probability: float = 0.0, bspline_anchor: bool = False,
                 slice_profile: bool = False, unknown_profile_probability: float = 0.3) -> None:
        setup_gap_sampling(self, volumes, patch_size, min_gap, max_gap, augmentation, seed, thick_slice_probability)
        self.epoch = 0
        self.with_anchor = bool(bspline_anchor)
        self.slice_profile = bool(slice_profile)
        self.unknown_profile_probability = float(unknown_profile_probability)
        if not 0.0 <= self.unknown_profile_probability <= 1.0:
            raise InputError(f"unknown-profile probability must be from 0 to 1, got {unknown_profile_probability!r}")
        #: (volume index, gap) -> slices blurred with FWHM = gap (simulated thick slices); with ``slice_profile``
        #: the thick inputs are blurred per sample instead (their thickness varies)
        self.thick: dict[tuple[int, int], np.ndarray] = {}
        if self.thick_slice_probability > 0 and not self.slice_profile:
            for vi, (v, fine) in enumerate(zip(self.volumes, self.fine)):
                if fine:
                    for gap in range(self.min_gap, self.max_gap + 1):
                        self.thick[(vi, gap)] = blur_slices(v.slices, gap)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        vi, first = self.index[item]
        volume = self.volumes[vi]
        p = self.patch_size
        rng = np.random.default_rng([self.seed, self.epoch, int(item)])
        if self.fine[vi]:
            gap = int(rng.integers(self.min_gap, min(self.max_gap, volume.n_slices - 1 - first) + 1))
            offset = int(rng.integers(1, gap))
        else:
            gap, offset = 2, 1
        rows = [first, first + offset, first + gap]
        if self.with_anchor:
            rows += lattice_context_indices(first, gap, volume.n_slices)
        inputs = [0, 2] + list(range(3, len(rows)))  # the endpoints and the anchor's context
        h, w = volume.slice_shape
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        patch = volume.slices[rows, top:top + p, left:left + p].astype(np.float32, copy=True)
        ratio = 1.0 / gap if self.fine[vi] else float("nan")  # thickness / gap; thin: the fine slices' own
        fwhm = float(gap)
        if self.slice_profile:
            is_thick = self.fine[vi] and self.thick_slice_probability > 0 and rng.random() < self.thick_slice_probability
            if is_thick:
                ratio = 1.0 if rng.random() < 0.5 else float(rng.uniform(MIN_THICK_RATIO, 1.0))
                fwhm = ratio * gap
                offsets, weights = blur_weights(fwhm)
                n = volume.n_slices
                for i in inputs:  # blur only the rows the network sees (edge slices repeated, as blur_slices)
                    source = np.clip(rows[i] + offsets, 0, n - 1)
                    patch[i] = np.tensordot(weights.astype(np.float32),
                                            volume.slices[source, top:top + p, left:left + p], axes=1)
            if rng.random() < self.unknown_profile_probability:
                ratio = float("nan")
        else:
            thick = self.thick.get((vi, gap))
            is_thick = thick is not None and rng.random() < self.thick_slice_probability
            if is_thick:
                patch[inputs] = thick[[rows[i] for i in inputs], top:top + p, left:left + p]
        aug = self.augmentation
        patch = aug.apply_drawn(patch, rng, clip=False)
        swap = bool(rng.integers(0, 2))  # the pair in either order (alpha mirrored)
        if aug.noise_std_max > 0 and rng.random() < aug.noise_probability:
            sigma = float(rng.uniform(0.0, aug.noise_std_max))
            if is_thick:
                # a thick-slice scan blurs its own noise: noise on the fine slices first, then the inputs get
                # it blurred like their signal, and the sharp middle keeps its own share (it is in the inputs)
                offsets, weights = blur_weights(fwhm)
                weights, radius = weights.astype(np.float32), int(offsets[-1])
                low, high = min(rows) - radius, max(rows) + radius
                fine_noise = rng.normal(0.0, sigma, (high - low + 1, p, p)).astype(np.float32)
                n = volume.n_slices
                for i in inputs:
                    # edge slices repeated, as blur_slices does
                    source = np.clip(np.arange(rows[i] - radius, rows[i] + radius + 1), 0, n - 1) - low
                    patch[i] += np.tensordot(weights, fine_noise[source], axes=1)
                patch[1] += fine_noise[rows[1] - low]
            else:
                noisy = sorted(set(inputs))  # a context slice that is an endpoint gets the endpoint's noise
                noise = {r: rng.normal(0.0, sigma, (p, p)).astype(np.float32) for r in sorted({rows[i] for i in noisy})}
                for i in noisy:
                    patch[i] += noise[rows[i]]
        alpha = offset / gap
        if self.with_anchor:
            anchor = bspline_fraction_anchor(patch[3:], gap, offset)
            patch = np.concatenate([patch[:3], anchor[None]])
        if aug.flip and swap:
            patch, alpha = np.concatenate([patch[2::-1], patch[3:]]), 1.0 - alpha
        if self.slice_profile:
            return (torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)),
                    torch.tensor(alpha, dtype=torch.float32), torch.tensor(ratio, dtype=torch.float32))
        return (torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)),
                torch.tensor(alpha, dtype=torch.float32))
