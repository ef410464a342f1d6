"""The ``semantic-interpolation`` command line: :mod:`.app` builds the parser and runs a
subcommand; each subcommand is one module (:mod:`.upsample`, :mod:`.train`, :mod:`.evaluate`,
:mod:`.demo`). ``python -m SemanticInterpolationLib.cli`` = ``semantic-interpolation``."""

from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semantic-interpolation`` console script."""
    from .app import main as run

    return run(argv)
