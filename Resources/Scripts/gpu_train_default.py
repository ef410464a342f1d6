#!/usr/bin/env python
"""Train the pair-unet default on one GPU within a time budget (run through ``bench/gpu_train_default.sh``).

    bash bench/gpu_train_default.sh                   # 9 minutes on cuda, bf16, batch 256, patch 96
    bash bench/gpu_train_default.sh --minutes 5 --batch-size 128

Needs only torch and numpy: the data come from the packed file of
``Resources/Scripts/pack_training_data.py`` (default ``shared/gpu-training-data.npz``): the recipe's
training views and validation volume, normalised, float16. Settings are the recipe's pair-unet
candidate (mse, noise std 0.06, thick-slice probability 0.5, gaps 2..6, 24 validation triplets,
best epoch by val_syn_psnr) scaled for a GPU: bf16 autocast, batch 256, patch 96, learning rate
3e-4 x sqrt(batch / 16) capped at 1e-3 (Adam; 1e-3 at batch 256), slices and their blurred copies
held on the GPU (``--data-on-device``), cuDNN autotuning.

Volumes whose slices are smaller than the patch are left out and named (at patch 96: breast1,
120x45; ITK T1, 128x128, stays). The time budget counts from the start of this script (reading
and preparing included); training stops at an epoch boundary when the next epoch would not fit
(the files of the last completed epoch are kept), and at the budget at the latest.

Writes into ``--out`` (the shell wrapper gives ``$OUT``): ``pair-unet-gpu.pt`` (latest epoch,
resumable), ``pair-unet-gpu.best.pt`` (best on validation: the candidate), ``pair-unet-gpu.log.jsonl``
(the trainer's log), ``summary.json`` (settings, steps/s, samples/s, peak GPU memory, last metrics);
the wrapper adds ``train.log`` (this output). Prints steps/s and samples/s (training alone, and with validation and checkpoints) after every epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

STARTED = time.monotonic()


def _stand_in_for_simpleitk() -> bool:
    """Without SimpleITK (the GPU machine), register a stand-in so that modules that import it at the top
    for other jobs (``engine.baselines``, whose numpy B-spline weights validation uses) still import;
    any real use raises ImportError. Returns True when the stand-in was needed."""
    try:
        import SimpleITK  # noqa: F401
        return False
    except ImportError:
        pass
    import types

    class _Missing:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, *args, **kwargs):
            raise ImportError(f"SimpleITK.{self.name} was called, but SimpleITK is not installed here")

    def attribute(name: str):  # module-level __getattr__ (PEP 562): constants resolve, calls fail
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(name)

    stand_in = types.ModuleType("SimpleITK", "stand-in: SimpleITK is not installed (this recipe needs numpy only)")
    stand_in.__getattr__ = attribute
    sys.modules["SimpleITK"] = stand_in
    return True


SIMPLEITK_STAND_IN = _stand_in_for_simpleitk()

import torch  # noqa: E402

from SemanticInterpolationLib.training import TrainingConfig, train  # noqa: E402
from SemanticInterpolationLib.training.device_sampler import (install_bspline_weight_tables,  # noqa: E402
                                                               load_packed_volumes)

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPOSITORY / "shared" / "gpu-training-data.npz"
BASE_BATCH, BASE_LR, MAX_LR = 16, 3e-4, 1e-3
CHECKPOINT = "pair-unet-gpu.pt"


def scaled_learning_rate(batch_size: int) -> float:
    """The recipe's 3e-4 at batch 16, times sqrt(batch / 16), at most 1e-3 (Adam)."""
    return min(MAX_LR, BASE_LR * math.sqrt(batch_size / BASE_BATCH))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"packed data (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoints, logs and summary")
    parser.add_argument("--minutes", type=float, default=9.0, help="whole-run budget from start (default 9)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--learning-rate", type=float, help="default: 3e-4 x sqrt(batch / 16), at most 1e-3")
    parser.add_argument("--steps-per-epoch", type=int, default=400, help="steps between validations (default 400)")
    parser.add_argument("--epochs", type=int, default=100000, help="at most this many epochs (default: the budget decides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-data-on-device", dest="data_on_device", action="store_false",
                        help="the DataLoader path instead (for comparison)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (with --no-data-on-device)")
    args = parser.parse_args(argv)
    if SIMPLEITK_STAND_IN:
        print("SimpleITK is not installed: using a stand-in (no image files are read or written here)")
    deadline = STARTED + args.minutes * 60.0

    training, validation, meta = load_packed_volumes(args.data)
    settings = dict(meta.get("settings") or {})
    if SIMPLEITK_STAND_IN:  # the B-spline weights validation needs, measured with SimpleITK when packing
        if not meta.get("bspline_weights"):
            print(f"{args.data} holds no B-spline weights and SimpleITK is missing: pack it again with "
                  "Resources/Scripts/pack_training_data.py", file=sys.stderr)
            return 1
        install_bspline_weight_tables(meta["bspline_weights"])
    kept = [v for v in training if min(v.slice_shape) >= args.patch_size]
    for v in training:
        if v not in kept:
            print(f"left out (slices {v.slice_shape[0]}x{v.slice_shape[1]} smaller than patch {args.patch_size}): {v.name}")
    if not kept:
        print(f"no training volume has slices of at least {args.patch_size}x{args.patch_size}", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    lr = args.learning_rate if args.learning_rate is not None else scaled_learning_rate(args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    output = args.out / CHECKPOINT
    config = TrainingConfig(
        training_volumes=kept, validation_volumes=validation, output=output,
        resume=bool(args.resume and output.is_file()), model_type="pair-unet",
        max_gap=int(settings.get("max_gap", 6)), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, patch_size=args.patch_size, learning_rate=lr,
        synthesis_loss=settings.get("synthesis_loss", "mse"), noise_std=float(settings.get("noise_std", 0.06)),
        thick_slice_probability=float(settings.get("thick_slice_probability", 0.5)), seed=args.seed,
        device=args.device, precision=args.precision, data_on_device=args.data_on_device, num_workers=args.workers,
        validation_triplets=int(settings.get("validation_triplets", 24)),
        best_metric=settings.get("best_metric", "val_syn_psnr"))
    print(f"{len(kept)} training volumes, {sum(v.n_slices for v in kept)} slices; validation "
          f"{[v.name for v in validation]}; batch {args.batch_size}, patch {args.patch_size}, lr {lr:g}, "
          f"{args.precision} on {args.device}, data on device {args.data_on_device}; budget {args.minutes:g} min",
          flush=True)

    state = {"first_step_at": None, "steps_at_first": 0, "steps": 0, "stop": False, "epoch_seconds": 0.0,
             "last_epoch_end": None, "record": None, "train_rates": []}

    def seconds_per_step() -> float | None:
        if state["first_step_at"] is None or state["steps"] <= state["steps_at_first"]:
            return None
        return (time.monotonic() - state["first_step_at"]) / (state["steps"] - state["steps_at_first"])

    def progress(info) -> None:
        now = time.monotonic()
        state["steps"] = info.global_step
        if info.phase == "train" and state["first_step_at"] is None:
            state["first_step_at"], state["steps_at_first"] = now, info.global_step
        if info.phase == "epoch" and info.record:
            r = info.record
            epoch_seconds = now - state["last_epoch_end"] if state["last_epoch_end"] else r.get("epoch_seconds", 0.0)
            state["last_epoch_end"], state["epoch_seconds"], state["record"] = now, epoch_seconds, r
            per_step = seconds_per_step()
            rate = 1.0 / per_step if per_step else float("nan")  # everything included
            train_rate = (r.get("triplets_per_second") or float("nan")) / args.batch_size  # steps only
            state["train_rates"].append(train_rate)

            def fmt(key: str) -> str:
                value = r.get(key)
                return "-" if value is None else f"{value:.3f}"

            print(f"epoch {r['epoch']}: step {info.global_step}, loss {r.get('train_loss') or float('nan'):.6f}, "
                  f"val syn PSNR {fmt('val_syn_psnr')} dB (linear {fmt('val_linear_psnr')}, B-spline "
                  f"{fmt('val_bspline_psnr')}), SSIM {fmt('val_syn_ssim')}; training {train_rate:.2f} steps/s "
                  f"({train_rate * args.batch_size:.0f} samples/s), with validation and checkpoints {rate:.2f} "
                  f"steps/s ({rate * args.batch_size:.0f} samples/s), {now - STARTED:.0f} s elapsed"
                  + (" [best]" if r.get("best") else ""), flush=True)
            if now + 1.05 * epoch_seconds > deadline:  # the next epoch would not end in time
                state["stop"] = True

    def should_cancel() -> bool:
        return state["stop"] or time.monotonic() > deadline

    result = train(config, progress=progress, should_cancel=should_cancel)
    ended = time.monotonic()
    per_step = seconds_per_step()
    rate = 1.0 / per_step if per_step else None
    summary = {
        "status": result.status, "epochs_done": result.epochs_done, "global_step": result.global_step,
        "checkpoint": str(result.output) if result.output else None,
        "best_checkpoint": str(result.best_output) if result.best_output else None,
        "wall_seconds": ended - STARTED, "steps_per_second": rate,
        "samples_per_second": rate * args.batch_size if rate else None,
        "training_steps_per_second_last_epoch": state["train_rates"][-1] if state["train_rates"] else None,
        "batch_size": args.batch_size, "patch_size": args.patch_size, "learning_rate": lr,
        "precision": args.precision, "device": args.device, "data_on_device": args.data_on_device,
        "left_out": [v.name for v in training if v not in kept], "last_epoch": state["record"],
        "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None),
        "data": str(args.data), "packed_metadata": meta,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"{result.status}: {result.epochs_done} epochs, {result.global_step} steps in {ended - STARTED:.0f} s; "
          + (f"{rate:.2f} steps/s, {rate * args.batch_size:.0f} samples/s with validation and checkpoints; "
             if rate else "")
          + (f"training alone {state['train_rates'][-1]:.2f} steps/s "
             f"({state['train_rates'][-1] * args.batch_size:.0f} samples/s); " if state["train_rates"] else "")
          + f"best {result.best_output}; summary {args.out / 'summary.json'}", flush=True)
    if result.output is None:
        print("no epoch completed within the budget: give more --minutes or fewer --steps-per-epoch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
