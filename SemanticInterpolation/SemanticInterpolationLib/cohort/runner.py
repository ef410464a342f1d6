"""The batch loop: read, upsample and write every task, the reading and writing overlapped with the network.

With a backend whose ``concurrent_io`` is true, one background thread reads the next inputs and
another writes finished outputs while the calling thread runs the network; both hand over
through queues of ``queue_depth`` items, so at most ``queue_depth`` read inputs and
``queue_depth`` finished outputs wait at any time (memory stays bounded, whatever the cohort
size). A backend that must stay on one thread (the MRML scene is not thread-safe) runs the
same steps one after the other.

A finished output (it exists and reads back complete) is skipped unless ``overwrite``; an
input that fails (reading, upsampling or writing) gets a ``failed`` row with the error and the
batch goes on. Cancelling (``should_cancel``, Ctrl-C) stops after the current file; the file
being written is completed or not written at all (atomic writes).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..engine.synthesis import CancelCallback, ProgressCallback
from ..errors import OperationCancelled, SemanticInterpolationError
from .naming import CohortTask
from .outputs import remove_stale_staging
from .summary import DONE, FAILED, SKIPPED, SummaryRow, count_statuses

logger = logging.getLogger("SemanticInterpolation")
#: progress units per file (the overall progress is files done plus the fraction of the current one)
UNITS_PER_FILE = 1000


class CohortBackend(Protocol):
    """How one task's input is read, upsampled and written (see :mod:`.backends`)."""

    #: True when :meth:`read` and :meth:`write` may run in background threads
    concurrent_io: bool

    def output_problem(self, path: Path) -> str | None:
        """Why the existing file ``path`` is not a complete output (None: complete, skip it)."""

    def read(self, task: CohortTask) -> Any:
        """Read (and check) the task's input; raise a :class:`SemanticInterpolationError` for bad input."""

    def process(self, task: CohortTask, data: Any, progress: ProgressCallback) -> Any:
        """Upsample ``data``; runs on the calling thread."""

    def write(self, task: CohortTask, result: Any) -> str:
        """Write ``result`` to ``task.output`` atomically; returns a short description (e.g. the size)."""


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (SemanticInterpolationError, OSError)) else f"{type(error).__name__}: {text}"


class _Run:
    """State of one :func:`run_cohort` call (shared by its threads)."""

    def __init__(self, tasks: Sequence[CohortTask], backend: CohortBackend, overwrite: bool,
                 log: Callable[[str], None], progress: ProgressCallback | None, log_file_progress: bool,
                 prefix: str) -> None:
        self.tasks, self.backend, self.overwrite = list(tasks), backend, overwrite
        self.log, self.progress, self.log_file_progress, self.prefix = log, progress, log_file_progress, prefix
        self.rows: dict[int, SummaryRow] = {}
        self.finished = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.number = {task.index: n for n, task in enumerate(self.tasks, start=1)}

    def label(self, task: CohortTask) -> str:
        return f"{self.prefix}[{self.number[task.index]}/{len(self.tasks)}] {task.item.relative.as_posix()}"

    def record(self, task: CohortTask, status: str, seconds: float, message: str = "") -> None:
        row = SummaryRow(task.index, str(task.item.source), str(task.output), status, seconds, message)
        with self.lock:
            self.rows[task.index] = row
            self.finished += 1
            finished = self.finished
        if status == FAILED:
            self.log(f"{self.label(task)}: FAILED: {message}")
        elif status == SKIPPED:
            self.log(f"{self.label(task)}: skipped, {task.output} exists (use --overwrite to replace it)")
        else:
            self.log(f"{self.label(task)}: wrote {task.output} ({message}) in {seconds:.1f} s")
        if self.progress is not None:
            self.progress(finished * UNITS_PER_FILE, len(self.tasks) * UNITS_PER_FILE)

    def file_progress(self, task: CohortTask) -> ProgressCallback:
        quarter = [-1]

        def report(done: int, total: int) -> None:
            fraction = min(done / total, 1.0) if total else 1.0
            if self.progress is not None:
                with self.lock:
                    finished = self.finished
                self.progress(int((finished + fraction) * UNITS_PER_FILE), len(self.tasks) * UNITS_PER_FILE)
            if self.log_file_progress and int(fraction * 4) > quarter[0]:
                quarter[0] = int(fraction * 4)
                self.log(f"{self.label(task)}: {int(fraction * 100)}%")

        return report

    # ---- the three steps
    def read(self, task: CohortTask) -> tuple[str, Any, float]:
        """("skip" | "failed" | "read", data or message, seconds)."""
        started = time.perf_counter()
        try:
            if task.output.exists() and not self.overwrite:
                problem = self.backend.output_problem(task.output)
                if problem is None:
                    return "skip", None, 0.0
                self.log(f"{self.label(task)}: the existing {task.output} is incomplete ({problem}): doing it again")
            task.output.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(task.output)
            return "read", self.backend.read(task), time.perf_counter() - started
        except OperationCancelled:
            raise
        except Exception as error:  # noqa: BLE001 - recorded per file; the batch goes on
            logger.debug("reading %s failed", task.item.source, exc_info=True)
            return "failed", _message(error), time.perf_counter() - started

    def process(self, task: CohortTask, data: Any) -> tuple[bool, Any, float]:
        started = time.perf_counter()
        try:
            return True, self.backend.process(task, data, self.file_progress(task)), time.perf_counter() - started
        except OperationCancelled:
            raise
        except Exception as error:  # noqa: BLE001
            logger.debug("upsampling %s failed", task.item.source, exc_info=True)
            return False, _message(error), time.perf_counter() - started

    def write(self, task: CohortTask, result: Any, seconds: float) -> None:
        started = time.perf_counter()
        try:
            detail = self.backend.write(task, result)
        except Exception as error:  # noqa: BLE001
            logger.debug("writing %s failed", task.output, exc_info=True)
            self.record(task, FAILED, seconds + time.perf_counter() - started, _message(error))
        else:
            self.record(task, DONE, seconds + time.perf_counter() - started, detail or "")
        finally:
            release = getattr(self.backend, "release", None)
            if release is not None:
                release(task)

    def handle_read(self, task: CohortTask, kind: str, payload: Any, seconds: float) -> tuple[Any, float] | None:
        if kind == "skip":
            self.record(task, SKIPPED, 0.0)
            return None
        if kind == "failed":
            self.record(task, FAILED, seconds, payload)
            release = getattr(self.backend, "release", None)
            if release is not None:
                release(task)
            return None
        ok, result, process_seconds = self.process(task, payload)
        del payload
        if not ok:
            self.record(task, FAILED, seconds + process_seconds, result)
            release = getattr(self.backend, "release", None)
            if release is not None:
                release(task)
            return None
        return result, seconds + process_seconds


