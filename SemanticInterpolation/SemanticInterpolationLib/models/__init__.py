"""Network types, their registry, intensity normalisation and checkpoint files.

* :mod:`.registry`: model-type name -> network class and configuration class;
* :mod:`.asi`: the ASI autoencoder of the journal paper (model type ``"asi"``);
* :mod:`.normalization`: the intensity mapping a model was trained with;
* :mod:`.checkpoint`: safe checkpoint files that say their model type and configuration.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "ModelType": "registry", "get_model_type": "registry", "model_type_names": "registry",
    "model_type_of": "registry", "register_model_type": "registry", "DEFAULT_MODEL_TYPE": "registry",
    "ASIAutoencoder": "asi", "AutoencoderConfig": "asi",
    "IntensityNormalization": "normalization", "IntensityRange": "normalization",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "resolve_checkpoint": "checkpoint", "find_default_checkpoint": "checkpoint",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
