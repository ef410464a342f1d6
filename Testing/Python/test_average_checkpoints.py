"""Resources/Scripts/average_checkpoints.py: the weight average of epochs of one run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SemanticInterpolationLib import ASIEngine, load_checkpoint
from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.models.checkpoint import save_checkpoint
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

SCRIPT = Path(__file__).resolve().parents[2] / "Resources" / "Scripts" / "average_checkpoints.py"


def _script():
    spec = importlib.util.spec_from_file_location("average_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _epoch(path: Path, seed: int, config: PairUNetConfig) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    net = PairUNet(config)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.1)
    save_checkpoint(path, net, normalization=IntensityNormalization(clip=False), in_plane_spacing_mm=(0.5, 0.5),
                    training={"epochs_done": seed})
    return path, {k: v.clone() for k, v in net.state_dict().items()}


def test_the_average_holds_the_mean_of_each_weight_and_runs_through_the_engine(tmp_path):
    config = PairUNetConfig(widths=(4, 8), anchor_input=True, thickness_input=True)
    epochs = [_epoch(tmp_path / f"epoch{i}.pt", i, config) for i in range(3)]
    target = _script().average_checkpoints(tmp_path / "average.pt", [path for path, _ in epochs], tta="pair-flip")
    averaged = load_checkpoint(target)
    for name, value in averaged.model.state_dict().items():
        expected = torch.stack([state[name] for _, state in epochs]).mean(0)
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)
    assert averaged.normalization.clip is False and averaged.in_plane_spacing_mm == (0.5, 0.5)
    assert averaged.training["averaged_from"] == [str(path) for path, _ in epochs]
    assert averaged.metadata["inference"] == {"synthesis": "plain", "test_time_augmentation": "pair-flip"}
    volume = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    assert ASIEngine(averaged, "cpu").upsample(volume, 2, axis=0).shape == (9, 16, 16)


def test_networks_of_different_configurations_are_refused_and_nothing_is_written(tmp_path):
    first, _ = _epoch(tmp_path / "a.pt", 0, PairUNetConfig(widths=(4, 8)))
    other, _ = _epoch(tmp_path / "b.pt", 1, PairUNetConfig(widths=(4, 8), anchor_input=True))
    with pytest.raises(InputError, match="not the same network"):
        _script().average_checkpoints(tmp_path / "average.pt", [first, other])
    with pytest.raises(InputError, match="at least two"):
        _script().average_checkpoints(tmp_path / "average.pt", [first])
    assert not (tmp_path / "average.pt").exists()
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "average.pt"), str(first), str(other)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not the same network" in done.stderr
    assert not (tmp_path / "average.pt").exists()
