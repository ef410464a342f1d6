"""Two pair U-Nets chosen by the slice profile (model type ``"profile-routed"``): thick slices, and the rest.

Thin slices far apart and contiguous thick slices ask different things of a network: the first must
not sharpen, the second must undo a through-plane blur. A slice-profile network (``thickness_input``)
is told which, but one network of a given size still shares its capacity between both. This type holds
two trained pair U-Nets with the slice-profile input and routes each new slice by what it is told::

    thickness / gap >= thick_from_ratio  ->  the ``thick`` network
    otherwise, and when not known        ->  the ``main`` network

Both networks answer exactly as they do alone (the routing adds no weights), so the type keeps every
property of a pair U-Net: the engine interface (the state of a slice is the slice), test-time
augmentation, the B-spline anchor input, adaptation (of the network that will upsample the scan:
:meth:`ProfileRoutedPairUNet.member_for`). The slice-profile estimate (:mod:`..engine.profile_estimate`)
is made by the ``main`` network alone (:attr:`ProfileRoutedPairUNet.profile_estimator`), so the thick
network's own sensitivity to the told profile does not enter it, or by an optional third network, the
``estimator``, which answers no slice: its only job is the estimate. A main network trained on after the
estimate was tuned loses the estimate's thin/thick margins (``Docs/Experiments.md``, session 6); keeping the
network that made them as the estimator lets the main network change without moving the estimate.

Training goes through the pair U-Net's path (``train --model-type profile-routed`` or ``--init`` a routed
checkpoint): each sample is answered, and its loss back-propagated, by the network its told profile routes
it to, so the thick network learns from the thick samples and the main one from the rest. Two trained pair
U-Nets are joined with ``Resources/Scripts/route_profile_networks.py OUTPUT MAIN THICK``. Tensors are
``[batch, channel, height, width]``, intensities in [0, 1], as for :class:`.pair_unet.PairUNet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError
from .config_io import config_from_dict
from .pair_unet import PairUNet, PairUNetConfig, SliceStateNetwork

#: thickness / gap from which the thick network answers (contiguous thick slices are 1; thin slices at K >= 2
#: are at most 0.5; chosen between the two on the validation volume, see ``Docs/Experiments.md``, session 7)
DEFAULT_THICK_FROM_RATIO = 0.75


@dataclass(frozen=True)
class ProfileRoutedConfig:
    """The two networks' configurations and the ratio from which the thick one answers; stored in every checkpoint."""

    main: PairUNetConfig = field(default_factory=lambda: PairUNetConfig(anchor_input=True, thickness_input=True,
                                                                        name="pair-unet-24-48-96-anchor-profile"))
    thick: PairUNetConfig = field(default_factory=lambda: PairUNetConfig(widths=(32, 64, 128), anchor_input=True,
                                                                         thickness_input=True,
                                                                         name="pair-unet-32-64-128-anchor-profile"))
    thick_from_ratio: float = DEFAULT_THICK_FROM_RATIO
    name: str = "profile-routed"
    #: the network that makes the slice-profile estimate, when it is not the main one (None: the main one)
    estimator: PairUNetConfig | None = None

    def members(self) -> dict[str, PairUNetConfig]:
        """The networks' configurations by role (``main``, ``thick`` and, when set, ``estimator``)."""
        roles = {"main": self.main, "thick": self.thick}
        if self.estimator is not None:
            roles["estimator"] = self.estimator
        return roles

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (every network's size divides it)."""
        return math.lcm(*(member.size_multiple for member in self.members().values()))

    @property
    def anchor_input(self) -> bool:
        """True when a network takes the B-spline anchor (all are then given it; one without ignores it)."""
        return any(member.anchor_input for member in self.members().values())

    @property
    def thickness_input(self) -> bool:
        """Always True: both networks take the slice profile (:meth:`validate`)."""
        return True

    def validate(self) -> None:
        """Raise :class:`ValueError` when the two networks cannot be routed by the slice profile."""
        for role, member in self.members().items():
            if not isinstance(member, PairUNetConfig):
                raise ValueError(f"{role} must be a pair U-Net configuration, got {type(member).__name__}")
            member.validate()
            if not member.thickness_input:
                raise ValueError(f"the {role} network must take the slice profile (thickness_input): a network that "
                                 "is not told the profile cannot be chosen by it")
        ratio = self.thick_from_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) <= 3.0:
            raise ValueError(f"thick_from_ratio must be a number in (0, 3], got {ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        # the estimator only when set, so two-network checkpoints keep their form
        return {**{role: member.to_dict() for role, member in self.members().items()},
                "thick_from_ratio": float(self.thick_from_ratio), "name": self.name}

    @classmethod
    def from_dict(cls, data: Any) -> "ProfileRoutedConfig":
        """Inverse of :meth:`to_dict`; a wrong field or numbers that build no network raise :class:`CheckpointError`."""
        if not isinstance(data, dict):
            raise CheckpointError(f"profile-routed configuration must be a mapping, got {type(data).__name__}")
        values = dict(data)
        for role in ("main", "thick"):  # the networks' own configurations first, then the common rule
            if role not in values:
                raise CheckpointError(f"profile-routed configuration lacks its {role} network")
            values[role] = PairUNetConfig.from_dict(values[role])
        if values.get("estimator") is not None:
            values["estimator"] = PairUNetConfig.from_dict(values["estimator"])
        return config_from_dict(cls, values, "profile-routed")


class ProfileRoutedPairUNet(SliceStateNetwork):
    """``synthesize(first, second, alpha, anchor, thickness)``: the answer of the network the told profile
    routes to (see the module documentation); ``thickness`` = slice thickness / gap, a float, ``[N]`` (NaN =
    not known) or None."""

    #: a batch of one kind of sample runs one network only (distributed training then looks for unused weights)
    may_leave_parameters_unused = True

    def __init__(self, config: ProfileRoutedConfig | None = None) -> None:
        super().__init__()
        self.config = config or ProfileRoutedConfig()
        self.config.validate()
        self.main = PairUNet(self.config.main)
        self.thick = PairUNet(self.config.thick)
        # answers no slice, so training never updates it (no gradient reaches it) and adaptation leaves it alone
        self.estimator = PairUNet(self.config.estimator) if self.config.estimator is not None else None

    @classmethod
    def from_networks(cls, main: PairUNet, thick: PairUNet, thick_from_ratio: float = DEFAULT_THICK_FROM_RATIO,
                      estimator: PairUNet | None = None) -> "ProfileRoutedPairUNet":
        """A routed model holding copies of two trained pair U-Nets (both with the slice-profile input) and,
        optionally, of a third that makes the slice-profile estimate instead of ``main``."""
        networks = {"main": main, "thick": thick}
        if estimator is not None:
            networks["estimator"] = estimator
        for role, network in networks.items():
            if not isinstance(network, PairUNet):
                raise ValueError(f"the {role} network must be a pair-unet model, got {type(network).__name__}")
        config = ProfileRoutedConfig(main=main.config, thick=thick.config, thick_from_ratio=float(thick_from_ratio),
                                     estimator=None if estimator is None else estimator.config)
        routed = cls(config)
        for role, network in networks.items():
            getattr(routed, role).load_state_dict(network.state_dict())
        return routed

    def describe_architecture(self) -> str:
        """One line for logs."""
        estimate = "" if self.estimator is None else \
            f"; the slice-profile estimate by {self.estimator.describe_architecture()}"
        return (f"{self.config.name}: {self.main.describe_architecture()} for thin slices and when the profile is "
                f"not known, {self.thick.describe_architecture()} from thickness/gap "
                f"{self.config.thick_from_ratio:g}{estimate}")

    def routes_to_thick(self, thickness: float | None) -> bool:
        """True when a slice told ``thickness`` (thickness / gap; None or NaN = not known) goes to the thick network."""
        return thickness is not None and math.isfinite(float(thickness)) and \
            float(thickness) >= float(self.config.thick_from_ratio)

    def member_for(self, thickness: float | None) -> PairUNet:
        """The network that answers for slices told ``thickness`` (the one adaptation should fine-tune)."""
        return self.thick if self.routes_to_thick(thickness) else self.main

    @property
    def profile_estimator(self) -> PairUNet:
        """The network the slice-profile estimate asks (:mod:`..engine.profile_estimate`): the ``estimator``
        when the model has one, else the main one."""
        return self.estimator if self.estimator is not None else self.main

    def forward(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor | float,
                anchor: torch.Tensor | None = None, thickness: torch.Tensor | float | None = None) -> torch.Tensor:
        if not isinstance(thickness, torch.Tensor):
            return self.member_for(thickness)(first, second, alpha, anchor, thickness)
        ratio = thickness.reshape(-1)
        to_thick = torch.isfinite(ratio) & (ratio >= float(self.config.thick_from_ratio))
        if bool(to_thick.all()):
            return self.thick(first, second, alpha, anchor, thickness)
        if not bool(to_thick.any()):
            return self.main(first, second, alpha, anchor, thickness)
        mask = to_thick.to(first.device).reshape(-1, 1, 1, 1)  # a batch of both kinds: each slice its own network
        return torch.where(mask, self.thick(first, second, alpha, anchor, thickness),
                           self.main(first, second, alpha, anchor, thickness))

    @property
    def takes_thickness(self) -> bool:
        return True

    @property
    def needs_anchor(self) -> bool:
        return self.config.anchor_input

    def flops_per_pixel(self) -> dict[str, int]:
        """FLOPs per output pixel of the costlier network (each slice runs one of the two)."""
        main, thick = self.main.flops_per_pixel(), self.thick.flops_per_pixel()
        return {"encode": 0, "synthesize": max(main["synthesize"], thick["synthesize"]),
                "synthesize_main": main["synthesize"], "synthesize_thick": thick["synthesize"]}
