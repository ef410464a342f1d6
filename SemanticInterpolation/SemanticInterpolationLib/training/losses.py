"""The training loss of the journal paper (eq. 3) and image-quality metrics.

``L = d_rec(x, x_hat) + lambda * d_syn(x_n, x_hat_n^{alpha=0.5})`` with ``lambda >= 0``:

* reconstruction: pixel-wise mean squared error between the encoded slices and their
  reconstructions (section III-D);
* synthesis: a distance between the real middle slice ``x_n`` and the decoding of the mix
  (alpha = 0.5) of the latents of its neighbours. Choices (:data:`SYNTHESIS_LOSSES`):
  ``lpips`` (the paper's; VGG-16, needs the optional ``lpips`` package and torchvision),
  ``ssim`` (1 - SSIM), ``mse`` and ``l1``. ``lambda = 0`` is the paper's ablation ASI_lambda=0.

SSIM is implemented here in torch (Wang et al. 2004): Gaussian window 11x11, sigma 1.5,
K1 = 0.01, K2 = 0.03, data range 1, computed over the valid part of the image (no padding).
It is the project's only SSIM: the evaluation (:func:`SemanticInterpolationLib.evaluation.metrics.ssim`)
calls it on float64 tensors without autograd, so the training loss and the reported scores agree.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import SemanticInterpolationError

SYNTHESIS_LOSSES = ("lpips", "ssim", "mse", "l1")

VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"


class SynthesisLossUnavailable(SemanticInterpolationError):
    """The requested synthesis distance cannot be used on this machine (e.g. lpips missing)."""


# --------------------------------------------------------------------------- SSIM / PSNR
@functools.lru_cache(maxsize=8)
def _gaussian_window_1d(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()  # float64; _filter casts it to the images' dtype


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of ``[N, C, H, W]`` (each channel alone)."""
    c = x.shape[1]
    w = window.to(device=x.device, dtype=x.dtype)
    x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Structural similarity of image batches ``[N, C, H, W]`` (H, W >= ``window_size``).

    ``reduction``: ``"mean"`` (a scalar), ``"none"`` (one value per image, ``[N]``).
    Computed in float32 (half-precision inputs are cast up), or in float64 when either input is
    float64 (the evaluation's precision). Differentiable in ``x`` and ``y``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size}x{window_size} pixels, got {tuple(x.shape[-2:])}")
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    x = x.to(dtype)
    y = y.to(dtype)
    window = _gaussian_window_1d(window_size, float(sigma))
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x = _filter(x, window)
    mu_y = _filter(y, window)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = _filter(x * x, window) - mu_xx
    sigma_yy = _filter(y * y, window) - mu_yy
    sigma_xy = _filter(x * y, window) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * sigma_xy + c2)) / ((mu_xx + mu_yy + c1) * (sigma_xx + sigma_yy + c2))
    per_image = ssim_map.flatten(1).mean(1)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of ``[N, ...]`` batches (capped at 100 dB for identical images)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    value = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))
    if reduction == "none":
        return value
    return value.mean()


# --------------------------------------------------------------------------- distances
def _lpips_help(reason: str) -> str:
    torch_home = os.environ.get("TORCH_HOME", os.path.join("~", ".cache", "torch"))
    return (
        f"the lpips synthesis loss (the paper's) cannot be used here: {reason}. To use it: install the "
        "'lpips' package (pip install lpips, or pip install 'semantic-interpolation[lpips]') in an environment "
        "whose torchvision works (e.g. Slicer's PyTorch extension or a GPU machine). It needs the ImageNet "
        f"VGG-16 weights, which torchvision downloads once; offline, put {VGG16_WEIGHTS_FILE} into "
        f"{os.path.join(torch_home, 'hub', 'checkpoints')} (i.e. $TORCH_HOME/hub/checkpoints/); the lpips "
        "linear-layer weights ship inside the lpips package. Alternatives that need nothing extra: "
        "--synthesis-loss ssim, mse or l1"
    )


def lpips_unavailable_reason() -> str | None:
    """None when ``import lpips`` works, else a one-line reason (without building the network)."""
    try:
        import lpips  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision failing inside it
        return f"'import lpips' failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


class LPIPSDistance(torch.nn.Module):
    """LPIPS-VGG distance of grayscale ``[N, 1, H, W]`` images in [0, 1] (mean over the batch).

    The slices are repeated to three channels and scaled to [-1, 1] as LPIPS expects; its
    network is frozen. Raises :class:`SynthesisLossUnavailable` with the fix when lpips, torchvision
    or the VGG-16 weights cannot be had.
    """

    def __init__(self) -> None:
        super().__init__()
        reason = lpips_unavailable_reason()
        if reason:
            raise SynthesisLossUnavailable(_lpips_help(reason))
        import lpips

        try:
            net = lpips.LPIPS(net="vgg", verbose=False)
        except Exception as exc:  # URLError / OSError when the VGG weights cannot be downloaded
            raise SynthesisLossUnavailable(_lpips_help(
                f"building the VGG-16 network failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); most likely the ImageNet weights "
                f"{VGG16_WEIGHTS_FILE} could not be downloaded")) from exc
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net

    def train(self, mode: bool = True) -> "LPIPSDistance":  # the perceptual network stays in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred3 = prediction.float().repeat(1, 3, 1, 1) * 2.0 - 1.0
        targ3 = target.float().repeat(1, 3, 1, 1) * 2.0 - 1.0
        return self.net(pred3, targ3).mean()


def make_synthesis_distance(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The synthesis distance ``d(prediction, target) -> scalar`` called ``name``.

    ``lpips`` returns a module (move it to the training device); the others are functions.
    Raises :class:`SynthesisLossUnavailable` for lpips where it cannot run, and
    :class:`~SemanticInterpolationLib.errors.InputError` for unknown names.
    """
    from ..errors import InputError

    key = str(name).strip().lower()
    if key == "lpips":
        return LPIPSDistance()
    if key == "ssim":
        return lambda p, t: 1.0 - ssim(p, t)
    if key == "mse":
        return lambda p, t: F.mse_loss(p.float(), t.float())
    if key == "l1":
        return lambda p, t: F.l1_loss(p.float(), t.float())
    raise InputError(f"unknown synthesis loss {name!r}: use one of {', '.join(SYNTHESIS_LOSSES)}")


class ASILoss(torch.nn.Module):
    """Journal eq. 3 for a batch of triplets.

    ``forward(reconstructions, targets, synthesized, middles)`` returns a dict with ``total``,
    ``reconstruction`` and ``synthesis`` (the latter ``None`` when lambda is 0 and no synthesised
    slices are given).
    """

    def __init__(self, synthesis_loss: str = "ssim", lam: float = 0.05) -> None:
        super().__init__()
        self.synthesis_loss = str(synthesis_loss).lower()
        self.lam = float(lam)
        distance = make_synthesis_distance(self.synthesis_loss)
        if isinstance(distance, torch.nn.Module):
            self.distance_module = distance  # registered so .to(device) moves it
        self._distance = distance

    def forward(self, reconstructions: torch.Tensor, targets: torch.Tensor,
                synthesized: torch.Tensor | None = None, middles: torch.Tensor | None = None) -> dict:
        rec = F.mse_loss(reconstructions.float(), targets.float())
        if synthesized is None or middles is None:
            return {"total": rec, "reconstruction": rec, "synthesis": None}
        syn = self._distance(synthesized, middles)
        total = rec + self.lam * syn if self.lam > 0 else rec
        return {"total": total, "reconstruction": rec, "synthesis": syn}
