#!/usr/bin/env python
"""GPU check: synthesis, training and batch throughput on one device, in a few minutes (``bench/device_check.sh``).

    bash bench/device_check.sh                    # on an H100/H200: under 5 minutes (--budget-s 270)
    bash bench/device_check.sh --smoke --device cpu   # tiny sizes, seconds (what the tests run)

Needs torch and numpy only: without SimpleITK a stand-in module is registered (as in
``gpu_train_default.py``) and every volume is a synthetic numpy array; the batch section reads and
writes ``.npy`` files through the same cohort runner as ``upsample-batch`` (its image-file backend
needs SimpleITK). Every measurement is guarded: a failure (no CUDA graphs, a compile error, out of
memory) is printed and recorded, and the check goes on.

Sections, in this order (a section that would not fit the remaining ``--budget-s`` is skipped and says so):

1. ``matmul``: the bf16 (and fp16, tf32, fp32) matrix-multiply peak of this run (TFLOP/s, N x N x N).
2. ``synthesis``: synthesized slices/s of each network (the bundled default model's network, then
   the default configuration of every registered model type; random weights, the cost does not depend
   on them) on ``--size`` x ``--size`` slices at ``--batch-size``, in fp32/fp16/bf16, contiguous or
   channels_last, eager or CUDA graph; with the FLOPs of one synthesized slice (torch's flop counter)
   the achieved TFLOP/s, beside the bf16 matmul peak.
3. ``memory``: peak GPU memory of one synthesis call per batch size.
4. ``engine``: the engine end to end on a cine series (``--frames`` frames of ``--slices`` slices, K =
   ``--factor``): seconds for the whole series and synthesized slices/s.
5. ``training``: the Trainer's samples/s and the bare loop's (``bench_training.py``) per model type.
6. ``batch``: the cohort runner over a synthetic ``.npy`` cohort with reading/writing in background
   threads, against the same cohort on one thread.
7. ``compile``: ``torch.compile`` of the default network's synthesis (bf16, channels_last), last
   because compiling takes the longest.

Prints one line per measurement and writes everything to ``<out>/device-check.json`` (``--out``,
default ``$OUT`` or ``./device-check``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

STARTED = time.monotonic()
HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent


def _register_simpleitk_stand_in() -> bool:
    """The stand-in of ``Resources/Scripts/gpu_train_default.py`` when SimpleITK is missing; True if needed."""
    spec = importlib.util.spec_from_file_location("_gpu_train_default",
                                                  REPOSITORY / "Resources" / "Scripts" / "gpu_train_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the stand-in at import, before anything imports SimpleITK
    return bool(module.SIMPLEITK_STAND_IN)


SIMPLEITK_MISSING = _register_simpleitk_stand_in()

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(HERE))
from SemanticInterpolationLib.engine.devices import describe_device, resolve_device  # noqa: E402
from SemanticInterpolationLib.models.registry import get_model_type, model_type_names  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Report:
    """Lines printed as they come, and the same figures collected for the JSON file."""

    def __init__(self) -> None:
        self.sections: dict[str, Any] = {}

    def line(self, text: str) -> None:
        print(text, flush=True)

    def add(self, section: str, record: dict[str, Any]) -> None:
        self.sections.setdefault(section, []).append(record)


def elapsed() -> float:
    return time.monotonic() - STARTED


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, min_seconds: float, max_iterations: int) -> float:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then calls until ``min_seconds`` or ``max_iterations``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    started = time.perf_counter()
    iterations = 0
    while True:
        fn()
        iterations += 1
        if iterations >= max_iterations:
            break
        if iterations % 4 == 0:
            synchronize(device)
            if time.perf_counter() - started >= min_seconds:
                break
    synchronize(device)
    return (time.perf_counter() - started) / iterations


def guarded(report: Report, section: str, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """Run one measurement; a failure is printed and recorded (first line of the error), not raised."""
    try:
        record = fn()
    except Exception as error:  # noqa: BLE001 - every failure is a result here
        message = " ".join(str(error).split())[:300] or type(error).__name__
        report.line(f"  {label}: FAILED ({type(error).__name__}: {message})")
        report.add(section, {"label": label, "error": f"{type(error).__name__}: {message}"})
        if os.environ.get("DEVICE_CHECK_TRACEBACK"):
            traceback.print_exc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None
    record = {"label": label, **record}
    report.add(section, record)
    return record


def skipped(report: Report, section: str, label: str, why: str) -> None:
    report.line(f"  {label}: skipped ({why})")
    report.add(section, {"label": label, "skipped": why})


# ------------------------------------------------------------------------------------------------ sections
def matmul_peak(args, device, report: Report) -> dict[str, float]:
    report.line(f"[matmul] N = {args.matmul_size}")
    peaks = {}
    n = args.matmul_size
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("tf32", torch.float32),
                        ("fp32", torch.float32)):
        if device.type != "cuda" and name in ("fp16", "tf32"):
            continue

        def run(name=name, dtype=dtype):
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            seconds = time_call(lambda: a @ b, device, 2, args.min_seconds, 200)
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = False
            tflops = 2 * n ** 3 / seconds / 1e12
            report.line(f"  {name}: {tflops:8.1f} TFLOP/s")
            return {"dtype": name, "tflops": tflops}

        record = guarded(report, "matmul", name, run)
        if record:
            peaks[name] = record["tflops"]
    return peaks


def networks(args) -> list[tuple[str, torch.nn.Module]]:
    """(label, network in eval mode): the bundled default model's network, then each registered type's default."""
    found = []
    default = REPOSITORY / "Resources" / "Models" / "default-model.pt"
    if default.is_file() and "default" in args.networks:
        from SemanticInterpolationLib.models.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(default)
        found.append((f"default ({checkpoint.model_type} {checkpoint.config.name})", checkpoint.model))
    for name in model_type_names():
        if name in args.networks or "all" in args.networks:
            torch.manual_seed(0)
            found.append((f"{name} (default configuration)", get_model_type(name).build()))
    return [(label, model.eval()) for label, model in found]


def synthesis_inputs(model, batch: int, size: int, device, memory_format):
    """The states and mixing weights of one synthesis call of ``batch`` slices (what the engine passes)."""
    generator = torch.Generator().manual_seed(0)
    slices = torch.rand(2 * batch, 1, size, size, generator=generator).to(device)
    slices = slices.contiguous(memory_format=memory_format)
    with torch.no_grad():
        states = model.encode(slices)
    first, second = (s.contiguous(memory_format=memory_format) for s in (states[:batch], states[batch:]))
    alpha = torch.full((batch,), 0.5, device=device)
    extra = ()
    if getattr(model, "needs_anchor", False):
        extra = (torch.rand(batch, 1, size, size, generator=generator).to(device).contiguous(memory_format=memory_format),)
    return first, second, alpha, extra


def synthesis_call(model, device, dtype, inputs, autocast_cache: bool = True):
    """One synthesis call as a function (``autocast_cache=False`` for CUDA graph capture)."""
    first, second, alpha, extra = inputs

    def call():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32,
                                             cache_enabled=autocast_cache):
            return model.synthesize(first, second, alpha, *extra)

    return call


def flops_per_slice(model, device, size: int) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    inputs = synthesis_inputs(model, 2, size, device, torch.contiguous_format)
    counter = FlopCounterMode(display=False)
    with counter:
        synthesis_call(model, device, torch.float32, inputs)()
    return counter.get_total_flops() / 2


def cuda_graph_call(call: Callable[[], Any], device) -> Callable[[], Any]:
    """``call`` captured in a CUDA graph (same static inputs); returns the replay."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def synthesis_section(args, device, report: Report, peaks: dict[str, float], models) -> None:
    report.line(f"[synthesis] {args.size}x{args.size} slices, batch {args.batch_size}; bf16 matmul peak "
                f"{peaks.get('bf16', float('nan')):.1f} TFLOP/s")
    for label, base in models:
        if elapsed() > args.budget_s * 0.45:
            skipped(report, "synthesis", label, "time budget")
            continue
        model = base.to(device)
        flops = flops_per_slice(model, device, args.size)
        report.line(f" {label}: {flops / 1e9:.2f} GFLOP per synthesized slice" if flops else f" {label}")
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            if device.type == "cpu" and dtype_name == "fp16":
                continue
            for layout in ("contiguous", "channels_last"):
                memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                model.to(memory_format=memory_format)
                modes = ["eager"] + (["cuda-graph"] if device.type == "cuda" else [])
                for mode in modes:
                    name = f"{label} {dtype_name} {layout} {mode}"

                    def run(mode=mode, dtype=dtype, memory_format=memory_format, dtype_name=dtype_name):
                        inputs = synthesis_inputs(model, args.batch_size, args.size, device, memory_format)
                        call = synthesis_call(model, device, dtype, inputs, autocast_cache=mode != "cuda-graph")
                        if mode == "cuda-graph":
                            call = cuda_graph_call(call, device)
                        seconds = time_call(call, device, 2, args.min_seconds, 500)
                        per_second = args.batch_size / seconds
                        achieved = flops * per_second / 1e12 if flops else None
                        peak = peaks.get("bf16")
                        text = f"  {dtype_name:4s} {layout:13s} {mode:10s}: {per_second:10.0f} slices/s"
                        if achieved is not None:
                            text += f", {achieved:7.2f} TFLOP/s" + (f" ({100 * achieved / peak:.1f} % of the bf16 "
                                                                    "matmul peak)" if peak else "")
                        report.line(text)
                        return {"network": label, "dtype": dtype_name, "layout": layout, "mode": mode,
                                "batch_size": args.batch_size, "size": args.size, "slices_per_second": per_second,
                                "gflop_per_slice": flops / 1e9 if flops else None, "tflops": achieved}

                    guarded(report, "synthesis", name, run)
        if device.type != "cuda":
            skipped(report, "synthesis", f"{label} cuda-graph", "needs a CUDA device")
        model.to(memory_format=torch.contiguous_format).cpu()


