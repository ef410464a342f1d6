"""Multi-process training with PyTorch's own distributed engine (DistributedDataParallel).

Run the ordinary ``train`` command under ``torchrun``; it reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from the environment::

    torchrun --nproc_per_node 4 -m SemanticInterpolationLib.cli.train scans/*.nii.gz --output asi.pt
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        -m SemanticInterpolationLib.cli.train ...          # several machines

(``semantic-interpolation train`` is the same program.) Backend: NCCL when every process has a
CUDA GPU (process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``), gloo otherwise (CPU). Every process
draws a different share of each epoch's triplets (:class:`~.data.TripletSampler`, a
``DistributedSampler``); ``--batch-size`` is per process, so the effective batch is
``batch size x processes``. Only rank 0 validates, writes checkpoints and the log and reports
progress; cancelling on any process stops all of them after the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that validates, writes files and reports (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all processes (in place; returns it)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is true on at least one."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_object(self, obj):
        """``obj`` of rank 0, on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_distributed() -> bool:
    """True when the environment says this process is one of several (torchrun sets WORLD_SIZE)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init_distributed(device: torch.device, timeout=None) -> DistributedContext:
    """Join the process group described by the environment (no-op for a single process).

    ``device``: the device the caller resolved; CUDA selects NCCL, anything else gloo.
    ``timeout``: a ``datetime.timedelta`` for collective waits (None: torch's default).
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(),
                                  int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend(), False)
    if not launched_distributed():
        return DistributedContext()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout is not None else {}))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              backend, True)


def process_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for multi-process CUDA, else ``device``."""
    if context.enabled and device.type == "cuda":
        index = context.local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def wrap_model(module: torch.nn.Module, context: DistributedContext, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when several processes train, else unchanged. A network that runs
    only some of its parameters for a batch (``may_leave_parameters_unused``: a profile-routed model whose batch
    holds one kind of sample) is wrapped with ``find_unused_parameters``."""
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # the module may be a training step around the network (its submodules are searched)
    unused = any(getattr(m, "may_leave_parameters_unused", False) for m in module.modules())
    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index], output_device=device.index,
                                       find_unused_parameters=unused)
    return DistributedDataParallel(module, find_unused_parameters=unused)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group if this module joined it."""
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
