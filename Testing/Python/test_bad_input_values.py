"""Issue 14 item 10 and the upsample_image input messages: integer volumes beyond float precision and
images or arguments the engine cannot take (label maps, numpy arrays, bad dtype names)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SemanticInterpolationLib import ASIEngine, InputError, upsample_image
from SemanticInterpolationLib.models.pair_unet import PairUNet


def smooth_integers(shape=(5, 16, 16), amplitude=1000, seed=0) -> np.ndarray:
    """Smooth int64 values from 0 to about ``amplitude`` ([k, j, i])."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    values = amplitude * (0.5 + 0.4 * np.sin(3 * k + 2 * j) * np.cos(4 * i)) + rng.normal(0, 5, shape)
    return np.clip(np.rint(values), 0, amplitude).astype(np.int64)


def trained_like_pair_unet() -> PairUNet:
    """A pair U-Net whose correction is not zero (so the network's output matters)."""
    torch.manual_seed(0)
    model = PairUNet()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.05)
    return model


# dtype, offset: values offset + [0, ~1000] (an int32 scanner offset; int64/uint64 at their limits)
LARGE_OFFSETS = [
    (np.int32, 1_000_000_000),
    (np.int32, -2_147_483_648),
    (np.int64, 2 ** 63 - 1 - 1000),
    (np.int64, -(2 ** 63)),
    (np.uint64, 2 ** 64 - 1 - 1000),
    (np.uint32, 2 ** 32 - 1 - 1000),
]


@pytest.mark.parametrize("dtype,offset", LARGE_OFFSETS)
@pytest.mark.parametrize("method", ["linear", "bspline", "asi"])
def test_integer_volumes_with_large_offsets_are_computed_exactly(dtype, offset, method) -> None:
    small = smooth_integers()
    large = (small.astype(object) + offset).astype(dtype)  # exact: Python integers
    if method == "asi":
        engine = ASIEngine(trained_like_pair_unet(), "cpu", batch_size=4)
        reference = engine.upsample(small, 2, axis=0)  # int64, values 0..1000: exact in float32
        result = engine.upsample(large, 2, axis=0)
    else:
        reference = sitk.GetArrayFromImage(upsample_image(sitk.GetImageFromArray(small), 2, method))
        result = sitk.GetArrayFromImage(upsample_image(sitk.GetImageFromArray(large), 2, method))
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result[::2], large)  # acquired slices bit-exact
    difference = result.astype(object) - offset - reference.astype(object)  # exact integer arithmetic
    assert max(abs(int(d)) for d in difference.ravel()) <= 1, (method, dtype, offset)


def test_integer_volume_whose_range_floats_cannot_hold_is_refused() -> None:
    volume = np.zeros((3, 8, 8), dtype=np.int64)
    volume[1] = 2 ** 62
    volume[2] = -(2 ** 62)
    with pytest.raises(InputError, match=r"range of 9223372036854775808 \(more than 2\^53\)"):
        upsample_image(sitk.GetImageFromArray(volume), 2, "linear")
    with pytest.raises(InputError, match="more than 2"):
        ASIEngine(PairUNet(), "cpu").upsample(volume, 2)


def test_integer_output_never_wraps_at_the_type_limits() -> None:
    """Interpolation overshoot (Lanczos ringing) next to the type's maximum is clipped, not wrapped."""
    volume = np.full((4, 8, 8), 2 ** 63 - 1, dtype=np.int64)
    volume[1] = 2 ** 63 - 1 - 10 ** 9
    result = sitk.GetArrayFromImage(upsample_image(sitk.GetImageFromArray(volume), 2, "lanczos"))
    assert result.min() >= 2 ** 63 - 1 - 2 * 10 ** 9  # no wrap-around to negative values
    np.testing.assert_array_equal(result[::2], volume)


# ------------------------------------------------------------------ 16: label maps and other pixel types
def label_map() -> sitk.Image:
    labels = sitk.GetImageFromArray((np.arange(4 * 8 * 8).reshape(4, 8, 8) % 3).astype(np.uint8))
    return sitk.LabelImageToLabelMap(labels)


@pytest.mark.parametrize("make", ["label map", "vector", "complex", "rgb"])
def test_images_that_are_not_scalar_are_refused_clearly(make: str) -> None:
    scalar = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32))
    image = {"label map": label_map,
             "vector": lambda: sitk.Compose(scalar, scalar),
             "complex": lambda: sitk.RealAndImaginaryToComplex(scalar, scalar),
             "rgb": lambda: sitk.Compose(*[sitk.Cast(scalar * 255, sitk.sitkUInt8)] * 3)}[make]()
    with pytest.raises(InputError) as info:
        upsample_image(image, 2, "linear")
    if make == "label map":
        assert "LabelMapToLabel" in str(info.value)


def test_a_label_map_does_not_abort_the_interpreter() -> None:
    """The label map used to end the process (C++ terminate): run it in a child and look at the exit."""
    import subprocess
    import sys

    code = ("import SimpleITK as sitk, numpy as np\n"
            "from SemanticInterpolationLib import upsample_image, InputError\n"
            "labels = sitk.GetImageFromArray((np.arange(256).reshape(4, 8, 8) % 3).astype(np.uint8))\n"
            "try:\n    upsample_image(sitk.LabelImageToLabelMap(labels), 2, 'linear')\n"
            "except InputError as exc:\n    print('refused:', exc)\n")
    import os

    import SemanticInterpolationLib
    from pathlib import Path

    path = str(Path(SemanticInterpolationLib.__file__).parents[1])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr


def test_upsample_image_with_a_numpy_array_says_to_make_an_image() -> None:
    array = np.zeros((4, 8, 8), dtype=np.float32)
    with pytest.raises(InputError, match="GetImageFromArray"):
        upsample_image(array, 2, "linear")
    with pytest.raises(InputError, match="SimpleITK image"):
        upsample_image("scan.nii.gz", 2, "linear")


def test_a_bad_output_dtype_name_is_an_input_error() -> None:
    volume = np.zeros((4, 8, 8), dtype=np.float32)
    with pytest.raises(InputError, match="not a numpy type name"):
        ASIEngine(PairUNet(), "cpu").upsample(volume, 2, output_dtype="int9")
    with pytest.raises(InputError, match="output type must be one of"):
        upsample_image(sitk.GetImageFromArray(volume), 2, "linear", output_type="int9")
