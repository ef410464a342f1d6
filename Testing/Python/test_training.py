"""Training and fine-tuning (issue 4): data, loss, trainer, resume, cancel, bad input, CLI.

Real MRI fixtures, tiny patches (16/32) and a few steps: the whole file runs in well under two
minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SemanticInterpolationLib import (ASIAutoencoder, ASIEngine, AutoencoderConfig, CheckpointError, InputError,
                                      SemanticInterpolationError, load_checkpoint, save_checkpoint)
from SemanticInterpolationLib.training import (SYNTHESIS_LOSSES, ASILoss, SynthesisLossUnavailable, Trainer,
                                               TrainingConfig, TrainingVolume, TripletDataset, TripletSampler,
                                               lpips_unavailable_reason, make_synthesis_distance, psnr,
                                               read_training_log, ssim, train)

from conftest import OBLIQUE_ANISO, T1_2MM, file_digest

torch.set_num_threads(2)


def small_config(tmp_path: Path, **overrides) -> TrainingConfig:
    settings = dict(training_volumes=[str(T1_2MM)], output=str(tmp_path / "model.pt"), epochs=2,
                    steps_per_epoch=3, batch_size=2, patch_size=16, learning_rate=1e-3, synthesis_loss="mse",
                    lam=0.5, seed=3, device="cpu", progress_interval_s=0.0)
    settings.update(overrides)
    return TrainingConfig(**settings)


def states_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- data
def test_training_volume_uses_slice_axis_and_engine_normalisation():
    image = sitk.ReadImage(str(OBLIQUE_ANISO))  # 58x58x24, 4x4x5 mm: slices along ITK axis 2
    volume = TrainingVolume.from_image(image)
    assert volume.slice_axis == 2
    assert volume.slices.shape == (24, 58, 58)
    assert volume.in_plane_spacing_mm == (4.0, 4.0)
    assert volume.slice_spacing_mm == 5.0
    assert volume.slices.dtype == np.float32
    assert 0.0 <= volume.slices.min() and volume.slices.max() <= 1.0
    # exactly the engine's normalisation: percentile fit of the whole volume
    from SemanticInterpolationLib import IntensityNormalization
    array = sitk.GetArrayFromImage(image)
    norm = IntensityNormalization()
    np.testing.assert_array_equal(volume.slices, norm.to_unit_range(array, norm.fit(array)))


def test_triplet_dataset_patches_augmentation_and_determinism():
    volumes = [TrainingVolume.load(str(T1_2MM)), TrainingVolume.load(str(OBLIQUE_ANISO))]
    dataset = TripletDataset(volumes, 16, seed=7)
    assert len(dataset) == (25 - 2) + (24 - 2)  # every interior slice of both volumes
    item = dataset[5]
    assert item.shape == (3, 16, 16) and item.dtype == torch.float32
    assert float(item.min()) >= 0.0 and float(item.max()) <= 1.0
    assert torch.equal(item, dataset[5])  # same epoch, same item -> same patch
    dataset.set_epoch(1)
    assert not torch.equal(item, dataset[5])  # new epoch -> new random patch
    # without augmentation, the triplet is three consecutive slices of the volume at one location
    from SemanticInterpolationLib.training import Augmentation
    plain = TripletDataset(volumes[:1], 16, augmentation=Augmentation.none(), seed=0)
    patch = plain[4].numpy()  # middle slice n = 5
    slices = volumes[0].slices
    found = [(t, l) for t in range(slices.shape[1] - 15) for l in range(slices.shape[2] - 15)
             if np.array_equal(slices[5, t:t + 16, l:l + 16], patch[1])]
    assert found
    t, l = found[0]
    np.testing.assert_array_equal(slices[4, t:t + 16, l:l + 16], patch[0])
    np.testing.assert_array_equal(slices[6, t:t + 16, l:l + 16], patch[2])


def test_triplet_stride_and_sampler_split():
    volume = TrainingVolume.load(str(T1_2MM))
    assert len(TripletDataset([volume], 16, triplet_stride=2)) == 25 - 4
    dataset = TripletDataset([volume], 16)
    single = list(TripletSampler(dataset, seed=1, samples_per_epoch=10))
    ranks = [list(TripletSampler(dataset, num_replicas=2, rank=r, seed=1, samples_per_epoch=10)) for r in (0, 1)]
    assert len(single) == 10 and len(ranks[0]) == len(ranks[1]) == 5
    assert sorted(single) == sorted(ranks[0] + ranks[1])  # the processes share one epoch's triplets
    assert len(list(TripletSampler(dataset, seed=1, samples_per_epoch=60))) == 60  # longer than the data


# --------------------------------------------------------------------------- losses and metrics
def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 with an explicit 11x11 Gaussian window (sigma 1.5), valid region."""
    from scipy.signal import convolve2d
    r = np.arange(11) - 5.0
    g = np.exp(-(r ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    f = lambda a: convolve2d(a, w, mode="valid")  # noqa: E731
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean())


def test_ssim_matches_reference_on_real_slices():
    volume = TrainingVolume.load(str(OBLIQUE_ANISO))
    a, b = volume.slices[10].astype(np.float64), volume.slices[11].astype(np.float64)
    ours = float(ssim(torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float()))
    assert ours == pytest.approx(_reference_ssim(a, b), abs=1e-5)
    same = torch.from_numpy(a)[None, None].float()
    assert float(ssim(same, same)) == pytest.approx(1.0, abs=1e-6)
    assert float(psnr(same, same * 0 + same - 0.1)) == pytest.approx(20.0, abs=1e-3)


@pytest.mark.parametrize("name", [n for n in SYNTHESIS_LOSSES if n != "lpips"])
def test_every_synthesis_distance_trains(tmp_path, name):
    result = train(small_config(tmp_path, synthesis_loss=name, epochs=1, steps_per_epoch=2))
    record = result.history[-1]
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["train_synthesis"])
    assert record["train_loss"] == pytest.approx(record["train_reconstruction"] + 0.5 * record["train_synthesis"],
                                                 rel=1e-5)
    assert load_checkpoint(result.output).training["settings"]["synthesis_loss"] == name


