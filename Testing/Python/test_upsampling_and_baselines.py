"""Image-level upsampling: geometry of the output grid, axes, pixel types, and the SimpleITK baselines."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import OBLIQUE_ANISO, T1_2MM
from SemanticInterpolationLib import ASIEngine, InputError
from SemanticInterpolationLib.engine.baselines import BASELINE_METHODS, interpolate_array, interpolate_baseline
from SemanticInterpolationLib.volumes.geometry import choose_slice_axis, parse_axis
from SemanticInterpolationLib.upsampling import METHODS, upsample_image


@pytest.fixture(scope="module")
def oblique() -> sitk.Image:
    return sitk.ReadImage(str(OBLIQUE_ANISO))


def _engine(model) -> ASIEngine:
    return ASIEngine(model, "cpu")


@pytest.mark.parametrize("method", METHODS)
def test_all_methods_give_identical_grids_that_keep_oblique_scans_in_place(oblique, random_model, method) -> None:
    factor = 3
    out = upsample_image(oblique, factor, method, engine=_engine(random_model))
    assert out.GetSize() == (58, 58, (24 - 1) * factor + 1)
    assert out.GetSpacing() == pytest.approx((4.0, 4.0, 5.0 / factor))
    assert out.GetOrigin() == oblique.GetOrigin()
    assert out.GetDirection() == oblique.GetDirection()
    assert out.GetPixelID() == oblique.GetPixelID()
    # acquired slice s sits at output slice s*K, at the same physical point, with the same voxels
    for s in (0, 7, 23):
        assert out.TransformIndexToPhysicalPoint((5, 9, s * factor)) == pytest.approx(
            oblique.TransformIndexToPhysicalPoint((5, 9, s)), abs=1e-6)
    a, b = sitk.GetArrayViewFromImage(oblique), sitk.GetArrayViewFromImage(out)
    assert np.array_equal(b[::factor], a)


def test_auto_axis_is_the_largest_spacing_and_every_axis_works(random_model) -> None:
    t1 = sitk.ReadImage(str(T1_2MM))  # 33 x 41 x 25, isotropic 2 mm
    for axis in (0, 1, 2):
        spacing = [2.0, 2.0, 2.0]
        spacing[axis] = 6.0
        image = sitk.Image(t1)
        image.SetSpacing(spacing)
        out = upsample_image(image, 2, "asi", engine=_engine(random_model))
        size = list(image.GetSize())
        size[axis] = (size[axis] - 1) * 2 + 1
        assert out.GetSize() == tuple(size)
        expected_spacing = list(spacing)
        expected_spacing[axis] = 3.0
        assert out.GetSpacing() == pytest.approx(expected_spacing)
        explicit = upsample_image(t1, 2, "linear", axis=str(axis))
        assert explicit.GetSize() == tuple(size)


def test_axis_choice_rules() -> None:
    assert choose_slice_axis((0.8, 0.8, 6.5)) == 2
    assert choose_slice_axis((5.0, 1.0, 1.0)) == 0
    assert choose_slice_axis((1.0, 1.0, 1.0)) == 2, "isotropic: the k axis"
    assert choose_slice_axis((1.0, 1.0, 7.0)) == 2
    assert parse_axis("auto", (1, 1, 3)) == 2 and parse_axis("1", (1, 1, 3)) == 1
    with pytest.raises(InputError, match="0 = i/x"):
        parse_axis("z", (1, 1, 1))


def test_float32_output_type(oblique, random_model) -> None:
    out = upsample_image(oblique, 2, "bspline", output_type="float32")
    assert out.GetPixelID() == sitk.sitkFloat32
    out = upsample_image(oblique, 2, "asi", output_type="float32", engine=_engine(random_model))
    assert out.GetPixelID() == sitk.sitkFloat32


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_linear_on_a_linear_ramp_is_exact(axis: int) -> None:
    shape = [6, 7, 8]
    ramp = np.zeros(shape)
    ramp += np.moveaxis(np.arange(shape[axis], dtype=float)[:, None, None] * 10.0, 0, axis)
    out = interpolate_array(ramp, axis, 4, "linear")
    expected_line = np.arange((shape[axis] - 1) * 4 + 1) * 2.5
    np.testing.assert_allclose(np.moveaxis(out, axis, 0), np.broadcast_to(
        expected_line[:, None, None], np.moveaxis(out, axis, 0).shape), atol=1e-9)


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_baselines_keep_samples_and_constants(method: str, rng) -> None:
    volume = rng.normal(size=(5, 6, 7))
    out = interpolate_array(volume, 0, 3, method)
    np.testing.assert_allclose(out[::3], volume, atol=1e-6)
    constant = interpolate_array(np.full((4, 3, 3), 7.5), 0, 5, method)
    # ITK's windowed sinc does not normalise its weights: a ripple of about 0.1 % between samples
    np.testing.assert_allclose(constant, 7.5, rtol=2e-3 if method == "lanczos" else 1e-9)


def test_bspline_is_not_linear_and_lanczos_is_not_bspline(rng) -> None:
    volume = rng.normal(size=(8, 4, 4))
    results = {m: interpolate_array(volume, 0, 2, m) for m in BASELINE_METHODS}
    assert not np.allclose(results["linear"], results["bspline"], atol=1e-3)
    assert not np.allclose(results["bspline"], results["lanczos"], atol=1e-3)


def test_baseline_matches_a_full_3d_simpleitk_resampling(oblique) -> None:
    from SemanticInterpolationLib.engine.baselines import INTERPOLATORS, upsampled_reference

    for method in BASELINE_METHODS:
        fast = sitk.GetArrayFromImage(interpolate_baseline(oblique, 2, 2, method))
        full = sitk.GetArrayFromImage(sitk.Resample(
            sitk.Cast(oblique, sitk.sitkFloat64), upsampled_reference(oblique, 2, 2), sitk.Transform(),
            INTERPOLATORS[method], 0.0, sitk.sitkFloat64, True))
        np.testing.assert_allclose(fast, full, atol=1e-5)


def test_image_input_is_not_modified(oblique, random_model) -> None:
    before = sitk.GetArrayFromImage(oblique).copy()
    geometry = (oblique.GetOrigin(), oblique.GetSpacing(), oblique.GetDirection())
    upsample_image(oblique, 2, "asi", engine=_engine(random_model), keep_acquired=False)
    assert np.array_equal(sitk.GetArrayFromImage(oblique), before)
    assert (oblique.GetOrigin(), oblique.GetSpacing(), oblique.GetDirection()) == geometry


def _image(array: np.ndarray, **kwargs) -> sitk.Image:
    image = sitk.GetImageFromArray(array, **kwargs)
    return image


@pytest.mark.parametrize("image, message", [
    (_image(np.zeros((8, 8), np.float32)), "2-D"),
    (sitk.JoinSeries([_image(np.zeros((4, 8, 8), np.float32))] * 3), "4-D.*frames"),
    (_image(np.zeros((4, 8, 8, 3), np.uint8), isVector=True), "vector or RGB"),
    (_image(np.full((4, 8, 8), np.nan, np.float32)), "NaN"),
])
def test_bad_images_are_clear_errors(image: sitk.Image, message: str) -> None:
    with pytest.raises(InputError, match=message):
        upsample_image(image, 2, "linear")


@pytest.mark.parametrize("axis", ["auto", 2])
def test_one_slice_along_the_axis_is_a_clear_error(axis) -> None:
    image = _image(np.zeros((1, 8, 8), np.int16))  # k has one thick slice
    image.SetSpacing((1.0, 1.0, 5.0))
    with pytest.raises(InputError, match="at least 2 slices"):
        upsample_image(image, 2, "linear", axis=axis)


def test_unknown_method_is_a_clear_error(oblique) -> None:
    with pytest.raises(InputError, match="unknown method"):
        upsample_image(oblique, 2, "nearest")


@pytest.mark.parametrize("method", ["linear", "bspline", "lanczos"])
def test_chunked_interpolation_equals_the_whole_volume_at_once(method) -> None:
    """The engine's B-spline anchor is computed in chunks of in-plane voxels (bounded temporaries):
    the values must be those of one call on the whole volume, for every chunk size."""
    from SemanticInterpolationLib.engine.baselines import interpolate_array, interpolate_slices

    rng = np.random.default_rng(5)
    volume = rng.normal(100.0, 30.0, size=(7, 9, 11)).astype(np.float32)
    whole = interpolate_array(volume, 0, 3, method)
    for chunk in (1, 7, 50, 10_000):
        chunked = interpolate_slices(volume, 3, method, dtype=np.float32, chunk_voxels=chunk)
        assert chunked.dtype == np.float32 and chunked.shape == whole.shape
        np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-4)
