#!/usr/bin/env python
"""Training throughput (samples per second) of every model type at patch 64 and 128 on the current device.

Times complete optimisation steps of the real trainer (triplet sampling and augmentation,
encoder/decoder forward, eq. 3 loss, backward, Adam) after a few warm-up steps, with validation
and checkpoint writing excluded. One triplet = three slices (two encoded and reconstructed, one
synthesised), so slices/s = 3 x triplets/s. For ``pair-unet`` a sample is (two input slices, one target)
from the gap sampler; the network runs once per sample. For ``hrinet`` a sample is one item of its
alternating procedure (training/hrinet.py): on step I a pair (two slices encoded, reconstructed and
mixed; D1 updated once, D2 five times), on step II a sequence of 7 slices (two encoded, five
synthesised); steps alternate, so its figure is the mean over both. ``--model-types`` picks the types (default all,
in one run, so their ratio is measured on the same machine state). The volume is synthetic (160x160 in-plane, 14 slices):
the cost does not depend on the image content.

Usage: python bench/bench_training.py [--device auto] [--batch-size 12] [--steps 4] [--warmup 2]
       [--patch-sizes 64 128] [--synthesis-loss ssim] [--lambda 0.05] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from SemanticInterpolationLib.engine.devices import describe_device, resolve_device
from SemanticInterpolationLib.models.registry import model_type_names
from SemanticInterpolationLib.training import Trainer, TrainingConfig, TrainingVolume


def make_volume(size: int = 160, slices: int = 14) -> TrainingVolume:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for k in range(slices):
        r = size / 4 * (1 + 0.03 * k)
        base = 800 * np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * r**2)))
        frames.append(base + rng.normal(0, 20, base.shape))
    return TrainingVolume.from_array(np.stack(frames).astype(np.float32), (1.0, 1.0, 5.0), name="synthetic")


def measure(patch: int, args: argparse.Namespace, folder: Path, model_type: str = "asi") -> dict:
    steps = args.warmup + args.steps
    config = TrainingConfig([make_volume()], output=str(folder / f"bench-{model_type}-{patch}.pt"), epochs=1,
                            model_type=model_type,
                            steps_per_epoch=steps, batch_size=args.batch_size, patch_size=patch,
                            synthesis_loss=args.synthesis_loss, lam=args.lam, device=args.device,
                            precision=args.precision, seed=0, progress_interval_s=1e9)
    trainer = Trainer(config)
    stamps: list[float] = []

    def progress(info) -> None:
        if info.phase == "train":
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer.run(progress=progress)
    timed = stamps[args.warmup - 1:] if args.warmup > 0 else stamps
    seconds = timed[-1] - timed[0]
    n_steps = len(timed) - 1
    return {"model_type": model_type, "patch": patch, "batch_size": args.batch_size, "steps_timed": n_steps,
            "seconds_per_step": seconds / n_steps, "triplets_per_second": n_steps * args.batch_size / seconds,
            "device": describe_device(trainer.device), "precision": str(trainer.compute_dtype).replace("torch.", ""),
            "synthesis_loss": args.synthesis_loss, "lambda": args.lam}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=12, help="triplets per step (paper: 12)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per patch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--synthesis-loss", default="ssim")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.05)
    parser.add_argument("--model-types", nargs="+", default=model_type_names(), choices=model_type_names())
    parser.add_argument("--json", action="store_true", help="print one JSON object per model type and patch size")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step includes one-off set-up)")
    device = resolve_device(args.device)
    print(f"training throughput on {describe_device(device)}, torch {torch.__version__}, batch {args.batch_size}, "
          f"synthesis loss {args.synthesis_loss} (lambda {args.lam:g}); {args.warmup} warm-up + {args.steps} timed steps")
    with tempfile.TemporaryDirectory() as tmp:
        for patch in args.patch_sizes:
            first = None
            for model_type in args.model_types:
                row = measure(patch, args, Path(tmp), model_type)
                first = first or row
                if args.json:
                    print(json.dumps(row))
                else:
                    print(f"{model_type:10s} patch {patch:4d}: {row['triplets_per_second']:8.2f} samples/s "
                          f"({row['seconds_per_step']:.3f} s per step of {args.batch_size}, precision "
                          f"{row['precision']}; {row['triplets_per_second'] / first['triplets_per_second']:.2f}x "
                          f"{first['model_type']})")


if __name__ == "__main__":
    main()
