"""Resume support: is an existing output a complete file, and stale files of an interrupted write.

Outputs are written with :func:`..volumes.fileio.atomic_output` (staged in a hidden
``.<name>.<random>.partial`` folder, then moved), so a process killed while writing leaves its
staging folder, never a half file under the output's name. A file that is there anyway (copied,
or from another tool) counts as finished only when it reads back completely.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def image_file_problem(path: Path) -> str | None:
    """Why the image file ``path`` is not complete, or None. NIfTI: the header and the full data length
    (streamed, no image built); other formats: read completely with SimpleITK."""
    from ..volumes.nifti import NiftiProblem, nifti_suffix, read_layout, scan

    if nifti_suffix(path):
        try:
            scan(read_layout(path), count_non_finite=False)
        except NiftiProblem as problem:
            return str(problem)
        except OSError as exc:
            return str(exc)
        return None
    import SimpleITK as sitk

    try:
        sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return lines[-1] if lines else "unreadable"
    return None


def numpy_file_problem(path: Path) -> str | None:
    """Why the ``.npy`` file ``path`` is not complete (header or data length), or None."""
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        return str(exc) or type(exc).__name__
    return None


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove the staging folders an interrupted atomic write of ``output`` left beside it; returns them."""
    removed = []
    if output.parent.is_dir():
        for folder in output.parent.glob(f".{output.name}.*.partial"):
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed
