"""Xuan et al.'s slice VAE (stage I of the two-stage method; model type ``"xuan-vae"``).

K. Xuan et al., *Reduce slice spacing of MR images by super-resolution learned without ground-truth*
(section 2.2 and 3.1). A variational autoencoder of 2-D slices: the encoder gives the posterior
``q(z|x) = N(mu, sigma^2 I)`` as the pair ``(mu, log sigma^2)``; in training ``z`` is drawn with the
reparameterisation ``z = mu + sigma * eps``, at inference ``z = mu``; the decoder maps ``z`` back to
a slice. New slices between two acquired slices are decoded from the linear mix of their means
``(1 - xi) mu_n + xi mu_{n+1}`` (section 2.2.2), which is what the engine does with :meth:`encode`
(= ``mu`` in eval mode), :meth:`synthesize` and :meth:`reconstruct`.

Latent: the paper's encoder ends in a fully connected 512-d latent for 256x256 slices. Real scans
have many in-plane sizes, so this implementation is the **fully convolutional variant with a
spatial latent** (``latent = "spatial"``, recorded in every checkpoint): ``mu`` and ``log sigma^2``
are maps of ``latent_channels`` channels at ``1 / size_multiple`` of the slice size. Any slice size
works; the engine edge-pads height and width to a multiple of :attr:`XuanVAEConfig.size_multiple`
and crops back.

Layers as in section 3.1: convolutional blocks of ``convs_per_block`` repeated
[leaky ReLU (slope 0.2), instance normalisation, 3x3 convolution] followed by 2x2 average pooling
(encoder) or nearest-neighbour upsampling (decoder); Xavier-initialised convolution weights,
regularised with spectral normalisation. The decoder output is not squashed (intensities in the
[0, 1] units of :mod:`.normalization`).

The discriminator (:class:`XuanCritic`, a Wasserstein critic: PatchGAN-like stride-2 blocks of
[convolution, instance normalisation, leaky ReLU], a plain convolution and global average pooling)
is needed for training only; it lives in the training state (:mod:`..training.xuan`) and never in
the network saved for inference.

Tensors are ``[batch, channel, height, width]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .config_io import config_from_dict

MAX_WIDTH = 1024
MAX_LEVELS = 6
LATENT_KINDS = ("spatial",)
NORMALIZATIONS = ("instance", "none")
#: log sigma^2 is clamped to this range so that exp() cannot overflow (a NaN still propagates)
LOG_VARIANCE_RANGE = (-30.0, 20.0)
#: starting bias of the log sigma^2 channels (see XuanVAE.reset_parameters)
INITIAL_LOG_VARIANCE = -6.0


def _positive_ints(values: Any, label: str, upper: int = MAX_WIDTH) -> None:
    if not isinstance(values, tuple) or not values or any(
            (not isinstance(v, int)) or isinstance(v, bool) or not 1 <= v <= upper for v in values):
        raise ValueError(f"{label} must be a non-empty list of whole numbers from 1 to {upper}, got {values!r}")


@dataclass(frozen=True)
class XuanVAEConfig:
    """Architecture of the slice VAE; stored in every checkpoint.

    ``widths``: channels of the encoder blocks, full resolution first (one 2x2 pooling per block;
    the decoder mirrors them). ``convs_per_block``: [activation, normalisation, convolution] units
    per block (the paper: 3). ``latent_channels``: channels of the spatial ``mu`` map.
    ``latent``: ``"spatial"`` (fully convolutional; the only variant offered, see the module notes).
    """

    widths: tuple[int, ...] = (24, 48)
    convs_per_block: int = 2
    latent_channels: int = 16
    latent: str = "spatial"
    spectral_norm: bool = True
    negative_slope: float = 0.2
    #: "instance" (the paper) or "none": instance statistics of a training patch differ from those of a whole
    #: slice with much background, which the engine feeds
    normalization: str = "instance"
    name: str = "xuan-vae-24-48"

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (2 ** number of poolings)."""
        return 2 ** len(self.widths)

    def validate(self) -> None:
        """Raise :class:`ValueError` when the numbers cannot form a working network."""
        _positive_ints(self.widths, "widths")
        if len(self.widths) > MAX_LEVELS:
            raise ValueError(f"widths may list at most {MAX_LEVELS} blocks, got {len(self.widths)}")
        for label, value, upper in (("convs_per_block", self.convs_per_block, 8),
                                    ("latent_channels", self.latent_channels, MAX_WIDTH)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
                raise ValueError(f"{label} must be a whole number from 1 to {upper}, got {value!r}")
        if self.latent not in LATENT_KINDS:
            raise ValueError(f"latent must be one of {', '.join(LATENT_KINDS)} (the fully convolutional variant), "
                             f"got {self.latent!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if not isinstance(self.spectral_norm, bool):
            raise ValueError(f"spectral_norm must be true or false, got {self.spectral_norm!r}")
        if not isinstance(self.negative_slope, (int, float)) or not 0.0 <= float(self.negative_slope) < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for checkpoints."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "XuanVAEConfig":
        """Inverse of :meth:`to_dict`; unknown fields or numbers that build no network raise :class:`CheckpointError`."""
        return config_from_dict(cls, data, "xuan-vae", ("widths",))


def _conv(in_channels: int, out_channels: int, use_spectral_norm: bool, *, kernel: int = 3,
          stride: int = 1) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=kernel // 2)
    return _spectral_norm(conv) if use_spectral_norm else conv


def _norm(channels: int, kind: str) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" else nn.Identity()


def _unit(in_channels: int, out_channels: int, slope: float, sn: bool, norm: str = "instance") -> list[nn.Module]:
    """[leaky ReLU, instance norm, 3x3 conv] (the paper's activation-normalisation-convolution)."""
    return [nn.LeakyReLU(slope), _norm(in_channels, norm), _conv(in_channels, out_channels, sn)]


def init_xavier_spectral(module: nn.Module, slope: float, generator: torch.Generator | None = None) -> None:
    """Xavier-uniform conv weights (gain of leaky ReLU ``slope``), zero biases, affine norms at (1, 0);
    for spectrally normalised convs the raw weight is initialised and the power-iteration vectors are
    drawn again and converged (15 iterations, as torch does when the norm is added)."""
    gain = nn.init.calculate_gain("leaky_relu", slope)
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
            parametrized = hasattr(layer, "parametrizations") and hasattr(layer.parametrizations, "weight")
            weight = layer.parametrizations.weight.original if parametrized else layer.weight
            with torch.no_grad():
                fan_in = weight[0].numel()
                fan_out = weight.shape[0] * weight[0, 0].numel()
                bound = gain * (6.0 / (fan_in + fan_out)) ** 0.5
                weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
                if parametrized:
                    sn = layer.parametrizations.weight[0]
                    matrix = weight.flatten(1)
                    u = torch.randn(sn._u.shape, generator=generator)
                    v = torch.randn(sn._v.shape, generator=generator)
                    for _ in range(15):
                        v = nn.functional.normalize(matrix.t() @ u, dim=0, eps=sn.eps)
                        u = nn.functional.normalize(matrix @ v, dim=0, eps=sn.eps)
                    sn._u.copy_(u)
                    sn._v.copy_(v)
        elif isinstance(layer, (nn.InstanceNorm2d, nn.InstanceNorm3d)) and layer.affine:
            with torch.no_grad():
                layer.weight.fill_(1.0)
                layer.bias.zero_()


class XuanVAE(nn.Module):
    """Slice VAE. :meth:`posterior` ``[N, 1, H, W]`` -> ``(mu, log sigma^2)``, each
    ``[N, latent_channels, H/m, W/m]``; :meth:`decode` latent -> ``[N, 1, H, W]``."""

    #: engine synthesis modes: the paper's decoding, and the residual modes (it reconstructs slices)
    synthesis_modes = ("plain", "residual", "residual-bspline")
    #: the training losses (eq. 4-11) live in ``training/xuan.py`` (see ``training.trainer.training_hook``)
    training_hook = "xuan:XuanTrainingHook"

    def __init__(self, config: XuanVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or XuanVAEConfig()
        self.config.validate()
        c = self.config
        slope, sn, r = float(c.negative_slope), bool(c.spectral_norm), int(c.convs_per_block)

        encoder: list[nn.Module] = [_conv(1, c.widths[0], sn)]
        channels = c.widths[0]
        for width in c.widths:
            for i in range(r):
                encoder += _unit(channels, width, slope, sn, c.normalization)
                channels = width
            encoder.append(nn.AvgPool2d(2))
        encoder += [nn.LeakyReLU(slope), _norm(channels, c.normalization),
                    _conv(channels, 2 * c.latent_channels, sn)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [_conv(c.latent_channels, c.widths[-1], sn)]
        channels = c.widths[-1]
        for width in reversed(c.widths):
            for i in range(r):
                decoder += _unit(channels, width, slope, sn, c.normalization)
                channels = width
            decoder.append(nn.Upsample(scale_factor=2, mode="nearest"))
        decoder += [nn.LeakyReLU(slope), _norm(channels, c.normalization), _conv(channels, 1, sn)]
        self.decoder = nn.Sequential(*decoder)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier initialisation (section 3.1; see :func:`init_xavier_spectral`), with two biases set so
        that a short CPU run can learn: the output conv's starts at 0.5, the middle of the unit intensity
        range (with zero it takes thousands of Adam steps to move the output level there: 0.39 vs 0.11
        L1 after 100 steps on a real T1), and the log-variance channels' at :data:`INITIAL_LOG_VARIANCE`
        (sigma = 0.05; with sigma = 1 the drawn z is mostly noise until the bias has moved, at about
        the learning rate per step: 0.115 vs 0.082 L1 after 150 steps)."""
        init_xavier_spectral(self, float(self.config.negative_slope), generator)
        with torch.no_grad():
            self.decoder[-1].bias.fill_(0.5)
            self.encoder[-1].bias[self.config.latent_channels:].fill_(INITIAL_LOG_VARIANCE)

    def describe_architecture(self) -> str:
        """One line for logs."""
        c = self.config
        return (f"{c.name} (VAE, {c.latent} latent {c.latent_channels} ch at 1/{c.size_multiple}, blocks "
                f"{'/'.join(map(str, c.widths))} x {c.convs_per_block} convs"
                f"{', spectral norm' if c.spectral_norm else ''})")

    # ---- the VAE
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log sigma^2)`` of ``q(z|x)`` for slices ``x`` ``[N, 1, H, W]`` (H, W multiples of ``size_multiple``)."""
        out = self.encoder(x)
        mu, log_variance = out.chunk(2, dim=1)
        return mu, log_variance.clamp(*LOG_VARIANCE_RANGE)

    @staticmethod
    def sample(mu: torch.Tensor, log_variance: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw ``mu + exp(log_variance / 2) * eps``, ``eps ~ N(0, I)`` (differentiable)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if generator is not None \
            else torch.randn_like(mu)
        return mu + torch.exp(0.5 * log_variance) * eps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent of ``x``: a reparameterised sample in training mode, ``mu`` in eval mode (inference)."""
        mu, log_variance = self.posterior(x)
        return self.sample(mu, log_variance) if self.training else mu

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Slices ``[N, 1, H, W]`` decoded from latent maps ``z``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    # ---- the engine interface (state of a slice = mu)
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """An acquired slice decoded from its latent (= :meth:`decode`)."""
        return self.decode(z)

    @staticmethod
    def mix(z_first: torch.Tensor, z_second: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        """``(1 - alpha) z_first + alpha z_second``; ``alpha`` a float or ``[N]``."""
        if isinstance(alpha, torch.Tensor) and alpha.ndim == 1:
            alpha = alpha.to(z_first.dtype).view(-1, 1, 1, 1)
        return z_first + alpha * (z_second - z_first)

    def synthesize(self, z_first: torch.Tensor, z_second: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        """The slice decoded from the mix of two latents at ``alpha`` (section 2.2.2)."""
        return self.decode(self.mix(z_first, z_second, alpha))

    def flops_per_pixel(self) -> dict[str, int]:
        """Multiply-add FLOPs per slice pixel: ``encode`` (one acquired slice) and ``decode`` (one slice)."""
        from .flops import conv_flops

        size = 4 * self.config.size_multiple
        x = torch.zeros(1, 1, size, size)
        was_training = self.training
        self.eval()
        try:
            z = self.encode(x)
            encode = conv_flops(lambda: self.encode(x), self)
            decode = conv_flops(lambda: self.decode(z), self)
        finally:
            self.train(was_training)
        return {"encode": encode // (size * size), "decode": decode // (size * size)}


class XuanCritic(nn.Module):
    """Wasserstein critic ``H`` (eq. 7): ``[N, 1, H, W]`` -> one score per slice ``[N]``.

    ``len(widths)`` stride-2 blocks of [4x4 conv, instance norm, leaky ReLU] (PatchGAN-like), a plain
    3x3 conv to one channel and global average pooling. Spectrally normalised, Xavier-initialised.
    Training state only (never part of the inference checkpoint).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), negative_slope: float = 0.2,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        _positive_ints(widths, "critic widths")
        self.widths, self.negative_slope = widths, float(negative_slope)
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            conv = nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1)
            layers += [_spectral_norm(conv) if spectral_norm else conv, nn.InstanceNorm2d(width, affine=True),
                       nn.LeakyReLU(self.negative_slope)]
            channels = width
        layers.append(_conv(channels, 1, spectral_norm))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_xavier_spectral(self, self.negative_slope, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(1, 2, 3))
