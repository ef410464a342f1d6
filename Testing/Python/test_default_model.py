"""The bundled default model: found, safe to load, recommends its mode, and its learned correction
improves the interpolation it is added to, on real MRI it never saw (the two test fixtures were not
in its training or validation data)."""

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
    assert checkpoint.metadata["inference"] == {"synthesis": "residual-bspline"}
    assert checkpoint.in_plane_spacing_mm is not None
    assert "colin27/ch2.nii.gz" in checkpoint.training["held_out_evaluation_volumes"]
    assert ASIEngine(checkpoint, "cpu").synthesis == "residual-bspline"


@pytest.mark.parametrize("synthesis, anchor", [("residual", "linear"), ("residual-bspline", "bspline")])
@pytest.mark.parametrize("path", [T1_2MM, OBLIQUE_ANISO], ids=["t1_2mm", "oblique_4x4x5mm"])
def test_the_learned_correction_improves_its_anchor_on_unseen_real_mri(path, synthesis, anchor) -> None:
    """Residual synthesis = an interpolator + the autoencoder's correction: the correction must help."""
    from SemanticInterpolationLib.evaluation import EvaluationSettings, run_evaluation, summary_records

    result = run_evaluation({"volume": sitk.ReadImage(str(path))},
                            EvaluationSettings(factors=(2, 3), methods=("asi", anchor), device="cpu",
                                               synthesis=synthesis))
    scores = {(r["factor"], r["method"]): r for r in summary_records(result)}
    for factor in (2, 3):
        asi, base = scores[(factor, "asi")], scores[(factor, anchor)]
        assert asi["psnr_mean"] > base["psnr_mean"] + 0.1, (factor, asi["psnr_mean"], base["psnr_mean"])
        assert asi["ssim_mean"] > base["ssim_mean"], (factor, asi["ssim_mean"], base["ssim_mean"])
