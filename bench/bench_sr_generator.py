#!/usr/bin/env python
"""FLOPs and time per output volume: the stage-II 3-D generator (sr-generator) beside the slice models.

For one synthetic 256x256xN int16 volume (N acquired slices) and factor K, every model runs through
the same engine call users run (``ASIEngine.upsample``), and the script prints per output volume:

  * convolution FLOPs counted during that call (forward hooks on every Conv2d/Conv3d, 2 per
    multiply-add; the B-spline of the sr-generator's input is not counted),
  * wall-clock seconds (median of --repeats after one warm-up run),
  * the ratio of each time to ASI's, and the achieved GFLOP/s,

for: ASI (journal network), xuan-vae (stage I), the bundled default model when installed
(pair-unet), and sr-generator networks (the recipe's 16 channels x 6 convolutions and a
DeepResolve-sized 64 x 20). Weights are random: speed does not depend on them. All figures of a run
are from that run (the machines are noisy; compare ratios within one run).

Usage: python bench/bench_sr_generator.py [--device cpu] [--slices 12] [--factor 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from SemanticInterpolationLib import ASIEngine
from SemanticInterpolationLib.engine.devices import describe_device, resolve_device
from SemanticInterpolationLib.models.checkpoint import find_default_checkpoint, load_checkpoint
from SemanticInterpolationLib.models.flops import conv_flops
from SemanticInterpolationLib.models.registry import get_model_type
from SemanticInterpolationLib.models.sr_generator import SRGenerator, SRGeneratorConfig


def make_volume(n_slices: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 800 + 600 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 4) ** 2))
    return np.stack([base * (1 + 0.05 * s) + rng.normal(0, 20, base.shape) for s in range(n_slices)]).astype(np.int16)


def measure(name: str, model_or_checkpoint, volume: np.ndarray, factor: int, device: torch.device,
            repeats: int) -> dict:
    engine = ASIEngine(model_or_checkpoint, device)
    flops = conv_flops(lambda: engine.upsample(volume, factor), engine.model)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.upsample(volume, factor)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"name": name, "type": engine.model_type, "gflop": flops / 1e9, "seconds": seconds,
            "gflops": flops / 1e9 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-deepresolve", action="store_true", help="skip the 64 x 20 generator (slow on CPUs)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    volume = make_volume(args.slices)
    n_out = (args.slices - 1) * args.factor + 1
    print(f"device: {describe_device(device)}; torch {torch.__version__}; input 256x256x{args.slices} int16, "
          f"K = {args.factor}: output 256x256x{n_out}")
    cases = [("asi (journal network)", get_model_type("asi").build()),
             ("xuan-vae (stage I, default config)", get_model_type("xuan-vae").build())]
    default = find_default_checkpoint()
    if default is not None and default.is_file():
        cases.append((f"default model ({default.name})", load_checkpoint(default)))
    cases.append(("sr-generator 16 ch x 6 convs (recipe)",
                  SRGenerator(SRGeneratorConfig(features=16, layers=6, factors=(args.factor,)))))
    if not args.no_deepresolve:
        cases.append(("sr-generator 64 ch x 20 convs (DeepResolve size)",
                      SRGenerator(SRGeneratorConfig(features=64, layers=20, factors=(args.factor,)))))
    rows = []
    for name, model in cases:
        measure(name, model, volume, args.factor, device, 1)  # warm-up
        rows.append(measure(name, model, volume, args.factor, device, args.repeats))
    reference = rows[0]["seconds"]
    print(f"{'model':52s} {'type':13s} {'GFLOP/volume':>13s} {'s/volume':>9s} {'vs asi':>7s} {'GFLOP/s':>8s}")
    for r in rows:
        print(f"{r['name']:52s} {r['type']:13s} {r['gflop']:13.1f} {r['seconds']:9.2f} "
              f"{r['seconds'] / reference:6.2f}x {r['gflops']:8.1f}")


if __name__ == "__main__":
    main()