def test_lpips_distance_or_clear_reason():
    reason = lpips_unavailable_reason()
    if reason is None:
        distance = make_synthesis_distance("lpips")
        x = torch.rand(2, 1, 32, 32)
        assert float(distance(x, x)) == pytest.approx(0.0, abs=1e-5)
        return
    with pytest.raises(SynthesisLossUnavailable) as info:
        make_synthesis_distance("lpips")
    message = str(info.value)
    for needed in ("pip install lpips", "torchvision", "vgg16-397923af.pth", "hub/checkpoints", "ssim", "mse", "l1"):
        assert needed in message
    pytest.skip(f"lpips cannot run here ({reason}); the error message was checked instead")


def test_lpips_training_step(tmp_path):
    reason = lpips_unavailable_reason()
    if reason is not None:
        pytest.skip(f"lpips is not importable here: {reason}")
    try:
        result = train(small_config(tmp_path, synthesis_loss="lpips", epochs=1, steps_per_epoch=1, patch_size=32))
    except SynthesisLossUnavailable as exc:
        pytest.skip(f"lpips is importable but cannot build VGG-16 offline: {exc}")
    assert math.isfinite(result.history[-1]["train_synthesis"])


def test_lambda_zero_is_reconstruction_only():
    loss = ASILoss("mse", 0.0)
    rec, tgt = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    out = loss(rec, tgt)
    assert out["synthesis"] is None and torch.equal(out["total"], out["reconstruction"])
    with_syn = ASILoss("mse", 0.25)(rec, tgt, rec[:2], tgt[:2])
    assert float(with_syn["total"]) == pytest.approx(float(with_syn["reconstruction"] + 0.25 * with_syn["synthesis"]))


# --------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A short training run on real MRI with validation on another real volume."""
    folder = tmp_path_factory.mktemp("run")
    config = TrainingConfig([str(T1_2MM)], output=str(folder / "asi.pt"), validation_volumes=[str(OBLIQUE_ANISO)],
                            epochs=3, steps_per_epoch=6, batch_size=4, patch_size=32, learning_rate=1e-3,
                            synthesis_loss="ssim", lam=0.05, seed=0, device="cpu", validation_triplets=4,
                            progress_interval_s=0.0)
    events = []
    result = train(config, progress=events.append)
    return config, result, events


