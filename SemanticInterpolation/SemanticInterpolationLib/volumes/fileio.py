"""Atomic file writing: a result appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import InputError


def check_writable_destination(path: str | os.PathLike) -> Path:
    """Fail early, before any work, when ``path`` cannot be written.

    Returns the absolute path. The parent folder must exist and be writable; an existing
    folder of that name is refused.
    """
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise InputError(f"output path {str(target)!r} is a folder: give a file name such as result.nii.gz")
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {str(target)!r}: folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {str(target)!r}: no write permission in folder {str(parent)!r}")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"cannot write {str(target)!r}: the existing file is read-only")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in a private folder next to ``path`` with the same file name.

    Write the file (and any companion files, e.g. the ``.raw`` of an ``.mhd``) there. On normal
    exit every file written is moved beside ``path`` with :func:`os.replace`, the file named
    ``path`` last; on an exception nothing is moved and the temporary folder is removed.
    """
    target = check_writable_destination(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        staged = staging / target.name
        yield staged
        if not staged.exists():
            raise RuntimeError(f"nothing was written to {staged}")
        companions = [p for p in staging.iterdir() if p != staged]
        for companion in companions:
            os.replace(companion, target.parent / companion.name)
        os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
