"""Issue 14 items 12 and 13: malformed checkpoint fields and configurations that claim huge networks.

Every crafted file is a real ``torch.save`` archive made from a real checkpoint with one field changed.
The checks must be one-line CheckpointErrors from load_checkpoint and through every command that
loads a checkpoint (upsample, train --init, evaluate, demo, the Slicer batch script, the MRML logic).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import T1_2MM
from SemanticInterpolationLib.cli import main
from SemanticInterpolationLib.errors import CheckpointError
from SemanticInterpolationLib.models.asi import ASIAutoencoder, AutoencoderConfig
from SemanticInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig
from SemanticInterpolationLib.models.registry import get_model_type, model_type_names

SMALL_ASI = AutoencoderConfig(encoder_channels=(4, 8), bottleneck_channels=8, latent_channels=4,
                              decoder_channels=(8, 4), head_channels=4, name="tiny")


def crafted(tmp_path: Path, name: str, change, model: torch.nn.Module | None = None) -> Path:
    """A real checkpoint of ``model`` (default a small ASI network) whose payload ``change`` edits."""
    source = save_checkpoint(tmp_path / f"{name}.source.pt", model if model is not None else ASIAutoencoder(SMALL_ASI),
                             in_plane_spacing_mm=(1.0, 1.0))
    payload = torch.load(source, weights_only=True)
    change(payload)
    target = tmp_path / f"{name}.pt"
    torch.save(payload, target)
    return target


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(payload):
        node = payload
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _in_channels_2(payload):
    model = ASIAutoencoder(AutoencoderConfig(**{**SMALL_ASI.__dict__, "in_channels": 2}))
    payload["architecture"] = model.config.to_dict()
    payload["state_dict"] = model.state_dict()
    payload["metadata"].pop("weights_sha256")


MALFORMED = {
    "channel count an int": _set("architecture", "encoder_channels", 4),
    "channel count a text": _set("architecture", "bottleneck_channels", "eight"),
    "channel list of texts": _set("architecture", "decoder_channels", ["8", "4"]),
    "architecture a list": _set("architecture", [1, 2]),
    "negative slope a text": _set("architecture", "negative_slope", "steep"),
    "metadata a text": _set("metadata", "weights"),
    "metadata a list": _set("metadata", [1, 2, 3]),
    "spacing a text": _set("metadata", "in_plane_spacing_mm", "1mm"),
    "spacing of texts": _set("metadata", "in_plane_spacing_mm", ["a", "b"]),
    "spacing a number": _set("metadata", "in_plane_spacing_mm", 1.5),
    "spacing negative": _set("metadata", "in_plane_spacing_mm", [1.0, -1.0]),
    "training a list": _set("metadata", "training", ["epoch", 3]),
    "inference a text": _set("metadata", "inference", "residual"),
    "inference mode unknown": _set("metadata", "inference", {"synthesis": 7}),
    "normalisation a list": _set("metadata", "intensity_normalization", [1, 99]),
    "extra state a text": _set("extra_state", "optimizer"),
    "checksum a number": _set("metadata", "weights_sha256", 12),
    "in_channels 2": _in_channels_2,
    "state_dict key a number": lambda p: p["state_dict"].update({3: torch.zeros(1)}),
}


def one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_checkpoint_fields_are_one_line_checkpoint_errors(tmp_path: Path, case: str) -> None:
    path = crafted(tmp_path, "bad", MALFORMED[case])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    one_line(str(info.value))
    assert str(path.name) in str(info.value)  # names the file


def test_malformed_pair_unet_fields_are_one_line_checkpoint_errors(tmp_path: Path) -> None:
    model = PairUNet(PairUNetConfig(widths=(4, 8), name="tiny-pair"))
    for change in (_set("architecture", "widths", 8), _set("architecture", "anchor_input", "yes"),
                   _set("metadata", "in_plane_spacing_mm", {"x": 1})):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(crafted(tmp_path, "pair", change, model))
        one_line(str(info.value))


def test_every_registered_model_type_loads_its_own_checkpoint(tmp_path: Path) -> None:
    """The generic checks (meta-device build, probe of encode/synthesize/reconstruct) accept every type."""
    for name in model_type_names():
        model = get_model_type(name).build()
        path = save_checkpoint(tmp_path / f"{name}.pt", model)
        loaded = load_checkpoint(path)
        assert loaded.model_type == name
        for key, tensor in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], tensor)


@pytest.mark.parametrize("case", ["channel count an int", "metadata a text", "in_channels 2", "spacing a text"])
def test_malformed_checkpoint_through_the_commands(tmp_path: Path, capsys, case: str) -> None:
    path = crafted(tmp_path, "bad", MALFORMED[case])
    volume = str(T1_2MM)
    commands = {
        "upsample": ["upsample", volume, str(tmp_path / "o.nii.gz"), "--factor", "2", "--checkpoint", str(path),
                     "--device", "cpu"],
        "train --init": ["train", volume, "--output", str(tmp_path / "m.pt"), "--init", str(path), "--epochs", "1",
                         "--patch-size", "32", "--device", "cpu"],
        "evaluate": ["evaluate", volume, "--factors", "2", "--methods", "asi", "--checkpoint", str(path),
                     "--output", str(tmp_path / "eval"), "--device", "cpu"],
        "demo": ["demo", "--input", volume, "--checkpoint", str(path), "--output", str(tmp_path / "demo"),
                 "--device", "cpu"],
    }
    for label, argv in commands.items():
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("semantic-interpolation: error")]
        assert code == 1 and len(lines) == 1 and "Traceback" not in err, (label, err)
        assert "bad.pt" in lines[0], (label, lines[0])
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "m.pt").exists()


def test_malformed_checkpoint_in_the_batch_script_and_the_mrml_logic(tmp_path: Path) -> None:
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed: the MRML checks need it")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    from mrml_helpers import addVolumeNode, smoothVoxels
    from SemanticInterpolationLib.mrml import batch as mrml_batch
    from SemanticInterpolationLib.mrml.logic import SemanticInterpolationLogic

    for case in ("channel count an int", "metadata a list", "in_channels 2"):
        path = crafted(tmp_path, "bad", MALFORMED[case])
        messages: list[str] = []
        code = mrml_batch.main(["--input", str(T1_2MM), "--output", str(tmp_path / "out"), "--factor", "2",
                                "--checkpoint", str(path), "--device", "cpu"], log=messages.append)
        assert code in (mrml_batch.EXIT_USAGE, mrml_batch.EXIT_SOME_FAILED), messages
        assert any("bad.pt" in m for m in messages) and not any("Traceback" in m for m in messages), messages

        scene = slicer.vtkMRMLScene()
        node = addVolumeNode(scene, smoothVoxels((4, 16, 16)), np.diag([1.0, 1.0, 3.0, 1.0]))
        with pytest.raises(CheckpointError) as info:
            SemanticInterpolationLogic().upsample(node, 2, checkpoint=str(path), device="cpu")
        one_line(str(info.value))


HUGE_WIDTH = 1536


def _claims_huge_widths(payload):
    w = HUGE_WIDTH
    payload["architecture"].update(encoder_channels=[w, w], decoder_channels=[w, w], bottleneck_channels=w,
                                   latent_channels=w, head_channels=w)


PEAK_MEMORY = """
import resource, sys
from SemanticInterpolationLib.models.checkpoint import load_checkpoint
from SemanticInterpolationLib.errors import CheckpointError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_checkpoint(sys.argv[1])
    message = None