def memory_section(args, device, report: Report, models) -> None:
    report.line("[memory] peak GPU memory of one synthesis call (bf16, channels_last)")
    if device.type != "cuda":
        skipped(report, "memory", "all", "GPU memory is measured on CUDA only")
        return
    label, base = models[0]
    model = base.to(device).to(memory_format=torch.channels_last)
    for batch in args.memory_batch_sizes:
        def run(batch=batch):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            inputs = synthesis_inputs(model, batch, args.size, device, torch.channels_last)
            synthesis_call(model, device, torch.bfloat16, inputs)()
            synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
            report.line(f"  {label} batch {batch:5d}: {peak:9.0f} MiB")
            return {"network": label, "batch_size": batch, "peak_mib": peak}

        guarded(report, "memory", f"batch {batch}", run)
    model.to(memory_format=torch.contiguous_format).cpu()
    torch.cuda.empty_cache()


def engine_models(models):
    """Networks the engine can run here: without SimpleITK, those that need the B-spline anchor cannot."""
    usable = []
    for label, model in models:
        if SIMPLEITK_MISSING and getattr(model, "needs_anchor", False):
            continue
        usable.append((label, model))
    return usable


def engine_section(args, device, report: Report, models) -> None:
    from SemanticInterpolationLib.engine.synthesis import ASIEngine

    report.line(f"[engine] cine series: {args.frames} frames x {args.slices} slices of {args.size}x{args.size}, "
                f"K = {args.factor}")
    if SIMPLEITK_MISSING:
        for label, model in models:
            if getattr(model, "needs_anchor", False):
                skipped(report, "engine", label, "its B-spline anchor input needs SimpleITK, which is not installed here")
    rng = np.random.default_rng(0)
    series = [(rng.random((args.slices, args.size, args.size)) * 1000).astype(np.int16) for _ in range(args.frames)]
    for label, model in engine_models(models):
        if elapsed() > args.budget_s * 0.7:
            skipped(report, "engine", label, "time budget")
            continue
        for precision in args.engine_precisions:
            def run(precision=precision):
                engine = ASIEngine(model, device, precision=precision, batch_size=args.batch_size)
                engine.upsample(series[0], args.factor, axis=0)  # warm-up
                synchronize(device)
                started = time.perf_counter()
                for frame in series:
                    engine.upsample(frame, args.factor, axis=0)
                synchronize(device)
                seconds = time.perf_counter() - started
                synthesized = args.frames * (args.slices - 1) * (args.factor - 1)
                report.line(f"  {label} {precision}: {seconds:.3f} s for the series, "
                            f"{synthesized / seconds:.0f} synthesized slices/s")
                return {"network": label, "precision": precision, "seconds": seconds,
                        "synthesized_per_second": synthesized / seconds}

            guarded(report, "engine", f"{label} {precision}", run)


