"""Issue 14 items 2 and 11: train outputs never overwrite an input volume; a network that outputs
NaN/Inf is a clear error, not silently written zeros."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import T1_2MM, file_digest
from SemanticInterpolationLib import ASIEngine, CheckpointError, InputError
from SemanticInterpolationLib.models.pair_unet import PairUNet
from SemanticInterpolationLib.training import Trainer, TrainingConfig


@pytest.mark.parametrize("option", ["output", "best_output", "log_path"])
def test_train_outputs_may_not_name_a_training_or_validation_volume(tmp_path, option):
    train = tmp_path / "train.nii"
    validation = tmp_path / "validation.nii"
    shutil.copy(T1_2MM, train)
    shutil.copy(T1_2MM, validation)
    digests = (file_digest(train), file_digest(validation))
    for victim in (train, validation):
        settings = {"output": tmp_path / "m.pt", option: victim}
        with pytest.raises(InputError, match="would overwrite the training or validation volume"):
            Trainer(TrainingConfig([str(train)], validation_volumes=[str(validation)], patch_size=24,
                                   device="cpu", **settings))
    assert (file_digest(train), file_digest(validation)) == digests
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.glob("*.jsonl"))


def test_network_output_that_is_not_finite_is_a_clear_error():
    model = PairUNet()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    volume = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(CheckpointError, match="NaN or infinite values for output slice"):
        ASIEngine(model, "cpu").upsample(volume, 2)
