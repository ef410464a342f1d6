"""The numpy engine: slice order and alphas, kept slices, intensities, padding, axes, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SemanticInterpolationLib import (ASIEngine, InputError, IntensityNormalization, OperationCancelled,
                                      output_slice_count, upsample_array)


def expected_linear_mix(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """What the linear probe network must give: linear interpolation of the clipped, normalised slices."""
    norm = IntensityNormalization()
    rng = norm.fit(volume)
    unit = np.moveaxis(norm.to_unit_range(volume, rng).astype(np.float64), axis, 0)
    n = unit.shape[0]
    out = np.empty(((n - 1) * factor + 1, *unit.shape[1:]))
    for s in range(n - 1):
        for i in range(factor):
            alpha = i / factor
            out[s * factor + i] = (1 - alpha) * unit[s] + alpha * unit[s + 1]
    out[-1] = unit[-1]
    return np.moveaxis(out * rng.width + rng.low, 0, axis)


def test_first_new_slice_is_closest_to_the_first_slice_of_the_pair(probe_model) -> None:
    # slice s has the constant value 100 * s: the mix order and every alpha = i/K show directly
    volume = np.stack([np.full((8, 12), 100.0 * s) for s in range(4)]).astype(np.float32)
    norm = IntensityNormalization(0.0, 100.0)  # min/max scaling: no clipping, exact values
    out = ASIEngine(probe_model, "cpu", normalization=norm).upsample(volume, 4, axis=0)
    assert out.shape == (13, 8, 12)
    np.testing.assert_allclose(out[:, 0, 0], 25.0 * np.arange(13), atol=1e-3)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_axis_and_padding_match_linear_latent_mixing(probe_model, rng, axis: int) -> None:
    # 30 x 22 in-plane sizes are not multiples of 4: the engine pads and crops back
    shape = [30, 22, 26]
    shape[axis] = 5
    volume = rng.normal(100.0, 30.0, size=shape).astype(np.float32)
    out = ASIEngine(probe_model, "cpu", batch_size=4).upsample(volume, 3, axis=axis, keep_acquired=False)
    expected = expected_linear_mix(volume, 3, axis)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_acquired_slices_are_kept_bit_exact(random_model, rng) -> None:
    volume = rng.integers(-1000, 3000, size=(6, 20, 24), dtype=np.int16)
    original = volume.copy()
    out = upsample_array(volume, 4, random_model, axis=0, device="cpu")
    assert out.dtype == np.int16 and out.shape == (21, 20, 24)
    assert np.array_equal(out[::4], volume)
    assert np.array_equal(volume, original), "the input is never modified"


def test_reconstruct_option_returns_the_autoencoder_reconstructions(random_model, rng) -> None:
    volume = rng.normal(500.0, 100.0, size=(3, 16, 16)).astype(np.float32)
    out = upsample_array(volume, 2, random_model, axis=0, keep_acquired=False, device="cpu")
    norm = IntensityNormalization()
    intensity_range = norm.fit(volume)
    with torch.no_grad():
        recon = random_model(torch.from_numpy(norm.to_unit_range(volume, intensity_range))[:, None])[:, 0].numpy()
    np.testing.assert_allclose(out[::2], norm.to_input_units(recon, intensity_range), rtol=1e-5, atol=1e-3)
    assert not np.allclose(out[::2], volume), "reconstructions differ from the acquired slices"


def test_intensity_round_trip_in_input_units(probe_model, rng) -> None:
    # the probe reconstructs exactly: output = input for values inside the 1st..99th percentile range,
    # clipped to the range ends outside it
    volume = rng.normal(0.0, 1000.0, size=(4, 16, 20)).astype(np.float32)
    out = ASIEngine(probe_model, "cpu").upsample(volume, 2, axis=0, keep_acquired=False)
    low, high = np.percentile(volume, [1, 99])
    np.testing.assert_allclose(out[::2], np.clip(volume, low, high), rtol=1e-5, atol=0.05)


def test_integer_output_is_rounded_and_clipped(probe_model) -> None:
    volume = np.zeros((2, 8, 8), dtype=np.uint8)
    volume[1] = 255
    norm = IntensityNormalization(0.0, 100.0)
    out = ASIEngine(probe_model, "cpu", normalization=norm).upsample(volume, 3, axis=0)
    assert out.dtype == np.uint8
    assert out[:, 0, 0].tolist() == [0, 85, 170, 255]
    as_float = ASIEngine(probe_model, "cpu", normalization=norm).upsample(volume, 3, axis=0, output_dtype=np.float32)
    np.testing.assert_allclose(as_float[:, 0, 0], [0, 85, 170, 255], atol=1e-3)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batching_equals_unbatched(random_model, rng, batch_size: int) -> None:
    volume = rng.normal(300.0, 80.0, size=(7, 20, 20)).astype(np.float32)
    reference = ASIEngine(random_model, "cpu", batch_size=1000).upsample(volume, 3, axis=0, keep_acquired=False)
    out = ASIEngine(random_model, "cpu", batch_size=batch_size).upsample(volume, 3, axis=0, keep_acquired=False)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-2)


def test_each_slice_is_encoded_once_and_batches_bound_memory(probe_model, rng) -> None:
    volume = rng.normal(size=(11, 8, 8)).astype(np.float32)
    engine = ASIEngine(probe_model, "cpu", batch_size=3)
    engine.upsample(volume, 5, axis=0)
    counted = engine.model  # the engine's own copy of the network
    assert sum(counted.encode_batches) == 11
    assert max(counted.encode_batches) <= 3
    assert sum(counted.decode_batches) == 10 * 4
    assert max(counted.decode_batches) <= 3


def test_the_callers_model_is_left_as_it_was(random_model, rng) -> None:
    """The engine copies the network: mode, memory format and weights of the caller's model stay."""
    random_model.train()
    before = {k: v.clone() for k, v in random_model.state_dict().items()}
    engine = ASIEngine(random_model, "cpu", memory_format="channels_last")
    engine.upsample(rng.normal(size=(3, 16, 16)).astype(np.float32), 2, axis=0)
    assert random_model.training and not engine.model.training
    weight = next(p for p in random_model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in random_model.state_dict().items())