except CheckpointError as exc:
    message = str(exc)
print(json.dumps({"grown_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "message": message}))
""".replace("import resource", "import json, resource")


def test_a_config_claiming_huge_widths_is_refused_before_allocating(tmp_path: Path) -> None:
    pytest.importorskip("resource", reason="peak memory is measured with the resource module (not on Windows)")
    path = crafted(tmp_path, "huge", _claims_huge_widths)
    assert path.stat().st_size < 1 << 20  # a small file ...
    with torch.device("meta"):  # ... whose configuration claims a network of more than half a gigabyte
        claimed = ASIAutoencoder(AutoencoderConfig(**{**SMALL_ASI.__dict__, "encoder_channels": (HUGE_WIDTH,) * 2,
                                                      "decoder_channels": (HUGE_WIDTH,) * 2,
                                                      "bottleneck_channels": HUGE_WIDTH,
                                                      "latent_channels": HUGE_WIDTH, "head_channels": HUGE_WIDTH}))
    claimed_bytes = 4 * sum(p.numel() for p in claimed.parameters())
    assert claimed_bytes > 1 << 29
    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(Path(__import__("SemanticInterpolationLib").__file__).parents[1]),
                                                  os.environ.get("PYTHONPATH", "")])}
    # load it once in a fresh interpreter after torch is imported, so the peak growth is the loading's own
    script = "import torch, SemanticInterpolationLib.models.checkpoint\n" + PEAK_MEMORY
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["message"] and "another architecture" in report["message"], report
    assert report["grown_kib"] * 1024 < claimed_bytes / 8, report  # nothing near the claimed size was allocated


def test_parameter_cap(tmp_path: Path, monkeypatch) -> None:
    from SemanticInterpolationLib.models import checkpoint_checks

    path = save_checkpoint(tmp_path / "m.pt", ASIAutoencoder(SMALL_ASI))
    monkeypatch.setattr(checkpoint_checks, "MAX_PARAMETERS", 100)
    with pytest.raises(CheckpointError, match="parameters, more than the 100"):
        load_checkpoint(path)
