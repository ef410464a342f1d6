"""Multiply-add FLOPs of the convolutions of a network, counted on one forward pass (for benchmarks).

Counts 2 FLOPs per multiply-accumulate of every ``Conv2d`` / ``Conv3d`` (bias and activations are
ignored, as in the other model types' ``flops_per_pixel``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def conv_flops(run: Callable[[], object], module: nn.Module) -> int:
    """FLOPs of the convolutions in ``module`` while ``run()`` executes (``run`` calls the network)."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = 1
        for k in layer.kernel_size:
            kernel *= int(k)
        macs = output.numel() * (layer.in_channels // layer.groups) * kernel
        total += 2 * int(macs)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total
