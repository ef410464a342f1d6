"""Shared pytest fixtures: real MRI fixtures, random-init checkpoints, a linear probe network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SemanticInterpolationLib import ASIAutoencoder, AutoencoderConfig, save_checkpoint

DATA_DIR = Path(__file__).resolve().parents[1] / "Data"
#: real T1 brain MRI, 33x41x25 voxels of 2 mm (nibabel test data, MIT)
T1_2MM = DATA_DIR / "anatomical_t1_2mm.nii"
#: real oblique anisotropic MRI, 58x58x24 voxels of 4x4x5 mm (dipy test data, BSD-3)
OBLIQUE_ANISO = DATA_DIR / "aniso_oblique_4x4x5mm.nii.gz"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class LinearProbeAutoencoder(ASIAutoencoder):
    """A real torch network whose latent space is the image itself (space-to-depth).

    encode = pixel_unshuffle, decode = pixel_shuffle: exact and linear, so mixing latents with
    alpha is exactly linear interpolation of the (normalised) slices. It makes the engine's
    slice order, alphas, padding and intensity mapping checkable to float precision.
    """

    def __init__(self) -> None:
        super().__init__(AutoencoderConfig())
        self.encode_batches: list[int] = []
        self.decode_batches: list[int] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.encode_batches.append(x.shape[0])
        return F.pixel_unshuffle(x, self.config.size_multiple)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.decode_batches.append(z.shape[0])
        return F.pixel_shuffle(z, self.config.size_multiple)


@pytest.fixture
def probe_model() -> LinearProbeAutoencoder:
    return LinearProbeAutoencoder()


@pytest.fixture
def random_model() -> ASIAutoencoder:
    torch.manual_seed(0)
    return ASIAutoencoder().eval()


@pytest.fixture
def random_checkpoint(tmp_path: Path, random_model: ASIAutoencoder) -> Path:
    path = tmp_path / "random_init.pt"
    save_checkpoint(path, random_model, in_plane_spacing_mm=(1.0, 1.0), training={"note": "random init for tests"})
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def scene():
    """A fresh slicer-core MRML scene, also set as ``slicer.mrmlScene`` (as in Slicer) for the test."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    newScene = slicer.vtkMRMLScene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = newScene  # the logic itself must use the input node's scene, not this global
    yield newScene
    newScene.Clear(True)
    slicer.mrmlScene = previous
