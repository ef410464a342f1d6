"""The two critics HRINet is trained with (thesis sections 3.1.3 and 3.2.1); used in training only.

* :class:`AlphaCritic` (D1, the ACAI critic): predicts the mixing weight alpha from a slice.
  Its loss (thesis eq. 3-7) is ``|D1(gamma x + (1 - gamma) g(f(x)))|^2 + |D1(x_alpha) - alpha|^2``
  (:func:`alpha_critic_loss`); the generator's adversarial constraint (eq. 3-5) is
  ``|D1(x_alpha)|^2`` (:func:`adversarial_constraint_loss`): interpolations that D1 takes for
  acquired slices.
* :class:`PatchCritic` (D2, PatchGAN): one score per local patch of a slice, whose receptive field
  (thesis eq. 3-2) is set by the number of stride-2 layers; the slice's score is the mean over patches
  (eq. 3-3). Trained as a Wasserstein critic with gradient penalty (WGAN-GP, as the thesis does for
  stability, section 3.3.2) instead of the log loss of eq. 3-6 and 3-8: :func:`wgan_critic_loss`,
  :func:`gradient_penalty`, :func:`wgan_generator_loss`.

Neither critic is part of an inference checkpoint: the trainer keeps them, with their optimisers, in
the resumable training state (plain tensors, read with ``weights_only=True``).

Tensors are ``[batch, 1, H, W]`` slices in about [0, 1]; alpha is ``[batch]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MAX_CRITIC_WIDTH = 512


def _check_widths(base_width: int, layers: int) -> None:
    if isinstance(base_width, bool) or not isinstance(base_width, int) or not 1 <= base_width <= MAX_CRITIC_WIDTH:
        raise ValueError(f"critic width must be a whole number from 1 to {MAX_CRITIC_WIDTH}, got {base_width!r}")
    if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= 6:
        raise ValueError(f"critic layers must be a whole number from 0 to 6, got {layers!r}")


def _downsampling_blocks(base_width: int, layers: int, negative_slope: float) -> tuple[list[nn.Module], int]:
    """``layers`` blocks of [4x4 conv stride 2, leaky ReLU] from one channel, widths ``base_width * 2**i``
    (at most 8x); returns the modules and the last width."""
    modules: list[nn.Module] = []
    channels = 1
    for i in range(layers):
        width = base_width * 2 ** min(i, 3)
        modules += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(negative_slope)]
        channels = width
    return modules, channels


class AlphaCritic(nn.Module):
    """D1: ``forward(x)`` ``[N, 1, H, W]`` -> the predicted alpha ``[N]`` (mean over the last map).

    ``layers`` blocks of [4x4 conv stride 2, leaky ReLU] (widths ``base_width * 2**i``, at most 8x),
    then a 3x3 conv to one channel, averaged over the image.
    """

    def __init__(self, base_width: int = 16, layers: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        _check_widths(base_width, layers)
        modules, channels = _downsampling_blocks(base_width, layers, negative_slope)
        modules.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*modules)
        self.settings = {"base_width": base_width, "layers": layers, "negative_slope": negative_slope}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


class PatchCritic(nn.Module):
    """D2 (PatchGAN): ``patch_scores(x)`` ``[N, 1, H', W']`` (one per patch), ``forward(x)`` their mean ``[N]``.

    ``layers`` blocks of [4x4 conv stride 2, leaky ReLU], one [4x4 conv stride 1, leaky ReLU] and a
    4x4 conv stride 1 to one channel, all without normalisation (WGAN-GP penalises per-sample
    gradients, so no batch norm): with ``layers = 3`` this is the 70 x 70 PatchGAN the thesis found best
    (section 3.3.2.3); ``layers = 1`` gives 16 x 16, ``2`` 34 x 34, ``4`` 142 x 142 (:attr:`receptive_field`).
    """

    def __init__(self, base_width: int = 32, layers: int = 3, negative_slope: float = 0.2) -> None:
        super().__init__()
        _check_widths(base_width, layers)
        modules, channels = _downsampling_blocks(base_width, layers, negative_slope)
        width = base_width * 2 ** min(layers, 3)
        modules += [nn.Conv2d(channels, width, 4, stride=1, padding=1), nn.LeakyReLU(negative_slope),
                    nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*modules)
        self.settings = {"base_width": base_width, "layers": layers, "negative_slope": negative_slope}

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch one score sees (thesis eq. 3-2, from the last layer back)."""
        size = 1
        for module in reversed(self.net):
            if isinstance(module, nn.Conv2d):
                size = (size - 1) * module.stride[0] + module.kernel_size[0]
        return size

    def patch_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


def critic_settings(critic: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a critic (stored with its weights in the training state)."""
    return dict(critic.settings)


# ---------------------------------------------------------------- losses
def alpha_critic_loss(critic: nn.Module, interpolations: torch.Tensor, alpha: torch.Tensor, real: torch.Tensor,
                      reconstructions: torch.Tensor, gamma: float = 0.2) -> torch.Tensor:
    """D1's loss, thesis eq. 3-7: ``mean(D1(gamma x + (1-gamma) x_rec)^2) + mean((D1(x_alpha) - alpha)^2)``.

    Pass detached ``interpolations`` and ``reconstructions`` (the generator is not trained by this loss).
    The first term, on blends of real slices and their reconstructions, steadies the early training
    when reconstructions are poor (ACAI).
    """
    blend = gamma * real + (1.0 - gamma) * reconstructions
    return critic(blend).pow(2).mean() + (critic(interpolations) - alpha.to(interpolations.dtype)).pow(2).mean()


def adversarial_constraint_loss(critic: nn.Module, interpolations: torch.Tensor) -> torch.Tensor:
    """The generator's L_ac, thesis eq. 3-5: ``mean(D1(x_alpha)^2)`` (fool D1 into predicting alpha = 0)."""
    return critic(interpolations).pow(2).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     mix: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty ``mean((||grad_x D2(x_hat)||_2 - 1)^2)`` with ``x_hat = mix real + (1 - mix) fake``.

    ``mix``: ``[N]`` in [0, 1], drawn uniformly when None. The gradient norm is per sample over all
    pixels; the graph is kept so that the penalty trains the critic.
    """
    if mix is None:
        mix = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    mix = mix.to(real.dtype).view(-1, 1, 1, 1)
    points = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    scores = critic(points)
    (gradient,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def wgan_critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, penalty_weight: float = 10.0,
                     mix: torch.Tensor | None = None) -> torch.Tensor:
    """D2's WGAN-GP loss: ``mean D2(fake) - mean D2(real) + penalty_weight * gradient_penalty``."""
    loss = critic(fake.detach()).mean() - critic(real.detach()).mean()
    if penalty_weight:
        loss = loss + float(penalty_weight) * gradient_penalty(critic, real, fake, mix)
    return loss


def wgan_generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The generator's L_gen in the Wasserstein form: ``-mean D2(fake)``."""
    return -critic(fake).mean()
