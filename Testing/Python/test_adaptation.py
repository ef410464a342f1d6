"""Adaptation to the scan being upsampled (``adapt=`` / ``--adapt``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import T1_2MM, file_digest
from SemanticInterpolationLib import ASIEngine, InputError, OperationCancelled, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet
from SemanticInterpolationLib.training.adaptation import adapt_engine
from SemanticInterpolationLib.upsampling import upsample_image


@pytest.fixture
def pair_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = PairUNet()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.02)
    return save_checkpoint(tmp_path / "pair.pt", model, normalization=IntensityNormalization(clip=False))


def _volume() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)  # [25, 41, 33]


def _weights(engine: ASIEngine) -> list[torch.Tensor]:
    return [t.detach().clone() for t in engine.model.state_dict().values()]


def test_bad_input_is_refused_before_any_work(pair_checkpoint, random_checkpoint):
    volume = _volume()
    with pytest.raises(InputError, match="adaptation is available for pair-unet, profile-routed models; this checkpoint is a asi"):
        adapt_engine(ASIEngine(load_checkpoint(random_checkpoint), "cpu"), volume, seconds=5)
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    with pytest.raises(InputError, match="at least 4 acquired slices"):
        adapt_engine(engine, volume[:3], seconds=5)
    with pytest.raises(InputError, match="slices of at least 16x16"):
        adapt_engine(engine, volume[:, :12, :12], seconds=5)
    with pytest.raises(InputError, match="number of seconds above 0"):
        adapt_engine(engine, volume, seconds=0)


def test_deterministic_with_a_seed_and_a_step_budget(pair_checkpoint):
    volume = _volume()
    runs = []
    for _ in range(2):
        engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
        report = adapt_engine(engine, volume, seconds=600, max_steps=6, seed=3, learning_rate=1e-3,
                              min_gain_db=-100.0, check_every=3)
        runs.append((report, _weights(engine)))
    (first, w1), (second, w2) = runs
    assert first.steps == second.steps == 6 and first.accepted and second.accepted
    assert first.after_psnr == second.after_psnr and first.held_out_slices == second.held_out_slices
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))


def test_declined_adaptation_keeps_the_original_weights_and_says_why(pair_checkpoint):
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    before = _weights(engine)
    report = adapt_engine(engine, _volume(), seconds=600, max_steps=4, learning_rate=1e-3, min_gain_db=100.0,
                          check_every=2)
    assert not report.accepted and "discarded" in report.reason and "kept the original model" in report.summary()
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))


def test_kept_adaptation_scores_better_on_held_out_slices_and_restore_undoes_it(pair_checkpoint):
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    before = _weights(engine)
    report = adapt_engine(engine, _volume(), seconds=600, max_steps=30, learning_rate=1e-3, check_every=5,
                          min_gain_db=0.0)
    # the linear and B-spline scores are on the same held-out slices
    assert np.isfinite([report.linear_psnr, report.bspline_psnr, report.before_psnr]).all()
    if report.accepted:
        assert report.after_psnr >= report.before_psnr and report.after_ssim >= report.before_ssim
        assert not all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))
    engine.restore()
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))


def test_upsample_image_with_adapt_never_changes_the_checkpoint_or_the_reused_engine(pair_checkpoint, tmp_path):
    digest = file_digest(pair_checkpoint)
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    before = _weights(engine)
    image = sitk.ReadImage(str(T1_2MM))
    saved = tmp_path / "adapted.pt"
    result = upsample_image(image, 2, engine=engine, adapt=600, adapt_steps=10, save_adapted=saved)
    assert result.GetSize()[2] == 49 and engine.adaptation is not None
    assert saved.is_file() == engine.adaptation.accepted
    assert file_digest(pair_checkpoint) == digest
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))
    with pytest.raises(InputError, match="learned method only"):
        upsample_image(image, 2, "linear", adapt=5)


def test_cancelled_adaptation_raises_and_restores(pair_checkpoint):
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    before = _weights(engine)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(OperationCancelled):
        upsample_image(sitk.ReadImage(str(T1_2MM)), 2, engine=engine, adapt=600, should_cancel=cancel)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))


def test_cli_adapt_and_evaluate_adapt(pair_checkpoint, tmp_path):
    from SemanticInterpolationLib.cli import main

    out = tmp_path / "up.nii.gz"
    assert main(["upsample", str(T1_2MM), str(out), "-k", "2", "--checkpoint", str(pair_checkpoint), "--device", "cpu",
                 "--adapt", "60", "--adapt-steps", "3"]) == 0
    assert out.is_file()
    assert main(["upsample", str(T1_2MM), str(tmp_path / "x.nii.gz"), "-k", "2", "--method", "linear",
                 "--adapt", "5"]) == 1
    pytest.importorskip("scipy", reason="evaluate needs scipy")
    pytest.importorskip("matplotlib", reason="evaluate needs matplotlib")
    report = tmp_path / "eval"
    assert main(["evaluate", str(T1_2MM), "--checkpoint", str(pair_checkpoint), "--methods", "asi,linear",
                 "--factors", "2", "--adapt", "60", "--adapt-steps", "2", "--device", "cpu", "-o", str(report)]) == 0
    summary = (report / "summary.csv").read_text(encoding="utf-8")
    assert "asi+adapt" in summary
    assert "adaptation:" in (report / "summary.md").read_text(encoding="utf-8")


def test_adaptation_of_a_network_with_the_bspline_anchor_input(pair_checkpoint):
    wide = load_checkpoint(pair_checkpoint).model.with_anchor_input()
    engine = ASIEngine(wide, "cpu", normalization=IntensityNormalization(clip=False))
    before = _weights(engine)
    report = adapt_engine(engine, _volume(), seconds=600, max_steps=4, learning_rate=1e-3, check_every=2,
                          min_gain_db=100.0)
    assert report.steps == 4 and not report.accepted
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))


def test_a_slice_profile_network_is_told_half_the_scans_ratio_on_its_two_spacing_triplets(pair_checkpoint, tmp_path):
    """The scan's triplets span two spacings, so a network with the slice-profile input is told thickness / (2 x
    spacing); the told value changes the adaptation's scores, and upsample_image passes the profile it tells."""
    torch.manual_seed(1)
    net = load_checkpoint(pair_checkpoint).model.with_anchor_input().with_thickness_input()
    with torch.no_grad():
        net.down[0][0].weight[:, -2:].normal_(0.0, 1.0)  # let the profile planes matter
    engine = ASIEngine(net, "cpu", normalization=IntensityNormalization(clip=False))
    volume = _volume()
    told = {}
    real_synthesize = engine.model.synthesize

    def recording(first, second, alpha, anchor=None, thickness=None):
        told.setdefault("thickness", thickness)
        return real_synthesize(first, second, alpha, anchor, thickness)

    engine.model.synthesize = recording
    report = adapt_engine(engine, volume, seconds=600, max_steps=2, check_every=1, thickness_ratio=1.0)
    assert told["thickness"] == 0.5 and report.settings["thickness_ratio"] == 1.0
    engine.restore()
    unknown = adapt_engine(engine, volume, seconds=600, max_steps=2, check_every=1)
    engine.restore()
    del engine.model.synthesize
    assert report.before_psnr != unknown.before_psnr  # the told profile reached the held-out check

    seen = []
    from SemanticInterpolationLib.training import adaptation

    real = adaptation.adapt_engine
    image = sitk.ReadImage(str(T1_2MM))
    try:
        adaptation.adapt_engine = lambda *a, **k: seen.append(k["thickness_ratio"]) or real(*a, **k)
        upsample_image(image, 2, engine=engine, adapt=600, adapt_steps=1, slice_thickness=image.GetSpacing()[2] / 2)
    finally:
        adaptation.adapt_engine = real
    assert seen == [pytest.approx(0.5)]


