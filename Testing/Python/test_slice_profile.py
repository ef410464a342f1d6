"""The slice-profile input: networks told thickness / spacing, its training samples, and where it comes from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SemanticInterpolationLib.cli import main
from SemanticInterpolationLib.engine.synthesis import ASIEngine
from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig
from SemanticInterpolationLib.training.data import (MIN_THICK_RATIO, Augmentation, GapDataset, TrainingVolume,
                                                    blur_weights)
from SemanticInterpolationLib.upsampling import upsample_image
from SemanticInterpolationLib.volumes.imageio import read_image
from SemanticInterpolationLib.volumes.slice_profile import slice_thickness_from_metadata, slice_thickness_ratio

from test_bad_input_io import write_dicom_series

T1 = Path(__file__).resolve().parents[1] / "Data" / "anatomical_t1_2mm.nii"


def _profile_network(seed: int = 0) -> PairUNet:
    """A pair U-Net with anchor and profile inputs whose profile planes have non-zero weights."""
    torch.manual_seed(seed)
    net = PairUNet(PairUNetConfig(widths=(4, 8), anchor_input=True)).with_thickness_input()
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.5)
        net.down[0][0].weight[:, 4:].normal_(0.0, 1.0)
    return net.eval()


def test_widening_with_the_profile_input_computes_the_same():
    torch.manual_seed(1)
    base = PairUNet(PairUNetConfig(widths=(4, 8), anchor_input=True))
    with torch.no_grad():
        base.head.weight.normal_(0.0, 0.5)
    wide = base.with_thickness_input()
    assert wide.config.thickness_input and wide.config.input_channels == 6 and wide.takes_thickness
    x, y, a = (torch.rand(3, 1, 16, 16) for _ in range(3))
    ref = base(x, y, 0.25, a)
    for thickness in (None, 0.2, torch.tensor([1.0, float("nan"), 0.5])):
        torch.testing.assert_close(wide(x, y, 0.25, a, thickness), ref, rtol=0, atol=0)


def test_profile_planes_reach_the_network_and_nan_means_not_known():
    net = _profile_network()
    x, y, a = (torch.rand(2, 1, 16, 16) for _ in range(3))
    with torch.no_grad():
        thin, thick = net(x, y, 0.5, a, 0.2), net(x, y, 0.5, a, 1.0)
        unknown, nan = net(x, y, 0.5, a, None), net(x, y, 0.5, a, torch.tensor([float("nan")] * 2))
    assert (thin - thick).abs().max() > 1e-3
    torch.testing.assert_close(unknown, nan, rtol=0, atol=0)
    assert (unknown - thin).abs().max() > 1e-3


def test_profile_config_round_trips_through_a_checkpoint(tmp_path):
    net = _profile_network()
    path = save_checkpoint(tmp_path / "p.pt", net, normalization=IntensityNormalization(clip=False))
    loaded = load_checkpoint(path)
    assert loaded.config.thickness_input and loaded.model.takes_thickness
    x, y, a = (torch.rand(1, 1, 16, 16) for _ in range(3))
    torch.testing.assert_close(loaded.model.eval()(x, y, 0.5, a, 0.7), net(x, y, 0.5, a, 0.7))


def _fine_volume() -> TrainingVolume:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(T1))).astype(np.float32)  # [k, j, i] = 25 x 41 x 33
    return TrainingVolume.from_array(np.moveaxis(array, 1, 0), [2.0, 2.0, 2.0], axis=1, name="t1")


def test_thick_samples_are_blurred_with_the_told_thickness():
    volume = _fine_volume()
    dataset = GapDataset([volume], 24, min_gap=4, max_gap=4, augmentation=Augmentation.none(), seed=3,
                         thick_slice_probability=1.0, slice_profile=True, unknown_profile_probability=0.0)
    ratios = []
    for item in range(0, len(dataset), 3):
        patch, alpha, ratio = dataset[item]
        ratio = float(ratio)
        ratios.append(ratio)
        assert MIN_THICK_RATIO <= ratio <= 1.0
        _, first = dataset.index[item]
        offsets, weights = blur_weights(ratio * 4)
        rows = np.clip(first + offsets, 0, volume.n_slices - 1)
        blurred = np.tensordot(weights, volume.slices[rows].astype(np.float64), axes=1)
        # find the patch's place in the blurred slice: the endpoint is that slice, cropped
        found = any(np.allclose(blurred[t:t + 24, l:l + 24], patch[0].numpy(), atol=1e-5)
                    for t in range(volume.slice_shape[0] - 23) for l in range(volume.slice_shape[1] - 23))
        assert found, f"item {item}: endpoint is not the fine volume blurred with FWHM {ratio * 4:.3g} slices"
        middle = volume.slices[first + round(float(alpha) * 4)]
        assert any(np.allclose(middle[t:t + 24, l:l + 24], patch[1].numpy())
                   for t in range(volume.slice_shape[0] - 23) for l in range(volume.slice_shape[1] - 23))
    assert 1.0 in ratios and any(r < 1.0 for r in ratios)  # contiguous thick slices and thinner ones


def test_thin_samples_say_one_over_the_gap_and_withheld_ones_nan():
    volume = _fine_volume()
    thin = GapDataset([volume], 24, min_gap=2, max_gap=6, augmentation=Augmentation.none(),
                      slice_profile=True, unknown_profile_probability=0.0)
    for item in range(0, len(thin), 5):
        patch, alpha, ratio = thin[item]
        gaps = [g for g in range(2, 7) if abs(float(alpha) * g - round(float(alpha) * g)) < 1e-6]
        assert any(abs(float(ratio) - 1.0 / g) < 1e-6 for g in gaps)
    hidden = GapDataset([volume], 24, augmentation=Augmentation.none(), slice_profile=True,
                        unknown_profile_probability=1.0)
    assert all(math.isnan(float(hidden[i][2])) for i in range(0, len(hidden), 7))
    stack = TrainingVolume.from_array(np.moveaxis(sitk.GetArrayFromImage(sitk.ReadImage(str(T1))), 1, 0)
                                      .astype(np.float32), [2.0, 6.0, 2.0], axis=1, name="thick stack")
    real = GapDataset([stack], 24, augmentation=Augmentation.none(), slice_profile=True,
                      unknown_profile_probability=0.0)
    assert all(math.isnan(float(real[i][2])) for i in range(len(real)))  # a real stack's thickness is not known


def test_engine_passes_the_ratio_and_upsample_image_computes_it_from_mm(monkeypatch):
    image = sitk.Cast(sitk.ReadImage(str(T1)), sitk.sitkFloat32)  # spacing 2 mm
    engine = ASIEngine(_profile_network(), "cpu")
    assert engine.takes_slice_profile
    array = sitk.GetArrayViewFromImage(image)
    thin = engine.upsample(array, 2, slice_thickness_ratio=0.5)
    thick = engine.upsample(array, 2, slice_thickness_ratio=1.0)
    unknown = engine.upsample(array, 2)
    assert np.abs(thin - thick).max() > 1e-3 and np.abs(unknown - thin).max() > 1e-3
    np.testing.assert_array_equal(thin[::2], array)  # acquired slices untouched
    via_mm = upsample_image(image, 2, engine=engine, axis=2, slice_thickness=1.0)  # 1 mm / 2 mm = 0.5
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(via_mm), thin, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="at most"):
        engine.upsample(array, 2, slice_thickness_ratio=10.0)
    with pytest.raises(InputError, match="positive"):
        upsample_image(image, 2, engine=engine, slice_thickness=-1.0)


def test_dicom_slice_thickness_is_kept_and_used_only_along_k(tmp_path):
    write_dicom_series(tmp_path / "series", n=6, spacing=2.5)
    image = read_image(tmp_path / "series")
    assert slice_thickness_from_metadata(image) == pytest.approx(2.5)
    assert slice_thickness_ratio(image, 2, "auto") == pytest.approx(1.0)
    assert slice_thickness_ratio(image, 0, "auto") is None  # the DICOM thickness is along k only
    assert slice_thickness_ratio(image, 2, None) is None
    assert slice_thickness_ratio(image, 2, 1.25) == pytest.approx(0.5)
    nifti = sitk.ReadImage(str(T1))
    assert slice_thickness_ratio(nifti, 2, "auto") is None


def test_cli_rejects_a_bad_slice_thickness_before_work(tmp_path, capsys):
    out = tmp_path / "o.nii.gz"
    code = main(["upsample", str(T1), str(out), "--factor", "2", "--method", "linear", "--slice-thickness", "thick"])
    assert code == 1 and not out.exists()  # InputError, like every bad value this command checks
    assert "--slice-thickness" in capsys.readouterr().err


def test_evaluation_passes_the_profile_it_is_asked_to(monkeypatch):
    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation

    seen = []
    original = ASIEngine.upsample

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("slice_thickness_ratio"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ASIEngine, "upsample", spy)
    image = sitk.ReadImage(str(T1))
    engine = ASIEngine(_profile_network(), "cpu")
    for thick, profile, expected in ((False, "told", [0.5, 1 / 3]), (True, "told", [1.0, 1.0]),
                                     (True, "unknown", [None, None])):
        seen.clear()
        run_evaluation({"t1": image}, EvaluationSettings(factors=(2, 3), methods=("asi",), thick_slices=thick,
                                                         slice_profile=profile), engine=engine)
        assert seen == (pytest.approx(expected) if None not in expected else expected)
    seen.clear()  # auto: estimated from the thinned volume (a thin, thick or withheld profile)
    run_evaluation({"t1": image}, EvaluationSettings(factors=(2, 3), methods=("asi",), slice_profile="auto"),
                   engine=engine)
    assert seen[0] in (None, 0.5, 1.0) and seen[1] in (None, pytest.approx(1 / 3), 1.0)
    with pytest.raises(InputError, match="slice profile"):
        EvaluationSettings(factors=(2,), slice_profile="dicom").validated()


def test_the_evaluation_report_notes_the_estimate_once_per_volume_and_factor():
    """With ``--slice-profile auto`` the report says what the network was told; asi and asi+adapt share one
    engine, whose estimate (made with its own weights before adaptation) is noted once, under asi."""
    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation

    image = sitk.ReadImage(str(T1))
    engine = ASIEngine(_profile_network(), "cpu")
    asked, estimate = [], engine.estimate_slice_profile
    engine.estimate_slice_profile = lambda volume, factor, axis=0: asked.append(factor) or estimate(volume, factor, axis)
    result = run_evaluation({"t1": image}, EvaluationSettings(factors=(2, 3), methods=("asi",), slice_profile="auto",
                                                              adapt_seconds=30.0, adapt_steps=1), engine=engine)
    assert asked == [2, 3]  # once per K, not again for asi+adapt
    noted = [note for note in result.notes if "slice profile estimated from the scan" in note]
    assert [note.split(":")[0] for note in noted] == ["t1 K=2 asi", "t1 K=3 asi"]
    assert all("prediction error of" in note and "pair-flip views" in note for note in noted)
    told = run_evaluation({"t1": image}, EvaluationSettings(factors=(2,), methods=("asi",), slice_profile="told"),
                          engine=engine)
    assert not any("slice profile estimated" in note for note in told.notes)  # told: nothing was estimated


class _TwoWorldModel(torch.nn.Module):
    """Stands in for a profile network: a constant slice per told profile (thin: ratio < 0.5)."""

    needs_anchor = False
    takes_thickness = True

    def __init__(self, thin_value: float, thick_value: float) -> None:
        super().__init__()
        self.config = PairUNetConfig(widths=(4, 8))
        self.values = (thin_value, thick_value)
        self.told = []

    def synthesize(self, first, second, alpha, thickness=None):
        self.told.append(thickness)
        return torch.full_like(first, self.values[1] if thickness >= 0.5 else self.values[0])


@pytest.mark.parametrize("thin_value, thick_value, choice", [(0.5, 0.9, "thin"), (0.9, 0.5, "thick"),
                                                            (0.49, 0.5099, "unknown")])
def test_estimate_takes_the_hypothesis_that_predicts_the_acquired_slices(thin_value, thick_value, choice):
    from SemanticInterpolationLib.engine.profile_estimate import estimate_slice_profile

    slices = np.full((9, 20, 20), 0.5, dtype=np.float32)
    model = _TwoWorldModel(thin_value, thick_value)
    estimate = estimate_slice_profile(model, slices, 4)
    assert estimate.choice == choice
    assert estimate.ratio == {"thin": 0.25, "thick": 1.0, "unknown": None}[choice]
    assert set(model.told) == {1 / 8, 0.5}  # thin: thickness / gap of two spacings = 1 / (2K)
    assert estimate_slice_profile(model, slices[:4], 4) is None  # too few slices


class _OrderSensitiveModel(torch.nn.Module):
    """Thin hypothesis: the first slice of the pair, so only the mean over both orders predicts the middle
    slice of a linear ramp; thick hypothesis: the linear mix 0.01 too bright (the same error in every view)."""

    supports_test_time_augmentation = True

    def __init__(self) -> None:
        super().__init__()
        self.config = PairUNetConfig(widths=(4, 8))
        self.calls = 0

    def synthesize(self, first, second, alpha, thickness=None):
        self.calls += 1
        return first.clone() if thickness < 0.5 else (1 - alpha) * first + alpha * second + 0.01


@pytest.mark.parametrize("plain, views, agreed", [("thick", "thick", "thick"), ("thin", "thin", "thin"),
                                                  ("thick", "thin", "unknown"), ("thin", "unknown", "unknown"),
                                                  ("unknown", "unknown", "unknown")])
def test_the_rule_of_agreement_takes_a_side_only_when_both_comparisons_do(plain, views, agreed):
    from SemanticInterpolationLib.engine.profile_estimate import agreed_choice, hypothesis_choice

    assert agreed_choice(plain, views) == agreed
    assert hypothesis_choice(1.0, 0.96) == "thick" and hypothesis_choice(1.0, 0.98) == "unknown"
    assert hypothesis_choice(1.0, 1.0) == "thin"


def test_the_estimate_declines_when_the_plain_and_the_view_comparisons_disagree():
    from SemanticInterpolationLib.engine.profile_estimate import estimate_slice_profile

    ramp = (0.3 + 0.05 * np.arange(9, dtype=np.float32))[:, None, None] * np.ones((1, 16, 16), np.float32)
    model = _OrderSensitiveModel()
    estimate = estimate_slice_profile(model, ramp, 2)
    # plain: thin predicts slice i from i - 1 (error 0.05 ** 2) -> thick (0.01 ** 2); views: thin exact -> thin
    np.testing.assert_allclose([estimate.thin_error, estimate.thick_error, estimate.view_thick_error],
                               [0.05 ** 2, 0.01 ** 2, 0.01 ** 2], rtol=1e-4)
    assert estimate.view_thin_error < 1e-12
    assert (estimate.choice, estimate.ratio) == ("unknown", None)
    assert "thick" in estimate.summary() and "pair-flip views" in estimate.summary()
    assert model.calls == estimate.slices_tested * (1 + 9) * (1 + 4)  # each hypothesis plain and in 4 views


def test_upsample_image_uses_an_estimate_it_is_given_instead_of_estimating_again(monkeypatch):
    from SemanticInterpolationLib.engine.profile_estimate import ProfileEstimate

    image = sitk.Cast(sitk.ReadImage(str(T1)), sitk.sitkFloat32)
    engine = ASIEngine(_profile_network(), "cpu")
    array = sitk.GetArrayViewFromImage(image)
    given = ProfileEstimate("thick", 1.0, 0.2, 0.1, 5)

    def no_estimate(*args, **kwargs):
        raise AssertionError("estimated again")

    monkeypatch.setattr(ASIEngine, "estimate_slice_profile", no_estimate)
    out = upsample_image(image, 2, engine=engine, axis=2, profile_estimate=given)
    assert engine.profile_estimate is given
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), engine.upsample(array, 2, slice_thickness_ratio=1.0))
    upsample_image(image, 2, engine=engine, axis=2, slice_thickness=2.0, profile_estimate=given)  # a thickness wins
    assert engine.profile_estimate is None


def test_upsample_image_estimates_the_profile_only_when_nothing_says_it():
    image = sitk.Cast(sitk.ReadImage(str(T1)), sitk.sitkFloat32)
    engine = ASIEngine(_profile_network(), "cpu")
    upsample_image(image, 2, engine=engine, axis=2)
    assert engine.profile_estimate is not None and engine.profile_estimate.slices_tested > 0
    upsample_image(image, 2, engine=engine, axis=2, slice_thickness=2.0)
    assert engine.profile_estimate is None
    upsample_image(image, 2, engine=engine, axis=2, slice_thickness=None)
    assert engine.profile_estimate is None


def test_profile_margins_script_reports_each_checkpoints_estimate_and_refuses_a_network_without_the_input(tmp_path):
    """Resources/Scripts/profile_margins.py: its margins and choices are those of the engine's estimate on the
    thinned and the thick-slice copies of the volume; a network without the profile input is refused."""
    import importlib.util
    import subprocess
    import sys

    from SemanticInterpolationLib.evaluation.simulate import simulate_thick_slices
    from SemanticInterpolationLib.models.normalization import IntensityNormalization
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

    script = Path(__file__).resolve().parents[2] / "Resources" / "Scripts" / "profile_margins.py"
    spec = importlib.util.spec_from_file_location("profile_margins", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = PairUNet(PairUNetConfig(widths=(4, 8), anchor_input=True, thickness_input=True))
    with torch.no_grad():  # answers that depend on the told profile
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.05)
    profile = save_checkpoint(tmp_path / "profile.pt", net, normalization=IntensityNormalization(clip=False))
    image = sitk.ReadImage(str(T1))
    rows = module.profile_margins(image, [profile], [2])
    assert [(r["factor"], r["truth"]) for r in rows] == [(2, "thin"), (2, "thick")]
    engine = ASIEngine(load_checkpoint(profile), "cpu", test_time_augmentation="none")
    for row, thick in zip(rows, (False, True)):
        low = sitk.GetArrayFromImage(simulate_thick_slices(image, 2, 2, thick).low).astype(np.float32)  # [k, j, i]
        direct = engine.estimate_slice_profile(low, 2, 0)
        assert row["plain_margin"] == pytest.approx((direct.thin_error - direct.thick_error) / direct.thin_error)
        assert row["view_margin"] == pytest.approx((direct.view_thin_error - direct.view_thick_error)
                                                   / direct.view_thin_error)
        assert row["choice"] == direct.choice and abs(row["plain_margin"]) > 1e-6  # not the linear mix
    plain = save_checkpoint(tmp_path / "plain.pt", PairUNet(PairUNetConfig(widths=(4, 8))),
                            normalization=IntensityNormalization(clip=False))
    done = subprocess.run([sys.executable, str(script), str(T1), str(plain), "--factors", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no slice-profile input" in done.stderr
