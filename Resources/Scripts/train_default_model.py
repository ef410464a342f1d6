#!/usr/bin/env python
"""Recipe that trains the bundled default model (one command per stage, resumable).

The shipped default, Resources/Models/default-model.pt (model type profile-routed: two pair U-Nets with the
B-spline anchor and slice-profile inputs, chosen by the told profile; see Resources/Models/MODEL_CARD.md): its
thin-slice network in stages 1-4, its thick-slice network in stage 5, joined in stage 6; each run on one CPU
thread:

    python Resources/Scripts/fetch_data.py                       # once: registry volumes into the cache
    T=~/.cache/semantic-interpolation/train
    # 1. from scratch, 7,800 steps (its best epoch, 26, was the init of stage 2)
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-l1.pt --loss l1 \
        --patch-size 44 --batch-size 16 --noise-std 0.06 --thick-slice-probability 0.5 --minutes 75
    # 2. widened with the B-spline anchor input (exact warm start), 1,500 steps
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-l1-anchor.pt \
        --init STAGE1.best.pt --anchor-input --loss l1 --learning-rate 2e-4 --patch-size 44 --batch-size 16 \
        --noise-std 0.06 --thick-slice-probability 0.5 --minutes 55      # stopped after 8 epochs
    # 3. noise before the through-plane blur in thick-slice samples (the code since then), 15,600 steps
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-anchor-noisythick.pt \
        --init STAGE2.best.pt --anchor-input --loss l1 --learning-rate 2e-4 --patch-size 44 --batch-size 16 \
        --noise-std 0.06 --thick-slice-probability 0.5 --minutes 45     # run again to continue
    python Resources/Scripts/train_default_model.py --run $T/pair-anchor-noisythick.pt \
        --export Resources/Models/pair-unet-anchor-v1.pt --synthesis plain   # best epoch (52): the v1 default
    # 4. widened with the slice-profile input (exact warm start), 900 steps (best epoch 3 on validation)
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-profile.pt \
        --init Resources/Models/pair-unet-anchor-v1.pt --thickness-input --loss l1 --learning-rate 1e-4 \
        --patch-size 44 --batch-size 16 --noise-std 0.06 --thick-slice-probability 0.5 --minutes 100
    python Resources/Scripts/train_default_model.py --run $T/pair-profile.pt \
        --export Resources/Models/pair-unet-profile-v2.pt --synthesis plain --tta pair-flip   # the 2nd default
    # 5. the thick-slice network: 32/64/128 with the anchor input from scratch (an untrained
    #    PairUNet(PairUNetConfig(widths=(32, 64, 128), anchor_input=True)) saved as WIDE.init.pt), 7,500 steps,
    #    then widened with the slice-profile input, 7,500 more steps (best epoch 25 of 27),
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-wide-anchor.pt \
        --init WIDE.init.pt --loss l1 --learning-rate 3e-4 --patch-size 44 --batch-size 16 --noise-std 0.06 \
        --thick-slice-probability 0.5 --minutes 120
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/pair-wide-profile.pt \
        --init $T/pair-wide-anchor.best.pt --thickness-input --loss l1 --learning-rate 2e-4 --patch-size 44 \
        --batch-size 16 --noise-std 0.06 --thick-slice-probability 0.5 --minutes 120
    #    then on thick samples only, 4,500 steps (best epoch 10 by the thick-slice validation score)
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run $T/wide-thick.pt \
        --init $T/pair-wide-profile.best.pt --thickness-input --loss l1 --learning-rate 1e-4 --patch-size 44 \
        --batch-size 16 --noise-std 0.06 --thick-slice-probability 1 --best-metric val_thick_syn_psnr --minutes 16
    # 6. join: stage 4 for thin slices and an unknown profile, stage 5 from thickness / gap 0.75
    python Resources/Scripts/route_profile_networks.py Resources/Models/default-model.pt \
        Resources/Models/pair-unet-profile-v2.pt $T/wide-thick.best.pt --tta pair-flip

The previous default, the journal ASI autoencoder (Resources/Models/asi-journal.pt), was made with:
    python Resources/Scripts/train_default_model.py --minutes 70  # trains; run again to continue
    python Resources/Scripts/train_default_model.py --run stage2.pt --init ~/.cache/semantic-interpolation/train/asi-default-run.pt \
        --synthesis-target residual --learning-rate 1e-4 --minutes 25           # second stage
    python Resources/Scripts/train_default_model.py --run stage2.pt --export Resources/Models/asi-journal.pt \
        --synthesis residual-bspline

ASI experiments after that release (see Docs/Experiments.md; not shipped):
    python Resources/Scripts/train_default_model.py --run stage3.pt --init stage2.best.pt \
        --synthesis-target residual-bspline --learning-rate 1e-4 --minutes 55
    python Resources/Scripts/train_default_model.py --run stage4.pt --init stage3.best.pt \
        --synthesis-target residual-bspline --learning-rate 1e-4 --noise-std 0.05 --minutes 40
    python Resources/Scripts/train_default_model.py --run stage5.pt --init stage2.best.pt \
        --synthesis-target residual-bspline --learning-rate 1e-4 --thick-slice-probability 0.5 --minutes 30

Pair U-Net (model type pair-unet; gaps 2..6 with random middles, noise and thick-slice augmentation):
    python Resources/Scripts/train_default_model.py --model-type pair-unet --run pair-mse.pt --loss mse \
        --patch-size 48 --batch-size 16 --noise-std 0.06 --thick-slice-probability 0.5 --minutes 60
  It trains on the same split, with the isotropic volumes' views at stride 1 only (the gap sampling
  covers larger strides) and breast1 (0.66 x 0.66 x 2.1 mm, noisy) among the anisotropic stacks.

Data split (fixed, see Resources/Models/MODEL_CARD.md):
  training   : MNI152 2009a (1 mm), pydeface mean T1 (1 mm): in-plane slices along all three axes with
               triplet strides 1, 2 and 3 (every offset), plus the real anisotropic clinical stacks
               brain1, brain2 (6.5 mm), PD brain (7 mm, DICOM) and ITK T1 (3 mm) along their slice axis;
  validation : ROBEX reference T1 (1.5 mm) -- model selection only;
  held out   : Colin27 (1 mm) -- never loaded here; the evaluation command scores the model on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SemanticInterpolationLib.models.checkpoint import inference_metadata, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.registry import model_type_names
from SemanticInterpolationLib.volumes.imageio import read_image
from SemanticInterpolationLib.training import TrainingConfig, train
from SemanticInterpolationLib.training.data import TrainingVolume

CACHE = Path(os.environ.get("SEMANTIC_INTERPOLATION_DATA", Path.home() / ".cache" / "semantic-interpolation" / "data"))
ISOTROPIC_TRAINING = ["mni152-2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                      "pydeface-mean/mean_reg2mean.nii.gz"]
ANISOTROPIC_TRAINING = ["brain1-brain2/brain1_image.nrrd", "brain1-brain2/brain2_image.nrrd", "pd-brain",
                        "itk-t1/KmeansTest_T1UCharRaw.nii.gz"]
#: added for the pair U-Net (real, noisy, anisotropic); not in the ASI runs above
PAIR_EXTRA_ANISOTROPIC = ["breast1/breast1_image.nrrd"]
VALIDATION = ["robex-ref/atlas.nii.gz"]
HELD_OUT = ["colin27/ch2.nii.gz"]
STRIDES = (1, 2, 3)

RECIPE = dict(patch_size=64, batch_size=12, learning_rate=3e-4, synthesis_loss="mse", lam=1.0,
              steps_per_epoch=300, epochs=10000, seed=0, validation_triplets=24, best_metric="auto")


def isotropic_views(path: Path, thick: bool = False, strides: tuple[int, ...] = STRIDES) -> list[TrainingVolume]:
    """In-plane slices along each of the three axes, at triplet strides 1..3 (all offsets).

    ``thick``: also give each view its simulated thick-slice version (the fine volume blurred along
    the axis with FWHM = twice the view's slice spacing, then thinned alike), for
    ``--thick-slice-probability``; normalised with the sharp view's intensity range.
    """
    from SemanticInterpolationLib.models.normalization import IntensityNormalization
    from SemanticInterpolationLib.training.data import blur_slices

    image = read_image(path)
    array = sitk.GetArrayFromImage(image)  # [k, j, i]
    spacing = list(image.GetSpacing())
    views = []
    for axis in (0, 1, 2):  # ITK axis
        np_axis = 2 - axis
        for stride in strides:
            blurred = None
            if thick:  # blur along np_axis: move it first, blur, move back
                blurred = np.moveaxis(blur_slices(np.moveaxis(array.astype(np.float32), np_axis, 0), 2 * stride),
                                      0, np_axis)
            for offset in range(stride):
                index = [slice(None)] * 3
                index[np_axis] = slice(offset, None, stride)
                view_spacing = list(spacing)
                view_spacing[axis] = spacing[axis] * stride
                view = TrainingVolume.from_array(array[tuple(index)], view_spacing, axis=axis,
                                                 name=f"{path.parent.name} axis{axis} stride{stride}+{offset}")
                if blurred is not None:
                    norm = IntensityNormalization()
                    unit = norm.to_unit_range(blurred[tuple(index)], norm.fit(array[tuple(index)]))
                    view.thick_slices = np.ascontiguousarray(np.moveaxis(unit, np_axis, 0), dtype=np.float32)
                views.append(view)
    return views


def build_training_set(thick: bool = False, model_type: str = "asi") -> list[TrainingVolume]:
    """The training views. ``pair-unet``: stride-1 views (the gap sampler draws larger gaps and builds its
    own thick-slice copies) and the extra anisotropic stacks, with the pair U-Net's unclipped normalisation."""
    from SemanticInterpolationLib.models.normalization import IntensityNormalization

    volumes: list[TrainingVolume] = []
    pair = model_type != "asi"
    for name in ISOTROPIC_TRAINING:
        volumes += isotropic_views(CACHE / name, thick and not pair, strides=(1,) if pair else STRIDES)
    normalization = IntensityNormalization(clip=False) if pair else None
    for name in ANISOTROPIC_TRAINING + (PAIR_EXTRA_ANISOTROPIC if pair else []):
        volumes.append(TrainingVolume.load(str(CACHE / name), normalization=normalization))
    return volumes


def widen_init(init: Path, run: Path, wanted: bool, field: str, method: str, suffix: str, what: str) -> Path:
    """``init``, or when ``wanted`` and its network lacks the input ``field``, a copy widened with it
    (``model.<method>()``, new weights at zero) saved next to ``run`` with ``suffix``; returns the path to start from."""
    if not wanted:
        return init
    start = load_checkpoint(init)
    if getattr(start.config, field, True):
        return init
    widened = run.with_name(run.stem + suffix)
    save_checkpoint(widened, getattr(start.model, method)(), normalization=start.normalization,
                    in_plane_spacing_mm=start.in_plane_spacing_mm,
                    training={"widened_from": str(init)}, metadata={"inference": {"synthesis": "plain"}})
    print(f"widened {init} with {what} -> {widened}")
    return widened


def export(run: Path, target: Path, synthesis: str, tta: str = "none") -> None:
    """Copy the best epoch of ``run`` to ``target`` without optimiser state, with the inference mode (synthesis
    and, unless none, the test-time augmentation the engine uses by default)."""
    best = run.with_name(run.stem + ".best.pt") if not str(run).endswith(".best.pt") else run
    source = best if best.is_file() else run
    checkpoint = load_checkpoint(source)
    training = dict(checkpoint.training)
    training["recipe"] = "Resources/Scripts/train_default_model.py"
    training["held_out_evaluation_volumes"] = HELD_OUT
    training["validation_volumes"] = VALIDATION
    save_checkpoint(target, checkpoint.model, normalization=checkpoint.normalization,
                    in_plane_spacing_mm=checkpoint.in_plane_spacing_mm, training=training,
                    metadata={"inference": inference_metadata(synthesis, tta), "exported_from": source.name})
    print(f"exported {source} -> {target} (synthesis {synthesis}, test-time augmentation {tta})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=CACHE.parent / "train" / "asi-default-run.pt",
                        help="training checkpoint (resumed when it exists)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop after this long (the last epoch is kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init", type=Path, help="start from this checkpoint (second stage)")
    parser.add_argument("--synthesis-target", choices=("decoded", "residual", "residual-bspline"), default="decoded",
                        help="what the synthesis loss scores (second stage: residual)")
    parser.add_argument("--learning-rate", type=float, default=RECIPE["learning_rate"])
    parser.add_argument("--noise-std", type=float, default=0.0, help="noise augmentation (stage 4: 0.05)")
    parser.add_argument("--thick-slice-probability", type=float, default=0.0,
                        help="share of the isotropic views' triplets with simulated thick outer slices")
    parser.add_argument("--model-type", choices=model_type_names(), default="asi")
    parser.add_argument("--max-gap", type=int, default=6, help="pair-unet: largest input gap in slices")
    parser.add_argument("--loss", choices=("mse", "l1", "ssim"), default=RECIPE["synthesis_loss"],
                        help="synthesis distance")
    parser.add_argument("--patch-size", type=int, default=RECIPE["patch_size"])
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--anchor-input", action="store_true",
                        help="pair-unet: the network also sees the B-spline estimate of each new slice; with --init "
                             "of a pair-unet without it, the init is widened (the new input starts at zero weights)")
    parser.add_argument("--thickness-input", action="store_true",
                        help="pair-unet: the network is also told the slice profile (thickness / gap) when known; "
                             "with --init of a pair-unet without it, the init is widened (zero weights)")
    parser.add_argument("--best-metric", default=RECIPE["best_metric"],
                        choices=("auto", "val_syn_psnr", "val_thin_thick_psnr", "val_thick_syn_psnr"),
                        help="validation score that picks the best epoch (default auto: val_thin_thick_psnr for a "
                             "profile-routed model, else val_syn_psnr; a thick-slice network: val_thick_syn_psnr)")
    parser.add_argument("--export", type=Path, help="only export the best epoch of --run to this file")
    parser.add_argument("--synthesis", choices=("plain", "residual", "residual-bspline"), default="residual",
                        help="inference mode recorded in the exported checkpoint")
    parser.add_argument("--tta", choices=("none", "pair", "pair-flip", "dihedral"), default="none",
                        help="test-time augmentation recommended in the exported checkpoint (pair-unet)")
    args = parser.parse_args()
    if args.export:
        export(args.run, args.export, args.synthesis, args.tta)
        return 0
    missing = [n for n in ISOTROPIC_TRAINING + ANISOTROPIC_TRAINING + PAIR_EXTRA_ANISOTROPIC + VALIDATION
               if not (CACHE / n).exists()]
    if missing:
        print(f"missing data in {CACHE}: {missing}; run Resources/Scripts/fetch_data.py first", file=sys.stderr)
        return 1
    args.run.parent.mkdir(parents=True, exist_ok=True)
    if args.init and not args.run.is_file():  # widen the init with the inputs it lacks (exact warm starts)
        args.init = widen_init(args.init, args.run, args.anchor_input, "anchor_input", "with_anchor_input", ".init.pt",
                               "a B-spline anchor input")
        args.init = widen_init(args.init, args.run, args.thickness_input, "thickness_input", "with_thickness_input",
                               ".profile-init.pt", "a slice-profile input")
    volumes = build_training_set(thick=args.thick_slice_probability > 0, model_type=args.model_type)
    print(f"{len(volumes)} training views, {sum(v.n_slices for v in volumes)} slices")
    deadline = time.monotonic() + args.minutes * 60
    recipe = dict(RECIPE, learning_rate=args.learning_rate, synthesis_loss=args.loss, patch_size=args.patch_size,
                  batch_size=args.batch_size, best_metric=args.best_metric)
    if args.model_type != "asi":
        recipe.update(model_type=args.model_type, max_gap=args.max_gap, lam=RECIPE["lam"])
        args.synthesis_target = "decoded"
    resume = args.run.is_file()
    config = TrainingConfig(training_volumes=volumes, validation_volumes=[str(CACHE / n) for n in VALIDATION],
                            output=args.run, resume=resume, init=None if resume else args.init, device=args.device,
                            synthesis_target=args.synthesis_target, noise_std=args.noise_std,
                            thick_slice_probability=args.thick_slice_probability, **recipe)

    def report(info) -> None:
        if info.phase == "epoch" and info.record:
            r = info.record
            print(f"epoch {r.get('epoch')}: step {info.global_step}, loss {r.get('train_loss', float('nan')):.5f}, "
                  f"val syn PSNR {r.get('val_syn_psnr', float('nan')):.2f} dB "
                  f"(linear {r.get('val_linear_psnr', float('nan')):.2f}, B-spline "
                  f"{r.get('val_bspline_psnr', float('nan')):.2f}), SSIM {r.get('val_syn_ssim', float('nan')):.4f} "
                  f"(linear {r.get('val_linear_ssim', float('nan')):.4f}, B-spline "
                  f"{r.get('val_bspline_ssim', float('nan')):.4f}), rec PSNR {r.get('val_rec_psnr') or float('nan'):.2f}, "
                  f"thick syn PSNR {r.get('val_thick_syn_psnr') or float('nan'):.2f} (B-spline "
                  f"{r.get('val_thick_bspline_psnr') or float('nan'):.2f}), "
                  f"{r.get('epoch_seconds', 0):.0f} s",
                  flush=True)

    result = train(config, progress=report, should_cancel=lambda: time.monotonic() > deadline)
    print(f"{result.status}: {result.epochs_done} epochs, {result.global_step} steps; best {result.best_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
