"""Pair U-Net: a full-resolution U-Net that sees both acquired neighbours and alpha (model type ``"pair-unet"``).

Where ASI encodes each slice alone and mixes latent maps, this network looks at the two acquired
slices together and predicts the slice at fraction ``alpha`` of the way from the first to the second
as a learned correction to their linear mix::

    y = (1 - alpha) x_first + alpha x_second + f([x_first, x_second, alpha])

With ``anchor_input`` the network also sees the cubic B-spline estimate of the slice (computed by the
engine from the wider lattice of acquired slices around the pair, four or more slices): with thick
slices the acquired slices are blurred through-plane, and undoing that needs more than the two
neighbours; the output stays the linear mix plus the learned correction.

With ``thickness_input`` the network is also told the slice profile of the acquisition when it is
known: the ratio ``r`` = slice thickness / distance between the two input slices (``1/K`` for thin
slices far apart, 1 for contiguous thick slices), as two constant planes (``known`` = 1 and ``r``;
both 0 when the thickness is not known). Thin and thick acquisitions look alike slice by slice, and a
network that cannot tell them apart must compromise between sharpening (thick) and not (thin); one
told the profile need not. Trained with the profile withheld on part of the samples, the same network
works without it.

``f`` is a U-Net without batch normalisation (so small batches and single slices behave the same in
training and inference): ``len(widths)`` levels of [3x3 conv, leaky ReLU, 3x3 conv, leaky ReLU], 2x2
average pooling between levels, nearest-neighbour upsampling and concatenation with the encoder
features of the same level in the decoder, and a final 1x1 conv that starts at zero (so an untrained
network is exactly linear interpolation). The alpha input is a constant plane. Full-resolution skip
connections keep the fine detail of the acquired slices, which a small latent map loses (the ASI
autoencoder reconstructs at about 28 dB).

Tensors are ``[batch, channel, height, width]`` with intensities in [0, 1] (see
:mod:`.normalization`); H and W must be multiples of :attr:`PairUNetConfig.size_multiple` (the engine
pads). In the engine's "encode each acquired slice once, mix, decode" the state of a slice is the
slice itself: :meth:`encode` and :meth:`reconstruct` are the identity, :meth:`synthesize` runs the
network on a pair.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .config_io import config_from_dict

#: widths above this are refused when a checkpoint is read (a crafted config must not allocate gigabytes)
MAX_WIDTH = 1024
MAX_LEVELS = 6


@dataclass(frozen=True)
class PairUNetConfig:
    """Architecture of the pair U-Net; stored in every checkpoint.

    ``widths``: channels per level, full resolution first (the slice is pooled ``len(widths) - 1`` times).
    """

    widths: tuple[int, ...] = (24, 48, 96)
    negative_slope: float = 0.2
    anchor_input: bool = False
    thickness_input: bool = False
    name: str = "pair-unet-24-48-96"

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (2 ** number of poolings)."""
        return 2 ** (len(self.widths) - 1)

    def validate(self) -> None:
        """Raise :class:`ValueError` when the numbers cannot form a working network."""
        if not isinstance(self.widths, tuple) or not 1 <= len(self.widths) <= MAX_LEVELS:
            raise ValueError(f"widths must list 1 to {MAX_LEVELS} levels, got {self.widths!r}")
        if any((not isinstance(w, int)) or isinstance(w, bool) or not 1 <= w <= MAX_WIDTH for w in self.widths):
            raise ValueError(f"widths must be whole numbers from 1 to {MAX_WIDTH}, got {list(self.widths)}")
        if not isinstance(self.negative_slope, (int, float)) or not 0.0 <= float(self.negative_slope) < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        if not isinstance(self.anchor_input, bool):
            raise ValueError(f"anchor_input must be true or false, got {self.anchor_input!r}")
        if not isinstance(self.thickness_input, bool):
            raise ValueError(f"thickness_input must be true or false, got {self.thickness_input!r}")

    @property
    def input_channels(self) -> int:
        """Planes of the first convolution: first, second, alpha [, anchor] [, thickness known, ratio]."""
        return 3 + int(self.anchor_input) + 2 * int(self.thickness_input)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "PairUNetConfig":
        """Inverse of :meth:`to_dict`; unknown fields or numbers that build no network raise :class:`CheckpointError`."""
        return config_from_dict(cls, data, "pair-unet", ("widths",))


def _conv(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=kernel, padding=kernel // 2)


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, slope: float) -> None:
        super().__init__(_conv(in_channels, out_channels), nn.LeakyReLU(slope),
                         _conv(out_channels, out_channels), nn.LeakyReLU(slope))


