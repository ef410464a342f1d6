"""A worker thread that a GUI polls: progress, cancel and the error, without Qt.

Used by the Slicer module for upsampling and evaluation: the worker only computes (numpy/torch,
which releases the GIL); MRML and Qt are touched on the GUI thread, which polls
:attr:`BackgroundTask.progress` and :attr:`BackgroundTask.isRunning` from a ``qt.QTimer``.
"""

from __future__ import annotations

import threading
from typing import Callable

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class BackgroundTask:
    """Runs ``work(progress, shouldCancel)`` in a daemon thread.

    :attr:`error` holds what stopped the work (``OperationCancelled`` after :meth:`cancel`), or None.
    """

    def __init__(self, work: Callable[[ProgressCallback, CancelCallback], None], name: str) -> None:
        self.error: BaseException | None = None
        self._work = work
        self._progress = (0, 1)
        self._cancelRequested = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the worker thread (returns at once)."""
        self._thread.start()

    def cancel(self) -> None:
        """Ask the worker to stop at its next check; it then ends with OperationCancelled."""
        self._cancelRequested.set()

    @property
    def cancelRequested(self) -> bool:
        return self._cancelRequested.is_set()

    @property
    def isRunning(self) -> bool:
        """True until the worker has finished, failed or been cancelled."""
        return self._thread.is_alive()

    @property
    def progress(self) -> tuple[int, int]:
        """``(done, total)`` work units reported so far."""
        return self._progress

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (or ``timeout`` seconds pass); return True when it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _onProgress(self, done: int, total: int) -> None:
        self._progress = (int(done), max(int(total), 1))

    def _run(self) -> None:
        try:
            self._work(self._onProgress, self._cancelRequested.is_set)
        except BaseException as error:  # handed to the GUI thread, which reports it
            self.error = error
