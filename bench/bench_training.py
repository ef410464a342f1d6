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

In the same run, a bare torch loop of the same network (same type, configuration, channels_last
layout, precision), the same batch (one batch drawn by the trainer's data loader, reused every
step) and the same loss object with Adam is timed, one bare step right after each trainer step
(so both see the same machine load); medians of the step times are compared. ``trainer/bare`` is
the Trainer's samples/s as a fraction of the bare loop's (1.0: data sampling, augmentation,
logging and progress cost nothing). ``--no-bare`` skips it.

Usage: python bench/bench_training.py [--device auto] [--batch-size 12] [--steps 4] [--warmup 2]
       [--patch-sizes 64 128] [--synthesis-loss ssim] [--lambda 0.05] [--model-types ...] [--no-bare] [--json]
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
from SemanticInterpolationLib.training.trainer import residual_synthesis


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
    bare_step = make_bare_loop(trainer, args.batch_size) if getattr(args, "bare", True) else None
    trainer_steps: list[float] = []  # seconds of each trainer step (from the end of the previous one)
    bare_steps: list[float] = []
    last = [time.perf_counter()]

    def synchronize() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()

    def progress(info) -> None:
        if info.phase != "train":
            return
        synchronize()
        now = time.perf_counter()
        trainer_steps.append(now - last[0])
        if bare_step is not None:  # one bare step right after each trainer step: both see the same machine load
            bare_step()
            synchronize()
            bare_steps.append(time.perf_counter() - now)
        last[0] = time.perf_counter()

    trainer.run(progress=progress)
    timed = trainer_steps[args.warmup:]
    seconds = float(np.median(timed))
    row = {"model_type": model_type, "patch": patch, "batch_size": args.batch_size, "steps_timed": len(timed),
           "seconds_per_step": seconds, "triplets_per_second": args.batch_size / seconds,
           "device": describe_device(trainer.device), "precision": str(trainer.compute_dtype).replace("torch.", ""),
           "synthesis_loss": args.synthesis_loss, "lambda": args.lam}
    if bare_step is not None:
        bare = args.batch_size / float(np.median(bare_steps[args.warmup:]))
        row["bare_triplets_per_second"] = bare
        row["trainer_over_bare"] = row["triplets_per_second"] / bare
    return row


def make_bare_loop(trainer: Trainer, batch_size: int):
    """One optimisation step of a plain loop, as a function: the trainer's network type and configuration
    (a copy of its own), one batch of its data loader reused, its loss object, Adam at its learning rate;
    no sampling, augmentation, logging or progress. Median step times are taken (the first steps are warm-up)."""
    device, dtype = trainer.device, trainer.compute_dtype
    torch.manual_seed(0)
    model = trainer.model_type.build(trainer.architecture)
    model.to(device).train()
    memory_format = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(trainer.config.learning_rate))
    batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=batch_size, shuffle=False)))
    amp = dtype != torch.float32
    if trainer.pair_model:
        patches, alpha = (item.to(device) for item in batch)
        first = patches[:, 0:1].contiguous(memory_format=memory_format)
        second = patches[:, 2:3].contiguous(memory_format=memory_format)
        anchor = patches[:, 3:4].contiguous(memory_format=memory_format) if patches.shape[1] > 3 else None
        middle = patches[:, 1:2]

        def loss() -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                predicted = model(first, second, alpha, anchor)
            return trainer.loss_fn(predicted.float(), middle)
    else:
        triplets = batch.to(device)
        b = triplets.shape[0]
        outer = torch.cat([triplets[:, 0:1], triplets[:, 2:3]]).contiguous(memory_format=memory_format)
        middle = triplets[:, 1:2]

        def loss() -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                z = model.encode(outer)
                if trainer.config.lam > 0:
                    decoded = model.decode(torch.cat([z, model.mix(z[:b], z[b:], 0.5)]))
                    recon, synth = decoded[:2 * b], decoded[2 * b:]
                    if trainer.synthesis_target != "decoded":
                        anchor = triplets[:, 3:4] if trainer.synthesis_target == "residual-bspline" else None
                        synth = residual_synthesis(outer[:b], outer[b:], recon[:b], recon[b:], synth, anchor)
                    synth = synth.float()
                else:
                    recon, synth = model.decode(z), None
            return trainer.loss_fn(recon.float(), outer, synth, middle)["total"]

    def step() -> None:
        total = loss()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        float(total.detach())  # the trainer reads the loss every step too

    return step


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
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="do not time the bare torch loop (no trainer/bare ratio)")
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
                          f"{first['model_type']})"
                          + (f"; bare loop {row['bare_triplets_per_second']:.2f}/s, trainer/bare "
                             f"{row['trainer_over_bare']:.2f}" if "trainer_over_bare" in row else ""))


if __name__ == "__main__":
    main()