def training_section(args, device, report: Report) -> None:
    import bench_training

    report.line(f"[training] patch {args.train_patch}, batch {args.train_batch}, {args.train_steps} timed steps")
    for name in args.train_model_types:
        if elapsed() > args.budget_s * 0.8:
            skipped(report, "training", name, "time budget")
            continue
        namespace = argparse.Namespace(device=str(device), precision="auto", batch_size=args.train_batch,
                                       steps=args.train_steps, warmup=2, synthesis_loss="mse", lam=0.05, bare=True)

        model_class = get_model_type(name).model_class
        if getattr(model_class, "is_volume_model", False):
            skipped(report, "training", name, "a 3-D generator trained by train-sr, not by the Trainer")
            continue
        if getattr(model_class, "training_procedure", None) or getattr(model_class, "training_hook", None):
            skipped(report, "training", name, "its own training procedure (critics); the bare-loop comparison "
                    "covers the Trainer's own step")
            continue
        if SIMPLEITK_MISSING and getattr(get_model_type(name).config_class(), "anchor_input", False):
            skipped(report, "training", name, "its B-spline anchor input (training samples) needs SimpleITK, which "
                    "is not installed here")
            continue
        patch = args.train_patch

        def run(name=name, patch=patch):
            with tempfile.TemporaryDirectory() as folder:
                row = bench_training.measure(patch, namespace, Path(folder), name)
            report.line(f"  {name}: {row['triplets_per_second']:.1f} samples/s (bare loop "
                        f"{row['bare_triplets_per_second']:.1f}/s, trainer/bare {row['trainer_over_bare']:.2f}), "
                        f"precision {row['precision']}")
            return row

        guarded(report, "training", name, run)