def test_above_the_largest_adapted_factor_nothing_is_trained_and_the_report_says_why(pair_checkpoint, caplog):
    """The scan's triplets are 2 K new-slice gaps wide: above K = 3 (gaps beyond the training's 2-6) the model
    is used as it is, with a warning and a report that holds its held-out scores."""
    engine = ASIEngine(load_checkpoint(pair_checkpoint), "cpu")
    before = _weights(engine)
    with caplog.at_level("WARNING", logger="SemanticInterpolation"):
        ran = adapt_engine(engine, _volume(), seconds=600, max_steps=1, factor=3, min_gain_db=-100.0, check_every=1)
        assert ran.steps == 1 and not [r for r in caplog.records if "not run" in r.getMessage()]
        engine.restore()
        skipped = adapt_engine(engine, _volume(), seconds=600, max_steps=1, factor=4, min_gain_db=-100.0)
    assert skipped.steps == 0 and not skipped.accepted and skipped.settings["factor"] == 4
    assert "not run for K = 4" in skipped.reason and "8 new-slice gaps" in skipped.reason
    assert skipped.after_psnr == skipped.before_psnr == ran.before_psnr
    assert any("not run for K = 4" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(engine)))
    wider = adapt_engine(engine, _volume(), seconds=600, max_steps=1, factor=4, largest_factor=4)
    assert wider.steps == 1
    engine.restore()


