"""The GPU recipe's command (bench/gpu_train_default.sh) on the CPU with a tiny budget, and the packer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SemanticInterpolationLib import load_checkpoint
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.training.data import TrainingVolume
from SemanticInterpolationLib.training.device_sampler import (bspline_weight_tables, install_bspline_weight_tables,
                                                               load_packed_volumes, save_packed_volumes)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_train_default.sh"
SETTINGS = {"synthesis_loss": "mse", "noise_std": 0.06, "thick_slice_probability": 0.5, "max_gap": 6,
            "validation_triplets": 4, "best_metric": "val_syn_psnr"}


def _volumes():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.random((20, 32, 32)), axis=0).astype(np.float32)  # correlated along the slices
    unclipped = IntensityNormalization(clip=False)
    fine = TrainingVolume.from_array(smooth, (1.0, 1.0, 1.0), axis=2, name="fine")
    coarse = TrainingVolume.from_array(smooth[::4], (1.0, 1.0, 4.0), axis=2, name="coarse", normalization=unclipped)
    small = TrainingVolume.from_array(smooth[:8, :20, :16], (0.7, 0.7, 2.1), axis=2, name="small",
                                      normalization=unclipped)
    validation = TrainingVolume.from_array(smooth[:, :, ::-1], (1.0, 1.0, 1.0), axis=2, name="val",
                                           normalization=unclipped)
    return [fine, coarse, small], [validation]


@pytest.fixture()
def packed(tmp_path):
    training, validation = _volumes()
    path = tmp_path / "pack.npz"
    save_packed_volumes(path, training, validation,
                        metadata={"settings": SETTINGS, "bspline_weights": bspline_weight_tables(6)})
    return path


def _run(tmp_path, packed, *options, timeout=600):
    blocker = tmp_path / "block"  # the GPU machine has no SimpleITK: the command must not need it
    blocker.mkdir(exist_ok=True)
    (blocker / "SimpleITK.py").write_text("raise ImportError('SimpleITK is blocked in this test')\n")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, PYTHONPATH=str(blocker), OMP_NUM_THREADS="1")
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "--data", str(packed), "--device", "cpu", "--precision", "float32",
                           "--batch-size", "4", "--patch-size", "24", *options],
                          capture_output=True, text=True, env=env, timeout=timeout)
    return done, out, time.monotonic() - started


def _check_default_type_model(path: Path, profile_used: bool = True, routed: bool = True) -> None:
    """``path`` holds the default's networks (profile-routed; ``routed=False``: its thin-slice network alone, anchor
    and slice-profile inputs) and runs through the engine; ``profile_used``: its output changes with the slice
    profile (not after a few steps of an exact warm start, whose profile weights start at zero)."""
    import torch

    from SemanticInterpolationLib import ASIEngine

    checkpoint = load_checkpoint(path)
    default = load_checkpoint(ROOT / "Resources" / "Models" / "default-model.pt")
    assert default.model_type == "profile-routed"
    assert checkpoint.model_type == ("profile-routed" if routed else "pair-unet")
    assert checkpoint.config.anchor_input and checkpoint.config.thickness_input
    # the default's networks, names and routing included (or its thin-slice network)
    assert checkpoint.config == (default.config if routed else default.config.main)
    assert checkpoint.metadata["inference"] == {"synthesis": "plain", "test_time_augmentation": "pair-flip"}
    assert "training_state" not in checkpoint.extra_state
    assert checkpoint.normalization == default.normalization
    engine = ASIEngine(checkpoint, "cpu")
    assert engine.takes_slice_profile
    volume = np.cumsum(np.random.default_rng(2).random((6, 32, 36)), axis=0).astype(np.float32)
    thin = engine.upsample(volume, 2, slice_thickness_ratio=0.5)
    thick = engine.upsample(volume, 2, slice_thickness_ratio=1.0)
    unknown = engine.upsample(volume, 2)
    assert thin.shape == (11, 32, 36) and np.isfinite(thin).all()
    np.testing.assert_array_equal(thin[::2], volume)  # acquired slices kept
    if profile_used:
        assert np.abs(thin - thick).max() > 0 and np.abs(thin - unknown).max() > 0
    pair = torch.rand(2, 1, 32, 32)
    assert checkpoint.model.synthesize(pair[:1], pair[1:], 0.5, pair[:1], torch.tensor([0.5])).shape == (1, 1, 32, 32)


def test_gpu_recipe_command_trains_the_default_models_network_on_the_cpu(tmp_path, packed):
    done, out, _ = _run(tmp_path, packed, "--steps-per-epoch", "2", "--epochs", "2", "--minutes", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "train.log").read_text()
    assert "left out (slices 20x16 smaller than patch 24): small" in log
    assert "steps/s" in log and "samples/s" in log and "data on device True" in log
    assert "network profile-routed (scratch (seed 0)); loss l1" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2 and summary["global_step"] == 4
    assert summary["steps_per_second"] > 0 and summary["left_out"] == ["small"]
    assert summary["learning_rate"] == pytest.approx(3e-4 * (4 / 16) ** 0.5)
    for role in ("main", "thick"):  # both networks of the default, trained together
        assert summary["network"][role]["anchor_input"] and summary["network"][role]["thickness_input"]
    for name in ("pair-unet-gpu.pt", "pair-unet-gpu.best.pt", "pair-unet-gpu.log.jsonl", "default-candidate.pt"):
        assert (out / name).is_file()
    assert summary["candidate"] == str(out / "default-candidate.pt")
    checkpoint = load_checkpoint(out / "pair-unet-gpu.best.pt")
    settings = checkpoint.training["settings"]
    # the default's recipe (train_default_model.py stage 4), not the packed file's older candidate settings (mse)
    assert settings["synthesis_loss"] == "l1" and settings["noise_std"] == 0.06
    assert settings["data_on_device"] is True and settings["precision"] == "float32"
    assert settings["thick_slice_probability"] == 0.5 and settings["training_volumes"] == ["fine", "coarse"]
    assert checkpoint.training["validation_volumes"] == ["val"]
    last = checkpoint.training["last_epoch"]
    assert last["val_syn_psnr"] is not None and last["val_bspline_psnr"] is not None  # validated with the anchor
    # both of the routed model's networks are scored, and the best epoch is chosen on both
    assert last["val_thick_syn_psnr"] is not None and settings["best_metric"] == "val_thin_thick_psnr"
    # the scratch start is the trainer's own: random weights drawn with the seed
    assert "scratch-init" in checkpoint.training["started_from"]
    _check_default_type_model(out / "default-candidate.pt")


def test_gpu_recipe_warm_starts_from_a_narrower_init_and_resumes(tmp_path, packed):
    import torch

    from SemanticInterpolationLib.models.checkpoint import save_checkpoint
    from SemanticInterpolationLib.models.pair_unet import PairUNet

    plain = PairUNet()  # pair-unet-24-48-96 without the anchor and profile inputs (the recipe's stage 1)
    plain.reset_parameters(generator=torch.Generator().manual_seed(5))
    init = tmp_path / "plain.pt"
    save_checkpoint(init, plain, normalization=IntensityNormalization(clip=False))
    done, out, _ = _run(tmp_path, packed, "--init", str(init), "--steps-per-epoch", "2", "--epochs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["learning_rate"] == pytest.approx(1e-4 * (4 / 16) ** 0.5)  # the warm-start rate
    assert summary["started_from"].startswith(f"warm start from {init}")
    assert summary["network"]["name"] == "pair-unet-24-48-96-anchor-profile"
    widened = load_checkpoint(out / "pair-unet-gpu.profile-init.pt")
    assert widened.config.anchor_input and widened.config.thickness_input
    done, out, _ = _run(tmp_path, packed, "--resume", "--steps-per-epoch", "2", "--epochs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["global_step"] == 4 and summary["started_from"].startswith("resumed")
    assert summary["learning_rate"] == pytest.approx(1e-4 * (4 / 16) ** 0.5)  # the run's own, not the scratch rate
    last = load_checkpoint(out / "pair-unet-gpu.pt")
    assert last.training["started_from"].startswith("resumed")
    first_layer = next(iter(last.model.state_dict().values()))  # planes: first, second, alpha, anchor, known, ratio
    assert float(first_layer[:, 4:].abs().max()) > 0  # training reached the new inputs' weights (zero at the start)
    _check_default_type_model(out / "default-candidate.pt", profile_used=False, routed=False)


def test_gpu_recipe_stops_at_an_epoch_boundary_within_its_budget(tmp_path, packed):
    done, out, wall = _run(tmp_path, packed, "--steps-per-epoch", "1", "--minutes", "0.4")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["epochs_done"] >= 1
    assert summary["wall_seconds"] <= 0.4 * 60 + 10  # at most one step and one epoch's files past the budget
    assert load_checkpoint(out / "pair-unet-gpu.pt").training["epochs_done"] == summary["epochs_done"]


def test_packer_writes_the_recipe_set_and_refuses_a_too_large_file(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "Resources" / "Scripts"))
    try:
        import pack_training_data as pack
    finally:
        sys.path.pop(0)
    cache = tmp_path / "cache"
    for name in (pack.recipe.ISOTROPIC_TRAINING + pack.recipe.ANISOTROPIC_TRAINING
                 + pack.recipe.PAIR_EXTRA_ANISOTROPIC + pack.recipe.VALIDATION):
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_text("")
    monkeypatch.setattr(pack.recipe, "CACHE", cache)
    training, validation = _volumes()
    monkeypatch.setattr(pack, "build", lambda lenient=True: (training, validation, {"settings": SETTINGS,
                                                                                    "lenient_dicom_reads": []}))
    assert pack.main(["--output", str(tmp_path / "p.npz")]) == 0
    loaded, val, meta = load_packed_volumes(tmp_path / "p.npz")
    assert [v.name for v in loaded] == ["fine", "coarse", "small"] and meta["settings"] == SETTINGS
    assert pack.main(["--output", str(tmp_path / "q.npz"), "--max-mib", "0.001"]) == 1
    assert pack.PAIR_SETTINGS["patch_size"] == 44 and pack.PAIR_SETTINGS["model_type"] == "pair-unet"


def test_weight_tables_round_trip_into_the_baselines_caches():
    from SemanticInterpolationLib.engine import baselines

    tables = bspline_weight_tables(4)
    assert len(tables["fraction"]) == 1 + 2 + 3  # gaps 2..4, offsets 1..gap-1
    midpoint = baselines.bspline_midpoint_weights(6)
    fraction = baselines.bspline_fraction_weights(3, 1, 6).copy()
    saved = dict(baselines._FRACTION_CACHE)
    try:
        baselines._FRACTION_CACHE.clear()
        install_bspline_weight_tables(json.loads(json.dumps(tables)))
        np.testing.assert_array_equal(baselines.bspline_midpoint_weights(6), midpoint)
        np.testing.assert_array_equal(baselines.bspline_fraction_weights(3, 1, 6), fraction)
    finally:
        baselines._FRACTION_CACHE.clear()
        baselines._FRACTION_CACHE.update(saved)
