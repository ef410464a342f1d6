"""Choice of the compute device and of the numeric precision used on it."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "float32", "float16", "bfloat16")


def mps_available() -> bool:
    """True when Apple's Metal backend can be used by this torch build."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. ``"cuda"``, ``"cuda:N"``,
    ``"mps"`` and ``"cpu"`` are taken as named; an unavailable one raises
    :class:`DeviceError` that says what was found instead.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "gpu":
        name = "cuda"
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(
            f"unknown device {device!r}: use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)"
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                "use --device cpu (or auto), or install a CUDA build of torch"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif resolved.type == "mps":
        if not mps_available():
            raise DeviceError("device 'mps' was requested but Apple MPS is not available; use --device cpu or auto")
    elif resolved.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}: use one of {', '.join(DEVICE_CHOICES)}")
    return resolved


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Compute dtype for inference: float16 autocast on CUDA by default, float32 elsewhere."""
    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise DeviceError(f"unknown precision {precision!r}: use one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, precision)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed-precision context for ``dtype`` on ``device`` (a no-op for float32)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def describe_device(device: torch.device) -> str:
    """Human-readable description of a device for logs and the GUI."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def available_devices() -> list[str]:
    """Devices usable by this torch build, best first (for the GUI and ``--help``)."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        found.append("mps")
    found.append("cpu")
    return found
