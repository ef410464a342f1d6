#!/usr/bin/env python
"""Batches per second of the pair-unet data: DeviceGapSampler vs GapDataset through a DataLoader.

    PYTHONPATH=SemanticInterpolation python bench/bench_device_sampler.py [--device cuda] [--batch-size 256 --patch-size 96]

Reads the packed data (``shared/gpu-training-data.npz``, see Resources/Scripts/pack_training_data.py),
draws ``--batches`` batches both ways (same volumes, batch, patch, augmentation as the GPU recipe: the
default model's samples, with the B-spline anchor and the slice profile; ``--plain`` without them)
and prints batches/s and samples/s; no network, data only. Needs torch and numpy only (without
SimpleITK, the GPU recipe's stand-in and the packed B-spline weights are used).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _simpleitk_stand_in() -> bool:
    """The stand-in of ``Resources/Scripts/gpu_train_default.py`` when SimpleITK is missing; True if needed."""
    spec = importlib.util.spec_from_file_location("_gpu_train_default",
                                                  HERE.parent / "Resources" / "Scripts" / "gpu_train_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the stand-in at import, before anything imports SimpleITK
    return bool(module.SIMPLEITK_STAND_IN)


SIMPLEITK_STAND_IN = _simpleitk_stand_in()

import torch  # noqa: E402

from SemanticInterpolationLib.training.data import Augmentation, GapDataset, TripletSampler  # noqa: E402
from SemanticInterpolationLib.training.device_sampler import (DeviceGapSampler,  # noqa: E402
                                                               install_bspline_weight_tables, load_packed_volumes)

DEFAULT_DATA = HERE.parent / "shared" / "gpu-training-data.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=44)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--plain", action="store_true", help="without the B-spline anchor and the slice profile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    training, _, meta = load_packed_volumes(args.data)
    if SIMPLEITK_STAND_IN:
        install_bspline_weight_tables(meta.get("bspline_weights") or {})
    volumes = [v for v in training if min(v.slice_shape) >= args.patch_size]
    s = meta.get("settings") or {}
    aug = Augmentation(noise_std_max=float(s.get("noise_std", 0.06)))
    thick = float(s.get("thick_slice_probability", 0.5))
    inputs = {} if args.plain else dict(bspline_anchor=True, slice_profile=True)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    sampler = DeviceGapSampler(volumes, args.patch_size, augmentation=aug, thick_slice_probability=thick,
                               device=device, **inputs)
    sync()
    print(f"device sampler: built in {time.perf_counter() - t0:.1f} s, {sampler.nbytes / 2**30:.2f} GiB on {device}")
    order = TripletSampler(sampler, samples_per_epoch=args.batches * args.batch_size)
    batches = sampler.batches(order, args.batch_size)
    next(iter(batches))  # warm-up
    sync()
    t0 = time.perf_counter()
    for batch in batches:
        pass
    sync()
    dt = time.perf_counter() - t0
    print(f"device sampler: {args.batches / dt:.1f} batches/s, {args.batches * args.batch_size / dt:.0f} samples/s "
          f"(batch {args.batch_size}, patch {args.patch_size}, {'plain' if args.plain else 'anchor and slice profile'})")

    t0 = time.perf_counter()
    dataset = GapDataset(volumes, args.patch_size, augmentation=aug, thick_slice_probability=thick, **inputs)
    print(f"GapDataset: built in {time.perf_counter() - t0:.1f} s")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                         sampler=TripletSampler(dataset, samples_per_epoch=args.batches * args.batch_size),
                                         pin_memory=device.type == "cuda")
    t0 = time.perf_counter()
    for batch in loader:
        batch = [item.to(device, non_blocking=True) for item in batch]
    sync()
    dt = time.perf_counter() - t0
    print(f"DataLoader ({args.workers} workers): {args.batches / dt:.1f} batches/s, "
          f"{args.batches * args.batch_size / dt:.0f} samples/s")


if __name__ == "__main__":
    main()
