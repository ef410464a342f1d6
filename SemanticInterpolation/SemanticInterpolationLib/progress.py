"""A dependency-free progress bar for terminals (silent when the stream is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TerminalProgress:
    """Callable ``progress(done, total)`` that draws ``label [#####     ] 42% 3.1 s`` on one line.

    Redraws at most every ``interval`` seconds; :meth:`close` ends the line. Does nothing when
    ``stream`` is not a terminal (logs and CI stay clean) unless ``force`` is set.
    """

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30, interval: float = 0.1,
                 force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.interval = interval
        self.enabled = force or bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < total and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        fraction = 0.0 if total <= 0 else min(1.0, done / total)
        filled = int(round(fraction * self.width))
        bar = "#" * filled + " " * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:3.0f}% {now - self.started:6.1f} s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
