"""Checks of a checkpoint's fields before anything is built from them (used by :mod:`.checkpoint`).

A checkpoint is plain data from a file, so every field can have any type. The checks here work for
every registered model type (:mod:`.registry`), without lists of fields per type:

* :func:`configuration_of` turns any failure of the type's ``config_from_dict`` into a one-line
  :class:`~SemanticInterpolationLib.errors.CheckpointError`;
* :func:`checked_metadata` checks the shared metadata (a mapping; spacing two positive numbers;
  training, inference and extra state mappings);
* :func:`build_checked_network` builds the network on torch's ``meta`` device first (shapes only, no
  memory), compares every state_dict name and shape with the stored tensors, caps the number of
  parameters, and runs the engine's calls (``encode``, ``synthesize``, ``reconstruct``) on a one-slice
  input of the engine's shape ``[1, 1, m, m]`` there, so a configuration that claims huge widths or
  takes another number of input channels is refused before any real memory is allocated. Only then
  is the network built for real.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

#: networks with more parameters are refused (the largest bundled model has about 0.6 million)
MAX_PARAMETERS = 200_000_000


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def configuration_of(model_type: Any, data: Any, where: str) -> Any:
    """``model_type.config_from_dict(data)``; any failure becomes one :class:`CheckpointError` line."""
    try:
        return model_type.config_from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except Exception as exc:  # TypeError, ValueError, AttributeError, ... from a field of the wrong type
        raise CheckpointError(
            f"{where}: invalid {model_type.name} configuration in the checkpoint ({type(exc).__name__}: "
            f"{_first_line(exc)}); use a checkpoint written by SemanticInterpolation") from None


def _mapping(value: Any, field: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where} is damaged: its {field} must be a mapping, not {type(value).__name__} "
                              f"({str(value)[:60]!r}); use a checkpoint written by SemanticInterpolation")
    return dict(value)


def checked_metadata(payload: Mapping[str, Any], model_type: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's ``metadata`` and ``extra_state`` as dictionaries, their shared fields checked.

    ``in_plane_spacing_mm`` must be None or two positive finite numbers (millimetres, x then y);
    ``training``, ``inference`` and ``intensity_normalization`` must be mappings; ``inference.synthesis``
    one of the synthesis modes the model type offers (its network class's ``synthesis_modes``).
    """
    meta = _mapping(payload.get("metadata"), "metadata", where)
    extra = _mapping(payload.get("extra_state"), "extra_state", where)
    for field in ("training", "inference", "intensity_normalization"):
        _mapping(meta.get(field), f"metadata field {field!r}", where)
    spacing = meta.get("in_plane_spacing_mm")
    if spacing is not None:
        numbers = list(spacing) if isinstance(spacing, (list, tuple)) else None
        if (numbers is None or len(numbers) != 2
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in numbers)
                or not all(math.isfinite(float(s)) and float(s) > 0 for s in numbers)):
            raise CheckpointError(f"{where} is damaged: its in-plane spacing must be two positive numbers in mm, "
                                  f"got {str(spacing)[:60]!r}; use a checkpoint written by SemanticInterpolation")
    synthesis = (meta.get("inference") or {}).get("synthesis")
    if synthesis is not None:
        modes = tuple(getattr(model_type.model_class, "synthesis_modes", ()) or ())
        if not isinstance(synthesis, str) or (modes and synthesis not in modes):
            raise CheckpointError(f"{where} recommends the synthesis mode {str(synthesis)[:40]!r}, which its "
                                  f"{model_type.name} network does not offer ({', '.join(modes) or 'none listed'}); "
                                  "the checkpoint is damaged or from a newer program")
    digest = meta.get("weights_sha256")
    if digest is not None and not isinstance(digest, str):
        raise CheckpointError(f"{where} is damaged: its weights checksum is not a text")
    return meta, extra


