#!/usr/bin/env python
"""Batches per second of the pair-unet data: DeviceGapSampler vs GapDataset through a DataLoader.

    PYTHONPATH=SemanticInterpolation python bench/bench_device_sampler.py [--device cuda] [--batch-size 256 --patch-size 96]

Reads the packed data (``shared/gpu-training-data.npz``, see Resources/Scripts/pack_training_data.py),
draws ``--batches`` batches both ways (same volumes, batch, patch, augmentation as the GPU recipe)
and prints batches/s and samples/s; no network, data only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from SemanticInterpolationLib.training.data import Augmentation, GapDataset, TripletSampler
from SemanticInterpolationLib.training.device_sampler import DeviceGapSampler, load_packed_volumes

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "shared" / "gpu-training-data.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=44)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    training, _, meta = load_packed_volumes(args.data)
    volumes = [v for v in training if min(v.slice_shape) >= args.patch_size]
    s = meta.get("settings") or {}
    aug = Augmentation(noise_std_max=float(s.get("noise_std", 0.06)))
    thick = float(s.get("thick_slice_probability", 0.5))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    sampler = DeviceGapSampler(volumes, args.patch_size, augmentation=aug, thick_slice_probability=thick,
                               device=device)
    sync()
    print(f"device sampler: built in {time.perf_counter() - t0:.1f} s, {sampler.nbytes / 2**30:.2f} GiB on {device}")
    order = TripletSampler(sampler, samples_per_epoch=args.batches * args.batch_size)
    batches = sampler.batches(order, args.batch_size)
    next(iter(batches))  # warm-up
    sync()
    t0 = time.perf_counter()
    for patches, alpha in batches:
        pass
    sync()
    dt = time.perf_counter() - t0
    print(f"device sampler: {args.batches / dt:.1f} batches/s, {args.batches * args.batch_size / dt:.0f} samples/s "
          f"(batch {args.batch_size}, patch {args.patch_size})")

    t0 = time.perf_counter()
    dataset = GapDataset(volumes, args.patch_size, augmentation=aug, thick_slice_probability=thick)
    print(f"GapDataset: built in {time.perf_counter() - t0:.1f} s")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                         sampler=TripletSampler(dataset, samples_per_epoch=args.batches * args.batch_size),
                                         pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    for patches, alpha in loader:
        patches, alpha = patches.to(device, non_blocking=True), alpha.to(device, non_blocking=True)
    sync()
    dt = time.perf_counter() - t0
    print(f"DataLoader ({args.workers} workers): {args.batches / dt:.1f} batches/s, "
          f"{args.batches * args.batch_size / dt:.0f} samples/s")


if __name__ == "__main__":
    main()
