"""Two-process DistributedDataParallel training on the CPU (gloo), launched with torchrun.

The same ``train`` command runs under ``torch.distributed.run``; its quality must equal a
single-process run's within noise, and only rank 0 writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from SemanticInterpolationLib import load_checkpoint
from SemanticInterpolationLib.training import TrainingConfig, read_training_log, train

from conftest import OBLIQUE_ANISO, T1_2MM

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")

COMMON = ["--epochs", "2", "--steps-per-epoch", "4", "--patch-size", "32", "--learning-rate", "1e-3",
          "--synthesis-loss", "mse", "--lambda", "0.5", "--seed", "5", "--device", "cpu",
          "--validation-triplets", "3"]


def test_two_process_gloo_run_matches_single_process(tmp_path):
    folder = tmp_path / "ddp"
    folder.mkdir()
    output = folder / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "SemanticInterpolationLib.cli.train", str(T1_2MM), "--output", str(output),
               "--validation", str(OBLIQUE_ANISO), "--batch-size", "2", *COMMON]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # only rank 0 wrote: one checkpoint, one best checkpoint, one log with one start record
    assert sorted(p.name for p in folder.iterdir()) == ["ddp.best.pt", "ddp.log.jsonl", "ddp.pt"]
    records = read_training_log(folder / "ddp.log.jsonl")
    assert [r["event"] for r in records if r["event"] != "progress"] == ["start", "epoch", "epoch", "end"]
    assert records[0]["world_size"] == 2
    ddp = load_checkpoint(output)
    assert ddp.training["world_size"] == 2 and ddp.training["epochs_done"] == 2

    # a single process with the same effective batch (2 x 2 = 4) sees the same number of triplets
    single = train(TrainingConfig([str(T1_2MM)], output=str(tmp_path / "single.pt"),
                                  validation_volumes=[str(OBLIQUE_ANISO)], epochs=2, steps_per_epoch=4,
                                  batch_size=4, patch_size=32, learning_rate=1e-3, synthesis_loss="mse", lam=0.5,
                                  seed=5, device="cpu", validation_triplets=3))
    ddp_epochs = [r for r in records if r["event"] == "epoch"]
    print("ddp", [(r["train_loss"], r["val_syn_psnr"]) for r in ddp_epochs])
    print("single", [(r["train_loss"], r["val_syn_psnr"]) for r in single.history])
    for ours, theirs in zip(ddp_epochs, single.history):
        # both runs learn: the loss falls from epoch 1 to 2 in each
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=0.35), (ours, theirs)
    assert ddp_epochs[-1]["train_loss"] < ddp_epochs[0]["train_loss"]
    assert single.history[-1]["train_loss"] < single.history[0]["train_loss"]
    assert abs(ddp_epochs[-1]["val_syn_psnr"] - single.history[-1]["val_syn_psnr"]) < 3.0


def test_two_process_run_of_a_profile_routed_model_whose_batches_leave_one_network_unused(tmp_path):
    """Without thick samples the thick network gets no gradient; distributed training must allow that."""
    import torch

    from SemanticInterpolationLib import save_checkpoint
    from SemanticInterpolationLib.models.normalization import IntensityNormalization
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig
    from SemanticInterpolationLib.models.profile_routed import ProfileRoutedPairUNet

    torch.manual_seed(0)
    members = [PairUNet(PairUNetConfig(widths=w, anchor_input=True, thickness_input=True)) for w in ((4, 8), (6, 12))]
    routed = ProfileRoutedPairUNet.from_networks(*members)
    init = save_checkpoint(tmp_path / "routed.pt", routed, normalization=IntensityNormalization(clip=False))
    output = tmp_path / "run" / "ddp.pt"
    output.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "SemanticInterpolationLib.cli.train", str(T1_2MM), "--output", str(output), "--init", str(init),
               "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "3", "--patch-size", "24",
               "--thick-slice-probability", "0", "--device", "cpu", "--seed", "1"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    trained = load_checkpoint(output)
    assert trained.model_type == "profile-routed" and trained.training["world_size"] == 2
    state = trained.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in routed.state_dict().items() if k.startswith("thick."))
    assert any(not torch.equal(state[k], v) for k, v in routed.state_dict().items() if k.startswith("main."))
