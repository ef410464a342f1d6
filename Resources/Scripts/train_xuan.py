#!/usr/bin/env python
"""Recipe for Xuan et al.'s two-stage method on the fixed split of train_default_model.py (resumable).

Stage I, the slice VAE (model type xuan-vae), on the training views (MNI152 and pydeface mean along
all axes at strides 1-3, the anisotropic clinical stacks); ROBEX for model selection only:

    T=~/.cache/semantic-interpolation/train
    python Resources/Scripts/train_xuan.py stage1 --run $T/xuan-vae.pt --epochs 12 --patch-size 48 \
        --phase-ends 0.25,0.6 --normalization none --minutes 25
    (run the same line again to continue; the loss schedule is scaled to epochs x steps per epoch)

Stage II, the 3-D SR generator (model type sr-generator) for one factor K, trained on volumes V(Y)
that a stage-I model synthesises from the training split's anisotropic stacks (T keeps every K-th
slice of V(Y)); --real trains the same generator on real fine-slice pairs of the training volumes
(MNI152, pydeface mean), the paper's "real HR supervision" reference:

    python Resources/Scripts/train_xuan.py stage2 --stage1 $T/xuan-vae.best.pt --factor 4 --run $T/xuan-sr-k4.pt
    python Resources/Scripts/train_xuan.py stage2 --stage1 Resources/Models/default-model.pt --factor 4 \
        --run $T/xuan-sr-k4-pairunet.pt
    python Resources/Scripts/train_xuan.py stage2 --real --factor 4 --run $T/xuan-sr-k4-real.pt

The runs in Docs/Experiments.md used --patch-size 32 --steps 1000 and --minutes 15 (from the VAE), 16 then 22
(from the default model: stopped at 238 steps, resumed to 964) and 18 (real pairs, 376 steps); the training
pairs are kept next to the run (RUN.pairs.npz) so that a resumed run does not synthesise V(Y) again.

Held out (never trained on or selected on): Colin27 and its Rician-noise copy; score with
``semantic-interpolation evaluate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default_model import (ANISOTROPIC_TRAINING, CACHE, HELD_OUT, ISOTROPIC_TRAINING,  # noqa: E402
                                 VALIDATION, build_training_set)

from SemanticInterpolationLib.training import TrainingConfig, train  # noqa: E402

HELD_OUT_NOISY = ["colin27-noisy/ch2-rician3.nii.gz"]


def _deadline(minutes: float | None):
    if not minutes:
        return None
    end = time.monotonic() + 60.0 * minutes
    return lambda: time.monotonic() > end


def stage1(args: argparse.Namespace) -> int:
    run = Path(args.run).expanduser()
    options = {}
    if args.critic_learning_rate:
        options["critic_learning_rate"] = args.critic_learning_rate
    if args.phase_ends:
        options["phase_ends"] = args.phase_ends
    if args.normalization:
        options["normalization"] = args.normalization
    config = TrainingConfig(
        training_volumes=build_training_set(model_type="asi"), output=run,
        validation_volumes=[str(CACHE / v) for v in VALIDATION], model_type="xuan-vae",
        resume=run.is_file(), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, patch_size=args.patch_size, learning_rate=args.learning_rate,
        validation_triplets=24, best_metric="val_syn_psnr", seed=0, model_options=options)
    started = time.monotonic()

    def progress(info) -> None:
        if info.phase == "epoch":
            r = info.record
            print(f"epoch {r['epoch']}/{r['epochs']} step {r['global_step']} loss {r['train_loss']:.4f} "
                  f"center {r.get('train_center', 0):.4f} prior {r.get('train_prior', 0):.3f} "
                  f"comp {r.get('train_comp', 0):.4f} adv {r.get('train_adv', 0):.3f} | val syn "
                  f"{r.get('val_syn_psnr', 0):.2f} dB (linear {r.get('val_linear_psnr', 0):.2f}) rec "
                  f"{r.get('val_rec_psnr', 0):.2f} dB | {time.monotonic() - started:.0f} s"
                  + (" [best]" if r.get("best") else ""), flush=True)

    result = train(config, progress=progress, should_cancel=_deadline(args.minutes))
    print(f"{result.status}: {result.epochs_done} epochs, {result.global_step} steps; best {result.best_output}")
    return 0


def stage2(args: argparse.Namespace) -> int:
    from SemanticInterpolationLib.training.sr_pairs import SRTrainingConfig, train_sr

    anisotropic = [str(CACHE / v) for v in ANISOTROPIC_TRAINING]
    fine = [str(CACHE / v) for v in ISOTROPIC_TRAINING]
    config = SRTrainingConfig(
        scans=fine if args.real else anisotropic, output=Path(args.run).expanduser(),
        stage1=None if args.real else args.stage1, factor=args.factor, real_pairs=bool(args.real),
        steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size, learning_rate=args.learning_rate,
        features=args.features, layers=args.layers, resume=Path(args.run).expanduser().is_file(),
        validation_volumes=[str(CACHE / v) for v in VALIDATION], validate_every=args.validate_every,
        pairs_cache=Path(args.run).expanduser().with_suffix(".pairs.npz"))
    result = train_sr(config, progress=lambda text: print(text, flush=True),
                      should_cancel=_deadline(args.minutes))
    print(result)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    one = sub.add_parser("stage1", help="train the slice VAE (xuan-vae)")
    one.add_argument("--run", required=True)
    one.add_argument("--epochs", type=int, default=24)
    one.add_argument("--steps-per-epoch", type=int, default=100)
    one.add_argument("--batch-size", type=int, default=8)
    one.add_argument("--patch-size", type=int, default=64)
    one.add_argument("--learning-rate", type=float, default=5e-4)
    one.add_argument("--critic-learning-rate", type=float, default=None)
    one.add_argument("--normalization", choices=("instance", "none"), default=None,
                     help="normalisation layers of a new network (default: the paper's instance norm)")
    one.add_argument("--phase-ends", default=None,
                     help="step fractions where phases 1 and 2 end (default: the paper's 1/21, 9/21)")
    one.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this long")
    one.set_defaults(handler=stage1)
    two = sub.add_parser("stage2", help="train the 3-D SR generator (sr-generator) for one factor")
    two.add_argument("--run", required=True)
    two.add_argument("--stage1", help="stage-I checkpoint that synthesises V(Y) (any slice model type)")
    two.add_argument("--real", action="store_true", help="real fine-slice pairs instead (the reference)")
    two.add_argument("--factor", type=int, default=4)
    two.add_argument("--steps", type=int, default=1500)
    two.add_argument("--batch-size", type=int, default=4)
    two.add_argument("--patch-size", type=int, default=24)
    two.add_argument("--learning-rate", type=float, default=1e-3)
    two.add_argument("--features", type=int, default=16)
    two.add_argument("--layers", type=int, default=6)
    two.add_argument("--minutes", type=float, default=None)
    two.add_argument("--validate-every", type=int, default=100)
    two.set_defaults(handler=stage2)
    args = parser.parse_args()
    if args.stage == "stage2" and not args.real and not args.stage1:
        parser.error("stage2 needs --stage1 CKPT or --real")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