def batch_section(args, device, report: Report, models) -> None:
    from SemanticInterpolationLib.cohort.backends import NumpyBackend
    from SemanticInterpolationLib.cohort.discovery import discover_inputs
    from SemanticInterpolationLib.cohort.naming import plan_tasks
    from SemanticInterpolationLib.cohort.runner import run_cohort
    from SemanticInterpolationLib.engine.synthesis import ASIEngine

    report.line(f"[batch] cohort of {args.cohort} .npy volumes ({args.slices} x {args.size} x {args.size}, int16), "
                f"K = {args.factor}, through the upsample-batch runner (file I/O: .npy; image files need SimpleITK)")
    usable = engine_models(models)
    if not usable:
        skipped(report, "batch", "all", "no network usable without SimpleITK")
        return
    label, model = usable[0]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "cohort"
        root.mkdir()
        rng = np.random.default_rng(1)
        for n in range(args.cohort):
            np.save(root / f"scan{n:03d}.npy", (rng.random((args.slices, args.size, args.size)) * 1000).astype(np.int16))
        items, _ = discover_inputs([root], extensions=(".npy",), dicom=False, lists=False)
        engine = ASIEngine(model, device, batch_size=args.batch_size)

        class OneThread(NumpyBackend):
            concurrent_io = False

        for threaded in (True, False):
            kind = "background reading/writing" if threaded else "one thread"

            def run(threaded=threaded, kind=kind):
                out = Path(folder) / ("threaded" if threaded else "sequential")
                tasks = plan_tasks(items, out, "_x", extensions=(".npy",))
                backend = (NumpyBackend if threaded else OneThread)(engine, args.factor)
                started = time.perf_counter()
                rows = run_cohort(tasks, backend, queue_depth=2, log=lambda message: None)
                seconds = time.perf_counter() - started
                done = sum(r.status == "done" for r in rows)
                synthesized = done * (args.slices - 1) * (args.factor - 1)
                report.line(f"  {label}, {kind}: {done}/{len(rows)} done in {seconds:.2f} s, "
                            f"{done / seconds:.1f} volumes/s, {synthesized / seconds:.0f} synthesized slices/s")
                return {"network": label, "threaded": threaded, "volumes": len(rows), "done": done,
                        "seconds": seconds, "synthesized_per_second": synthesized / seconds}

            guarded(report, "batch", f"{label} {kind}", run)