def test_loss_decreases_on_real_mri(short_run):
    _, result, _ = short_run
    losses = [r["train_loss"] for r in result.history]
    assert result.status == "finished" and result.epochs_done == 3
    assert losses[-1] < 0.8 * losses[0], losses
    recs = [r["train_reconstruction"] for r in result.history]
    assert recs[-1] < recs[0]


def test_checkpoint_records_training_and_works_with_engine(short_run):
    config, result, _ = short_run
    ckpt = load_checkpoint(result.output)
    assert ckpt.in_plane_spacing_mm == (2.0, 2.0)
    assert ckpt.training["settings"]["lambda"] == 0.05
    assert ckpt.training["settings"]["patch_size"] == 32
    assert ckpt.training["epochs_done"] == 3
    assert ckpt.extra_state["training_state"]["epochs_done"] == 3
    best = load_checkpoint(result.best_output)
    assert best.extra_state == {}  # the best checkpoint is lean
    assert result.checkpoint == result.best_output
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(OBLIQUE_ANISO)))
    out = ASIEngine(best, "cpu").upsample(volume, 2, axis=0)
    assert out.shape == (47, 58, 58) and out.dtype == volume.dtype
    np.testing.assert_array_equal(out[::2], volume)


def test_validation_metrics_log_and_progress(short_run):
    _, result, events = short_run
    records = read_training_log(result.log_path)
    kinds = [r["event"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 3 and "progress" in kinds
    assert records[-1]["status"] == "finished"
    assert records[-1]["recommended_checkpoint"] == str(result.best_output)
    for line in Path(result.log_path).read_text().splitlines():
        json.loads(line)  # strict JSON, no NaN
    epoch = [r for r in records if r["event"] == "epoch"][-1]
    for key in ("val_rec_psnr", "val_rec_ssim", "val_syn_psnr", "val_syn_ssim", "val_linear_psnr", "train_loss"):
        assert isinstance(epoch[key], float), key
    assert sum(1 for r in records if r["event"] == "epoch" and r["best"]) >= 1
    assert {e.phase for e in events} == {"train", "validate", "epoch"}
    assert events[-1].phase == "epoch" and events[-1].fraction == 1.0


def test_resume_equals_uninterrupted_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = train(small_config(tmp_path / "a"))
    first = train(small_config(tmp_path / "b", epochs=1))
    assert first.epochs_done == 1
    resumed = train(small_config(tmp_path / "b", epochs=2, resume=True))
    assert resumed.epochs_done == 2 and resumed.global_step == whole.global_step
    a = load_checkpoint(whole.output).model.state_dict()
    b = load_checkpoint(resumed.output).model.state_dict()
    assert states_equal(a, b), "resumed run differs from the uninterrupted one"
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    starts = [r for r in read_training_log(resumed.log_path) if r["event"] == "start"]
    assert [s["first_epoch"] for s in starts] == [1, 2]  # the log is appended to on resume


def test_cancel_keeps_previous_checkpoint_intact(tmp_path):
    config = small_config(tmp_path, epochs=1)
    train(config)
    digest = file_digest(Path(config.output))
    steps = []

    def cancel_after_two_steps():
        steps.append(1)
        return len(steps) >= 2

    result = train(small_config(tmp_path, epochs=3, resume=True), should_cancel=cancel_after_two_steps)
    assert result.cancelled and result.epochs_done == 1 and len(steps) == 2
    assert file_digest(Path(config.output)) == digest
    assert load_checkpoint(config.output).training["epochs_done"] == 1
    assert read_training_log(result.log_path)[-1]["status"] == "cancelled"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # no staging leftovers
    # a new run cancelled in its first epoch leaves the old file alone too
    fresh = train(small_config(tmp_path, epochs=2, seed=9), should_cancel=lambda: True)
    assert fresh.cancelled and file_digest(Path(config.output)) == digest


def test_fine_tune_from_checkpoint(tmp_path, random_checkpoint):
    result = train(small_config(tmp_path, init=str(random_checkpoint), epochs=1, steps_per_epoch=1,
                                architecture="journal"))
    ckpt = load_checkpoint(result.output)
    assert "fine-tuned from" in ckpt.training["started_from"]


# --------------------------------------------------------------------------- bad input, before any work
def _two_slice_volume(tmp_path: Path) -> Path:
    image = sitk.ReadImage(str(OBLIQUE_ANISO))[:, :, :2]
    path = tmp_path / "two_slices.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def _assert_no_work(tmp_path: Path) -> None:
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "model.log.jsonl").exists()


@pytest.mark.parametrize("case", ["two_slices", "patch_not_multiple", "patch_too_large", "negative_lambda",
                                  "missing_folder", "output_is_folder", "missing_volume", "small_patch"])
def test_bad_input_fails_before_any_work(tmp_path, case):
    overrides: dict = {}
    expected = ""
    if case == "two_slices":
        overrides["training_volumes"] = [str(T1_2MM), str(_two_slice_volume(tmp_path))]
        expected = "needs at least 3"
    elif case == "patch_not_multiple":
        overrides["patch_size"], expected = 30, "not divisible by 4"
    elif case == "patch_too_large":
        overrides["patch_size"], expected = 64, "larger than the slices"
    elif case == "negative_lambda":
        overrides["lam"], expected = -0.1, "lambda"
    elif case == "missing_folder":
        overrides["output"], expected = str(tmp_path / "nope" / "model.pt"), "does not exist"
    elif case == "output_is_folder":
        (tmp_path / "dir.pt").mkdir()
        overrides["output"], expected = str(tmp_path / "dir.pt"), "is a folder"
    elif case == "missing_volume":
        overrides["training_volumes"], expected = [str(tmp_path / "absent.nii.gz")], "does not exist"
    elif case == "small_patch":
        overrides["patch_size"], expected = 8, "too small"
    with pytest.raises(InputError, match=expected):
        Trainer(small_config(tmp_path, **overrides))
    _assert_no_work(tmp_path)


def test_init_checkpoint_of_another_architecture(tmp_path):
    spie = tmp_path / "spie.pt"
    save_checkpoint(spie, ASIAutoencoder(AutoencoderConfig.spie()))
    with pytest.raises(CheckpointError, match="asi-spie.*drop --architecture"):
        Trainer(small_config(tmp_path, init=str(spie), architecture="journal"))
    _assert_no_work(tmp_path)
    # without an explicit architecture, fine-tuning keeps the checkpoint's network
    trainer = Trainer(small_config(tmp_path, init=str(spie), architecture=None))
    assert trainer.architecture == AutoencoderConfig.spie()


def test_resume_errors(tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        Trainer(small_config(tmp_path, resume=True))
    done = train(small_config(tmp_path, epochs=1, steps_per_epoch=1))
    with pytest.raises(InputError, match="already been trained for 1"):
        Trainer(small_config(tmp_path, epochs=1, resume=True))
    with pytest.raises(CheckpointError, match="no resumable training state"):
        save_checkpoint(done.output, ASIAutoencoder())
        Trainer(small_config(tmp_path, epochs=2, resume=True))


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    from SemanticInterpolationLib.cli.train import register
    parser = argparse.ArgumentParser(prog="semantic-interpolation")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_train_then_upsample(tmp_path, capsys):
    from SemanticInterpolationLib.cli.train import run_train
    out = tmp_path / "cli.pt"
    args = _parser().parse_args(["train", str(T1_2MM), str(OBLIQUE_ANISO), "--output", str(out), "--epochs", "1",
                                 "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16",
                                 "--lambda", "0", "--seed", "1", "--device", "cpu", "--validation", str(T1_2MM),
                                 "--validation-triplets", "2"])
    assert args.handler is run_train
    assert run_train(args) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.training["settings"]["lambda"] == 0.0
    assert ckpt.in_plane_spacing_mm == (3.0, 3.0)  # median over the 2 mm and 4 mm volumes
    assert ckpt.training["last_epoch"]["train_synthesis"] is None  # lambda = 0: no synthesis loss
    from SemanticInterpolationLib.cli import main
    upsampled = tmp_path / "up.nii.gz"
    assert main(["upsample", str(OBLIQUE_ANISO), str(upsampled), "-k", "2", "--checkpoint", str(out)]) == 0
    assert sitk.ReadImage(str(upsampled)).GetSize() == (58, 58, 47)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from SemanticInterpolationLib.cli import main
    code = main(["train", str(T1_2MM), "--output", str(tmp_path / "m.pt"), "--patch-size", "30"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "divisible by 4" in err
    code = main(["train", str(T1_2MM), "--output", str(tmp_path / "m.pt"), "--patch-size", "16",
                 "--synthesis-loss", "lpips"])
    if lpips_unavailable_reason() is not None:
        err = capsys.readouterr().err.strip()
        assert code == 1 and "--synthesis-loss ssim" in err and len(err.splitlines()) == 1


def test_cli_stop_file_cancels(tmp_path):
    from SemanticInterpolationLib.cli.train import EXIT_CANCELLED, run_train
    stop = tmp_path / "STOP"
    stop.write_text("")
    args = _parser().parse_args(["train", str(T1_2MM), "--output", str(tmp_path / "m.pt"), "--epochs", "2",
                                 "--patch-size", "16", "--batch-size", "2", "--stop-file", str(stop)])
    assert run_train(args) == EXIT_CANCELLED
    assert not (tmp_path / "m.pt").exists()


def test_config_round_trips_through_cli_args(tmp_path):
    from SemanticInterpolationLib.cli.train import config_from_args
    config = small_config(tmp_path, validation_volumes=[str(OBLIQUE_ANISO)], architecture="journal", augment=False)
    again = config_from_args(_parser().parse_args(["train", *config.to_cli_args()]))
    assert again.settings() == {**config.settings(), "progress_interval_s": again.progress_interval_s}


def test_residual_synthesis_target_trains_what_residual_inference_outputs(tmp_path):
    """--synthesis-target residual: the loss and validation score the engine's residual synthesis,
    and the checkpoint recommends residual inference."""
    from SemanticInterpolationLib.training.trainer import residual_synthesis

    result = train(small_config(tmp_path, synthesis_target="residual", validation_volumes=[str(T1_2MM)],
                                validation_triplets=4, epochs=1, steps_per_epoch=2))
    assert math.isfinite(result.history[-1]["train_synthesis"])
    checkpoint = load_checkpoint(result.output)
    assert checkpoint.metadata["inference"] == {"synthesis": "residual"}
    assert ASIEngine(checkpoint, "cpu").synthesis == "residual"
    assert checkpoint.training["settings"]["synthesis_target"] == "residual"
    # a perfect autoencoder whose latent mix equals the mix of reconstructions makes it linear interpolation
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert torch.allclose(residual_synthesis(a, b, a, b, 0.5 * (a + b)), 0.5 * (a + b))
    assert small_config(tmp_path / "d").synthesis_target == "auto"
    assert Trainer(small_config(tmp_path)).synthesis_target == "decoded"  # from scratch: the paper's
    with pytest.raises(InputError, match="synthesis target"):
        Trainer(small_config(tmp_path / "bad", synthesis_target="pixels"))


# --------------------------------------------------------------------------- B-spline anchored correction
@pytest.mark.parametrize("stride", [1, 2])
def test_bspline_anchor_is_the_bspline_baseline_of_the_thinned_volume(stride):
    """The anchor of a triplet's middle (12 slices around it) is what the engine's B-spline baseline
    gives at that slice when the volume is thinned to the triplet lattice, at the ends too."""
    from SemanticInterpolationLib.engine.baselines import bspline_midpoint_weights, interpolate_array
    from SemanticInterpolationLib.training.data import anchor_context_indices, bspline_anchor

    weights = bspline_midpoint_weights(4)
    assert weights.shape == (8,) and abs(weights.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(weights, weights[::-1])
    assert 0.6 < weights[3] < 0.61 and -0.13 < weights[2] < -0.12  # the cardinal cubic spline at 1/2
    slices = TrainingVolume.load(str(T1_2MM)).slices  # 25 slices
    kept = slices[stride::2 * stride]  # lattice of the triplets whose middles are multiples of 2 * stride
    spline = interpolate_array(kept, 0, 2, "bspline")
    for q in range(kept.shape[0] - 1):
        middle = stride + 2 * stride * q + stride
        assert all(0 <= i < slices.shape[0] and (i - stride) % (2 * stride) == 0
                   for i in anchor_context_indices(middle, stride, slices.shape[0]))
        np.testing.assert_allclose(bspline_anchor(slices, middle, stride), spline[2 * q + 1], atol=2e-3)
    # the anchor is not the linear mix (the test would pass for a wrong, linear anchor otherwise)
    middle = 12
    linear = 0.5 * (slices[middle - stride] + slices[middle + stride])
    assert np.abs(bspline_anchor(slices, middle, stride) - linear).max() > 0.02


def test_triplet_dataset_with_bspline_anchor_adds_the_anchor_of_the_patch():
    from SemanticInterpolationLib.training import Augmentation
    from SemanticInterpolationLib.training.data import bspline_anchor

    volume = TrainingVolume.load(str(T1_2MM))
    plain = TripletDataset([volume], 16, augmentation=Augmentation.none(), seed=0, bspline_anchor=True)
    item = plain[9].numpy()  # middle slice 10
    assert item.shape == (4, 16, 16)
    full = bspline_anchor(volume.slices, 10, 1)
    found = [(t, l) for t in range(volume.slices.shape[1] - 15) for l in range(volume.slices.shape[2] - 15)
             if np.array_equal(volume.slices[10, t:t + 16, l:l + 16], item[1])]
    assert found
    t, l = found[0]
    np.testing.assert_allclose(item[3], full[t:t + 16, l:l + 16], atol=1e-6)
    # with augmentation the anchor follows the augmented slices (rotated alike, intensities changed first)
    augmented = TripletDataset([volume], 16, seed=4, bspline_anchor=True)
    for i in range(len(augmented)):
        a = augmented[i].numpy()
        assert a.shape == (4, 16, 16)
        assert np.abs(a[3] - 0.5 * (a[0] + a[2])).max() < 0.35  # same location and orientation as the triplet


def test_residual_bspline_target_and_auto_target(tmp_path):
    """--synthesis-target residual-bspline trains the engine's residual-bspline synthesis and the
    checkpoint recommends it; validation reports the B-spline baseline; auto follows the init model."""
    from SemanticInterpolationLib.training.trainer import resolve_synthesis_target

    result = train(small_config(tmp_path, synthesis_target="residual-bspline", validation_volumes=[str(T1_2MM)],
                                validation_triplets=4, epochs=1, steps_per_epoch=2))
    record = result.history[-1]
    assert math.isfinite(record["train_synthesis"])
    assert record["val_bspline_psnr"] > record["val_linear_psnr"] - 3.0  # measured, present, plausible
    assert 0.0 < record["val_bspline_ssim"] <= 1.0
    checkpoint = load_checkpoint(result.output)
    assert checkpoint.metadata["inference"] == {"synthesis": "residual-bspline"}
    assert checkpoint.training["synthesis_target"] == "residual-bspline"
    assert ASIEngine(checkpoint, "cpu").synthesis == "residual-bspline"
    # auto: fine-tuning keeps the mode the starting checkpoint recommends; from scratch it is the paper's
    assert resolve_synthesis_target("auto", checkpoint) == "residual-bspline"
    assert resolve_synthesis_target("auto", None) == "decoded"
    assert resolve_synthesis_target("residual", checkpoint) == "residual"
    (tmp_path / "tuned").mkdir()
    tuned = Trainer(small_config(tmp_path / "tuned", init=str(result.output)))
    assert tuned.config.synthesis_target == "auto" and tuned.synthesis_target == "residual-bspline"
    assert tuned.dataset[0].shape[0] == 4
    (tmp_path / "scratch").mkdir()
    assert Trainer(small_config(tmp_path / "scratch")).synthesis_target == "decoded"


def test_a_trainer_that_fails_its_checks_leaves_the_process_group(tmp_path, monkeypatch):
    """Under torchrun the constructor joins the process group; a bad setting found afterwards must
    leave it again (and a trainer that is never run can be closed)."""
    from SemanticInterpolationLib.training import trainer as trainer_module
    from SemanticInterpolationLib.training.distributed import DistributedContext

    left = []
    monkeypatch.setattr(trainer_module, "init_distributed", lambda device: DistributedContext())
    monkeypatch.setattr(trainer_module, "shutdown", lambda context: left.append(context))
    with pytest.raises(InputError, match="patch size"):
        Trainer(small_config(tmp_path, patch_size=18))
    assert len(left) == 1
    ready = Trainer(small_config(tmp_path))
    assert len(left) == 1
    ready.close()
    ready.close()  # once only
    assert len(left) == 2


def test_noise_augmentation_adds_independent_noise_to_every_slice(tmp_path):
    from SemanticInterpolationLib.training import Augmentation

    volume = TrainingVolume.load(str(T1_2MM))
    quiet = Augmentation(rotate=False, flip=False, intensity_probability=0.0)
    noisy = Augmentation(rotate=False, flip=False, intensity_probability=0.0, noise_std_max=0.08, noise_probability=1.0)
    clean = TripletDataset([volume], 32, augmentation=quiet, seed=2)
    with_noise = TripletDataset([volume], 32, augmentation=noisy, seed=2)
    stds, correlations = [], []
    for i in range(len(clean)):
        a, b = clean[i].numpy(), with_noise[i].numpy()
        inside = (a > 0.1) & (a < 0.9)  # away from the clipping at 0 and 1
        difference = (b - a)[:3]
        stds.append(float(difference[inside[:3]].std()))
        correlations.append(float(np.corrcoef(difference[0].ravel(), difference[2].ravel())[0, 1]))
    assert 0.01 < np.mean(stds) < 0.06  # sigma uniform in [0, 0.08]: mean 0.04
    assert abs(np.mean(correlations)) < 0.1  # independent per slice
    np.testing.assert_array_equal(with_noise[3].numpy(), with_noise[3].numpy())  # still deterministic
    with pytest.raises(InputError, match="noise std"):
        Trainer(small_config(tmp_path, noise_std=-0.1))
    with pytest.raises(InputError, match="needs augmentation"):
        Trainer(small_config(tmp_path, noise_std=0.05, augment=False))
    from SemanticInterpolationLib.cli.train import config_from_args
    config = small_config(tmp_path, noise_std=0.05)
    assert config_from_args(_parser().parse_args(["train", *config.to_cli_args()])).noise_std == 0.05
    result = train(small_config(tmp_path, noise_std=0.05, epochs=1, steps_per_epoch=2))
    assert load_checkpoint(result.output).training["settings"]["noise_std"] == 0.05


def test_thick_slice_triplets_blur_the_inputs_of_fine_volumes_only(tmp_path):
    """--thick-slice-probability: outer slices (and anchor context) from a through-plane blurred copy,
    the same blur as the evaluation's thick-slice model; the middle stays sharp; thick stacks untouched."""
    from SemanticInterpolationLib.training import Augmentation
    from SemanticInterpolationLib.training.data import blur_slices

    volume = TrainingVolume.load(str(T1_2MM))  # 2 mm isotropic: fine
    blurred = blur_slices(volume.slices, 2)
    scipy_ndimage = pytest.importorskip("scipy.ndimage", reason="scipy gives the reference blur")
    reference = scipy_ndimage.gaussian_filter1d(volume.slices, 2 / 2.3548200450309493, axis=0, mode="nearest",
                                                truncate=4.0)
    np.testing.assert_allclose(blurred, reference, atol=1e-5)
    plain = Augmentation.none()
    dataset = TripletDataset([volume], 16, augmentation=plain, seed=0, thick_slice_probability=1.0)
    sharp = TripletDataset([volume], 16, augmentation=plain, seed=0)
    item, reference_item = dataset[9].numpy(), sharp[9].numpy()  # middle slice 10, same patch location
    np.testing.assert_array_equal(item[1], reference_item[1])  # the target is the sharp slice
    found = [(t, l) for t in range(volume.slices.shape[1] - 15) for l in range(volume.slices.shape[2] - 15)
             if np.array_equal(volume.slices[10, t:t + 16, l:l + 16], item[1])]
    t, l = found[0]
    np.testing.assert_allclose(item[0], blurred[9, t:t + 16, l:l + 16], atol=1e-6)
    np.testing.assert_allclose(item[2], blurred[11, t:t + 16, l:l + 16], atol=1e-6)
    # a thick anisotropic stack (6 mm slices, 1 mm pixels) is never blurred
    thick_stack = TrainingVolume.from_array(np.repeat(volume.slices[None, 5], 7, axis=0) + np.arange(7)[:, None, None],
                                            (2.0, 2.0, 6.0), axis=2)
    assert TripletDataset([thick_stack], 16, augmentation=plain, thick_slice_probability=1.0).thick == {}
    with pytest.raises(InputError, match="thick-slice probability"):
        Trainer(small_config(tmp_path, thick_slice_probability=1.5))
    from SemanticInterpolationLib.cli.train import config_from_args
    config = small_config(tmp_path, thick_slice_probability=0.5)
    assert config_from_args(_parser().parse_args(["train", *config.to_cli_args()])).thick_slice_probability == 0.5
