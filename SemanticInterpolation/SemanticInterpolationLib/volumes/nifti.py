"""Checks on NIfTI files that ITK's NIfTI library does not make.

ITK reads a truncated ``.nii``/``.nii.gz`` with the missing voxels as 0, reads NaN/Inf of float
images as 0, and prints (but does not report) a failed write on a full disk. These helpers parse
the header (NIfTI-1, NIfTI-2 and ANALYZE 7.5 ``.hdr``/``.img`` pairs, either byte order, optionally
gzip-compressed) and stream the voxel data once to check its length and, for float types, its values.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: endings of the NIfTI family, longest first
NIFTI_SUFFIXES = (".nii.gz", ".hdr.gz", ".img.gz", ".nii", ".hdr", ".img")

#: NIfTI datatype code -> numpy type (complex and RGB kinds are checked for length only)
_FLOAT_TYPES = {16: "f4", 64: "f8"}
_CHUNK = 1 << 22


class NiftiProblem(Exception):
    """The file is not what its header says (message without the file name)."""


@dataclass
class NiftiLayout:
    header: Path
    data: Path
    offset: int
    shape: tuple[int, ...]
    datatype: int
    bitpix: int
    byteorder: str  # "<" or ">"

    @property
    def data_bytes(self) -> int:
        voxels = 1
        for n in self.shape:
            voxels *= n
        return voxels * self.bitpix // 8


def nifti_suffix(path: str | Path) -> str | None:
    name = Path(path).name.lower()
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def _open(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _pair_file(path: Path, want: str) -> Path:
    """The ``.img`` (want='.img') or ``.hdr`` of a pair, with or without .gz, as it exists."""
    name = path.name
    lower = name.lower()
    stem = name[: -len(".hdr.gz")] if lower.endswith((".hdr.gz", ".img.gz")) else name[: -len(".hdr")]
    candidates = [want, want.upper(), want + ".gz", want.upper() + ".GZ"]
    for ending in candidates:
        candidate = path.with_name(stem + ending)
        if candidate.exists():
            return candidate
    return path.with_name(stem + want)


def read_layout(path: str | Path) -> NiftiLayout:
    """Parse the header of a NIfTI file (raises :class:`NiftiProblem` on a damaged header)."""
    path = Path(path)
    suffix = nifti_suffix(path) or ""
    header = _pair_file(path, ".hdr") if suffix.startswith(".img") else path
    try:
        with _open(header) as stream:
            raw = stream.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiProblem(f"its header cannot be read ({exc})") from exc
    if len(raw) < 348:
        raise NiftiProblem(f"the file is truncated: its header has only {len(raw)} of at least 348 bytes")
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", raw[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise NiftiProblem("its header does not start with a NIfTI/ANALYZE header size (348 or 540)")
    if sizeof_hdr == 540:
        if len(raw) < 540:
            raise NiftiProblem(f"the file is truncated: its NIfTI-2 header has only {len(raw)} of 540 bytes")
        datatype, bitpix = struct.unpack(order + "hh", raw[12:16])
        dim = struct.unpack(order + "8q", raw[16:80])
        offset = struct.unpack(order + "q", raw[168:176])[0]
        magic = raw[4:8]
        single = magic.startswith(b"n+2")
    else:
        dim = struct.unpack(order + "8h", raw[40:56])
        datatype, bitpix = struct.unpack(order + "hh", raw[70:74])
        offset = int(struct.unpack(order + "f", raw[108:112])[0])
        magic = raw[344:348]
        single = magic.startswith(b"n+1")
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(n < 0 for n in dim[1 : ndim + 1]) or bitpix <= 0 or bitpix % 8:
        raise NiftiProblem(f"its header is damaged (dim {list(dim)}, bitpix {bitpix})")
    shape = tuple(max(int(n), 1) for n in dim[1 : ndim + 1])
    if single:
        data, offset = header, max(offset, sizeof_hdr)
    else:
        data, offset = _pair_file(path, ".img"), max(offset, 0)
    return NiftiLayout(header=header, data=data, offset=offset, shape=shape, datatype=int(datatype),
                       bitpix=int(bitpix), byteorder=order)


def scan(layout: NiftiLayout, count_non_finite: bool = True) -> int:
    """Stream the voxel data once: raise :class:`NiftiProblem` when it is shorter than the header says
    (or the gzip stream is damaged); return the number of NaN/Inf voxels of float types (else 0)."""
    expected = layout.data_bytes
    float_type = _FLOAT_TYPES.get(layout.datatype) if count_non_finite else None
    dtype = np.dtype(layout.byteorder + float_type) if float_type else None
    have = 0
    bad = 0
    carry = b""
    try:
        with _open(layout.data) as stream:
            skip = layout.offset
            while skip > 0:
                block = stream.read(min(skip, _CHUNK))
                if not block:
                    break
                skip -= len(block)
            if skip > 0:
                raise NiftiProblem(f"the file is truncated: it ends before the voxel data (offset {layout.offset})")
            while have < expected:
                block = stream.read(min(_CHUNK, expected - have))
                if not block:
                    break
                have += len(block)
                if dtype is not None:
                    block = carry + block
                    usable = len(block) - len(block) % dtype.itemsize
                    values = np.frombuffer(block[:usable], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = block[usable:]
            if isinstance(stream, gzip.GzipFile):
                while stream.read(_CHUNK):  # read to the end: gzip checks its length and CRC there
                    pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise NiftiProblem(f"the gzip stream is truncated or damaged ({exc or type(exc).__name__})") from exc
    except OSError as exc:
        raise NiftiProblem(f"its voxel data cannot be read ({exc})") from exc
    if have < expected:
        shape = "x".join(map(str, layout.shape))
        raise NiftiProblem(
            f"the file is truncated: its header describes {shape} voxels of {layout.bitpix} bits "
            f"({expected} bytes of voxel data) but it holds only {have}")
    return bad
