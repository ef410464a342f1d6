"""SemanticInterpolationLib: through-plane upsampling of anisotropic MRI with the ASI autoencoder.

Plain Python (torch, numpy, SimpleITK); imports neither Qt nor Slicer, so it runs in Slicer's
Python console, in batch jobs, on the command line and on a cluster.
"""

from ._version import __version__
from .checkpoint import Checkpoint, find_default_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from .engine import ASIEngine, output_slice_count, upsample_array, validate_factor
from .errors import (CheckpointError, DeviceError, InputError, OperationCancelled,
                     SemanticInterpolationError)
from .model import ASIAutoencoder, AutoencoderConfig
from .normalization import IntensityNormalization

__all__ = [
    "__version__", "ASIAutoencoder", "AutoencoderConfig", "ASIEngine", "Checkpoint", "CheckpointError",
    "DeviceError", "InputError", "IntensityNormalization", "OperationCancelled", "SemanticInterpolationError",
    "find_default_checkpoint", "load_checkpoint", "resolve_checkpoint", "output_slice_count", "save_checkpoint", "upsample_array", "validate_factor",
]


def __getattr__(name: str):
    """Lazy exports: ``SemanticInterpolationLogic`` imports VTK/MRML, so only when asked for."""
    if name == "SemanticInterpolationLogic":
        from .mrml import SemanticInterpolationLogic

        return SemanticInterpolationLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
