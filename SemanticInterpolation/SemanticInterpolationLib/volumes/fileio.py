"""Atomic file writing: a result appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
import time
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


#: errno values of a full disk or an exhausted quota
NO_SPACE_ERRNOS = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))
#: file in each staging folder naming the process that writes there (host and process id)
_OWNER_FILE = ".semantic-interpolation-writer.json"
#: a staging folder without a readable owner file is stale after this many seconds
STALE_AFTER_S = 3600.0


def no_space_left(target: Path, what: str = "") -> InputError:
    """The one-line error for a full disk while writing ``target`` (says whether an existing file was kept)."""
    try:
        free = f" ({shutil.disk_usage(target.parent).free // 1024} KiB free)"
    except OSError:
        free = ""
    kept = f"; the existing {str(target)!r} was kept" if target.exists() else ""
    return InputError(f"cannot write {what + ' ' if what else ''}{str(target)!r}: no space left on the device of "
                      f"folder {str(target.parent)!r}{free}: free some space or write to another folder{kept}")


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there; keep it unless it is old (see _stale)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user
        return True
    return True


def _stale(folder: Path) -> bool:
    """A staging folder left behind by a writer that ended without cleaning up (killed, power cut)."""
    try:
        owner = json.loads((folder / _OWNER_FILE).read_text(encoding="utf-8"))
        if owner.get("host") == socket.gethostname() and not _process_alive(int(owner["pid"])):
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return time.time() - folder.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders of ``target`` whose writer is gone; returns those removed."""
    removed = []
    for folder in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        if folder.is_dir() and _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in a private folder next to ``path`` with the same file name.

    Write the file (and any companion files, e.g. the ``.raw`` of an ``.mhd``) there. On normal
    exit every file written is moved beside ``path`` with :func:`os.replace`, the file named
    ``path`` last; on an exception nothing is moved and the temporary folder is removed.
    Staging folders of ``path`` left by a writer that was killed are removed first. A full disk
    (``ENOSPC``/``EDQUOT``, in the block or while moving) is an :class:`InputError` saying so.
    """
    target = check_writable_destination(path)
    remove_stale_staging(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise no_space_left(target) from None
        raise
    try:
        (staging / _OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}),
                                           encoding="utf-8")
        staged = staging / target.name
        yield staged
        if not staged.exists():
            raise RuntimeError(f"nothing was written to {staged}")
        companions = [p for p in staging.iterdir() if p != staged and p.name != _OWNER_FILE]
        for companion in companions:
            os.replace(companion, target.parent / companion.name)
        os.replace(staged, target)
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise no_space_left(target) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
