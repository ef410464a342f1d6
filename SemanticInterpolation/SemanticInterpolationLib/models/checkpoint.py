"""Checkpoint files: autoencoder weights plus the metadata needed to use them correctly.

A checkpoint is a ``torch.save`` archive of plain data only::

    {"format": "SemanticInterpolation-checkpoint", "format_version": 1,
     "model_type": "asi",              # registry name (models/registry.py); absent = "asi"
     "architecture": {...the model type's configuration...},
     "state_dict": {name: tensor},
     "metadata": {"intensity_normalization": {...}, "in_plane_spacing_mm": [sx, sy] | None,
                  "training": {...}, "project_version": "x.y.z", "created": ISO-8601, ...},
     "extra_state": {...}}              # optional, e.g. optimiser state for resuming training

It is read with ``torch.load(weights_only=True)``, which refuses any pickled object other than
tensors and plain containers, so loading a file never runs code from it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .._version import __version__
from ..errors import CheckpointError, InputError
from ..volumes.fileio import atomic_output
from .checkpoint_checks import build_checked_network, checked_metadata, configuration_of
from .normalization import IntensityNormalization
from .registry import DEFAULT_MODEL_TYPE, get_model_type, model_type_of

CHECKPOINT_FORMAT = "SemanticInterpolation-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode, on the CPU), its model type and its metadata."""

    model: torch.nn.Module
    normalization: IntensityNormalization = field(default_factory=IntensityNormalization)
    in_plane_spacing_mm: tuple[float, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    project_version: str = __version__
    created: str = ""
    path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra_state: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        """The network's configuration (the model type's configuration class)."""
        return self.model.config

    @property
    def model_type(self) -> str:
        """Registry name of the network's type (see :mod:`.registry`)."""
        return model_type_of(self.model).name

    def summary(self) -> str:
        """One line for logs: model type, architecture, training data spacing and origin of the file."""
        spacing = ("x".join(f"{s:g}" for s in self.in_plane_spacing_mm) + " mm") if self.in_plane_spacing_mm else "unknown"
        source = self.path or "in memory"
        describe = getattr(self.model, "describe_architecture", None)
        architecture = describe() if callable(describe) else str(getattr(self.config, "name", ""))
        return (f"{self.model_type} model {architecture}, trained in-plane spacing {spacing}, "
                f"written by version {self.project_version or 'unknown'} [{source}]")


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the tensors (detects damaged weights)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    normalization: IntensityNormalization | None = None,
    in_plane_spacing_mm: tuple[float, float] | None = None,
    training: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (write, then rename).

    An existing file at ``path`` stays intact until the new one is complete.
    Returns the absolute path written.
    """
    normalization = normalization or IntensityNormalization()
    meta: dict[str, Any] = {
        "intensity_normalization": normalization.to_dict(),
        "in_plane_spacing_mm": [float(s) for s in in_plane_spacing_mm] if in_plane_spacing_mm else None,
        "training": dict(training or {}),
        "project_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    reserved = sorted(set(meta) & set(metadata or {}))
    if reserved:
        raise ValueError(f"metadata must not override {reserved}: pass them as their own arguments")
    meta.update(dict(metadata or {}))
    state_dict = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    meta["weights_sha256"] = weights_digest(state_dict)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_type": model_type_of(model).name,
        "architecture": model.config.to_dict(),
        "state_dict": state_dict,
        "metadata": meta,
        "extra_state": dict(extra_state or {}),
    }
    target = Path(path).expanduser().absolute()
    with atomic_output(target) as temporary:
        # through a Python file, so a full disk is an OSError(ENOSPC) (atomic_output says "no space left");
        # torch's own file writer reports it as an unexplained RuntimeError
        with open(temporary, "wb") as stream:
            try:
                torch.save(payload, stream)
            except RuntimeError as exc:
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                kept = f"; the existing {str(target)!r} was kept" if target.exists() else ""
                raise InputError(f"cannot write checkpoint {str(target)!r}: {str(exc).strip()[:200]}{kept}") from None
    return target


def inference_metadata(synthesis: str = "plain", test_time_augmentation: str = "none") -> dict[str, Any]:
    """``metadata["inference"]`` recommending ``synthesis`` and, unless ``"none"``, the test-time augmentation
    (the engine's defaults for the checkpoint; see :class:`..engine.synthesis.ASIEngine`)."""
    return {"synthesis": synthesis,
            **({"test_time_augmentation": test_time_augmentation} if test_time_augmentation != "none" else {})}


def save_verified_checkpoint(path: str | os.PathLike, model: torch.nn.Module, **options: Any) -> Path:
    """:func:`save_checkpoint` (``options`` as there), then read the file back: it must load as the same model
    type with every weight equal to ``model``'s, else :class:`RuntimeError` naming the file. Returns the path."""
    expected = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    target = save_checkpoint(path, model, **options)
    written = load_checkpoint(target)
    if written.model_type != model_type_of(model).name:
        raise RuntimeError(f"{target}: read back as a {written.model_type} model")
    for name, value in written.model.state_dict().items():
        if not torch.equal(value, expected[name]):
            raise RuntimeError(f"{target}: weight {name} did not read back as written")
    return target


def _file_kind(path: Path) -> str | None:
    """What ``path`` is when it is plainly not a PyTorch file (None: zip or pickle, let torch judge)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(1024)
    except OSError:
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None  # a zip archive (torch.save) or a binary pickle (legacy torch.save)
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file (e.g. a .nii.gz image)"
    if head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c", b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c"):
        return "a NIfTI/ANALYZE image"
    if head.startswith(b"NRRD"):
        return "a NRRD image"
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (e.g. a Keras model)"
    if head.startswith(b"ObjectType") or b"ElementDataFile" in head:
        return "a MetaImage header"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None


def _read_payload(path: Path) -> dict[str, Any]:
    kind = _file_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: it is {kind}, not a PyTorch checkpoint; give a .pt file written by "
            "SemanticInterpolation "
            "(the train command or save_checkpoint)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # the safe unpickler met a Python object or pickle instruction outside tensors and plain data:
        # a crafted file, a pickle from another program, or a damaged file. Nothing of it was executed.
        raise CheckpointError(
            f"refused to load {str(path)!r}: it is not a plain-data checkpoint (it holds pickled Python objects "
            "or instructions other than tensors and plain data, as a crafted, foreign or damaged file would). "
            "SemanticInterpolation never executes code from a checkpoint; use a file written by "
            "SemanticInterpolation (save_checkpoint or the train command)"
        ) from exc
    except Exception as exc:  # torch raises many types for damaged files (RuntimeError, EOFError, IndexError, ...)
        raise _corrupt(path, exc) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            hint = " (it looks like a bare state_dict of some network, without the architecture and metadata)"
        raise CheckpointError(
            f"{str(path)!r} is not a SemanticInterpolation checkpoint{hint}; give a file written by "
            "SemanticInterpolation's train command or save_checkpoint()"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version!r}; this SemanticInterpolation "
            f"({__version__}) reads up to version {CHECKPOINT_FORMAT_VERSION}: update SemanticInterpolation"
        )
    return payload


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return CheckpointError(
        f"cannot read checkpoint {str(path)!r}: the file is corrupt or not a PyTorch checkpoint "
        f"({type(exc).__name__}{': ' + detail[:200] if detail else ''}). Download or train it again"
    )


def checkpoint_from_payload(payload: Mapping[str, Any], path: str | None = None) -> Checkpoint:
    """Build a :class:`Checkpoint` from the dictionary stored in a checkpoint file."""
    where = repr(path) if path else "checkpoint"
    model_type = get_model_type(payload.get("model_type", DEFAULT_MODEL_TYPE))
    config = configuration_of(model_type, payload.get("architecture"), where)
    meta, extra_state = checked_metadata(payload, model_type, where)
    state_dict = payload.get("state_dict")
    if (not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict)
            or not all(isinstance(v, torch.Tensor) for v in state_dict.values())):
        raise CheckpointError(f"{where} has no valid 'state_dict' of tensors: the file is corrupt")
    # names, shapes and size checked on the meta device before the network is built for real
    model = build_checked_network(model_type, config, state_dict, where)
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where} is corrupt: tensor {name} contains NaN or infinite values")
    expected_digest = meta.get("weights_sha256")
    if expected_digest is not None and expected_digest != weights_digest(state_dict):
        raise CheckpointError(f"{where} is corrupt: its weights do not match the checksum stored with them")
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _corrupt(Path(path or "checkpoint"), exc) from None
    model.eval()
    spacing = meta.get("in_plane_spacing_mm")
    return Checkpoint(
        model=model,
        normalization=IntensityNormalization.from_dict(meta.get("intensity_normalization", {"method": "percentile", "lower_percentile": 1.0, "upper_percentile": 99.0})),
        in_plane_spacing_mm=tuple(float(s) for s in spacing) if spacing else None,
        training=dict(meta.get("training") or {}),
        project_version=str(meta.get("project_version", "")),
        created=str(meta.get("created", "")),
        path=path,
        metadata=meta,
        extra_state=extra_state,
    )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint safely. The model is returned on the CPU in eval mode.

    Raises :class:`CheckpointError` (missing, corrupt, unsafe pickle, foreign file, other
    architecture, newer format).
    """
    if path is None or not str(os.fspath(path)).strip():
        raise CheckpointError("no checkpoint path given: give the path of a .pt checkpoint file")
    file = Path(path).expanduser()
    if not file.is_file():
        env = os.environ.get(DEFAULT_CHECKPOINT_ENV)
        if env and Path(env).expanduser().absolute() == file.absolute():
            raise CheckpointError(
                f"{DEFAULT_CHECKPOINT_ENV} names {str(file)!r}, which does not exist or is not a file: "
                f"point it at a checkpoint file or unset it to use the bundled model")
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist or is not a file")
    return checkpoint_from_payload(_read_payload(file), path=str(file.absolute()))


DEFAULT_CHECKPOINT_NAME = "default-model.pt"
DEFAULT_CHECKPOINT_ENV = "SEMANTIC_INTERPOLATION_DEFAULT_CHECKPOINT"


def default_checkpoint_candidates() -> list[Path]:
    """Where the bundled default model is looked for, in order.

    1. the file named by the environment variable ``SEMANTIC_INTERPOLATION_DEFAULT_CHECKPOINT``;
    2. ``<module folder>/Resources/Models/default-model.pt`` (the Slicer module's resources);
    3. ``<repository>/Resources/Models/default-model.pt`` (a source checkout or editable install);
    4. ``<prefix>/share/semantic-interpolation/Models/default-model.pt`` (a wheel install; see
       :mod:`.datafiles`).
    """
    from ..bundled.datafiles import bundled_data_folders

    candidates = []
    env = os.environ.get(DEFAULT_CHECKPOINT_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    candidates += [folder / DEFAULT_CHECKPOINT_NAME for folder in bundled_data_folders("Models")]
    return candidates


def find_default_checkpoint() -> Path | None:
    """Path of the bundled default checkpoint, or None when none is installed.

    A file named by ``SEMANTIC_INTERPOLATION_DEFAULT_CHECKPOINT`` is returned even when it is missing
    (loading it then says so), never silently replaced by the bundled model.
    """
    env = os.environ.get(DEFAULT_CHECKPOINT_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in default_checkpoint_candidates():
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(checkpoint: "str | os.PathLike | Checkpoint | None") -> Checkpoint:
    """A loaded :class:`Checkpoint` from a path, an already loaded one, or None (the default model).

    Raises :class:`CheckpointError` with what to do when None is given and no default is installed.
    """
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    if checkpoint is None or str(checkpoint) == "":
        default = find_default_checkpoint()
        if default is None:
            raise CheckpointError(
                "the ASI method needs a checkpoint and no default model is installed. Choose a checkpoint file "
                "(command line: --checkpoint PATH; Python: checkpoint=PATH; Slicer: the Checkpoint field), "
                f"train one (semantic-interpolation train, or the Training tab), or set {DEFAULT_CHECKPOINT_ENV}; "
                "the methods linear, bspline and lanczos need none"
            )
        checkpoint = default
    return load_checkpoint(checkpoint)
