"""Where the bundled data files (default model, sample volume) are found, in every way of installing.

The files live at the repository top level in ``Resources/Models`` and ``Resources/SampleData``.
They reach users three ways, searched in this order by :func:`bundled_data_folders`:

1. the Slicer extension: CMake copies them into ``<module folder>/Resources/<kind>`` (the module
   folder holds ``SemanticInterpolation.py`` and ``SemanticInterpolationLib/``);
2. a source checkout or editable install: ``<repository>/Resources/<kind>``;
3. a wheel (``pip install semantic-interpolation``): installed as data files into
   ``<prefix>/share/semantic-interpolation/<kind>`` (``[tool.setuptools.data-files]`` in
   pyproject.toml), where ``<prefix>`` is that of the environment, of a ``--prefix`` install
   (found from where this package lies) or of a ``--user`` install.

Only the standard library is imported here (the Slicer module imports this at startup).
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

#: folder under ``<prefix>/share`` that a wheel installs the data files into
SHARE_FOLDER = "semantic-interpolation"


def _install_prefixes(package_dir: Path) -> list[Path]:
    """Installation prefixes that may hold ``share/semantic-interpolation`` for this package."""
    prefixes = [Path(sysconfig.get_path("data")), Path(sys.prefix)]
    for parent in package_dir.parents:
        if parent.name in ("site-packages", "dist-packages"):
            prefixes += [parent.parents[1], parent.parents[2]] if len(parent.parents) > 2 else [parent.parent]
            break
    user_base = getattr(site, "USER_BASE", None)
    if user_base:
        prefixes.append(Path(user_base))
    unique: list[Path] = []
    for prefix in prefixes:
        if prefix not in unique:
            unique.append(prefix)
    return unique


def bundled_data_folders(kind: str) -> list[Path]:
    """Folders that may hold the bundled ``kind`` files (``"Models"`` or ``"SampleData"``), in search order."""
    package_dir = Path(__file__).resolve().parents[1]  # SemanticInterpolationLib/
    folders = [package_dir.parent / "Resources" / kind, package_dir.parent.parent / "Resources" / kind]
    folders += [prefix / "share" / SHARE_FOLDER / kind for prefix in _install_prefixes(package_dir)]
    return folders
