"""Volumes for the MRML tests (slicer-core scenes): smooth synthetic voxels and volume nodes.

Import only after the test module has skipped itself when slicer-core is missing. Arrays are
``[k, j, i]`` (the order of ``slicer.util.arrayFromVolume``); matrices are 4x4 IJK-to-RAS in mm.
"""

from __future__ import annotations

import numpy as np


def smoothVoxels(shapeKJI=(6, 20, 16), dtype=np.int16, seed=1, base=400.0, amplitude=300.0,
                 frequencies=(3.0, 2.0, 4.0), noise=20.0) -> np.ndarray:
    """``base + amplitude * sin(fk k + fj j) cos(fi i)`` on [0, 1]^3 plus Gaussian noise (SD ``noise``)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in shapeKJI], indexing="ij")
    fk, fj, fi = frequencies
    values = base + amplitude * np.sin(fk * k + fj * j) * np.cos(fi * i) + rng.normal(0, noise, shapeKJI)
    return values.astype(dtype)


def addVolumeNode(scene, voxels: np.ndarray, matrix: np.ndarray, name: str = "MR",
                  className: str = "vtkMRMLScalarVolumeNode", displayNodes: bool = False):
    """A new volume node in ``scene`` holding ``voxels`` with IJK-to-RAS ``matrix``."""
    from SemanticInterpolationLib.mrml import logic as mrml

    node = scene.AddNewNodeByClass(className, name)
    node.SetIJKToRASMatrix(mrml.arrayToMatrix(matrix))
    node.SetAndObserveImageData(mrml.imageDataFromVoxels(voxels))
    if displayNodes:
        node.CreateDefaultDisplayNodes()
    return node
