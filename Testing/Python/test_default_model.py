"""The bundled default model: found, safe to load, recommends its mode, and beats linear interpolation
on real MRI it never saw (the two test fixtures were not in its training or validation data)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from conftest import OBLIQUE_ANISO, T1_2MM
from SemanticInterpolationLib import ASIEngine, find_default_checkpoint, load_checkpoint

DEFAULT = find_default_checkpoint()
pytestmark = pytest.mark.skipif(DEFAULT is None, reason="no default model installed (Resources/Models/asi-default.pt)")


def test_default_model_loads_with_its_metadata() -> None:
    checkpoint = load_checkpoint(DEFAULT)
    assert checkpoint.config.name == "asi-journal"
    assert checkpoint.metadata["inference"] == {"synthesis": "residual"}
    assert checkpoint.in_plane_spacing_mm is not None
    assert "colin27/ch2.nii.gz" in checkpoint.training["held_out_evaluation_volumes"]
    assert ASIEngine(checkpoint, "cpu").synthesis == "residual"


@pytest.mark.parametrize("path", [T1_2MM, OBLIQUE_ANISO], ids=["t1_2mm", "oblique_4x4x5mm"])
def test_default_model_beats_linear_on_unseen_real_mri(path) -> None:
    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation, summary_records

    result = run_evaluation({"volume": sitk.ReadImage(str(path))},
                            EvaluationSettings(factors=(2, 3), methods=("asi", "linear"), device="cpu"))
    scores = {(r["factor"], r["method"]): r for r in summary_records(result)}
    for factor in (2, 3):
        asi, linear = scores[(factor, "asi")], scores[(factor, "linear")]
        assert asi["psnr_mean"] > linear["psnr_mean"] + 0.1, (factor, asi["psnr_mean"], linear["psnr_mean"])
        assert asi["ssim_mean"] > linear["ssim_mean"], (factor, asi["ssim_mean"], linear["ssim_mean"])
