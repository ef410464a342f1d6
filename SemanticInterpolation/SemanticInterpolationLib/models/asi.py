"""The ASI convolutional autoencoder (Sander, de Vos, Isgum; journal paper section III-B).

Tensors are ``[batch, channel, height, width]`` (NCHW) with one channel: a 2-D slice whose
intensities were scaled into [0, 1]. Height and width must be divisible by
:attr:`AutoencoderConfig.size_multiple` (4 for the journal network); the engine pads for you.

Encoder: ``len(encoder_channels)`` blocks of [3x3 conv, leaky ReLU, 3x3 conv, leaky ReLU,
batch norm, 2x2 average pooling], then a 3x3 conv of ``bottleneck_channels`` with leaky ReLU
and a 3x3 conv of ``latent_channels`` without nonlinearity: its output is the latent map.
Decoder (the mirror image): ``len(decoder_channels)`` blocks of [3x3 conv, leaky ReLU,
3x3 conv, leaky ReLU, batch norm, 2x2 nearest-neighbour upsampling] whose widths halve after
each upsampling, then a 3x3 conv of ``head_channels`` with leaky ReLU, a 3x3 conv to one
channel and a sigmoid. Every conv uses zero padding 1. Weights are drawn from
N(0, 1/sqrt(n_l (1 + 0.2^2))) with n_l the fan-in (section IV); biases start at zero.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of the autoencoder; stored in every checkpoint.

    The defaults are the journal network (two blocks, 128 latent channels).
    :meth:`spie` gives the SPIE-paper variant (four blocks, 16 latent channels).
    """

    encoder_channels: tuple[int, ...] = (32, 64)
    bottleneck_channels: int = 128
    latent_channels: int = 128
    decoder_channels: tuple[int, ...] = (128, 64)
    head_channels: int = 32
    negative_slope: float = 0.2
    in_channels: int = 1
    name: str = "asi-journal"

    @classmethod
    def journal(cls) -> "AutoencoderConfig":
        """The network of the journal paper (section III-B)."""
        return cls()

    @classmethod
    def spie(cls) -> "AutoencoderConfig":
        """The network of the SPIE 2020 paper: four blocks (32..256), 16 latent channels."""
        return cls(
            encoder_channels=(32, 64, 128, 256),
            bottleneck_channels=256,
            latent_channels=16,
            decoder_channels=(256, 128, 64, 32),
            head_channels=16,
            name="asi-spie",
        )

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (2 ** number of poolings)."""
        return 2 ** len(self.encoder_channels)

    def validate(self) -> None:
        """Raise :class:`ValueError` when the numbers cannot form a working network."""
        if not self.encoder_channels:
            raise ValueError("encoder_channels must name at least one block")
        if len(self.encoder_channels) != len(self.decoder_channels):
            raise ValueError(
                "the decoder mirrors the encoder: encoder_channels and decoder_channels need the same length "
                f"(got {len(self.encoder_channels)} and {len(self.decoder_channels)})"
            )
        numbers = [*self.encoder_channels, *self.decoder_channels, self.bottleneck_channels,
                   self.latent_channels, self.head_channels, self.in_channels]
        if any((not isinstance(n, int)) or isinstance(n, bool) or n < 1 for n in numbers):
            raise ValueError(f"channel counts must be positive integers, got {numbers}")
        if not (0.0 <= float(self.negative_slope) < 1.0):
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        d = dataclasses.asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AutoencoderConfig":
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`CheckpointError`."""
        if not isinstance(data, dict):
            raise CheckpointError(f"architecture configuration must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"architecture configuration has unknown fields {unknown}: the checkpoint was written by a newer "
                "or different program; update SemanticInterpolation"
            )
        values = dict(data)
        for key in ("encoder_channels", "decoder_channels"):
            if key in values:
                values[key] = tuple(values[key])
        config = cls(**values)
        try:
            config.validate()
        except ValueError as exc:
            raise CheckpointError(f"invalid architecture configuration in checkpoint: {exc}") from exc
        return config


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="zeros")