def _put(channel: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            channel.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_cohort(tasks: Sequence[CohortTask], backend: CohortBackend, *, overwrite: bool = False,
               queue_depth: int = 2, log: Callable[[str], None] | None = None,
               progress: ProgressCallback | None = None, should_cancel: CancelCallback | None = None,
               log_file_progress: bool = False, prefix: str = "") -> list[SummaryRow]:
    """Run every task with ``backend``; returns one :class:`SummaryRow` per task, in task order.

    ``progress(done, total)``: over files, in units of 1/:data:`UNITS_PER_FILE` file.
    ``log``: one line per file (default: the package logger at INFO). ``log_file_progress``: also a
    line at 0/25/50/75/100 % of each file. ``prefix``: put before every line (e.g. the rank).
    Raises :class:`OperationCancelled` when ``should_cancel()`` became true (rows so far are lost;
    the files written so far are complete and are skipped on the next run).
    """
    if queue_depth < 1:
        from ..errors import InputError

        raise InputError(f"the queue depth must be at least 1, got {queue_depth}")
    run = _Run(tasks, backend, overwrite, log or logger.info, progress, log_file_progress, prefix)

    def cancelled() -> bool:
        return bool(should_cancel is not None and should_cancel())

    if not getattr(backend, "concurrent_io", False):
        for task in run.tasks:
            if cancelled():
                raise OperationCancelled("the batch was cancelled")
            handed = run.handle_read(task, *run.read(task))
            if handed is not None:
                run.write(task, *handed)
    else:
        _run_threaded(run, queue_depth, cancelled)
    rows = [run.rows[task.index] for task in run.tasks]
    counts = count_statuses(rows)
    run.log(f"{prefix}batch finished: {counts[DONE]} done, {counts[SKIPPED]} skipped, {counts[FAILED]} failed")
    return rows


_END = object()


def _run_threaded(run: _Run, depth: int, cancelled: Callable[[], bool]) -> None:
    reads: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    writes: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            for task in run.tasks:
                if run.stop.is_set():
                    return
                if not _put(reads, (task, *run.read(task)), run.stop):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the calling thread
            failures.append(error)
        _put(reads, _END, run.stop)

    def writer() -> None:
        while True:
            try:
                item = writes.get(timeout=0.1)
            except queue.Empty:
                if run.stop.is_set():
                    return
                continue
            if item is _END or run.stop.is_set():
                return
            run.write(*item)

    threads = [threading.Thread(target=reader, name="batch-reader", daemon=True),
               threading.Thread(target=writer, name="batch-writer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = reads.get()
            if item is _END:
                break
            if cancelled():
                raise OperationCancelled("the batch was cancelled")
            task, kind, payload, seconds = item
            handed = run.handle_read(task, kind, payload, seconds)
            del item, payload
            if handed is not None:
                if not _put(writes, (task, *handed), run.stop):
                    break
        if failures:
            raise failures[0]
        _put(writes, _END, run.stop)
        threads[1].join()
    except BaseException:
        run.stop.set()  # the reader stops; the writer finishes the file it is writing
        for thread in threads:
            thread.join(timeout=60)
        raise
