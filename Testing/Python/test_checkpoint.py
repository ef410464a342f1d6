"""Checkpoint files: round trip, metadata, and every unsafe or broken file refused clearly."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import file_digest

from SemanticInterpolationLib import (ASIAutoencoder, AutoencoderConfig, CheckpointError, IntensityNormalization,
                                      __version__, load_checkpoint, save_checkpoint)
from SemanticInterpolationLib.models.checkpoint import CHECKPOINT_FORMAT, resolve_checkpoint


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    path = save_checkpoint(tmp_path / "m.pt", random_model, normalization=IntensityNormalization(0.5, 99.5),
                           in_plane_spacing_mm=(0.78, 0.78), training={"epochs": 3, "synthesis_loss": "ssim"})
    loaded = load_checkpoint(path)
    assert not loaded.model.training, "loaded models are in eval mode"
    for name, tensor in random_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert loaded.config == random_model.config
    assert loaded.normalization == IntensityNormalization(0.5, 99.5)
    assert loaded.in_plane_spacing_mm == (0.78, 0.78)
    assert loaded.training == {"epochs": 3, "synthesis_loss": "ssim"}
    assert loaded.project_version == __version__
    assert "asi-journal" in loaded.summary()


def test_spie_architecture_round_trip(tmp_path: Path) -> None:
    model = ASIAutoencoder(AutoencoderConfig.spie())
    loaded = load_checkpoint(save_checkpoint(tmp_path / "spie.pt", model))
    assert loaded.config.latent_channels == 16 and len(loaded.config.encoder_channels) == 4


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from the checkpoint ran"))


def test_crafted_pickle_is_refused_and_does_not_run(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    marker = tmp_path / "pwned.txt"
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "architecture": random_model.config.to_dict(),
               "state_dict": random_model.state_dict(), "metadata": {"x": _RunsCodeWhenUnpickled(marker)}}
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused.*never executes code"):
        load_checkpoint(path)
    assert not marker.exists()

    raw = tmp_path / "raw_pickle.pt"  # a plain pickle (not even a torch zip)
    raw.write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_corrupt_files_are_clear_errors(tmp_path: Path, random_checkpoint: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(random_checkpoint.read_bytes()[:5000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match="corrupt|cannot read|refused"):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_nan_weights_are_reported_as_corrupt(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    with torch.no_grad():
        random_model.decoder[0].weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", random_model)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    spie_weights = ASIAutoencoder(AutoencoderConfig.spie()).state_dict()
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "architecture": AutoencoderConfig().to_dict(),
               "state_dict": spie_weights, "metadata": {}}
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(path)


def test_foreign_and_future_files_are_refused(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    bare = tmp_path / "bare_state_dict.pt"
    torch.save(random_model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a SemanticInterpolation checkpoint.*bare state_dict"):
        load_checkpoint(bare)
    future = tmp_path / "future.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="update SemanticInterpolation"):
        load_checkpoint(future)
    unknown = tmp_path / "unknown_field.pt"
    arch = dict(random_model.config.to_dict(), attention_heads=4)
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "architecture": arch,
                "state_dict": random_model.state_dict()}, unknown)
    with pytest.raises(CheckpointError, match="unknown fields"):
        load_checkpoint(unknown)


def test_failed_save_keeps_the_existing_file(tmp_path: Path, random_checkpoint: Path, random_model: ASIAutoencoder,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    before = random_checkpoint.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        if hasattr(f, "write"):  # save_checkpoint writes through a Python file (a full disk is then an OSError)
            f.write(b"half a file")
        else:
            Path(f).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(random_checkpoint, random_model)
    assert random_checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [random_checkpoint.name], "no temporary file is left"


def test_missing_default_checkpoint_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import SemanticInterpolationLib.models.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "find_default_checkpoint", lambda: None)
    with pytest.raises(CheckpointError, match="needs a checkpoint.*--checkpoint"):
        resolve_checkpoint(None)


def test_default_checkpoint_from_environment(tmp_path: Path, random_checkpoint: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMANTIC_INTERPOLATION_DEFAULT_CHECKPOINT", str(random_checkpoint))
    assert resolve_checkpoint(None).path == str(random_checkpoint.absolute())


def test_damaged_files_always_give_a_checkpoint_error(tmp_path: Path, random_checkpoint: Path) -> None:
    """Random bytes, flipped bytes and truncations: never a crash, never a silently wrong model."""
    import random

    good = random_checkpoint.read_bytes()
    generator = random.Random(7)
    for i in range(60):
        data = bytearray(good)
        for _ in range(generator.randint(1, 8)):
            j = generator.randrange(len(data))
            data[j] = (data[j] + generator.randint(1, 255)) % 256
        if i % 3 == 0:
            data = data[: generator.randrange(len(data))]
        if i % 5 == 0:
            data = bytearray(generator.randbytes(generator.randint(0, 3000)))
        path = tmp_path / f"damaged{i}.pt"
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError:
            continue
        # a flip that hit only ignored bytes (e.g. zip padding) must leave the weights intact
        reference = load_checkpoint(random_checkpoint)
        for name, tensor in reference.model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[name], tensor), (i, name)


def test_flipped_weight_is_detected_by_the_checksum(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    path = save_checkpoint(tmp_path / "m.pt", random_model)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["encoder.0.weight"][0, 0, 0, 0] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_metadata_cannot_override_reserved_fields(tmp_path: Path, random_model: ASIAutoencoder) -> None:
    with pytest.raises(ValueError, match="must not override"):
        save_checkpoint(tmp_path / "m.pt", random_model, metadata={"training": {}})
    assert not (tmp_path / "m.pt").exists()


def test_a_wheel_install_finds_the_default_model_and_the_sample(tmp_path):
    """pip install of a built wheel (not editable): the default model and the sample are installed as
    data files and found from outside the source tree."""
    import os
    import shutil
    import subprocess
    import sys

    repository = Path(__file__).resolve().parents[2]
    if not (repository / "Resources" / "Models" / "default-model.pt").is_file():
        pytest.skip("no default model in this checkout")
    pip = [sys.executable, "-m", "pip"]
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {".venv", ".git", "build", "__pycache__"} | {n for n in names if n.endswith(".egg-info")}
        if Path(folder) == repository:  # outputs of the demo and the evaluation command
            skipped |= {"evaluation", "demo"}
        return skipped & set(names)

    shutil.copytree(repository, source, ignore=ignore)
    built = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"),
                                  str(source)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "wheels").glob("semantic_interpolation-*.whl"))
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the environment's own (editable) install of the project
    installed = subprocess.run(pip + ["install", "--no-deps", "--no-index", "--ignore-installed", "-q", "--prefix",
                                      str(prefix), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    site_packages = next(prefix.glob("lib*/python*/site-packages"))
    code = ("from SemanticInterpolationLib.models.checkpoint import find_default_checkpoint\n"
            "from SemanticInterpolationLib.bundled.sampledata import find_sample\n"
            "import SemanticInterpolationLib\n"
            "print(SemanticInterpolationLib.__file__)\nprint(find_default_checkpoint())\nprint(find_sample())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTIC_INTERPOLATION")}
    env["PYTHONPATH"] = str(site_packages)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    package, model, sample = run.stdout.strip().splitlines()
    assert Path(package).is_relative_to(site_packages)
    assert Path(model) == prefix / "share" / "semantic-interpolation" / "Models" / "default-model.pt"
    assert Path(sample) == prefix / "share" / "semantic-interpolation" / "SampleData" / "brain1_image.nrrd"
    assert file_digest(Path(model)) == file_digest(repository / "Resources" / "Models" / "default-model.pt")
    # the environment's own install of the project is untouched
    still = subprocess.run([sys.executable, "-c", "import SemanticInterpolationLib as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert still.returncode == 0 and not Path(still.stdout.strip()).is_relative_to(prefix), still.stderr
