"""The summary CSV of a batch: one row per input with its output, status, seconds and message."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..volumes.fileio import atomic_output

COLUMNS = ("input", "output", "status", "seconds", "message")
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
#: file name of the summary in the output folder (a shard's: ``upsample-batch-summary.shard-I-of-N.csv``)
SUMMARY_NAME = "upsample-batch-summary.csv"


@dataclass(frozen=True)
class SummaryRow:
    """What happened to one input. ``seconds``: wall time of its reading, upsampling and writing
    (0 for a skipped input). ``index``: its place in the cohort (rows are written in that order)."""

    index: int
    input: str
    output: str
    status: str
    seconds: float
    message: str = ""


def summary_name(shard: tuple[int, int] | None = None) -> str:
    """:data:`SUMMARY_NAME`, or the per-shard name for ``--shard I/N``."""
    if shard is None or shard[1] == 1:
        return SUMMARY_NAME
    return f"upsample-batch-summary.shard-{shard[0]}-of-{shard[1]}.csv"


def write_summary(path: str | os.PathLike, rows: Sequence[SummaryRow]) -> Path:
    """Write ``rows`` (sorted by cohort index) as CSV, atomically."""
    target = Path(path)
    with atomic_output(target) as staged:
        with open(staged, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in sorted(rows, key=lambda r: r.index):
                writer.writerow([row.input, row.output, row.status, f"{row.seconds:.3f}", row.message])
    return target


def read_summary(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a summary CSV as dicts keyed by :data:`COLUMNS`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def count_statuses(rows: Sequence[SummaryRow]) -> dict[str, int]:
    return {status: sum(1 for r in rows if r.status == status) for status in (DONE, SKIPPED, FAILED)}
