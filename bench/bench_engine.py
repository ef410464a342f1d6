#!/usr/bin/env python
"""Benchmark of the ASI upsampling engine on the current device; every figure from one run.

Prints, for a 256x256xN volume (N acquired slices) and K = 2, 4, 8:
  * every registered model type side by side (ASI, pair-unet, hrinet, ...): FLOPs per synthesized slice and
    synthesized slices per second at K = 4 with the engine's default settings,
  * end-to-end time of ASIEngine.upsample and synthesized slices per second,
  * the network's achieved GFLOP/s (convolution FLOPs counted layer by layer, 2 per multiply-add)
    beside the same machine's fp32 (and on GPU fp16) matrix-multiply peak measured in this run,
  * peak resident memory (CPU: a fresh subprocess per case; GPU: max allocated),
  * the ratio of ASI's time to SimpleITK cubic B-spline on the same volume,
  * time and peak memory of the three synthesis modes (plain, residual, residual-bspline: the
    default model's), relative to plain,
  * the pair U-Net's test-time augmentation modes (none, pair, pair-flip: the default model's), relative
    to none, with --tta-only only that section,
and compares memory formats and batch sizes within the same run (the machines are noisy).

Usage: python bench/bench_engine.py [--device auto] [--slices 12] [--repeats 3] [--quick] [--model-types-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from SemanticInterpolationLib import ASIAutoencoder, ASIEngine
from SemanticInterpolationLib.models.registry import get_model_type, model_type_names
from SemanticInterpolationLib.engine.baselines import interpolate_array
from SemanticInterpolationLib.engine.devices import describe_device, resolve_device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int, seconds: float = 1.5) -> float:
    """Best GFLOP/s of a square matrix multiply over several timed rounds."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        reps = 20 if device.type == "cuda" else 2
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        synchronize(device)
        best = max(best, reps * 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def make_volume(n_slices: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    base = 800 * np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 4) ** 2)))
    return np.stack([base * (1 + 0.05 * k) + rng.normal(0, 20, base.shape) for k in range(n_slices)]).astype(np.int16)