class SliceStateNetwork(nn.Module):
    """The engine interface of networks whose per-slice state is the slice itself (``pair-unet``,
    ``profile-routed``): :meth:`encode` and :meth:`reconstruct` are the identity, :meth:`synthesize` is
    ``forward(first, second, alpha, anchor, thickness)``."""

    #: engine synthesis modes: the output already contains its linear anchor
    synthesis_modes = ("plain",)
    #: the per-slice state is the slice, so the engine may swap the pair and mirror it (test-time augmentation)
    supports_test_time_augmentation = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The per-slice state the engine keeps: the slice itself."""
        return x

    def reconstruct(self, state: torch.Tensor) -> torch.Tensor:
        """An acquired slice from its state: the slice itself (these networks never alter acquired slices)."""
        return state

    def synthesize(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor | float,
                   anchor: torch.Tensor | None = None, thickness: torch.Tensor | float | None = None) -> torch.Tensor:
        """The slice at ``alpha`` between two states (= ``forward``)."""
        return self.forward(first, second, alpha, anchor, thickness)


class PairUNet(SliceStateNetwork):
    """``forward(first, second, alpha)``: slices ``[N, 1, H, W]`` in [0, 1] and ``alpha`` ``[N]`` (or a float)
    -> the slice at ``alpha`` between them, ``[N, 1, H, W]`` (not clipped)."""

    def __init__(self, config: PairUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or PairUNetConfig()
        self.config.validate()
        widths, slope = self.config.widths, float(self.config.negative_slope)
        self.down = nn.ModuleList()
        channels = self.config.input_channels  # first, second, alpha plane [, B-spline anchor] [, thickness]
        for width in widths:
            self.down.append(_DoubleConv(channels, width, slope))
            channels = width
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(_DoubleConv(channels + width, width, slope))
            channels = width
        self.head = nn.Conv2d(channels, 1, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-normal convs for leaky ReLU, zero biases; the head starts at zero (output = linear mix)."""
        slope = float(self.config.negative_slope)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                with torch.no_grad():
                    if module is self.head:
                        module.weight.zero_()
                    else:
                        fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                        std = (2.0 / ((1.0 + slope ** 2) * fan_in)) ** 0.5
                        module.weight.normal_(0.0, std, generator=generator)
                    module.bias.zero_()

    def describe_architecture(self) -> str:
        """One line for logs."""
        anchor = ", B-spline anchor input" if self.config.anchor_input else ""
        thickness = ", slice-profile input" if self.config.thickness_input else ""
        return (f"{self.config.name} (U-Net widths {'/'.join(map(str, self.config.widths))}, full resolution{anchor}"
                f"{thickness})")

    @staticmethod
    def _alpha(alpha: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        if not isinstance(alpha, torch.Tensor):
            alpha = torch.full((like.shape[0],), float(alpha))
        return alpha.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)

    @staticmethod
    def _thickness_planes(thickness: torch.Tensor | float | None, like: torch.Tensor) -> list[torch.Tensor]:
        """(known, ratio) planes from ``thickness`` ([N] ratios, NaN = not known; a float; or None = not known)."""
        if thickness is None:
            thickness = float("nan")
        if not isinstance(thickness, torch.Tensor):
            thickness = torch.full((like.shape[0],), float(thickness))
        ratio = thickness.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)
        known = torch.isfinite(ratio)
        ratio = torch.where(known, ratio, torch.zeros_like(ratio))
        return [known.to(like.dtype).expand_as(like), ratio.expand_as(like)]

    def forward(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor | float,
                anchor: torch.Tensor | None = None, thickness: torch.Tensor | float | None = None) -> torch.Tensor:
        """``thickness``: slice thickness / distance between ``first`` and ``second`` per pair (``[N]``, NaN =
        not known) or one float; None = not known. Ignored by networks without ``thickness_input``."""
        a = self._alpha(alpha, first)
        linear = first + a * (second - first)
        planes = [first, second, a.expand_as(first)]
        if self.config.anchor_input:
            if anchor is None:
                raise ValueError("this pair U-Net needs the B-spline anchor of each new slice (anchor=...)")
            planes.append(anchor)
        if self.config.thickness_input:
            planes += self._thickness_planes(thickness, first)
        x = torch.cat(planes, dim=1)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return linear + self.head(x)

    @property
    def takes_thickness(self) -> bool:
        """True when :meth:`synthesize` uses the slice profile (``thickness=``) when it is given."""
        return bool(self.config.thickness_input)

    @property
    def needs_anchor(self) -> bool:
        """True when :meth:`synthesize` needs the B-spline anchor of each new slice."""
        return bool(self.config.anchor_input)

    def _widened(self, config: PairUNetConfig, new_planes: list[int]) -> "PairUNet":
        """A network of ``config`` computing exactly what this one computes: the first convolution's
        weights are copied for the planes this network has and start at zero for ``new_planes``
        (positions in the new input)."""
        wider = PairUNet(config)
        state = self.state_dict()
        old_planes = [i for i in range(config.input_channels) if i not in new_planes]
        for name, tensor in wider.state_dict().items():
            if name == "down.0.0.weight":
                tensor.zero_()
                tensor[:, old_planes] = state[name]
            else:
                tensor.copy_(state[name])
        return wider

    def with_anchor_input(self) -> "PairUNet":
        """A copy that also takes the B-spline anchor, computing exactly what this network computes
        (the new input channel's weights start at zero): a warm start for training with anchors."""
        if self.config.anchor_input:
            return copy.deepcopy(self)
        config = dataclasses.replace(self.config, anchor_input=True, name=self.config.name + "-anchor")
        return self._widened(config, [3])

    def with_thickness_input(self) -> "PairUNet":
        """A copy that also takes the slice profile (:meth:`forward`'s ``thickness``), computing exactly what
        this network computes until trained (the two new planes' weights start at zero)."""
        if self.config.thickness_input:
            return copy.deepcopy(self)
        config = dataclasses.replace(self.config, thickness_input=True, name=self.config.name + "-profile")
        start = 3 + int(self.config.anchor_input)
        return self._widened(config, [start, start + 1])

    def flops_per_pixel(self) -> dict[str, int]:
        """Multiply-add FLOPs (2 per MAC) per output pixel of one synthesized slice (``"synthesize"``)."""
        total, scale = 0.0, 1.0
        for level, block in enumerate(self.down):
            scale = 4.0 ** -level
            total += sum(2 * m.in_channels * m.out_channels * 9 * scale for m in block if isinstance(m, nn.Conv2d))
        for i, block in enumerate(self.up):
            scale = 4.0 ** -(len(self.up) - 1 - i)
            total += sum(2 * m.in_channels * m.out_channels * 9 * scale for m in block if isinstance(m, nn.Conv2d))
        total += 2 * self.head.in_channels
        return {"encode": 0, "synthesize": int(round(total))}