def test_thick_slices_are_predicted_as_the_profile_mean_of_the_sharp_slices_around_them(pair_checkpoint):
    """Told thick slices (thickness / spacing >= 0.75), the adaptation's target is the acquired slice as the
    slice profile's weighted mean of new slices at nine positions between its neighbours (told half the ratio
    against the pair's two spacings), for training and for the held-out check; thinner slices keep the middle."""
    from SemanticInterpolationLib.engine.profile_estimate import (THICK_POSITIONS, lattice_anchor, lattice_bsplines,
                                                                 profile_weights)
    from SemanticInterpolationLib.training.data import pad_to_multiple
    from SemanticInterpolationLib.training.losses import psnr

    torch.manual_seed(2)
    net = load_checkpoint(pair_checkpoint).model.with_anchor_input().with_thickness_input()
    with torch.no_grad():
        net.down[0][0].weight.normal_(0.0, 0.3)  # an answer that depends on alpha, the anchor and the profile
    engine = ASIEngine(net, "cpu", normalization=IntensityNormalization(clip=False))
    volume = _volume()
    report = adapt_engine(engine, volume, seconds=600, max_steps=1, check_every=1, thickness_ratio=1.0)
    assert report.settings["target"] == "slice-profile mean of 9 new slices"
    engine.restore()
    unit = engine.normalization.to_unit_range(volume, engine.normalization.fit(volume)).astype(np.float32)
    held = report.held_out_slices
    lattices = lattice_bsplines(unit)
    h, w = unit.shape[1:]

    def predicted(alphas, weights) -> torch.Tensor:
        stack = lambda rows: torch.from_numpy(pad_to_multiple(np.stack(rows), engine.size_multiple)).unsqueeze(1)  # noqa: E731
        total = 0
        with torch.no_grad():
            for alpha, weight in zip(alphas, weights):
                out = engine.model.synthesize(stack([unit[m - 1] for m in held]), stack([unit[m + 1] for m in held]),
                                              float(alpha), stack([lattice_anchor(lattices, m - 1, alpha) for m in held]),
                                              0.5)
                total = total + weight * out.float()[..., :h, :w]
        return total

    truth = torch.from_numpy(unit[held]).unsqueeze(1)
    profile = predicted(0.5 + THICK_POSITIONS / 2, profile_weights(1.0))
    assert report.before_psnr == pytest.approx(float(psnr(profile, truth, reduction="none").mean()), abs=1e-4)
    middle_only = float(psnr(predicted([0.5], [1.0]), truth, reduction="none").mean())
    assert abs(report.before_psnr - middle_only) > 1e-3  # the nine positions were used, not the middle
    thin = adapt_engine(engine, volume, seconds=600, max_steps=1, check_every=1, thickness_ratio=0.5)
    assert thin.settings["target"] == "middle slice"
    engine.restore()
