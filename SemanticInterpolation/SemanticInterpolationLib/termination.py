"""SIGTERM and SIGHUP end a command like Ctrl-C does: cleanly, removing half-written files.

By default these signals end Python at once, so ``finally`` blocks never run and the hidden staging
folder of a file being written (``.NAME.XXXX.partial``, see :mod:`.volumes.fileio`) stays behind.
Inside :func:`signals_end_cleanly` they raise :class:`TerminationRequested` (a ``KeyboardInterrupt``)
in the main thread instead, so every cleanup runs. A signal that arrives while C++ code (ITK, torch)
writes a file is handled when that call returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: the signals handled (those this platform has)
SIGNAL_NAMES = ("SIGTERM", "SIGHUP")


class TerminationRequested(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGHUP arrives inside :func:`signals_end_cleanly`."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 128 + the signal number."""
        return 128 + self.signum


def _raise(signum: int, frame) -> None:  # noqa: ARG001
    raise TerminationRequested(signum)


@contextlib.contextmanager
def signals_end_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`TerminationRequested` (main thread only; elsewhere,
    or for signals whose handler was set by someone else, nothing changes). The handlers are restored after."""
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for name in SIGNAL_NAMES:
            number = getattr(signal, name, None)
            if number is not None and signal.getsignal(number) in (signal.SIG_DFL, None):
                previous[number] = signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
