"""Model types: a name -> the network class and its configuration class.

Every checkpoint stores its model type (``"model_type"``) next to the configuration
(``"architecture"``); a checkpoint without the field is the journal ASI autoencoder, so files
written before model types existed keep loading. The CLI, Python, the Slicer logic, training,
evaluation and the benchmarks look model types up here.

A configuration class has ``from_dict(data) -> config`` (raising
:class:`~SemanticInterpolationLib.errors.CheckpointError` for bad fields), ``to_dict()`` and
``validate()``; a network class is built as ``model_class(config)`` and keeps it as ``.config``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import CheckpointError

#: model type of checkpoints that do not say theirs (written before model types existed)
DEFAULT_MODEL_TYPE = "asi"


@dataclass(frozen=True)
class ModelType:
    """One kind of network: its registry name, a one-line description and where its classes live.

    The classes are named by module and attribute so that looking a type up imports only its module.
    """

    name: str
    description: str
    module: str  # module of this package (relative to SemanticInterpolationLib.models)
    model_class_name: str
    config_class_name: str

    def _attribute(self, name: str) -> Any:
        return getattr(importlib.import_module(f".{self.module}", __package__), name)

    @property
    def model_class(self) -> type[nn.Module]:
        return self._attribute(self.model_class_name)

    @property
    def config_class(self) -> type:
        return self._attribute(self.config_class_name)

    def config_from_dict(self, data: Any) -> Any:
        """The configuration stored in a checkpoint, validated (:class:`CheckpointError` if it does not build)."""
        return self.config_class.from_dict(data)

    def build(self, config: Any = None) -> nn.Module:
        """A new network of this type (default configuration when ``config`` is None)."""
        return self.model_class(config if config is not None else self.config_class())


_REGISTRY: dict[str, ModelType] = {}


def register_model_type(model_type: ModelType) -> ModelType:
    """Add ``model_type`` to the registry (a name can be registered once)."""
    if model_type.name in _REGISTRY and _REGISTRY[model_type.name] != model_type:
        raise ValueError(f"model type {model_type.name!r} is already registered")
    _REGISTRY[model_type.name] = model_type
    return model_type


def model_type_names() -> list[str]:
    """Registered model-type names, the default first."""
    return sorted(_REGISTRY, key=lambda name: (name != DEFAULT_MODEL_TYPE, name))


def get_model_type(name: str | None) -> ModelType:
    """The registered type called ``name`` (None = :data:`DEFAULT_MODEL_TYPE`).

    Raises :class:`CheckpointError` naming the known types when ``name`` is unknown.
    """
    key = DEFAULT_MODEL_TYPE if name is None else name
    if not isinstance(key, str) or key not in _REGISTRY:
        raise CheckpointError(
            f"unknown model type {key!r}; this SemanticInterpolation knows {', '.join(model_type_names())}. "
            "The checkpoint was written by a newer or different program: update SemanticInterpolation"
        )
    return _REGISTRY[key]


def model_type_of(model: nn.Module) -> ModelType:
    """The registered type whose network class ``model`` is an instance of."""
    for model_type in _REGISTRY.values():
        if isinstance(model, model_type.model_class):
            return model_type
    raise TypeError(f"{type(model).__name__} is not a registered model type ({', '.join(model_type_names())})")


register_model_type(ModelType(
    name="asi", description="ASI autoencoder (Sander, de Vos, Isgum 2022): latent maps mixed with alpha = i/K",
    module="asi", model_class_name="ASIAutoencoder", config_class_name="AutoencoderConfig"))
register_model_type(ModelType(
    name="pair-unet", description="full-resolution U-Net on both neighbours and alpha: a learned correction "
    "to their linear mix", module="pair_unet", model_class_name="PairUNet", config_class_name="PairUNetConfig"))
register_model_type(ModelType(
    name="profile-routed", description="two pair U-Nets chosen by the told slice profile: one for thick slices, "
    "one for thin slices and an unknown profile", module="profile_routed", model_class_name="ProfileRoutedPairUNet",
    config_class_name="ProfileRoutedConfig"))
register_model_type(ModelType(
    name="hrinet", description="HRINet (thesis chapter 3): encoder feature maps mixed with alpha at several scales "
    "and concatenated into the decoder", module="hrinet", model_class_name="HRINet", config_class_name="HRINetConfig"))
register_model_type(ModelType(
    name="xuan-vae", description="Xuan et al. stage I: slice VAE (spatial latent), means of neighbouring slices "
    "mixed; trained with fidelity, adversarial, prior and local-linearity losses", module="xuan_vae",
    model_class_name="XuanVAE", config_class_name="XuanVAEConfig"))
register_model_type(ModelType(
    name="sr-generator", description="Xuan et al. stage II: residual 3-D CNN on the B-spline-upsampled volume, "
    "trained on volumes a slice model synthesised (train-sr); one factor K", module="sr_generator",
    model_class_name="SRGenerator", config_class_name="SRGeneratorConfig"))