class ASIAutoencoder(nn.Module):
    """Convolutional autoencoder whose latent maps are mixed to synthesise in-between slices.

    ``encode(x)``: ``[N, 1, H, W]`` in [0, 1] -> latent ``[N, latent_channels, H/m, W/m]``
    (m = ``config.size_multiple``). ``decode(z)``: latent -> ``[N, 1, H, W]`` in [0, 1].
    """

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.config.validate()
        slope = self.config.negative_slope

        encoder: list[nn.Module] = []
        channels = self.config.in_channels
        for width in self.config.encoder_channels:
            encoder += [_conv(channels, width), nn.LeakyReLU(slope),
                        _conv(width, width), nn.LeakyReLU(slope),
                        nn.BatchNorm2d(width), nn.AvgPool2d(2)]
            channels = width
        encoder += [_conv(channels, self.config.bottleneck_channels), nn.LeakyReLU(slope),
                    _conv(self.config.bottleneck_channels, self.config.latent_channels)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = []
        channels = self.config.latent_channels
        for width in self.config.decoder_channels:
            decoder += [_conv(channels, width), nn.LeakyReLU(slope),
                        _conv(width, width), nn.LeakyReLU(slope),
                        nn.BatchNorm2d(width), nn.Upsample(scale_factor=2, mode="nearest")]
            channels = width
        decoder += [_conv(channels, self.config.head_channels), nn.LeakyReLU(slope),
                    _conv(self.config.head_channels, self.config.in_channels), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise as in section IV: conv weights ~ N(0, 1/sqrt(n_l (1 + slope^2))), biases 0."""
        slope = self.config.negative_slope
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                std = 1.0 / math.sqrt(fan_in * (1.0 + slope**2))
                with torch.no_grad():
                    module.weight.normal_(0.0, std, generator=generator)
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def describe_architecture(self) -> str:
        """One line for logs, e.g. ``asi-journal (latent 128 ch, 2 blocks)``."""
        return (f"{self.config.name} (latent {self.config.latent_channels} ch, "
                f"{len(self.config.encoder_channels)} blocks)")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent map of slices ``x`` (``[N, 1, H, W]``, H and W multiples of ``size_multiple``)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Slices in [0, 1] decoded from latent maps ``z``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    #: engine synthesis modes this type supports (see :mod:`..engine.synthesis`)
    synthesis_modes = ("plain", "residual", "residual-bspline")

    # ---- the engine interface (state of a slice = its latent map)
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """The autoencoder's reconstruction of a slice from its latent map (= :meth:`decode`)."""
        return self.decode(z)

    def synthesize(self, z_first: torch.Tensor, z_second: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        """The slice decoded from the latent mix at ``alpha`` (journal eq. 1 and 2)."""
        return self.decode(self.mix(z_first, z_second, alpha))

    @staticmethod
    def mix(z_first: torch.Tensor, z_second: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        """Convex combination ``(1 - alpha) z_first + alpha z_second`` (journal eq. 1).

        ``alpha`` is a float or a tensor of shape ``[N]`` (one mixing weight per batch item).
        """
        if isinstance(alpha, torch.Tensor) and alpha.ndim == 1:
            alpha = alpha.to(z_first.dtype).view(-1, 1, 1, 1)
        return z_first + alpha * (z_second - z_first)

    def flops_per_pixel(self) -> dict[str, int]:
        """Multiply-add FLOPs (2 per MAC) of the convolutions per input pixel, for benchmarks.

        Returns ``{"encode": ..., "decode": ...}``; multiply by H*W for one slice.
        """
        counts = {"encode": 0, "decode": 0}
        for part, seq in (("encode", self.encoder), ("decode", self.decoder)):
            scale = 1.0  # pixels at this layer per input pixel
            for module in seq:
                if isinstance(module, nn.AvgPool2d):
                    scale /= 4.0
                elif isinstance(module, nn.Upsample):
                    scale *= 4.0
                elif isinstance(module, nn.Conv2d):
                    macs = module.in_channels * module.out_channels * 9
                    counts[part] += int(round(2 * macs * scale))
            if part == "decode":
                # the decoder starts at the latent resolution
                counts[part] = int(round(counts[part] / (4 ** len(self.config.decoder_channels)) ))
        return counts
