"""A deterministic split of a cohort over shards (processes, GPUs, scheduler array jobs).

Greedy largest-first by file size: inputs sorted by size (largest first, ties by cohort order)
each go to the shard with the fewest bytes so far (ties: the lowest shard number). Every
process computes the same split from the same inputs, so no coordination is needed; within a
shard the inputs keep the cohort order.
"""

from __future__ import annotations

import heapq
from typing import Sequence, TypeVar

from ..errors import InputError
from .naming import CohortTask

T = TypeVar("T", bound=CohortTask)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (I counts from 0, like ``$SLURM_ARRAY_TASK_ID`` of ``--array=0-3``)."""
    index, _, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise InputError(f"--shard must be I/N with whole numbers, e.g. 0/4 (the first of 4 shards), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text}: need N >= 1 and 0 <= I < N (shards are numbered from 0), got I={i}, N={n}")
    return i, n


def assign_shards(sizes: Sequence[int], count: int) -> list[list[int]]:
    """Indices of ``sizes`` per shard (``count`` lists, each in increasing index order)."""
    if count < 1:
        raise InputError(f"the number of shards must be at least 1, got {count}")
    heap = [(0, shard) for shard in range(count)]
    shards: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i)):
        load, shard = heapq.heappop(heap)
        shards[shard].append(index)
        heapq.heappush(heap, (load + max(int(sizes[index]), 1), shard))
    return [sorted(s) for s in shards]


def select_shard(tasks: Sequence[T], index: int, count: int) -> list[T]:
    """The tasks of shard ``index`` of ``count`` (balanced by input size)."""
    if not 0 <= index < count:
        raise InputError(f"shard {index} does not exist among {count} shards (numbered from 0)")
    chosen = assign_shards([t.item.size_bytes for t in tasks], count)[index]
    return [tasks[i] for i in chosen]
