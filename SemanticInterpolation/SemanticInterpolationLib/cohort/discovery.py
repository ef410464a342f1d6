"""Which volumes a batch's INPUTS name: files, folders (searched recursively) and list files.

* a volume file (:data:`VOLUME_EXTENSIONS`) is one input;
* a folder is searched (recursively unless ``recursive=False``): every volume file in it is one input,
  and every folder that directly holds DICOM files (``.dcm`` or the ``DICM`` marker) is one input,
  the DICOM series;
* a ``.txt`` list names one input per line (empty lines and ``#`` comments are skipped); a ``.csv``
  list names them in its ``input`` (or ``path``) column, else in its first column. Relative entries
  are relative to the list file's folder. An entry may be a file or a folder.

Each input keeps its path relative to the folder it was found in (``relative``), so that outputs
can mirror the input tree. Hidden files and folders (names starting with ``.``) are skipped, which
also skips the staging folders of unfinished atomic writes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from ..errors import InputError

#: File name endings read as volumes (lower case; compound endings first).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Endings of list files (one input per line or per CSV row).
LIST_EXTENSIONS = (".txt", ".csv")
#: Ending of NumPy arrays (the SimpleITK-free path of :mod:`.backends`).
NUMPY_EXTENSIONS = (".npy",)


@dataclass(frozen=True)
class CohortInput:
    """One input of a batch.

    ``source``: the volume file or DICOM series folder. ``relative``: its path below the folder
    it was found in (for a file or folder given directly: its name). ``size_bytes``: the bytes on
    disk (a DICOM folder: all its files), used to balance shards. ``dicom_series``: True for a folder.
    """

    source: Path
    relative: PurePosixPath
    size_bytes: int
    dicom_series: bool = False


def volume_extension(path: str | os.PathLike, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> str | None:
    """The volume file ending of ``path`` (e.g. ``".nii.gz"``, lower case), or None when it has none of ``extensions``."""
    name = Path(path).name.lower()
    for extension in sorted(extensions, key=len, reverse=True):
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return None


def _looks_like_dicom(path: Path) -> bool:
    if path.name.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _holds_dicom(files: Iterable[Path], extensions: Sequence[str]) -> bool:
    return any(volume_extension(f, extensions) is None and not f.name.lower().endswith(LIST_EXTENSIONS)
               and _looks_like_dicom(f) for f in files)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _search_folder(root: Path, recursive: bool, extensions: Sequence[str], dicom: bool) -> list[CohortInput]:
    found: list[CohortInput] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            raise InputError(f"cannot list folder {str(folder)!r}: {exc.strerror or exc}") from None
        visible = [e for e in entries if not e.name.startswith(".")]
        files = [e for e in visible if e.is_file()]
        for file in files:
            if volume_extension(file, extensions):
                found.append(CohortInput(file, PurePosixPath(file.relative_to(root).as_posix()), file.stat().st_size))
        if dicom and _holds_dicom(files, extensions):
            relative = folder.relative_to(root).as_posix() if folder != root else root.name
            found.append(CohortInput(folder, PurePosixPath(relative or root.name), _folder_bytes(folder), True))
        if recursive:
            folders.extend(sorted((e for e in visible if e.is_dir()), reverse=True))
    return sorted(found, key=lambda item: item.relative.as_posix())


def read_input_list(path: str | os.PathLike) -> list[Path]:
    """The paths named in a ``.txt`` or ``.csv`` list file (relative entries: relative to its folder).

    Raises :class:`InputError` naming the list file and line for an entry that does not exist.
    """
    list_path = Path(path).expanduser()
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the input list {str(list_path)!r}: {exc}") from None
    entries: list[tuple[int, str]] = []
    if list_path.name.lower().endswith(".csv"):
        rows = list(csv.reader(text.splitlines()))
        column = 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            for name in ("input", "path", "file"):
                if name in header:
                    column = header.index(name)
                    rows = [[]] + rows[1:]  # keep line numbers
                    break
        for number, row in enumerate(rows, start=1):
            if len(row) > column and row[column].strip() and not row[column].strip().startswith("#"):
                entries.append((number, row[column].strip()))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((number, line))
    paths = []
    for number, entry in entries:
        candidate = Path(entry).expanduser()
        if not candidate.is_absolute():
            candidate = list_path.parent / candidate
        if not candidate.exists():
            raise InputError(f"the input list {str(list_path)!r} names {entry!r} (line {number}), which does not "
                             "exist: correct or remove that line")
        paths.append(candidate)
    return paths


def _relative_to_list(path: Path, list_folder: Path) -> PurePosixPath:
    try:
        return PurePosixPath(path.absolute().relative_to(list_folder.absolute()).as_posix())
    except ValueError:
        return PurePosixPath(path.name)


def discover_inputs(inputs: Sequence[str | os.PathLike], *, recursive: bool = True,
                    extensions: Sequence[str] = VOLUME_EXTENSIONS, dicom: bool = True,
                    lists: bool = True) -> tuple[list[CohortInput], list[Path]]:
    """The inputs named by ``inputs`` (files, folders, list files), without duplicates, in the order given.

    Returns the inputs and the folders searched (the roots; an output folder must not lie inside one).
    Raises :class:`InputError` for a path that does not exist, a file that is neither a volume nor a
    list file, or a list entry that does not exist.
    """
    found: list[CohortInput] = []
    roots: list[Path] = []

    def add(path: Path, relative: PurePosixPath | None, from_list: Path | None) -> None:
        if path.is_dir():
            roots.append(path)
            items = _search_folder(path, recursive, extensions, dicom)
            if from_list is not None:  # keep the folder's place below the list's folder
                prefix = _relative_to_list(path, from_list)
                items = [CohortInput(i.source, prefix / i.relative if i.source != path else prefix, i.size_bytes,
                                     i.dicom_series) for i in items]
            found.extend(items)
        elif path.is_file():
            if lists and from_list is None and path.name.lower().endswith(LIST_EXTENSIONS):
                for entry in read_input_list(path):
                    add(entry, None, path.parent)
                return
            if volume_extension(path, extensions) is None:
                kinds = ", ".join(extensions) + (" or a .txt/.csv list" if lists and from_list is None else "")
                raise InputError(f"input {str(path)!r} is not a volume file (expected {kinds})")
            name = relative if relative is not None else (
                _relative_to_list(path, from_list) if from_list is not None else PurePosixPath(path.name))
            found.append(CohortInput(path, name, path.stat().st_size))
        else:
            raise InputError(f"input {str(path)!r} does not exist: check the path")

    for item in inputs:
        add(Path(item).expanduser(), None, None)
    unique: list[CohortInput] = []
    seen: set[Path] = set()
    for item in found:
        resolved = item.source.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(item)
    return unique, roots
