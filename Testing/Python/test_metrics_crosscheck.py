"""The evaluation's SSIM and VIF against independent implementations, on real MRI slices.

References: scikit-image's ``structural_similarity`` (Wang et al. 2004) and sewar's ``vifp``
(Sheikh & Bovik 2006, pixel domain, multi-scale), both from the ``test`` extra
(``pip install -e .[test]``); without them those checks are skipped with the reason shown. The
images: axial slices of Testing/Data/anatomical_t1_2mm.nii (real T1, 41x33 pixels) on the
evaluation's [0, 1] scale, against a blurred, a noised and a blurred-and-noised copy and against
the neighbouring real slice. The SSIM of the training loss (torch) is checked against the same
scores, and its gradient numerically. Offline and CPU-only; a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("scipy", reason="the evaluation metrics need scipy: pip install scipy")

from scipy.ndimage import gaussian_filter, zoom  # noqa: E402

from SemanticInterpolationLib.evaluation.metrics import (SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW,  # noqa: E402
                                                         VIF_GREY_LEVELS, VIF_MIN_SIZE, VIF_NOISE_VARIANCE,
                                                         percentile_range, scale_to_unit_range, ssim, vif)
from SemanticInterpolationLib.training.losses import make_synthesis_distance  # noqa: E402
from SemanticInterpolationLib.training.losses import ssim as loss_ssim  # noqa: E402

T1 = Path(__file__).resolve().parents[1] / "Data" / "anatomical_t1_2mm.nii"  # 33x41x25 voxels, real
SLICES = (10, 12, 14)  # axial slices through the brain
ALTERATIONS = ("blurred", "noised", "blurred+noised", "neighbour")
TOLERANCE = 1e-6


def _unit_volume() -> np.ndarray:
    """The T1 volume ``[25, 41, 33]`` on the evaluation's [0, 1] scale (1st/99th percentile)."""
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(T1))).astype(np.float64)
    return scale_to_unit_range(volume, *percentile_range(volume))


def _pair(alteration: str, index: int, upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A real slice and an altered copy, both ``[H, W]`` in [0, 1]; ``upsample`` enlarges both in-plane."""
    volume = _unit_volume()
    reference = volume[index]
    rng = np.random.default_rng(index)
    if alteration == "blurred":
        test = gaussian_filter(reference, 1.0)
    elif alteration == "noised":
        test = reference + rng.normal(0.0, 0.05, reference.shape)
    elif alteration == "blurred+noised":
        test = gaussian_filter(reference, 0.8) + rng.normal(0.0, 0.03, reference.shape)
    else:
        test = volume[index + 1]
    if upsample > 1:  # cubic in-plane enlargement of the real slice (VIF's four scales need 41+ pixels a side)
        reference, test = zoom(reference, upsample, order=3), zoom(test, upsample, order=3)
    return np.clip(reference, 0.0, 1.0), np.clip(test, 0.0, 1.0)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None, None]


# --------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("index", SLICES)
@pytest.mark.parametrize("alteration", ALTERATIONS)
def test_ssim_matches_scikit_image(alteration, index):
    metrics = pytest.importorskip(
        "skimage.metrics", reason="scikit-image is not installed (pip install scikit-image, or -e .[test])")
    reference, test = _pair(alteration, index)
    ours = float(ssim(reference, test)[0])
    # the same Gaussian window (sigma 1.5, radius 5 -> 11x11), constants, population covariance and data
    # range; scikit-image filters the whole slice and averages the map over the centres whose window is
    # inside it (a border of 5 cropped), which is the project's 'valid' region
    radius = SSIM_WINDOW // 2
    truncate = radius / SSIM_SIGMA
    assert int(truncate * SSIM_SIGMA + 0.5) == radius  # scipy's gaussian_filter radius rule
    theirs = metrics.structural_similarity(
        reference, test, data_range=1.0, gaussian_weights=True, sigma=SSIM_SIGMA, truncate=truncate,
        win_size=SSIM_WINDOW, use_sample_covariance=False, K1=SSIM_K1, K2=SSIM_K2)
    assert 0.2 < ours < 0.99  # a real difference, not 1 against 1
    assert ours == pytest.approx(theirs, abs=TOLERANCE)


@pytest.mark.parametrize("alteration", ALTERATIONS)
def test_training_loss_ssim_equals_evaluation_ssim(alteration):
    pairs = [_pair(alteration, index) for index in SLICES]
    reference = np.stack([p[0] for p in pairs])
    test = np.stack([p[1] for p in pairs])
    evaluation = ssim(reference, test)
    x, y = torch.from_numpy(reference)[:, None], torch.from_numpy(test)[:, None]
    per_image = loss_ssim(x, y, reduction="none")  # the loss's defaults: its own window and constants
    assert per_image.dtype == torch.float64
    np.testing.assert_allclose(per_image.numpy(), evaluation, rtol=0, atol=TOLERANCE)
    assert float(loss_ssim(x, y)) == pytest.approx(float(evaluation.mean()), abs=TOLERANCE)
    # the synthesis loss of training (1 - SSIM) in its float32, against the float64 evaluation
    distance = make_synthesis_distance("ssim")
    assert float(distance(x.float(), y.float())) == pytest.approx(1.0 - float(evaluation.mean()), abs=1e-5)


def test_training_loss_ssim_stays_differentiable():
    reference, test = _pair("blurred+noised", SLICES[0])
    x = _tensor(reference[8:24, 8:24])
    y = _tensor(test[8:24, 8:24]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss_ssim(x, t), (y,), eps=1e-6, atol=1e-6)
    prediction = _tensor(test).float().requires_grad_(True)
    (1.0 - loss_ssim(prediction, _tensor(reference).float())).backward()
    assert prediction.grad is not None and prediction.grad.dtype == torch.float32
    assert bool(torch.isfinite(prediction.grad).all()) and float(prediction.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- VIF
@pytest.mark.parametrize("index", SLICES)
@pytest.mark.parametrize("alteration", ALTERATIONS)
def test_vif_matches_sewar_vifp(alteration, index):
    full_ref = pytest.importorskip("sewar.full_ref", reason="sewar is not installed (pip install sewar, or -e .[test])")
    reference, test = _pair(alteration, index, upsample=2)  # 82x66 pixels
    assert min(reference.shape) >= VIF_MIN_SIZE
    ours = float(vif(reference, test)[0])
    # sewar's vifp works on grey levels as given: the evaluation's 0..255 scale, HVS noise variance 2
    theirs = float(full_ref.vifp(reference * VIF_GREY_LEVELS, test * VIF_GREY_LEVELS, sigma_nsq=VIF_NOISE_VARIANCE))
    assert 0.05 < ours < 0.99
    assert ours == pytest.approx(theirs, abs=TOLERANCE)


def test_vif_is_nan_where_the_fourth_scale_does_not_fit():
    reference, test = _pair("blurred", SLICES[0])  # the original 41x33 slice: 33 < VIF_MIN_SIZE
    assert min(reference.shape) < VIF_MIN_SIZE
    assert np.isnan(vif(reference, test)[0])
