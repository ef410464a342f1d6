"""Stage II of Xuan et al.'s method: a 3-D super-resolution generator (model type ``"sr-generator"``).

A DeepResolve-style residual 3-D CNN (Chaudhari et al. 2018; Xuan et al. section 2.3): the input is
the volume upsampled through-plane by cubic B-spline interpolation (the engine's ``bspline``
baseline) onto the output grid, the output is that volume plus a learned correction::

    y = b + f(b),   f = conv3d(1 -> F), ReLU, (layers - 2) x [conv3d(F -> F), ReLU], conv3d(F -> 1)

with 3x3x3 convolutions, zero padding and no normalisation (so a tile of a volume computes exactly what
the whole volume computes there, see :mod:`..engine.volume_sr`). The last convolution starts at zero:
an untrained generator is cubic B-spline interpolation.

It is trained (:mod:`..training.sr_pairs`) with L1 on pairs ``(bspline(T V(Y)), V(Y))``: ``V(Y)`` are
volumes that a stage-I model (any slice model type) synthesised from low-resolution scans ``Y``, and
``T`` keeps every K-th slice. The checkpoint records the factor(s) K it was trained for
(``factors``); upsampling by another factor is refused with a clear error.

Tensors are ``[batch, channel, depth, height, width]`` (depth = the slice axis), intensities in the
[0, 1] units of :mod:`.normalization`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config_io import config_from_dict

MAX_FEATURES = 256
MAX_LAYERS = 40
INTERPOLATIONS = ("bspline",)


@dataclass(frozen=True)
class SRGeneratorConfig:
    """Architecture of the 3-D generator and what it was trained for; stored in every checkpoint.

    ``features``: channels of the hidden convolutions; ``layers``: convolutions in all (>= 2);
    ``factors``: the through-plane factors K it was trained for; ``interpolation``: how the input is
    brought onto the output grid (``"bspline"``); ``tile_size``: edge of the cubic output tiles the
    engine computes at a time (memory is bounded by the tile plus its halo of ``layers`` voxels).
    """

    features: int = 16
    layers: int = 6
    factors: tuple[int, ...] = (4,)
    interpolation: str = "bspline"
    tile_size: int = 48
    name: str = "sr-generator-16x6"

    @property
    def size_multiple(self) -> int:
        """Any in-plane size works (no pooling)."""
        return 1

    @property
    def receptive_radius(self) -> int:
        """Voxels on each side that influence one output voxel (one per 3x3x3 convolution)."""
        return int(self.layers)

    def validate(self) -> None:
        """Raise :class:`ValueError` when the numbers cannot form a working network."""
        for label, value, low, high in (("features", self.features, 1, MAX_FEATURES),
                                        ("layers", self.layers, 2, MAX_LAYERS), ("tile_size", self.tile_size, 4, 1024)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{label} must be a whole number from {low} to {high}, got {value!r}")
        if (not isinstance(self.factors, tuple) or not self.factors
                or any(isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 32 for k in self.factors)):
            raise ValueError(f"factors must list whole numbers from 2 to 32, got {self.factors!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        d = dataclasses.asdict(self)
        d["factors"] = list(self.factors)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "SRGeneratorConfig":
        """Inverse of :meth:`to_dict`; unknown fields or numbers that build no network raise :class:`CheckpointError`."""
        return config_from_dict(cls, data, "sr-generator", ("factors",))


class SRGenerator(nn.Module):
    """``forward(b)``: B-spline-upsampled volume ``[N, 1, D, H, W]`` -> super-resolved volume, same shape."""

    #: the engine runs this type on whole volumes (:mod:`..engine.volume_sr`), not slice pairs
    is_volume_model = True
    synthesis_modes = ("plain",)
    #: the ``train`` command refuses this type and names ``train-sr`` (see ``training/xuan.py``)
    training_hook = "xuan:SRGeneratorTrainingHook"

    def __init__(self, config: SRGeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SRGeneratorConfig()
        self.config.validate()
        f, n = self.config.features, self.config.layers
        layers: list[nn.Module] = [nn.Conv3d(1, f, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(n - 2):
            layers += [nn.Conv3d(f, f, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv3d(f, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal hidden convolutions (ReLU), zero biases; the last convolution starts at zero."""
        last = self.body[-1]
        for module in self.body:
            if isinstance(module, nn.Conv3d):
                with torch.no_grad():
                    if module is last:
                        module.weight.zero_()
                    else:
                        fan_in = module.in_channels * 27
                        module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                    module.bias.zero_()

    def describe_architecture(self) -> str:
        """One line for logs."""
        c = self.config
        return (f"{c.name} (residual 3-D CNN, {c.layers} convs of {c.features} ch on the {c.interpolation} "
                f"volume; trained for K = {', '.join(map(str, c.factors))})")

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return volume + self.body(volume)

    def synthesize(self, *args: Any) -> torch.Tensor:  # noqa: D401 - the slice interface does not apply
        """Not a slice model: the engine upsamples with :mod:`..engine.volume_sr`."""
        raise TypeError("sr-generator models upsample whole volumes (engine.volume_sr), not slice pairs")

    def flops_per_voxel(self) -> int:
        """Multiply-add FLOPs per output voxel (2 per MAC)."""
        f, n = self.config.features, self.config.layers
        return 2 * 27 * (f + f * f * (n - 2) + f)

    def flops_per_pixel(self) -> dict[str, int]:
        """For the benchmarks' table: the generator's FLOPs per output voxel as ``"synthesize"``."""
        return {"encode": 0, "synthesize": self.flops_per_voxel()}