def _architecture_mismatch(expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor],
                           config: Any, where: str) -> CheckpointError | None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(stored) if tuple(expected[k].shape) != tuple(stored[k].shape))
    if not (missing or unexpected or wrong_shape):
        return None
    details = []
    if missing:
        details.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
    if wrong_shape:
        k = wrong_shape[0]
        details.append(f"{len(wrong_shape)} tensors of other shapes (e.g. {k}: file {tuple(stored[k].shape)}, "
                       f"network {tuple(expected[k].shape)})")
    return CheckpointError(
        f"{where} holds weights of another architecture than its configuration ({getattr(config, 'name', '?')}) "
        "describes: " + "; ".join(details) + ". Use a checkpoint made for this network")


def _probe(model: nn.Module, device: torch.device) -> None:
    """Run the engine's calls on one slice ``[1, 1, m, m]`` (raises what the network raises)."""
    multiple = int(getattr(model.config, "size_multiple", 1) or 1)
    size = multiple * -(-16 // multiple)  # at least 16 pixels: instance normalisation needs more than one at the bottom
    if getattr(model, "is_volume_model", False):  # 3-D networks (sr-generator) take one-channel volumes
        volume = torch.zeros((1, 1, size, size, size), device=device)
        model.eval()
        with torch.no_grad():
            output = model(volume)
        if tuple(output.shape) != tuple(volume.shape):
            raise ValueError(f"a volume of shape {tuple(volume.shape)} gives an output of shape {tuple(output.shape)}")
        return
    slices = torch.zeros((1, 1, size, size), device=device)
    alpha = torch.full((1,), 0.5, device=device)
    extra = (slices,) if bool(getattr(model, "needs_anchor", False)) else ()
    model.eval()  # as the engine runs it (batch normalisation with running statistics)
    with torch.no_grad():
        state = model.encode(slices)
        outputs = [model.synthesize(state, state, alpha, *extra), model.reconstruct(state)]
    for output in outputs:
        if tuple(output.shape[:2]) != (1, 1) or tuple(output.shape[2:]) != (size, size):
            raise ValueError(f"a slice of shape (1, 1, {size}, {size}) gives an output of shape {tuple(output.shape)}")


def build_checked_network(model_type: Any, config: Any, state_dict: Mapping[str, torch.Tensor],
                          where: str) -> nn.Module:
    """The network of ``config`` with the stored weights' names and shapes checked first, on the meta
    device (no memory is allocated for a configuration that does not match its weights); then built
    on the CPU. The weights are not loaded here."""
    try:
        with torch.device("meta"):
            shape_model = model_type.build(config)
    except Exception as exc:
        raise CheckpointError(f"{where}: the {model_type.name} configuration does not build a network "
                              f"({_first_line(exc)}); use a checkpoint written by SemanticInterpolation") from None
    mismatch = _architecture_mismatch(shape_model.state_dict(), state_dict, config, where)
    if mismatch is not None:
        raise mismatch
    parameters = sum(p.numel() for p in shape_model.parameters())
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{where} describes a {model_type.name} network of {parameters:,} parameters, more "
                              f"than the {MAX_PARAMETERS:,} this program loads; the file is damaged or not meant "
                              "for slice interpolation")
    probed = True
    try:
        _probe(shape_model, torch.device("meta"))
    except NotImplementedError:
        probed = False  # an operation without a meta kernel: probe the real network below
    except Exception as exc:
        raise _probe_error(model_type, where, exc) from None
    del shape_model
    try:
        model = model_type.build(config)
    except Exception as exc:
        raise CheckpointError(f"{where}: the {model_type.name} configuration does not build a network "
                              f"({_first_line(exc)}); use a checkpoint written by SemanticInterpolation") from None
    if not probed:
        try:
            _probe(model, torch.device("cpu"))
        except Exception as exc:
            raise _probe_error(model_type, where, exc) from None
    return model


def _probe_error(model_type: Any, where: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{where}: its {model_type.name} network does not take the engine's one-channel slices "
        f"({type(exc).__name__}: {_first_line(exc)}), e.g. a channel count that is not 1; use a checkpoint "
        "written by SemanticInterpolation")
