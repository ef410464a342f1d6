#!/usr/bin/env python
"""Train the default model's network on one GPU within a time budget (run through ``bench/gpu_train_default.sh``).

    bash bench/gpu_train_default.sh                   # 9 minutes on cuda, bf16, batch 256, patch 96, from scratch
    bash bench/gpu_train_default.sh --init Resources/Models/pair-unet-anchor-v1.pt   # warm start, as stage 4
    bash bench/gpu_train_default.sh --minutes 5 --batch-size 128

What it trains: the shipped default's networks (``Resources/Models/default-model.pt``, see
``Resources/Models/MODEL_CARD.md``): model type profile-routed, two pair U-Nets with the B-spline anchor
input (``anchor_input``) and the slice-profile input (``thickness_input``), pair-unet-24-48-96 for thin slices
and an unknown profile and pair-unet-32-64-128 for slices told thickness / gap >= 0.75, named as the
default's, trained together (each sample updates the network its told profile routes it to); with the
settings of ``Resources/Scripts/train_default_model.py`` stage 4 (its docstring): synthesis loss L1, noise
std up to 0.06 (put on the fine slices before the blur in thick-slice samples), thick-slice probability 0.5
(per sample FWHM = ratio x gap, ratio 1 on half and uniform in [0.3, 1] on the rest), thickness ratio
withheld on 30 % of the samples, gaps 2..6 with random middles on fine volumes and neighbours on
anisotropic stacks; validation as the CPU trainer does it (the recipe's validation volume, 24 triplets,
the anchor given; thin slices told, and a thick-slice copy told thick; best epoch by the mean of the
thin and thick synthesis PSNR, ``val_thin_thick_psnr``, so that both networks count). ``--single-network``
trains the thin-slice network alone (model type pair-unet, the default before session 7);
``--no-anchor-input`` / ``--no-thickness-input`` train the narrower single networks instead (the
earlier candidates).

Start: from scratch (random weights drawn as the trainer draws them, seeded by ``--seed``, the thick network
by ``--seed`` + 1; written as ``pair-unet-gpu.scratch-init.pt`` so that the trainer builds these networks),
or ``--init CHECKPOINT`` (``default`` = the bundled default): a profile-routed checkpoint as it is, a pair-unet
checkpoint widened with the inputs it lacks, new weights at zero (an exact warm start,
``train_default_model.widen_init``, as the CPU recipe's stages 2 and 4 did), which then trains that single
network.

Needs only torch and numpy: the data come from the packed file of
``Resources/Scripts/pack_training_data.py`` (default ``shared/gpu-training-data.npz``): the recipe's
training views and validation volume, normalised, float16, with their spacings (which decide the fine
volumes, hence gaps, thick-slice samples and ratios) and the B-spline weights (anchors and validation).
GPU scaling: bf16 autocast, batch 256, patch 96, learning rate (Adam) 3e-4 from scratch or 1e-4 with
``--init`` (the CPU recipe's, at batch 16) x sqrt(batch / 16), at most 1e-3; slices held on the GPU and
whole batches drawn there (``--data-on-device``: :class:`DeviceGapSampler`, the anchor and slice profile
included), cuDNN autotuning.

Volumes whose slices are smaller than the patch are left out and named (at patch 96: breast1,
120x45; ITK T1, 128x128, stays). The time budget counts from the start of this script (reading
and preparing included); training stops at an epoch boundary when the next epoch would not fit
(the files of the last completed epoch are kept), and at the budget at the latest.

Writes into ``--out`` (the shell wrapper gives ``$OUT``): ``pair-unet-gpu.pt`` (latest epoch,
resumable with ``--resume``), ``pair-unet-gpu.best.pt`` (best on validation), ``default-candidate.pt``
(the best epoch without the optimiser state, inference mode plain with test-time augmentation pair-flip, as
the bundled default: a default-type model the engine and
``--checkpoint`` load as they load ``default-model.pt``, the slice profile told when known),
``pair-unet-gpu.log.jsonl`` (the trainer's log), ``summary.json`` (settings, network, start, steps/s,
samples/s, peak GPU memory, last metrics); the wrapper adds ``train.log`` (this output). Prints steps/s
and samples/s (training alone, and with validation and checkpoints) after every epoch.
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

from SemanticInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from SemanticInterpolationLib.models.normalization import IntensityNormalization  # noqa: E402
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig  # noqa: E402
from SemanticInterpolationLib.models.profile_routed import ProfileRoutedConfig, ProfileRoutedPairUNet  # noqa: E402
from SemanticInterpolationLib.training import TrainingConfig, train  # noqa: E402
from SemanticInterpolationLib.training.device_sampler import (install_bspline_weight_tables,  # noqa: E402
                                                               load_packed_volumes)

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPOSITORY / "shared" / "gpu-training-data.npz"
#: the CPU recipe's Adam learning rates at batch 16: from scratch (stage 1) and warm starts (stage 4)
BASE_BATCH, SCRATCH_LR, WARM_START_LR, MAX_LR = 16, 3e-4, 1e-4, 1e-3
#: train_default_model.py stage 4, the shipped default's settings
DEFAULT_RECIPE = dict(synthesis_loss="l1", noise_std=0.06, thick_slice_probability=0.5)
CHECKPOINT = "pair-unet-gpu.pt"
CANDIDATE = "default-candidate.pt"
SCRATCH_INIT = "pair-unet-gpu.scratch-init.pt"


def scaled_learning_rate(batch_size: int, warm_start: bool = False) -> float:
    """The CPU recipe's rate at batch 16 (3e-4 from scratch, 1e-4 for a warm start), times sqrt(batch / 16),
    at most 1e-3 (Adam)."""
    base = WARM_START_LR if warm_start else SCRATCH_LR
    return min(MAX_LR, base * math.sqrt(batch_size / BASE_BATCH))


def default_network(anchor_input: bool = True, thickness_input: bool = True,
                    routed: bool = True) -> "PairUNetConfig | ProfileRoutedConfig":
    """The shipped default's networks (profile-routed: pair-unet-24-48-96 and pair-unet-32-64-128, both with the
    anchor and slice-profile inputs), named as the default's; ``routed=False``: its thin-slice network alone
    (pair-unet-24-48-96-anchor-profile); without an input, the narrower single network."""
    name = PairUNetConfig().name + ("-anchor" if anchor_input else "") + ("-profile" if thickness_input else "")
    single = PairUNetConfig(anchor_input=anchor_input, thickness_input=thickness_input, name=name)
    return ProfileRoutedConfig() if routed and anchor_input and thickness_input else single


def scratch_init(path: Path, config: "PairUNetConfig | ProfileRoutedConfig", seed: int) -> Path:
    """A checkpoint of ``config`` with the random weights the trainer draws from scratch (``reset_parameters``
    with a generator seeded by ``seed``; a routed model's thick network by ``seed + 1``), so that the trainer
    builds this network; returns ``path``."""
    if isinstance(config, ProfileRoutedConfig):
        model = ProfileRoutedPairUNet(config)
        model.main.reset_parameters(generator=torch.Generator().manual_seed(seed))
        model.thick.reset_parameters(generator=torch.Generator().manual_seed(seed + 1))
    else:
        model = PairUNet(config)
        model.reset_parameters(generator=torch.Generator().manual_seed(seed))
    save_checkpoint(path, model, normalization=IntensityNormalization(clip=False),
                    training={"started_from": f"scratch (seed {seed})"}, metadata={"inference": {"synthesis": "plain"}})
    return path


def widened_init(init: str, out: Path, config: "PairUNetConfig | ProfileRoutedConfig") -> Path:
    """``init`` (a path or ``default``) widened with the inputs of ``config`` it lacks, with the recipe's
    ``widen_init`` (new weights at zero: it computes what ``init`` computes); a profile-routed ``init`` as it is
    (when ``config`` is routed too); returns the path to start from."""
    sys.path.insert(0, str(REPOSITORY / "Resources" / "Scripts"))
    try:
        from train_default_model import widen_init
    finally:
        sys.path.pop(0)
    from SemanticInterpolationLib.models.checkpoint import resolve_checkpoint

    start = resolve_checkpoint(None if init.lower() == "default" else init)
    path = Path(start.path)
    if start.model_type == "profile-routed":
        if not isinstance(config, ProfileRoutedConfig):
            raise SystemExit(f"--init {init}: a profile-routed checkpoint trains as one (both networks); drop "
                             "--single-network, --no-anchor-input and --no-thickness-input, or give a pair-unet init")
        return path  # the default's own type: trained as it is
    if isinstance(config, ProfileRoutedConfig):  # a single network widens to the thin-slice one and trains alone
        config = config.main
    run = out / CHECKPOINT
    path = widen_init(path, run, config.anchor_input, "anchor_input", "with_anchor_input", ".init.pt",
                      "a B-spline anchor input")
    path = widen_init(path, run, config.thickness_input, "thickness_input", "with_thickness_input",
                      ".profile-init.pt", "a slice-profile input")
    start = load_checkpoint(path)
    inputs = (getattr(start.config, "anchor_input", None), getattr(start.config, "thickness_input", None))
    if start.model_type != "pair-unet" or inputs != (config.anchor_input, config.thickness_input):
        raise SystemExit(f"--init {init}: the {start.model_type} network {getattr(start.config, 'name', '?')} cannot "
                         f"start {config.name}: give a pair-unet checkpoint with at most its inputs")
    return path


def export_candidate(result, target: Path, meta: dict) -> Path | None:
    """The best epoch (else the last) without the optimiser state, inference mode plain, the packed data's
    validation and held-out volumes named: a model the engine loads as it loads ``default-model.pt``."""
    source = result.best_output or result.output
    if source is None:
        return None
    checkpoint = load_checkpoint(source)
    training = dict(checkpoint.training)
    training["recipe"] = "Resources/Scripts/gpu_train_default.py (bench/gpu_train_default.sh)"
    if meta.get("validation_volumes"):
        training["validation_volumes"] = meta["validation_volumes"]
    if meta.get("held_out_volumes"):
        training["held_out_evaluation_volumes"] = meta["held_out_volumes"]
    save_checkpoint(target, checkpoint.model, normalization=checkpoint.normalization,
                    in_plane_spacing_mm=checkpoint.in_plane_spacing_mm, training=training,
                    metadata={"inference": {"synthesis": "plain", "test_time_augmentation": "pair-flip"},
                              "exported_from": Path(source).name})
    load_checkpoint(target)  # read back: a broken export fails here, not in the engine
    return target


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
    parser.add_argument("--init", help="warm start from this pair-unet checkpoint ('default': the bundled default), "
                                       "widened with the inputs it lacks (default: from scratch)")
    parser.add_argument("--single-network", dest="routed", action="store_false",
                        help="train the thin-slice network alone (pair-unet, the default before session 7)")
    parser.add_argument("--no-anchor-input", dest="anchor_input", action="store_false",
                        help="a network without the B-spline anchor input (not the default's)")
    parser.add_argument("--no-thickness-input", dest="thickness_input", action="store_false",
                        help="a network without the slice-profile input (not the default's)")
    parser.add_argument("--loss", default=DEFAULT_RECIPE["synthesis_loss"], choices=("l1", "mse", "ssim"),
                        help=f"synthesis distance (default {DEFAULT_RECIPE['synthesis_loss']}, the default's)")
    parser.add_argument("--noise-std", type=float, default=DEFAULT_RECIPE["noise_std"],
                        help=f"largest noise std (default {DEFAULT_RECIPE['noise_std']:g})")
    parser.add_argument("--thick-slice-probability", type=float, default=DEFAULT_RECIPE["thick_slice_probability"],
                        help=f"share of thick-slice samples (default {DEFAULT_RECIPE['thick_slice_probability']:g})")
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
        torch.backends.cudnn.allow_tf32 = True  # convolutions; matmuls stay float32 (the sampler's noise mixing)
    args.out.mkdir(parents=True, exist_ok=True)
    output = args.out / CHECKPOINT
    resume = bool(args.resume and output.is_file())
    network = default_network(args.anchor_input, args.thickness_input, args.routed)
    previous = load_checkpoint(output) if resume else None
    if previous is not None:  # the run's own network and learning rate (unless --learning-rate is given)
        started, init, network = f"resumed from {output}", None, previous.config
    elif args.init:
        init = widened_init(args.init, args.out, network)
        network = load_checkpoint(init).config
        started = f"warm start from {args.init} ({init})"
    else:
        init = scratch_init(args.out / SCRATCH_INIT, network, args.seed)
        started = f"scratch (seed {args.seed})"
    if args.learning_rate is not None:
        lr = args.learning_rate
    elif previous is not None:
        lr = float(previous.training["settings"]["learning_rate"])
    else:
        lr = scaled_learning_rate(args.batch_size, warm_start=bool(args.init))
    config = TrainingConfig(
        training_volumes=kept, validation_volumes=validation, output=output, resume=resume, init=init,
        model_type="profile-routed" if isinstance(network, ProfileRoutedConfig) else "pair-unet", max_gap=int(settings.get("max_gap", 6)), epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, patch_size=args.patch_size,
        learning_rate=lr, synthesis_loss=args.loss, noise_std=args.noise_std,
        thick_slice_probability=args.thick_slice_probability, seed=args.seed,
        device=args.device, precision=args.precision, data_on_device=args.data_on_device, num_workers=args.workers,
        validation_triplets=int(settings.get("validation_triplets", 24)),
        # auto: a routed model's thick network is scored too (the mean of the thin and thick validation PSNR)
        best_metric="auto")
    print(f"network {network.name} ({started}); loss {args.loss}, noise std up to {args.noise_std:g}, thick-slice "
          f"probability {args.thick_slice_probability:g}; {len(kept)} training volumes, "
          f"{sum(v.n_slices for v in kept)} slices; validation {[v.name for v in validation]}; batch "
          f"{args.batch_size}, patch {args.patch_size}, lr {lr:g}, {args.precision} on {args.device}, data on device "
          f"{args.data_on_device}; budget {args.minutes:g} min", flush=True)

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
    candidate = export_candidate(result, args.out / CANDIDATE, meta)
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
        "candidate": str(candidate) if candidate else None, "started_from": started,
        "network": (load_checkpoint(candidate).config if candidate else network).to_dict(),
        "synthesis_loss": args.loss, "noise_std": args.noise_std,
        "thick_slice_probability": args.thick_slice_probability,
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
          + f"best {result.best_output}; model {candidate}; summary {args.out / 'summary.json'}", flush=True)
    if result.output is None:
        print("no epoch completed within the budget: give more --minutes or fewer --steps-per-epoch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
