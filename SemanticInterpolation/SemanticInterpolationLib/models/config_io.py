"""Reading a model type's configuration back from a checkpoint: one rule for every type.

A configuration is a frozen dataclass with ``validate()``; checkpoints store it as a plain mapping in
which tuples are lists. :func:`config_from_dict` is the inverse of that, and turns every way the
stored mapping can be wrong into one :class:`~..errors.CheckpointError` line.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, TypeVar

from ..errors import CheckpointError

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], data: Any, type_name: str, list_fields: Sequence[str] = ()) -> Config:
    """``cls(**data)``, validated; ``list_fields`` are stored as lists and become tuples.

    Raises :class:`CheckpointError` (naming ``type_name``) when ``data`` is not a mapping, has fields
    ``cls`` does not know (a newer program wrote it), a list field that is not a list, or values that
    build no network (``TypeError``/``ValueError`` from the constructor or ``validate``).
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{type_name} configuration must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{type_name} configuration has unknown fields {unknown}: the checkpoint was written "
                              "by a newer or different program; update SemanticInterpolation")
    values = dict(data)
    for key in list_fields:
        if key in values:
            if not isinstance(values[key], (list, tuple)):
                raise CheckpointError(f"invalid {type_name} configuration in checkpoint: {key} must be a list, "
                                      f"got {values[key]!r}")
            values[key] = tuple(values[key])
    try:
        config = cls(**values)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid {type_name} configuration in checkpoint: {exc}") from exc
    return config