def test_channels_last_gives_the_same_result(random_model, rng) -> None:
    volume = rng.normal(size=(3, 16, 24)).astype(np.float32)
    a = ASIEngine(random_model, "cpu", memory_format="contiguous").upsample(volume, 2, axis=0)
    b = ASIEngine(random_model, "cpu", memory_format="channels_last").upsample(volume, 2, axis=0)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_progress_reaches_total_and_cancel_stops(probe_model, rng) -> None:
    volume = rng.normal(size=(9, 8, 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    ASIEngine(probe_model, "cpu", batch_size=2).upsample(volume, 3, axis=0, progress=lambda d, t: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] == 9 + 8 * 2
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    checks = []
    with pytest.raises(OperationCancelled):
        ASIEngine(probe_model, "cpu", batch_size=2).upsample(
            volume, 3, axis=0, should_cancel=lambda: checks.append(1) or len(checks) > 2)


def test_output_slice_count() -> None:
    assert output_slice_count(12, 4) == 45
    assert output_slice_count(2, 2) == 3


@pytest.mark.parametrize("volume, factor, axis, message", [
    (np.zeros((4, 8)), 2, 0, "3-D"),
    (np.zeros((2, 4, 8, 8)), 2, 0, "3-D"),
    (np.zeros((1, 8, 8)), 2, 0, "at least 2 slices"),
    (np.zeros((4, 8, 8)), 1, 0, "at least 2"),
    (np.zeros((4, 8, 8)), 33, 0, "unreasonably large"),
    (np.zeros((4, 8, 8)), 2.5, 0, "whole number"),
    (np.zeros((4, 8, 8)), 2, 3, "axis"),
    (np.zeros((4, 8, 8), dtype=bool), 2, 0, "real numbers"),
    (np.array([[[0.0, np.nan]] * 2] * 3), 2, 0, "NaN"),
    (np.array([[[0.0, np.inf]] * 2] * 3), 2, 0, "NaN or infinite"),
])
def test_bad_input_is_a_clear_error(probe_model, volume, factor, axis, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ASIEngine(probe_model, "cpu").upsample(volume, factor, axis=axis)


def test_unavailable_device_is_a_clear_error(probe_model) -> None:
    from SemanticInterpolationLib import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path needs a machine without it")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        ASIEngine(probe_model, "cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        ASIEngine(probe_model, "tpu")


def test_residual_synthesis_formula(random_model, rng) -> None:
    """residual = linear mix of the acquired slices + (decoded latent mix - linear mix of reconstructions)."""
    volume = rng.normal(500.0, 120.0, size=(4, 16, 20)).astype(np.float32)
    factor = 3
    plain = ASIEngine(random_model, "cpu", synthesis="plain").upsample(volume, factor, axis=0)
    residual_engine = ASIEngine(random_model, "cpu", synthesis="residual", batch_size=2)
    residual = residual_engine.upsample(volume, factor, axis=0)
    reconstructed = ASIEngine(random_model, "cpu").upsample(volume, factor, axis=0, keep_acquired=False)[::factor]
    for s in range(3):
        for i in range(1, factor):
            a = i / factor
            expected = ((1 - a) * volume[s] + a * volume[s + 1]
                        + plain[s * factor + i] - ((1 - a) * reconstructed[s] + a * reconstructed[s + 1]))
            np.testing.assert_allclose(residual[s * factor + i], expected, rtol=1e-4, atol=0.05)
    assert np.array_equal(residual[::factor], volume)
    assert "residual synthesis" in residual_engine.describe()


def test_residual_with_a_perfect_autoencoder_is_linear_interpolation(probe_model, rng) -> None:
    # the probe reconstructs exactly and mixes linearly: the correction term is zero, even for
    # intensities outside the percentile range, which the residual mode keeps unclipped
    volume = rng.normal(0.0, 1000.0, size=(5, 12, 12)).astype(np.float32)
    engine = ASIEngine(probe_model, "cpu", synthesis="residual")
    out = engine.upsample(volume, 4, axis=0)
    lin = np.stack([(1 - i / 4) * volume[s] + (i / 4) * volume[s + 1] for s in range(4) for i in range(4)] + [volume[4]])
    np.testing.assert_allclose(out, lin, rtol=1e-4, atol=0.5)
    assert sum(engine.model.encode_batches) == 5, "still one encode per acquired slice"


def test_checkpoint_metadata_chooses_the_default_synthesis(tmp_path, random_model) -> None:
    from SemanticInterpolationLib import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", random_model, metadata={"inference": {"synthesis": "residual"}})
    assert ASIEngine(load_checkpoint(path), "cpu").synthesis == "residual"
    assert ASIEngine(load_checkpoint(path), "cpu", synthesis="plain").synthesis == "plain"
    with pytest.raises(InputError, match="synthesis mode"):
        ASIEngine(random_model, "cpu", synthesis="magic")


def test_residual_bspline_adds_the_same_correction_to_cubic_bspline(random_model, rng) -> None:
    from SemanticInterpolationLib.engine.baselines import interpolate_array

    volume = rng.normal(500.0, 120.0, size=(5, 16, 12)).astype(np.float32)
    factor = 3
    linear_anchor = ASIEngine(random_model, "cpu", synthesis="residual").upsample(volume, factor, axis=1)
    bspline_anchor = ASIEngine(random_model, "cpu", synthesis="residual-bspline").upsample(volume, factor, axis=1)
    linear = interpolate_array(volume, 1, factor, "linear")
    bspline = interpolate_array(volume, 1, factor, "bspline")
    # same correction on another base: the outputs differ exactly by (B-spline - linear)
    np.testing.assert_allclose(bspline_anchor - linear_anchor, bspline - linear, rtol=1e-4, atol=0.05)
    assert np.array_equal(np.moveaxis(bspline_anchor, 1, 0)[::factor], np.moveaxis(volume, 1, 0))
