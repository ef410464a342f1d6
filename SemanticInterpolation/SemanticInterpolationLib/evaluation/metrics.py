"""Image quality measures of synthesized slices against the removed real ones (numpy + scipy; torch for SSIM).

All functions take stacks of 2-D slices ``[n, H, W]`` (a single ``[H, W]`` slice works too) and
return one score per slice. Intensities must already be on the [0, 1] scale of
:func:`scale_to_unit_range` (the journal paper's 1st/99th-percentile scaling, clamped), so the
data range ``L`` is 1.

* :func:`psnr`: ``10 log10(L^2 / MSE)``; infinite when the slices are identical.
* :func:`ssim`: the SSIM index of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004) as in
  their reference implementation ``ssim_index.m``: an 11x11 Gaussian window with sigma 1.5
  (normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``, local statistics without the
  sample-covariance correction, the SSIM map over the 'valid' region (windows fully inside the
  slice), averaged. Slices need at least 11x11 pixels. It is computed by the training loss's
  :func:`SemanticInterpolationLib.training.losses.ssim` in float64 without autograd (one SSIM
  for training and evaluation).
* :func:`vif`: the pixel-domain Visual Information Fidelity of Sheikh and Bovik (IEEE TIP 2006),
  multi-scale variant ``vifp_mscale.m`` of the authors' release ("VIFp"): 4 scales with Gaussian
  windows of 17, 9, 5, 3 pixels (sigma N/5), 'valid' filtering and 2x decimation between
  scales, HVS noise variance ``sigma_n^2 = 2`` in 8-bit grey levels, so the [0, 1] slices are
  multiplied by 255 first (the release works on 0..255 images). VIF of identical slices is 1.
  Slices smaller than :data:`VIF_MIN_SIZE` (41) pixels on a side have too few pixels for the
  fourth scale and score NaN, as do slices whose reference is constant (VIF is 0/0 there).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
VIF_SCALES = 4
VIF_NOISE_VARIANCE = 2.0
VIF_GREY_LEVELS = 255.0
#: slices scored per vectorised block (bounds the temporary arrays)
BLOCK = 16


def scale_to_unit_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(values - low) / (high - low)`` clamped to [0, 1], as float64."""
    width = float(high) - float(low)
    if not width > 0:
        width = 1.0
    scaled = (np.asarray(values, dtype=np.float64) - float(low)) / width
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def percentile_range(reference: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> tuple[float, float]:
    """The ``lower``/``upper`` percentiles of the reference volume (falls back to min/max, then a unit width)."""
    low, high = (float(v) for v in np.percentile(reference, [lower, upper]))
    if not high > low:
        low, high = float(np.min(reference)), float(np.max(reference))
        if not high > low:
            high = low + 1.0
    return low, high


def _stack(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"expected a 2-D slice or a stack of 2-D slices, got shape {array.shape}")
    return array


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, tst = _stack(reference), _stack(test)
    if ref.shape != tst.shape:
        raise InputError(f"reference and test slices differ in shape: {ref.shape} and {tst.shape}")
    return ref, tst


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """1-D Gaussian of ``size`` taps normalised to sum 1 (the outer product is MATLAB's fspecial('gaussian'))."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _filter_valid(stack: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of each slice with ``kernel`` x ``kernel``, 'valid' region only."""
    from scipy.ndimage import correlate1d

    size = kernel.size
    radius = size // 2
    out = correlate1d(stack, kernel, axis=1, mode="constant")
    out = correlate1d(out, kernel, axis=2, mode="constant")
    # an odd kernel centred at pixel p covers p-radius..p+radius: keep centres whose window is inside
    return out[:, radius:stack.shape[1] - radius, radius:stack.shape[2] - radius]


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per slice in dB (``inf`` where the slices are identical)."""
    ref, tst = _pair(reference, test)
    mse = np.mean((ref - tst) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / mse)


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM per slice (Wang et al. 2004; Gaussian 11x11, sigma 1.5; see the module docstring)."""
    import torch

    from ..training.losses import ssim as torch_ssim  # imported here: training is not needed for the rest

    ref, tst = _pair(reference, test)
    if min(ref.shape[1:]) < SSIM_WINDOW:
        raise InputError(f"SSIM needs slices of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {ref.shape[1:]}")
    scores = np.empty(ref.shape[0])
    with torch.no_grad():
        for start in range(0, ref.shape[0], BLOCK):
            x = torch.from_numpy(np.ascontiguousarray(ref[start:start + BLOCK]))[:, None]
            y = torch.from_numpy(np.ascontiguousarray(tst[start:start + BLOCK]))[:, None]
            scores[start:start + BLOCK] = torch_ssim(
                x, y, data_range=float(data_range), window_size=SSIM_WINDOW, sigma=SSIM_SIGMA, k1=SSIM_K1,
                k2=SSIM_K2, reduction="none").numpy()
    return scores


def _vif_sizes(size: int) -> list[int]:
    """Image sizes entering scales 1..4 and whether each scale's window fits (for a side of ``size``)."""
    sizes = [size]
    for scale in range(2, VIF_SCALES + 1):
        n = 2 ** (VIF_SCALES - scale + 1) + 1
        size = max(0, (size - n + 1 + 1) // 2)
        sizes.append(size)
    return sizes


def _vif_fits(size: int) -> bool:
    return all(s >= 2 ** (VIF_SCALES - scale + 1) + 1 for scale, s in enumerate(_vif_sizes(size), start=1))


#: smallest slice side (pixels) for which all four VIF scales have a full window
VIF_MIN_SIZE = next(s for s in range(1, 1000) if _vif_fits(s))


def vif(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Pixel-domain multi-scale VIF per slice (Sheikh & Bovik 2006, ``vifp_mscale``); NaN where undefined."""
    ref, tst = _pair(reference, test)
    gain = VIF_GREY_LEVELS / float(data_range)
    if min(ref.shape[1:]) < VIF_MIN_SIZE:
        return np.full(ref.shape[0], np.nan)
    scores = np.empty(ref.shape[0])
    eps = 1e-10
    for start in range(0, ref.shape[0], BLOCK):
        x, y = ref[start:start + BLOCK] * gain, tst[start:start + BLOCK] * gain
        numerator = np.zeros(x.shape[0])
        denominator = np.zeros(x.shape[0])
        for scale in range(1, VIF_SCALES + 1):
            n = 2 ** (VIF_SCALES - scale + 1) + 1
            kernel = gaussian_kernel(n, n / 5.0)
            if scale > 1:
                x = _filter_valid(x, kernel)[:, ::2, ::2]
                y = _filter_valid(y, kernel)[:, ::2, ::2]
            mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
            sigma_x = _filter_valid(x * x, kernel) - mu_x * mu_x
            sigma_y = _filter_valid(y * y, kernel) - mu_y * mu_y
            sigma_xy = _filter_valid(x * y, kernel) - mu_x * mu_y
            sigma_x[sigma_x < 0] = 0
            sigma_y[sigma_y < 0] = 0
            g = sigma_xy / (sigma_x + eps)
            sv = sigma_y - g * sigma_xy
            flat_x = sigma_x < eps
            g[flat_x] = 0
            sv[flat_x] = sigma_y[flat_x]
            sigma_x[flat_x] = 0
            flat_y = sigma_y < eps
            g[flat_y] = 0
            sv[flat_y] = 0
            negative = g < 0
            sv[negative] = sigma_y[negative]
            g[negative] = 0
            sv[sv <= eps] = eps
            numerator += np.sum(np.log10(1.0 + g * g * sigma_x / (sv + VIF_NOISE_VARIANCE)), axis=(1, 2))
            denominator += np.sum(np.log10(1.0 + sigma_x / VIF_NOISE_VARIANCE), axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            block = numerator / denominator
        block[~(denominator > 0)] = np.nan
        scores[start:start + BLOCK] = block
    return scores


METRICS = {"ssim": ssim, "psnr": psnr, "vif": vif}
METRIC_LABELS = {"ssim": "SSIM", "psnr": "PSNR (dB)", "vif": "VIF"}


def score_slices(reference: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """All measures per slice for [0, 1]-scaled stacks: ``{"ssim": ..., "psnr": ..., "vif": ...}``."""
    return {name: function(reference, test) for name, function in METRICS.items()}