def compile_section(args, device, report: Report, peaks, models) -> None:
    report.line("[compile] torch.compile of the synthesis (bf16, channels_last)")
    if not args.compile:
        skipped(report, "compile", "all", "not asked for (--compile; the CPU smoke run leaves it out)")
        return
    if not hasattr(torch, "compile"):
        skipped(report, "compile", "all", "this torch has no torch.compile")
        return
    label, base = models[0]
    remaining = args.budget_s - elapsed()
    if remaining < args.compile_reserve_s:
        skipped(report, "compile", label, f"time budget ({remaining:.0f} s left, compiling needs about "
                                          f"{args.compile_reserve_s:.0f} s)")
        return
    model = base.to(device).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    flops = flops_per_slice(model, device, args.size)

    def run():
        inputs = synthesis_inputs(model, args.batch_size, args.size, device, torch.channels_last)
        compiled = torch.compile(model.synthesize, dynamic=False)
        first, second, alpha, extra = inputs

        def call():
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return compiled(first, second, alpha, *extra)

        started = time.perf_counter()
        call()
        synchronize(device)
        compile_seconds = time.perf_counter() - started
        seconds = time_call(call, device, 2, args.min_seconds, 500)
        per_second = args.batch_size / seconds
        achieved = flops * per_second / 1e12 if flops else None
        peak = peaks.get("bf16")
        report.line(f"  {label}: {per_second:10.0f} slices/s" + (f", {achieved:.2f} TFLOP/s" if achieved else "")
                    + (f" ({100 * achieved / peak:.1f} % of the bf16 matmul peak)" if achieved and peak else "")
                    + f"; compiling took {compile_seconds:.0f} s")
        return {"network": label, "slices_per_second": per_second, "tflops": achieved,
                "compile_seconds": compile_seconds}

    guarded(report, "compile", label, run)


# ------------------------------------------------------------------------------------------------ main
def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if there), cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU check of the script (seconds)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "device-check"),
                        help="folder for device-check.json (default $OUT, else ./device-check)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="whole-run time budget in seconds (default 270)")
    parser.add_argument("--networks", nargs="+", default=["default", "all"],
                        help="default (the bundled model's network), model type names, or all (default: default all)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time torch.compile (default: on CUDA only)")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    """Sizes for a real GPU run, or tiny ones for ``--smoke``."""
    smoke = args.smoke
    values = dict(size=32 if smoke else 256, batch_size=2 if smoke else 256, matmul_size=128 if smoke else 8192,
                  min_seconds=0.0 if smoke else 0.5, dtypes=["fp32", "bf16"] if smoke else ["fp32", "fp16", "bf16"],
                  memory_batch_sizes=[1, 2] if smoke else [32, 128, 512, 1024, 2048],
                  frames=2 if smoke else 30, slices=3 if smoke else 10, factor=3 if smoke else 10,
                  engine_precisions=["float32"] if smoke else ["float16", "bfloat16"],
                  train_patch=16 if smoke else 128, train_batch=2 if smoke else 64, train_steps=2 if smoke else 6,
                  train_model_types=model_type_names(), cohort=3 if smoke else 32, compile_reserve_s=60.0)
    if args.compile is None:
        args.compile = device.type == "cuda" and not smoke
    for key, value in values.items():
        setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    args = settings(args, device)
    report = Report()
    report.line(f"device check: {describe_device(device)}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"Python {platform.python_version()}; SimpleITK {'missing (stand-in)' if SIMPLEITK_MISSING else 'found'}"
                f"{'; SMOKE sizes' if args.smoke else ''}; budget {args.budget_s:.0f} s")
    models = networks(args)
    peaks = guarded_section(report, "matmul", lambda: matmul_peak(args, device, report)) or {}
    guarded_section(report, "synthesis", lambda: synthesis_section(args, device, report, peaks, models))
    guarded_section(report, "memory", lambda: memory_section(args, device, report, models))
    guarded_section(report, "engine", lambda: engine_section(args, device, report, models))
    guarded_section(report, "training", lambda: training_section(args, device, report))
    guarded_section(report, "batch", lambda: batch_section(args, device, report, models))
    guarded_section(report, "compile", lambda: compile_section(args, device, report, peaks, models))
    result = {"device": describe_device(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "smoke": args.smoke, "simpleitk": not SIMPLEITK_MISSING, "seconds": elapsed(),
              "peaks_tflops": peaks, "sections": report.sections}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device-check.json").write_text(json.dumps(result, indent=1))
    failures = sum(1 for records in report.sections.values() for r in records if "error" in r)
    report.line(f"device check finished in {elapsed():.0f} s, {failures} measurement(s) failed; "
                f"{args.out / 'device-check.json'}")
    return 0


def guarded_section(report: Report, name: str, fn: Callable[[], Any]) -> Any:
    """A whole section; an error outside its guarded measurements is recorded and the next section runs."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001
        report.line(f"[{name}] FAILED: {type(error).__name__}: {' '.join(str(error).split())[:300]}")
        report.add(name, {"label": "section", "error": f"{type(error).__name__}: {error}"})
        return None


if __name__ == "__main__":
    sys.exit(main())
