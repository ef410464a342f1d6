"""The ``semantic-interpolation`` command line.

Subcommands register themselves through a ``register(subparsers)`` function (see
:data:`SUBCOMMAND_MODULES`); each sets ``handler`` to a function ``(args) -> exit code``.
User errors (:class:`SemanticInterpolationError`) print one line on stderr and exit 1;
usage errors exit 2; Ctrl-C exits 130 without leaving partial output.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from typing import Sequence

from .._version import __version__
from ..errors import OperationCancelled, SemanticInterpolationError
from ..termination import TerminationRequested, signals_end_cleanly
from ..volumes.fileio import NO_SPACE_ERRNOS
from .library_warnings import routed_warnings

PROG = "semantic-interpolation"
#: modules (relative to this package) that add subcommands; missing ones are skipped
SUBCOMMAND_MODULES = ("upsample", "upsample_batch", "train", "evaluate", "demo")
SUBCOMMAND_MODULES += ("train_sr",)  # Xuan et al. stage II

logger = logging.getLogger("SemanticInterpolation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Upsample anisotropic MRI through-plane with the ASI autoencoder (Sander, de Vos, Isgum) "
                    "or a conventional interpolator; train and evaluate ASI models.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(name):
                continue  # that subcommand is not part of this build
            raise
        module.register(subparsers)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose`` for every subcommand."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    group.add_argument("-v", "--verbose", action="store_true", help="print debugging details")


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if getattr(args, "quiet", False) else (
        logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semantic-interpolation`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    _configure_logging(args)
    try:
        return _run(args)
    finally:  # main() called from Python (a notebook, a test) leaves the library's logger as it found it
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        with signals_end_cleanly(), routed_warnings(bool(getattr(args, "verbose", False))):
            code = int(args.handler(args) or 0)
    except OperationCancelled as exc:
        print(f"{PROG}: cancelled: {exc}", file=sys.stderr)
        return 130
    except TerminationRequested as exc:
        print(f"\n{PROG}: {exc}; the file being written was not completed and existing files are unchanged",
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; the file being written was not completed and existing files are unchanged",
              file=sys.stderr)
        return 130
    except SemanticInterpolationError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        where = f" while writing {exc.filename!r}" if exc.filename else ""
        print(f"{PROG}: error: no space left on device{where}: free some space or write to another folder; files "
              "written before were kept", file=sys.stderr)
        return 1
    logger.debug("finished in %.2f s", time.perf_counter() - started)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
