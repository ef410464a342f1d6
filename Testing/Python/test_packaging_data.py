"""The wheel's data files: the default model, its card, and every evaluation table the card cites."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Slicer and CI run 3.11+
    tomllib = pytest.importorskip("tomli")


def _data_files() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]["data-files"]


def test_every_listed_data_file_exists():
    for target, sources in _data_files().items():
        for source in sources:
            assert (ROOT / source).is_file(), f"{source} (for {target}) is missing"


def test_evaluation_tables_cited_by_the_model_card_are_installed():
    card = (ROOT / "Resources/Models/MODEL_CARD.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"evaluation/(default-model-[a-z0-9-]+?)(?:-\*|/)", card))
    prefixes = {c for c in cited}
    folders = [p.name for p in (ROOT / "Resources/Models/evaluation").iterdir() if p.is_dir()]
    # a citation like evaluation/default-model-heldout-*/ names every folder with that prefix
    wanted = {f for f in folders if any(f == c or f.startswith(c + "-") for c in prefixes)}
    assert wanted, "the card cites no evaluation folder: update this test"
    installed = {Path(source).parent.name for sources in _data_files().values() for source in sources
                 if "/evaluation/" in source and source.endswith("summary.md")}
    assert wanted <= installed, f"cited by the card but not installed: {sorted(wanted - installed)}"
    for target, sources in _data_files().items():
        for source in sources:
            if "/evaluation/" in source:  # installed next to the card, in the folder the card names
                assert target == "share/semantic-interpolation/Models/evaluation/" + Path(source).parent.name


def test_every_library_package_is_in_the_wheel():
    with open(ROOT / "pyproject.toml", "rb") as handle:
        listed = set(tomllib.load(handle)["tool"]["setuptools"]["packages"])
    lib = ROOT / "SemanticInterpolation" / "SemanticInterpolationLib"
    found = {".".join(("SemanticInterpolationLib", *p.parent.relative_to(lib).parts)) for p in lib.rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
