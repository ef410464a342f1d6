"""The bundled default model: found, safe to load, says its type and settings, and beats conventional
interpolation with plain slice removal on a real MRI it never saw (the test fixture T1 was not in its
training or validation data)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from conftest import T1_2MM
from SemanticInterpolationLib import ASIEngine, find_default_checkpoint, load_checkpoint

DEFAULT = find_default_checkpoint()
pytestmark = pytest.mark.skipif(DEFAULT is None, reason="no default model installed (Resources/Models/default-model.pt)")


def test_default_model_loads_with_its_metadata() -> None:
    checkpoint = load_checkpoint(DEFAULT)
    assert checkpoint.model_type == "profile-routed" and checkpoint.config.anchor_input
    # the default U-Net for thin slices and an unknown profile, the wider one for thick slices
    assert checkpoint.config.main.widths == (24, 48, 96) and checkpoint.config.thick.widths == (32, 64, 128)
    assert checkpoint.config.thick_from_ratio == 0.75 and set(checkpoint.training["routed_from"]) == {"main", "thick"}
    assert checkpoint.metadata["inference"] == {"synthesis": "plain", "test_time_augmentation": "pair-flip"}
    assert checkpoint.normalization.clip is False and checkpoint.in_plane_spacing_mm is not None
    assert "colin27/ch2.nii.gz" in checkpoint.training["held_out_evaluation_volumes"]
    assert "robex-ref/atlas.nii.gz" in checkpoint.training["validation_volumes"]
    engine = ASIEngine(checkpoint, "cpu")
    assert engine.synthesis == "plain" and engine.test_time_augmentation == "pair-flip"


def test_default_model_beats_linear_and_bspline_on_an_unseen_real_t1() -> None:
    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation, summary_records

    result = run_evaluation({"t1": sitk.ReadImage(str(T1_2MM))},
                            EvaluationSettings(factors=(2, 3), methods=("asi", "linear", "bspline"), device="cpu"))
    scores = {(r["factor"], r["method"]): r for r in summary_records(result)}
    for factor in (2, 3):
        model = scores[(factor, "asi")]
        for baseline in ("linear", "bspline"):
            base = scores[(factor, baseline)]
            assert model["psnr_mean"] > base["psnr_mean"] + 0.5, (factor, baseline, model["psnr_mean"], base["psnr_mean"])
            assert model["ssim_mean"] > base["ssim_mean"], (factor, baseline)
