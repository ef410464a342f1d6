"""SemanticInterpolationLib: through-plane upsampling of anisotropic MRI with the ASI autoencoder.

Plain Python (torch, numpy, SimpleITK); imports neither Qt nor Slicer, so it runs in Slicer's
Python console, in batch jobs, on the command line and on a cluster.

Importing the package is cheap and needs no third-party package: the names below are loaded
on first use (PEP 562), so a Slicer module can import ``SemanticInterpolationLib.geometry`` or
``.errors`` before torch is installed, and ``SemanticInterpolationLogic`` (VTK/MRML) is only
imported when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: public name -> submodule that defines it
_EXPORTS = {
    "ASIAutoencoder": "model", "AutoencoderConfig": "model",
    "ASIEngine": "engine", "output_slice_count": "engine", "upsample_array": "engine", "validate_factor": "engine",
    "Checkpoint": "checkpoint", "find_default_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "resolve_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "CheckpointError": "errors", "DeviceError": "errors", "InputError": "errors", "OperationCancelled": "errors",
    "SemanticInterpolationError": "errors",
    "IntensityNormalization": "normalization",
    "upsample_image": "upsampling",
    "SemanticInterpolationLogic": "mrml",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
