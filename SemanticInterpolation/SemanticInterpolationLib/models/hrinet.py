"""HRINet: an encoder/decoder whose encoder feature maps are mixed with alpha at several scales (model type ``"hrinet"``).

After the high-resolution interpolation network of the HRINet thesis (chapter 3, section 3.1). Where
the ASI autoencoder mixes one latent map, HRINet keeps the encoder's feature maps of several levels
(scales) and mixes each of them with alpha (thesis eq. 3-1)::

    phi_l(x_alpha) = (1 - alpha) phi_l(x_first) + alpha phi_l(x_second)     for every mixed level l

The decoder starts from the mixed map of the coarsest level and, going up one level at a time, takes
the mixed map of each mixed level as extra input channels (concatenated, thesis figure 3-2). Levels that
are not mixed pass nothing to the decoder: mixing full-resolution maps would be interpolation in data
space (thesis 3.1.2). The thesis mixes the three coarsest levels (1/16, 1/32 and 1/64 of the slice
width for 7 levels); :attr:`HRINetConfig.mixed_levels` makes the choice configurable so that finer
scales can be tried.

Network (no batch normalisation, thesis 3.1.2): encoder level ``l`` = [2x2 average pooling (l > 0),
3x3 conv, leaky ReLU, 3x3 conv, leaky ReLU] with ``widths[l]`` channels, so level ``l`` is at
``1 / 2**l`` of the slice size. A mixed level optionally narrows its map with a 1x1 conv to
``mix_channels`` (the thesis's bottleneck, e.g. 16, 8, 8 channels); the result is what is mixed.
Decoder level ``l`` (coarsest first) = [nearest-neighbour 2x upsampling (below the coarsest),
concatenation with the mixed map of level ``l`` when mixed, 3x3 conv, leaky ReLU, 3x3 conv, leaky
ReLU] with ``widths[l]`` channels, then a 1x1 conv to one channel (no output nonlinearity: the
intensity normalisation does not clip).

Tensors are ``[batch, channel, height, width]`` with intensities in about [0, 1] (see
:mod:`.normalization`); H and W must be multiples of :attr:`HRINetConfig.size_multiple` (the engine
pads). The engine state of a slice (:meth:`HRINet.encode`) is the list of its mixed maps, finest
level first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .config_io import config_from_dict

#: widths above this are refused when a checkpoint is read (a crafted config must not allocate gigabytes)
MAX_WIDTH = 1024
MAX_LEVELS = 8

#: a slice state of this model type: the mixed maps, finest level first, each ``[N, C_l, H / 2**l, W / 2**l]``
Latents = list


@dataclass(frozen=True)
class HRINetConfig:
    """Architecture of HRINet; stored in every checkpoint.

    ``widths``: channels per encoder/decoder level, full resolution first (``len(widths) - 1`` poolings).
    ``mixed_levels``: the levels whose encoder maps are mixed and passed to the decoder (0 = full
    resolution); must include the coarsest level. Empty = the three coarsest (the thesis's choice).
    ``mix_channels``: channels of each mixed map after a 1x1 bottleneck conv, one per mixed level in the
    order of ``mixed_levels``; empty = the encoder maps are mixed as they are.

    The default is small enough to train on a 2-core CPU (see ``bench/``); :meth:`thesis` is the
    thesis's network.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 128)
    mixed_levels: tuple[int, ...] = ()
    mix_channels: tuple[int, ...] = ()
    negative_slope: float = 0.2
    name: str = "hrinet-small"

    @classmethod
    def small(cls) -> "HRINetConfig":
        """The default: 5 levels of 16..128 channels, mixed at 1/4, 1/8 and 1/16 of the slice size."""
        return cls()

    @classmethod
    def thesis(cls) -> "HRINetConfig":
        """The thesis's network for 256 x 256 slices: 7 levels (EN1..EN7), the three coarsest (1/16, 1/32,
        1/64 of the width) mixed with 16, 8 and 8 channels (thesis table 3-2)."""
        return cls(widths=(32, 64, 128, 256, 256, 256, 256), mixed_levels=(4, 5, 6), mix_channels=(16, 8, 8),
                   name="hrinet-thesis")

    @classmethod
    def named(cls, name: str) -> "HRINetConfig":
        """``"small"``/``"hrinet-small"`` or ``"thesis"``/``"hrinet-thesis"``; ValueError otherwise."""
        key = str(name).lower().removeprefix("hrinet-")
        if key not in NAMED_CONFIGS:
            raise ValueError(f"unknown HRINet configuration {name!r}: use one of {', '.join(NAMED_CONFIGS)}")
        return NAMED_CONFIGS[key]()

    @property
    def levels(self) -> tuple[int, ...]:
        """The mixed levels, ascending (the three coarsest when ``mixed_levels`` is empty)."""
        if self.mixed_levels:
            return tuple(sorted(self.mixed_levels))
        n = len(self.widths)
        return tuple(range(max(0, n - 3), n))

    def mixed_width(self, level: int) -> int:
        """Channels of the mixed map of ``level``."""
        if self.mix_channels:
            return int(self.mix_channels[sorted(self.mixed_levels or self.levels).index(level)])
        return int(self.widths[level])

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (2 ** number of poolings)."""
        return 2 ** (len(self.widths) - 1)

    def validate(self) -> None:
        """Raise :class:`ValueError` when the numbers cannot form a working network."""
        def whole(values: Any, label: str, low: int, high: int) -> None:
            if not isinstance(values, tuple) or any(
                    (not isinstance(v, int)) or isinstance(v, bool) or not low <= v <= high for v in values):
                raise ValueError(f"{label} must be whole numbers from {low} to {high}, got {values!r}")

        if not isinstance(self.widths, tuple) or not 1 <= len(self.widths) <= MAX_LEVELS:
            raise ValueError(f"widths must list 1 to {MAX_LEVELS} levels, got {self.widths!r}")
        whole(self.widths, "widths", 1, MAX_WIDTH)
        n = len(self.widths)
        whole(self.mixed_levels, "mixed_levels", 0, n - 1)
        if len(set(self.mixed_levels)) != len(self.mixed_levels):
            raise ValueError(f"mixed_levels must not repeat a level, got {list(self.mixed_levels)}")
        if self.mixed_levels and n - 1 not in self.mixed_levels:
            raise ValueError(f"mixed_levels must include the coarsest level {n - 1} (the decoder starts there), "
                             f"got {list(self.mixed_levels)}")
        whole(self.mix_channels, "mix_channels", 1, MAX_WIDTH)
        if self.mix_channels and len(self.mix_channels) != len(self.levels):
            raise ValueError(f"mix_channels needs one number per mixed level ({len(self.levels)}: levels "
                             f"{list(self.levels)}), got {list(self.mix_channels)}")
        if (isinstance(self.negative_slope, bool) or not isinstance(self.negative_slope, (int, float))
                or not 0.0 <= float(self.negative_slope) < 1.0):
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be text, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        d = dataclasses.asdict(self)
        for key in ("widths", "mixed_levels", "mix_channels"):
            d[key] = list(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "HRINetConfig":
        """Inverse of :meth:`to_dict`; unknown fields or numbers that build no network raise :class:`CheckpointError`."""
        return config_from_dict(cls, data, "hrinet", ("widths", "mixed_levels", "mix_channels"))


NAMED_CONFIGS = {"small": HRINetConfig.small, "thesis": HRINetConfig.thesis}


def _double_conv(in_channels: int, out_channels: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(slope),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.LeakyReLU(slope))


def mix_latents(first: Sequence[torch.Tensor], second: Sequence[torch.Tensor],
                alpha: torch.Tensor | float) -> list[torch.Tensor]:
    """``(1 - alpha) first + alpha second`` for every level (thesis eq. 3-1, alpha weighting the second).

    ``alpha``: a float or ``[N]`` (one weight per batch item). alpha = 0 gives ``first`` and alpha = 1
    ``second`` exactly (bit for bit).
    """
    if isinstance(alpha, torch.Tensor) and alpha.ndim == 1:
        alpha = alpha.to(first[0].dtype).view(-1, 1, 1, 1)
    return [(1 - alpha) * a + alpha * b for a, b in zip(first, second)]


class HRINet(nn.Module):
    """``encode(x)``: slices ``[N, 1, H, W]`` -> list of mixed-level maps (finest first);
    ``decode(latents)`` -> slices ``[N, 1, H, W]`` (not clipped); ``forward(x)`` = reconstruction."""

    #: engine synthesis modes: an autoencoder with reconstructions, so the residual modes apply too
    synthesis_modes = ("plain", "residual", "residual-bspline")
    #: the training procedure of this type (module of ``SemanticInterpolationLib.training`` : class)
    training_procedure = "hrinet:HRINetTraining"

    def __init__(self, config: HRINetConfig | None = None) -> None:
        super().__init__()
        self.config = config or HRINetConfig()
        self.config.validate()
        widths, slope = self.config.widths, float(self.config.negative_slope)
        self.levels = self.config.levels
        self.encoder = nn.ModuleList()
        channels = 1
        for width in widths:
            self.encoder.append(_double_conv(channels, width, slope))
            channels = width
        # 1x1 bottlenecks of the mixed maps (identity when mix_channels is empty)
        self.bottleneck = nn.ModuleDict()
        if self.config.mix_channels:
            for level in self.levels:
                self.bottleneck[str(level)] = nn.Conv2d(widths[level], self.config.mixed_width(level), 1)
        self.decoder = nn.ModuleList()  # index = level
        below = 0  # channels coming up from the coarser level
        blocks = []
        for level in reversed(range(len(widths))):
            extra = self.config.mixed_width(level) if level in self.levels else 0
            blocks.append(_double_conv(below + extra, widths[level], slope))
            below = widths[level]
        self.decoder.extend(reversed(blocks))
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-normal convs for leaky ReLU, zero biases."""
        slope = float(self.config.negative_slope)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                std = (2.0 / ((1.0 + slope ** 2) * fan_in)) ** 0.5
                with torch.no_grad():
                    module.weight.normal_(0.0, std if module is not self.head else std * 0.5, generator=generator)
                    module.bias.zero_()

    def describe_architecture(self) -> str:
        """One line for logs."""
        scales = ", ".join(f"1/{2 ** level}" for level in self.levels)
        return (f"{self.config.name} (widths {'/'.join(map(str, self.config.widths))}, mixed at {scales} "
                f"of the slice size)")

    def encoder_features(self, x: torch.Tensor, up_to: int | None = None) -> list[torch.Tensor]:
        """The encoder's feature maps of levels ``0 .. up_to`` (all by default), after activation."""
        last = len(self.encoder) - 1 if up_to is None else int(up_to)
        features = []
        for level, block in enumerate(self.encoder[:last + 1]):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features

    def encode(self, x: torch.Tensor) -> Latents:
        """The maps mixed with alpha: one per mixed level, finest first (the engine's slice state)."""
        features = self.encoder_features(x)
        latents = []
        for level in self.levels:
            key = str(level)
            latents.append(self.bottleneck[key](features[level]) if key in self.bottleneck else features[level])
        return latents

    def decode(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """Slices from (mixed) maps as :meth:`encode` returns them."""
        by_level = dict(zip(self.levels, latents))
        x = None
        for level in reversed(range(len(self.decoder))):
            if x is not None:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if level in by_level:
                x = by_level[level] if x is None else torch.cat([x, by_level[level]], dim=1)
            x = self.decoder[level](x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    @staticmethod
    def mix(first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], alpha: torch.Tensor | float) -> Latents:
        """Mixed maps at ``alpha`` (see :func:`mix_latents`)."""
        return mix_latents(first, second, alpha)

    # ---- the engine interface (state of a slice = the list of its mixed maps)
    def reconstruct(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """The network's reconstruction of a slice from its maps (= :meth:`decode`)."""
        return self.decode(latents)

    def synthesize(self, first: Sequence[torch.Tensor], second: Sequence[torch.Tensor],
                   alpha: torch.Tensor | float) -> torch.Tensor:
        """The slice decoded from the maps mixed at ``alpha`` (thesis eq. 3-1)."""
        return self.decode(mix_latents(first, second, alpha))

    def flops_per_pixel(self) -> dict[str, int]:
        """Multiply-add FLOPs (2 per MAC) of the convolutions per slice pixel, for benchmarks:
        ``{"encode": ..., "decode": ...}`` (a synthesized slice costs one decode; multiply by H*W)."""
        def cost(modules: Sequence[nn.Module], level: int) -> float:
            return sum(2.0 * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] / 4.0 ** level
                       for m in modules if isinstance(m, nn.Conv2d))

        encode = sum(cost(list(block), level) for level, block in enumerate(self.encoder))
        encode += sum(cost([conv], int(key)) for key, conv in self.bottleneck.items())
        decode = sum(cost(list(block), level) for level, block in enumerate(self.decoder)) + cost([self.head], 0)
        return {"encode": int(round(encode)), "decode": int(round(decode))}
