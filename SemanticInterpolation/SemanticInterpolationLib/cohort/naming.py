"""Where a batch writes each input's output, and the checks that make that safe.

An input found at ``<folder>/<sub>/<name><ext>`` is written to ``<output dir>/<sub>/<name><suffix><ext>``
(``ext``: the input's ending, or the ``--format`` given; a DICOM series folder becomes
``<output dir>/<sub>/<folder name><suffix>.nrrd``). Refused before any work, each with its own
message: an output folder inside a searched input folder (outputs would be read back as inputs on
the next run), and two inputs whose outputs would have the same name (one would overwrite the other;
names are compared without case, as on macOS and Windows file systems).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .discovery import VOLUME_EXTENSIONS, CohortInput, volume_extension

#: output ending of a DICOM series folder when no format is given (NRRD keeps any direction)
DICOM_OUTPUT_EXTENSION = ".nrrd"


@dataclass(frozen=True)
class CohortTask:
    """One input with its output path; ``index`` is its place in the whole cohort (the summary order)."""

    index: int
    item: CohortInput
    output: Path


def default_suffix(method: str, factor: int) -> str:
    """``_<method>_x<K>``, e.g. ``_asi_x4``."""
    return f"_{method}_x{int(factor)}"


def output_extension(format_name: str | None, allowed: Sequence[str] = VOLUME_EXTENSIONS) -> str | None:
    """``"nrrd"`` / ``".nii.gz"`` -> ``".nrrd"`` / ``".nii.gz"``; None stays None. Unknown formats: :class:`InputError`."""
    if not format_name:
        return None
    extension = "." + str(format_name).lower().lstrip(".")
    if extension not in allowed:
        raise InputError(f"unknown output format {format_name!r}: use one of "
                         f"{', '.join(e.lstrip('.') for e in allowed)}")
    return extension


def output_path_for(item: CohortInput, output_dir: str | os.PathLike, suffix: str, extension: str | None = None,
                    extensions: Sequence[str] = VOLUME_EXTENSIONS) -> Path:
    """The output file of ``item`` below ``output_dir`` (see the module docstring)."""
    relative = Path(*item.relative.parts) if item.relative.parts else Path(item.source.name)
    if item.dicom_series:
        stem, ending = relative.name, DICOM_OUTPUT_EXTENSION
    else:
        ending = volume_extension(relative, extensions) or ""  # lower case: ITK writes some endings only so
        stem = relative.name[: len(relative.name) - len(ending)]
    return Path(output_dir) / relative.parent / f"{stem}{suffix}{extension or ending}"


def check_output_dir_outside_inputs(output_dir: str | os.PathLike, roots: Sequence[Path]) -> None:
    """Refuse an output folder that is, or lies inside, a searched input folder."""
    target = Path(output_dir).expanduser().resolve()
    for root in roots:
        folder = root.resolve()
        if target == folder or folder in target.parents:
            raise InputError(
                f"the output folder {str(output_dir)!r} lies inside the input folder {str(root)!r}: its results would "
                "be read back as inputs on the next run; choose an output folder outside the input tree")


def plan_tasks(items: Sequence[CohortInput], output_dir: str | os.PathLike, suffix: str,
               extension: str | None = None, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> list[CohortTask]:
    """One :class:`CohortTask` per input; :class:`InputError` when two inputs map to the same output
    or an output would be one of the inputs."""
    tasks: list[CohortTask] = []
    taken: dict[str, CohortInput] = {}
    sources = {str(item.source.resolve()).casefold(): item for item in items}
    for index, item in enumerate(items):
        output = output_path_for(item, output_dir, suffix, extension, extensions)
        key = str(output.expanduser().resolve()).casefold()
        if key in taken:
            raise InputError(
                f"inputs {str(taken[key].source)!r} and {str(item.source)!r} would both be written to {str(output)!r}: "
                "give them different names or folders, or run them as separate batches")
        if key in sources:
            raise InputError(f"the output {str(output)!r} of {str(item.source)!r} would replace the input "
                             f"{str(sources[key].source)!r}: choose another output folder or --suffix")
        taken[key] = item
        tasks.append(CohortTask(index, item, output))
    return tasks
