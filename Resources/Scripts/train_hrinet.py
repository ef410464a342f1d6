#!/usr/bin/env python
"""Recipe that trains an HRINet model (model type hrinet) on the fixed split of the default model (resumable).

    python Resources/Scripts/fetch_data.py                  # once: registry volumes into the cache
    T=~/.cache/semantic-interpolation/train
    nohup nice -n 5 env OMP_NUM_THREADS=1 python Resources/Scripts/train_hrinet.py --run $T/hrinet-small.pt \
        --minutes 45 > $T/hrinet-small.out 2>&1 &          # run again to continue (resumes --run)

The run reported in Docs/Experiments.md (section HRINet): the command above (stopped after 7 epochs,
700 steps), then the thesis's first stage (D1 only, no PatchGAN) from its last epoch:
    python Resources/Scripts/train_hrinet.py --run $T/hrinet-small-stage1.pt --init $T/hrinet-small.pt \
        --option gan_weight=0 --minutes 16              # stopped after 9 epochs; best (validation): epoch 3

Data split (the same as Resources/Scripts/train_default_model.py, imported from there):
  training   : MNI152 2009a and pydeface mean T1 (1 mm; in-plane slices along all three axes) plus the
               real anisotropic stacks brain1, brain2, PD brain, ITK T1 and breast1;
  validation : ROBEX reference T1 (1.5 mm), model selection only (val_syn_psnr: alpha 0.5 across a
               gap of 4 slices);
  held out   : Colin27 (1 mm) and its noisy copy, never loaded here.

Training (thesis Algorithm 1, see SemanticInterpolationLib/training/hrinet.py): step I (reconstruction
MSE + 0.5 L_ac + beta L_gen on unrelated pairs) alternating with step II (7 consecutive slices, the
5 in between synthesised), learning rate 1e-4, weight decay 1e-5.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default_model import CACHE, HELD_OUT, VALIDATION, build_training_set  # noqa: E402

from SemanticInterpolationLib.training import TrainingConfig, train  # noqa: E402

RECIPE = dict(patch_size=64, batch_size=8, learning_rate=1e-4, steps_per_epoch=100, epochs=10000, seed=0,
              validation_triplets=24, best_metric="val_syn_psnr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=CACHE.parent / "train" / "hrinet-small.pt",
                        help="training checkpoint (resumed when it exists)")
    parser.add_argument("--minutes", type=float, default=45.0, help="stop after this long (the last epoch is kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init", type=Path, help="start from this HRINet checkpoint (e.g. for the perceptual loss)")
    parser.add_argument("--learning-rate", type=float, default=RECIPE["learning_rate"])
    parser.add_argument("--patch-size", type=int, default=RECIPE["patch_size"])
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--steps-per-epoch", type=int, default=RECIPE["steps_per_epoch"])
    parser.add_argument("--noise-std", type=float, default=0.0)
    parser.add_argument("--thick-slice-probability", type=float, default=0.0)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="HRINet option (training/hrinet.py HRINetOptions), e.g. mixed_levels=[1,2,3,4]")
    args = parser.parse_args()
    import json

    options = {}
    for item in args.option:
        key, _, text = item.partition("=")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    assert not set(HELD_OUT) & set(VALIDATION)
    volumes = build_training_set(model_type="hrinet")
    small = [v.name for v in volumes if min(v.slice_shape) < args.patch_size]
    if small:  # breast1 (120 x 45) is smaller than HRINet's patches (multiples of 16)
        print(f"left out (slices smaller than the {args.patch_size}-pixel patches): {small}", flush=True)
        volumes = [v for v in volumes if min(v.slice_shape) >= args.patch_size]
    print(f"{len(volumes)} training views, {sum(v.n_slices for v in volumes)} slices", flush=True)
    args.run.parent.mkdir(parents=True, exist_ok=True)
    resume = args.run.is_file()
    recipe = dict(RECIPE, learning_rate=args.learning_rate, patch_size=args.patch_size, batch_size=args.batch_size,
                  steps_per_epoch=args.steps_per_epoch)
    config = TrainingConfig(training_volumes=volumes, validation_volumes=[str(CACHE / n) for n in VALIDATION],
                            output=args.run, resume=resume, init=None if resume else args.init, device=args.device,
                            model_type="hrinet", noise_std=args.noise_std,
                            thick_slice_probability=args.thick_slice_probability, model_options=options, **recipe)
    deadline = time.monotonic() + args.minutes * 60

    def report(info) -> None:
        if info.phase == "epoch" and info.record:
            r = info.record
            extra = ", ".join(f"{k.removeprefix('train_hrinet_')} {v:.4g}" for k, v in r.items()
                              if k.startswith("train_hrinet_") and v is not None)
            print(f"epoch {r.get('epoch')}: step {info.global_step} ({extra}); val syn PSNR "
                  f"{r.get('val_syn_psnr', float('nan')):.2f} dB (linear {r.get('val_linear_psnr', float('nan')):.2f}, "
                  f"B-spline {r.get('val_bspline_psnr', float('nan')):.2f}), SSIM {r.get('val_syn_ssim', float('nan')):.4f}, "
                  f"rec PSNR {r.get('val_rec_psnr') or float('nan'):.2f} dB SSIM {r.get('val_rec_ssim') or float('nan'):.4f}, "
                  f"{r.get('epoch_seconds', 0):.0f} s{' [best]' if r.get('best') else ''}", flush=True)

    result = train(config, progress=report, should_cancel=lambda: time.monotonic() > deadline)
    print(f"{result.status}: {result.epochs_done} epochs, {result.global_step} steps; best {result.best_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
