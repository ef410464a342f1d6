"""Xuan et al.'s stage II (model type sr-generator): pairs from a stage-I model, tiled inference, training, errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import OBLIQUE_ANISO, T1_2MM
from SemanticInterpolationLib import ASIEngine, InputError, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.engine.baselines import interpolate_slices
from SemanticInterpolationLib.engine.volume_sr import run_tiled
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet
from SemanticInterpolationLib.models.sr_generator import SRGenerator, SRGeneratorConfig
from SemanticInterpolationLib.models.xuan_vae import XuanVAE, XuanVAEConfig
from SemanticInterpolationLib.training.sr_pairs import (PatchSampler, SRTrainingConfig, make_pair, stage1_engine,
                                                        synthesised_pairs, thin, train_sr)

NORM = IntensityNormalization(clip=False)


def _t1() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)


def _generator(seed: int = 0, factors=(3,), layers: int = 3, tile: int = 8) -> SRGenerator:
    torch.manual_seed(seed)
    model = SRGenerator(SRGeneratorConfig(features=4, layers=layers, factors=factors, tile_size=tile))
    with torch.no_grad():  # a non-zero last layer, so the network changes its input
        model.body[-1].weight.normal_(0, 0.05)
    return model.eval()


# --------------------------------------------------------------------------- pairs
def test_pair_construction_keeps_exactly_every_kth_slice_of_the_synthesised_volume():
    high = np.stack([np.full((6, 5), float(k)) for k in range(14)]).astype(np.float32)  # slice k holds k
    assert thin(high, 4)[:, 0, 0].tolist() == [0, 4, 8, 12]
    source, target = make_pair(high, 4, NORM)
    # 14 slices keep 0, 4, 8, 12: target cut to (4 - 1) * 4 + 1 = 13 slices, input on the same grid
    assert source.shape == target.shape == (13, 6, 5)
    r = NORM.fit(thin(high, 4))
    np.testing.assert_allclose(target, NORM.to_unit_range(high[:13], r), rtol=0, atol=1e-6)
    np.testing.assert_allclose(source, NORM.to_unit_range(interpolate_slices(thin(high, 4), 4, "bspline"), r),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(source[::4], target[::4], atol=1e-5)  # the kept slices are the input's samples
    # a slice that T drops never reaches the input: changing it changes only the target
    changed = high.copy()
    changed[5] += 100
    source2, target2 = make_pair(changed, 4, NORM)
    np.testing.assert_array_equal(source2, source)
    assert not np.allclose(target2[5], target[5])


def test_synthesised_pairs_come_from_the_stage_one_engine(tmp_path):
    torch.manual_seed(1)
    stage1 = save_checkpoint(tmp_path / "vae.pt", XuanVAE(XuanVAEConfig(widths=(8,), latent_channels=4)))
    engine, checkpoint = stage1_engine(stage1, "cpu")
    assert checkpoint.model_type == "xuan-vae"
    [(name, source, target)] = synthesised_pairs([str(T1_2MM)], 3, engine, NORM)
    volume = _t1()  # slice axis auto = ITK 2 (all 2 mm: ties go to k) = numpy axis 0
    synthesised = engine.upsample(volume, 3, axis=0, output_dtype=np.float32)
    r = NORM.fit(synthesised[::3])
    np.testing.assert_allclose(target, NORM.to_unit_range(synthesised, r), atol=1e-6)
    np.testing.assert_array_equal(synthesised[::3], volume)  # T V(Y) = Y: acquired slices are kept
    assert not np.allclose(target[1], NORM.to_unit_range(interpolate_slices(volume, 3, "bspline"), r)[1], atol=1e-3)


def test_stage_one_of_the_wrong_kind_is_refused(tmp_path):
    sr = save_checkpoint(tmp_path / "sr.pt", _generator())
    with pytest.raises(InputError, match="stage-I checkpoint .* is a sr-generator model; stage I must be a slice"):
        stage1_engine(sr, "cpu")
    with pytest.raises(Exception, match="not a PyTorch checkpoint|does not exist"):
        stage1_engine(T1_2MM, "cpu")


def test_volume_too_small_for_the_patch_is_a_clear_error():
    pair = ("small", np.zeros((9, 40, 40), np.float32), np.zeros((9, 40, 40), np.float32))
    with pytest.raises(InputError, match=r"small: the volume is 9x40x40 voxels .* smaller than the 3-D training patch "
                                         r"of 16 voxels.*at most 9"):
        PatchSampler([pair], 16, seed=0)


# --------------------------------------------------------------------------- inference
def test_tiled_inference_equals_whole_volume_inference():
    model = _generator(layers=4, tile=7)
    volume = _t1()[:9, :30, :26]
    out = ASIEngine(model, "cpu", normalization=NORM).upsample(volume, 3, output_dtype=np.float32,
                                                               keep_acquired=False)
    r = NORM.fit(volume)
    spline = interpolate_slices(volume, 3, "bspline", dtype=np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(NORM.to_unit_range(spline, r))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, NORM.to_input_units(whole, r), rtol=0, atol=1e-4 * float(np.ptp(volume)))
    # a halo smaller than the receptive field would differ: the tiles are really computed apart
    tiled = np.empty(spline.shape, np.float32)
    run_tiled(model, lambda region: NORM.to_unit_range(spline[region], r), spline.shape, torch.device("cpu"),
              torch.float32, tile_size=7, halo=1, output=tiled)
    assert np.abs(tiled - whole).max() > 1e-4
    kept = ASIEngine(model, "cpu", normalization=NORM).upsample(volume, 3)
    np.testing.assert_array_equal(kept[::3], volume)  # acquired slices bit-exact by default
    assert kept.shape == (25, 30, 26) and kept.dtype == volume.dtype


def test_progress_and_cancel_count_tiles():
    from SemanticInterpolationLib.errors import OperationCancelled

    model = _generator(tile=8)
    volume = _t1()[:5, :16, :16]  # 13x16x16 output: 2 x 2 x 2 tiles
    seen = []
    ASIEngine(model, "cpu").upsample(volume, 3, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)
    calls = iter(range(100))
    with pytest.raises(OperationCancelled):
        ASIEngine(model, "cpu").upsample(volume, 3, should_cancel=lambda: next(calls) >= 3)


def test_factor_mismatch_is_a_clear_error_and_the_checkpoint_round_trips(tmp_path):
    model = _generator(factors=(4,))
    path = save_checkpoint(tmp_path / "sr.pt", model, normalization=NORM)
    loaded = load_checkpoint(path)
    assert loaded.model_type == "sr-generator" and loaded.config.factors == (4,)
    volume = _t1()[:6]
    engine = ASIEngine(loaded, "cpu")
    with pytest.raises(InputError, match=r"trained for K = 4 only, not K = 3: use --factor 4"):
        engine.upsample(volume, 3)
    np.testing.assert_array_equal(engine.upsample(volume, 4), ASIEngine(model, "cpu", normalization=NORM).upsample(
        volume, 4))


# --------------------------------------------------------------------------- training
def test_train_sr_lowers_the_loss_on_real_mri_and_resumes(tmp_path):
    torch.manual_seed(0)
    pair = PairUNet()  # untrained: the linear mix; with this head bias every synthesised slice is 0.1 brighter
    with torch.no_grad():
        pair.head.bias.fill_(0.1)
    stage1 = save_checkpoint(tmp_path / "pair.pt", pair, normalization=NORM)
    config = SRTrainingConfig([str(OBLIQUE_ANISO)], output=tmp_path / "sr.pt", stage1=stage1, factor=3, steps=80,
                              batch_size=4, patch_size=12, learning_rate=1e-3, features=8, layers=3, device="cpu",
                              validation_volumes=[str(T1_2MM)], validate_every=40, checkpoint_every=20,
                              pairs_cache=tmp_path / "pairs.npz")
    result = train_sr(config)
    assert result.status == "finished" and result.steps_done == 80 and result.best_output.is_file()
    trained = load_checkpoint(result.output)
    assert trained.config.factors == (3,) and trained.training["stage1"]["model_type"] == "pair-unet"
    # the same fixed patches before and after: the L1 to V(Y) falls (the untrained generator is the B-spline;
    # 2 of 3 slices of V(Y) are 0.1 brighter than it, which a generator can learn on average)
    engine, _ = stage1_engine(stage1, "cpu")
    sampler = PatchSampler(synthesised_pairs([str(OBLIQUE_ANISO)], 3, engine, NORM), 12, seed=123)
    inputs, targets = sampler.batch(16)
    with torch.no_grad():
        before = float((SRGenerator(trained.config)(inputs) - targets).abs().mean())
        after = float((trained.model(inputs) - targets).abs().mean())
    assert after < 0.8 * before, (before, after)
    assert (tmp_path / "pairs.npz").is_file()  # the resumed run reads its pairs from the cache
    resumed = train_sr(SRTrainingConfig(**{**config.__dict__, "steps": 90, "resume": True}))
    assert resumed.steps_done == 90
    assert load_checkpoint(resumed.output).extra_state["sr_training_state"]["step"] == 90


def test_cli_train_sr_and_upsample_and_train_refuses_sr_generator(tmp_path):
    from SemanticInterpolationLib.cli.app import main

    out = tmp_path / "sr.pt"
    assert main(["train-sr", str(T1_2MM), "--real-pairs", "--factor", "2", "--output", str(out), "--steps", "3",
                 "--patch-size", "8", "--features", "4", "--layers", "2", "--device", "cpu", "-q"]) == 0
    assert load_checkpoint(out).training["real_pairs"] is True
    image = tmp_path / "up.nii.gz"
    assert main(["upsample", str(T1_2MM), str(image), "--factor", "2", "--checkpoint", str(out), "-q"]) == 0
    assert sitk.ReadImage(str(image)).GetSize() == (33, 41, 49)
    assert main(["upsample", str(T1_2MM), str(tmp_path / "bad.nii.gz"), "--factor", "3", "--checkpoint", str(out),
                 "-q"]) == 1
    assert not (tmp_path / "bad.nii.gz").exists()
    assert main(["train-sr", str(T1_2MM), "--stage1", str(out), "--factor", "2", "--output",
                 str(tmp_path / "x.pt"), "-q"]) == 1
    assert main(["train", str(T1_2MM), "--model-type", "sr-generator", "--output", str(tmp_path / "y.pt"),
                 "-q"]) == 1


def test_slicer_logic_upsamples_with_an_sr_generator(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed: the MRML logic test needs it")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    from mrml_helpers import addVolumeNode, smoothVoxels
    from SemanticInterpolationLib import SemanticInterpolationLogic
    from SemanticInterpolationLib.mrml import logic as mrml

    path = save_checkpoint(tmp_path / "sr.pt", _generator(factors=(2,)), normalization=NORM)
    scene = slicer.vtkMRMLScene()
    matrix = np.diag([1.0, 1.2, 4.0, 1.0])
    node = addVolumeNode(scene, smoothVoxels((6, 20, 16), np.int16, 1), matrix, "MR", "vtkMRMLScalarVolumeNode",
                         displayNodes=False)
    logic = SemanticInterpolationLogic(scene=scene) if "scene" in SemanticInterpolationLogic.__init__.__code__.co_varnames \
        else SemanticInterpolationLogic()
    if getattr(logic, "scene", None) is not None and logic.scene is not scene:
        pytest.skip("this logic works on the global Slicer scene only")
    output = logic.upsample(node, 2, checkpoint=str(path), device="cpu")
    voxels = mrml.voxelsFromVolumeNode(output)
    assert voxels.shape == (11, 20, 16)
    np.testing.assert_array_equal(voxels[::2], mrml.voxelsFromVolumeNode(node))
    with pytest.raises(InputError, match="trained for K = 2 only"):
        logic.upsample(node, 3, checkpoint=str(path), device="cpu")