def time_engine(engine: ASIEngine, volume: np.ndarray, factor: int, repeats: int,
                slice_thickness_ratio: float | None = None) -> float:
    """Median seconds of ``engine.upsample(volume, factor)`` over ``repeats`` runs after a warm-up;
    ``slice_thickness_ratio``: the profile told to the network (None: not told)."""
    engine.upsample(volume[:3], factor, slice_thickness_ratio=slice_thickness_ratio)  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        synchronize(engine.device)
        t0 = time.perf_counter()
        engine.upsample(volume, factor, slice_thickness_ratio=slice_thickness_ratio)
        synchronize(engine.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory in MiB.

    VmHWM belongs to this process image only; ru_maxrss would also count the parent's memory
    inherited across fork/exec on Linux.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(args: argparse.Namespace) -> None:
    """Run one case in this fresh process and print its peak RSS (MiB) as JSON."""
    volume = make_volume(args.slices)
    engine = ASIEngine(ASIAutoencoder(), args.device, batch_size=args.batch_size, synthesis=args.synthesis)
    engine.upsample(volume[:2], args.factor)
    before = peak_rss_mib()
    out = engine.upsample(volume, args.factor)
    peak = peak_rss_mib()
    print(json.dumps({"peak_rss_mib": peak, "before_mib": before, "output_mib": out.nbytes / 2**20}))


def memory_of_fresh_process(device: torch.device, n_slices: int, batch_size: int, synthesis: str) -> dict:
    """Run :func:`memory_probe` (K=4) in a new interpreter; its JSON result (peak RSS in MiB)."""
    probe = subprocess.run(
        [sys.executable, __file__, "--memory-probe", "--device", str(device), "--slices", str(n_slices),
         "--factor", "4", "--batch-size", str(batch_size), "--synthesis", synthesis],
        capture_output=True, text=True, check=True)
    return json.loads(probe.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer configurations (for a smoke test)")
    parser.add_argument("--model-types-only", action="store_true", help="only the model types side by side")
    parser.add_argument("--tta-only", action="store_true", help="only the test-time augmentation modes")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--factor", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--synthesis", default="plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args)
        return

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = ASIAutoencoder().eval()
    flops = model.flops_per_pixel()
    size = 256
    encode_gflop = flops["encode"] * size * size / 1e9
    decode_gflop = flops["decode"] * size * size / 1e9
    print(f"device: {describe_device(device)}; torch {torch.__version__}; volume {size}x{size}x{args.slices} int16")
    print(f"network FLOPs per 256x256 slice: encode {encode_gflop:.2f} GFLOP, decode {decode_gflop:.2f} GFLOP")

    peak_fp32 = matmul_peak_gflops(device, torch.float32, 4096 if device.type == "cuda" else 1024)
    print(f"measured fp32 matrix-multiply peak: {peak_fp32:.0f} GFLOP/s")
    peak_half = None
    if device.type == "cuda":
        peak_half = matmul_peak_gflops(device, torch.float16, 8192)
        print(f"measured fp16 matrix-multiply peak: {peak_half:.0f} GFLOP/s")

    volume = make_volume(args.slices)

    # 0) model types side by side (same volume, same run)
    print("\n== model types (K=4, default engine settings) ==")
    synthesized = (args.slices - 1) * 3
    type_seconds = {}
    for name in model_type_names():
        net = get_model_type(name).build().eval()
        counts = net.flops_per_pixel()
        # a profile-routed model not told its profile runs its thin-slice network
        per_new = counts.get("synthesize_main", counts.get("synthesize", counts.get("decode", 0)))
        # per synthesized slice, the encoding of the acquired slices shared among the new ones
        gflop_per_slice = (args.slices * counts["encode"] + synthesized * per_new) * size * size / synthesized / 1e9
        type_engine = ASIEngine(net, device)
        seconds = time_engine(type_engine, volume, 4, args.repeats)
        type_seconds[name] = seconds
        print(f"{name:10s}: {gflop_per_slice:6.2f} GFLOP per synthesized 256x256 slice, {seconds:7.3f} s, "
              f"{synthesized / seconds:7.1f} synthesized slices/s, {gflop_per_slice * synthesized / seconds:6.0f} "
              f"GFLOP/s ({gflop_per_slice * synthesized / seconds / peak_fp32 * 100:5.1f}% of fp32 peak), "
              f"{seconds / type_seconds[model_type_names()[0]]:4.2f}x the time of {model_type_names()[0]}")
        if name == "profile-routed":  # the same model told thick slices: its thick network answers
            counts_thick = counts["synthesize_thick"] * size * size / 1e9
            seconds = time_engine(type_engine, volume, 4, args.repeats, slice_thickness_ratio=1.0)
            print(f"{'  told thick':10s}: {counts_thick:6.2f} GFLOP per synthesized 256x256 slice, {seconds:7.3f} s, "
                  f"{synthesized / seconds:7.1f} synthesized slices/s, {seconds / type_seconds[name]:4.2f}x the time "
                  f"of the same model not told (its thin-slice network)")
    if args.model_types_only:
        return

    # 0b) test-time augmentation of the pair U-Net (the default model's configuration), K=4
    print("\n== test-time augmentation (pair-unet 24-48-96 with anchor and slice-profile inputs, K=4) ==")
    from SemanticInterpolationLib.engine.test_time_augmentation import TTA_CALLS, TTA_MODES
    from SemanticInterpolationLib.models.pair_unet import PairUNet

    pair = PairUNet().with_anchor_input().with_thickness_input().eval()
    tta_seconds = {}
    for mode in TTA_MODES:
        tta_engine = ASIEngine(pair, device, test_time_augmentation=mode)
        tta_seconds[mode] = time_engine(tta_engine, volume, 4, args.repeats)
        print(f"{mode:10s}: {TTA_CALLS[mode]} network call(s) per new slice, {tta_seconds[mode]:7.3f} s, "
              f"{(args.slices - 1) * 3 / tta_seconds[mode]:7.1f} synthesized slices/s, "
              f"{tta_seconds[mode] / tta_seconds['none']:5.2f}x none")

    # 0c) the slice-profile estimate (NIfTI input without a known thickness): the plain comparison alone
    #     against the rule of agreement (plain and pair-flip views), beside the pair-flip upsampling above
    print("\n== slice-profile estimate (same network, K=4; made once per volume before upsampling) ==")
    estimate_engine = ASIEngine(pair, device, test_time_augmentation="pair-flip")
    estimate_seconds = {}
    for label, views in (("plain comparison only", False), ("rule of agreement", True)):
        estimate_engine.model.supports_test_time_augmentation = views  # the views' comparison is added when True
        best_of = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            estimate = estimate_engine.estimate_slice_profile(volume, 4, 0)
            best_of = min(best_of, time.perf_counter() - t0)
        estimate_seconds[label] = best_of
        print(f"{label:22s}: {best_of:7.3f} s for {estimate.slices_tested} tested slices, "
              f"{best_of / estimate_seconds['plain comparison only']:5.2f}x the plain comparison, "
              f"{best_of / tta_seconds['pair-flip'] * 100:5.1f}% of the pair-flip upsampling")
    del estimate_engine.model.supports_test_time_augmentation  # back to the class attribute
    if args.tta_only:
        return

    formats = ["contiguous", "channels_last"]
    batch_sizes = [4, 8] if args.quick else ([2, 4, 8, 16] if device.type == "cpu" else [64, 256, 1024])
    factors = [4] if args.quick else [2, 4, 8]

    # 1) memory format x batch size at K=4
    print("\n== memory format and batch size (K=4) ==")
    best = None
    for fmt in formats:
        for bs in batch_sizes:
            engine = ASIEngine(model, device, batch_size=bs, memory_format=fmt, precision="auto")
            seconds = time_engine(engine, volume, 4, args.repeats)
            synthesized = (args.slices - 1) * 3
            gflop = args.slices * encode_gflop + synthesized * decode_gflop
            rate = gflop / seconds
            print(f"{fmt:13s} batch {bs:5d}: {seconds:7.3f} s, {synthesized / seconds:8.1f} synthesized slices/s, "
                  f"{rate:7.0f} GFLOP/s = {rate / peak_fp32 * 100:5.1f}% of fp32 matmul peak")
            if best is None or seconds < best[0]:
                best = (seconds, fmt, bs)
    _, best_format, best_batch = best
    print(f"fastest: {best_format}, batch {best_batch}")

    # 2) K = 2, 4, 8 with the best setting, against B-spline
    print(f"\n== factors ({best_format}, batch {best_batch}) ==")
    engine = ASIEngine(model, device, batch_size=best_batch, memory_format=best_format)
    for factor in factors:
        seconds = time_engine(engine, volume, factor, args.repeats)
        synthesized = (args.slices - 1) * (factor - 1)
        gflop = args.slices * encode_gflop + synthesized * decode_gflop
        t0 = time.perf_counter()
        interpolate_array(volume, 0, factor, "bspline")
        bspline = time.perf_counter() - t0
        print(f"K={factor}: {seconds:7.3f} s end to end, {synthesized / seconds:8.1f} synthesized slices/s, "
              f"{gflop / seconds:7.0f} GFLOP/s ({gflop / seconds / peak_fp32 * 100:5.1f}% of fp32 peak), "
              f"B-spline {bspline:6.3f} s, ASI/B-spline time ratio {seconds / bspline:6.1f}")

    # 3) synthesis modes at K=4 (the residual modes also decode each acquired slice's reconstruction;
    #    residual-bspline also runs the B-spline of the whole output first)
    print(f"\n== synthesis modes (K=4, {best_format}, batch {best_batch}) ==")
    mode_seconds = {}
    for mode in ("plain", "residual", "residual-bspline"):
        mode_engine = ASIEngine(model, device, batch_size=best_batch, memory_format=best_format, synthesis=mode)
        mode_seconds[mode] = time_engine(mode_engine, volume, 4, args.repeats)
        print(f"{mode:17s}: {mode_seconds[mode]:7.3f} s, {mode_seconds[mode] / mode_seconds['plain']:5.2f}x plain")

    # 4) memory
    print("\n== peak memory ==")
    if device.type == "cuda":
        for n in (args.slices, args.slices * 8):
            torch.cuda.reset_peak_memory_stats()
            out = engine.upsample(make_volume(n), 4)
            print(f"{n:4d} slices, K=4: peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB "
                  f"(output array {out.nbytes / 2**20:.0f} MiB on the host)")
    for n in ([args.slices] if args.quick else [args.slices, args.slices * 8]):
        info = memory_of_fresh_process(device, n, best_batch, "plain")
        print(f"{n:4d} slices, K=4, batch {best_batch}: peak RSS {info['peak_rss_mib']:7.0f} MiB "
              f"(after a 2-slice warm-up {info['before_mib']:.0f} MiB, output array {info['output_mib']:.0f} MiB)")
    n = args.slices * (1 if args.quick else 8)
    for mode in ("residual", "residual-bspline"):
        info = memory_of_fresh_process(device, n, best_batch, mode)
        print(f"{n:4d} slices, K=4, batch {best_batch}, {mode}: peak RSS {info['peak_rss_mib']:7.0f} MiB")


if __name__ == "__main__":
    main()
