"""SemanticInterpolationLib: through-plane upsampling of anisotropic MRI with learned slice synthesis.

Plain Python (torch, numpy, SimpleITK); imports neither Qt nor Slicer, so it runs in Slicer's
Python console, in batch jobs, on the command line and on a cluster.

Layout (each subpackage has one job):

* ``models/``     network types, their registry, intensity normalisation and checkpoint files;
* ``engine/``     numpy-in/numpy-out upsampling with a model, conventional baselines, devices;
* ``volumes/``    image files (SimpleITK I/O, atomic writes) and slice-grid geometry;
* ``upsampling``  the image-level API: a SimpleITK image in, an upsampled image out;
* ``training/``   training and fine-tuning; ``evaluation/`` scoring against baselines;
* ``cli/``        the ``semantic-interpolation`` command, one module per subcommand;
* ``mrml/``       all MRML glue: the Slicer module's logic, batch, training and evaluation tabs;
* ``bundled/``    where the bundled default model and sample volume are found.

Importing the package is cheap and needs no third-party package: the names below are loaded
on first use (PEP 562), so a Slicer module can import ``SemanticInterpolationLib.volumes.geometry`` or
``.errors`` before torch is installed, and ``SemanticInterpolationLogic`` (VTK/MRML) is only
imported when asked for.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

#: public name -> submodule that defines it
_EXPORTS = {
    "ASIAutoencoder": "models.asi", "AutoencoderConfig": "models.asi",
    "model_type_names": "models.registry", "get_model_type": "models.registry",
    "ASIEngine": "engine.synthesis", "output_slice_count": "engine.synthesis",
    "upsample_array": "engine.synthesis", "validate_factor": "engine.synthesis",
    "Checkpoint": "models.checkpoint", "find_default_checkpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint", "resolve_checkpoint": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "CheckpointError": "errors", "DeviceError": "errors", "InputError": "errors", "OperationCancelled": "errors",
    "SemanticInterpolationError": "errors",
    "IntensityNormalization": "models.normalization",
    "upsample_image": "upsampling",
    "SemanticInterpolationLogic": "mrml.logic",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
