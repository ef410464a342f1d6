"""The bundled sample: a small real anisotropic brain MRI (no download needed).

``brain1_image.nrrd`` from the PyRadiomics 3.1.0 source distribution (BSD-3-Clause; see
``Resources/SampleData/NOTICE.txt``): T1-weighted post-contrast, 256 x 256 x 25 voxels of
0.78 x 0.78 x 6.5 mm, int16, axial slices. The Slicer module can register it with the Sample
Data module from :data:`SAMPLE` and :func:`find_sample`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

SAMPLE_DATA_ENV = "SEMANTIC_INTERPOLATION_SAMPLE_DATA"


@dataclass(frozen=True)
class SampleVolume:
    file_name: str
    name: str  # node name / short label
    description: str
    sha256: str
    notice: str = "NOTICE.txt"


SAMPLE = SampleVolume(
    file_name="brain1_image.nrrd",
    name="AnisotropicBrainT1",
    description="Real T1-weighted post-contrast brain MRI, 256x256x25, 0.78x0.78x6.5 mm (PyRadiomics brain1, "
                "BSD-3-Clause)",
    sha256="fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
)


def sample_data_folders() -> list[Path]:
    """Where the sample is looked for, in order: ``$SEMANTIC_INTERPOLATION_SAMPLE_DATA``, the Slicer
    module's ``Resources/SampleData``, the repository's ``Resources/SampleData``, a wheel install's
    ``<prefix>/share/semantic-interpolation/SampleData`` (see :mod:`.datafiles`)."""
    from .datafiles import bundled_data_folders

    folders = []
    env = os.environ.get(SAMPLE_DATA_ENV)
    if env:
        folders.append(Path(env).expanduser())
    folders += bundled_data_folders("SampleData")
    return folders


def find_sample(sample: SampleVolume = SAMPLE) -> Path:
    """Path of the bundled sample file; :class:`InputError` saying where it was looked for when absent."""
    folders = sample_data_folders()
    for folder in folders:
        candidate = folder / sample.file_name
        if candidate.is_file():
            return candidate
    raise InputError(
        f"the bundled sample {sample.file_name} was not found (looked in {', '.join(str(f) for f in folders)}); "
        f"reinstall the package, run from a source checkout, or set {SAMPLE_DATA_ENV} to the folder holding it"
    )
