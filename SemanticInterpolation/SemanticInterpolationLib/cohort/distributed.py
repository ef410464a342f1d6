"""Several processes on one cohort: each takes its shard; the rows of all are merged.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is joined with
:func:`..training.distributed.init_distributed` (NCCL when every process has a CUDA GPU, gloo
otherwise) and each rank uses one device (``cuda:LOCAL_RANK``). Rank ``r`` of ``W`` takes shard
``r/W`` of the cohort, or of the ``--shard I/N`` part when both are given (array jobs of multi-GPU
jobs). After its files every rank waits for the others; then all know all rows and rank 0
writes the merged summary. The process group's timeout is long (a rank may wait hours for the
slowest one): :data:`WAIT_TIMEOUT`.
"""

from __future__ import annotations

import datetime
from typing import Sequence

from .naming import CohortTask
from .sharding import select_shard
from .summary import SummaryRow

#: how long a rank that has finished waits for the others (torch's default of 30 minutes is too short)
WAIT_TIMEOUT = datetime.timedelta(days=7)


def tasks_of_process(tasks: Sequence[CohortTask], shard: tuple[int, int] | None, rank: int,
                     world_size: int) -> list[CohortTask]:
    """The tasks this process does: shard ``shard`` (if given) of ``tasks``, then part ``rank`` of ``world_size``."""
    mine = list(tasks)
    if shard is not None:
        mine = select_shard(mine, *shard)
    if world_size > 1:
        mine = select_shard(mine, rank, world_size)
    return mine


def gather_rows(rows: Sequence[SummaryRow], context) -> list[SummaryRow]:
    """The rows of every process (on every process), sorted by cohort index; ``rows`` for one process."""
    if not context.enabled:
        return sorted(rows, key=lambda r: r.index)
    import torch.distributed as dist

    gathered: list[list[SummaryRow] | None] = [None] * context.world_size
    dist.all_gather_object(gathered, list(rows))
    return sorted((row for part in gathered for row in (part or [])), key=lambda r: r.index)
