"""``semantic-interpolation upsample``: one image file in, one upsampled image file out."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..engine.baselines import BASELINE_METHODS
from ..models.checkpoint import resolve_checkpoint
from ..engine.devices import DEVICE_CHOICES, PRECISION_CHOICES
from ..engine.test_time_augmentation import TTA_MODES
from ..engine.synthesis import MAX_FACTOR, SYNTHESIS_MODES, ASIEngine, validate_factor
from ..errors import InputError
from ..volumes.imageio import check_output_path, check_writable_image, read_image, write_image
from ..volumes.slice_profile import slice_thickness_option
from ..progress import TerminalProgress
from ..upsampling import METHODS, OUTPUT_TYPES, upsample_image

logger = logging.getLogger("SemanticInterpolation")


def register(subparsers: argparse._SubParsersAction) -> None:
    from .app import add_common_options

    parser = subparsers.add_parser(
        "upsample",
        help="upsample one volume through-plane",
        description="Upsample a 3-D scalar volume by an integer factor K along its slice axis: the output has "
                    "(n-1)*K+1 slices at spacing/K, with the input's origin and direction. Acquired slices are "
                    "kept bit-exactly unless --reconstruct-acquired is given.",
        epilog="Examples:\n"
               "  semantic-interpolation upsample t2_axial.nii.gz t2_x4.nii.gz --factor 4 --checkpoint model.pt\n"
               "  semantic-interpolation upsample dicom_folder/ t2_bspline.nrrd --factor 3 --method bspline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="image file SimpleITK reads (NIfTI, NRRD, MHA, ...) or a DICOM series folder")
    parser.add_argument("output", metavar="OUTPUT", help="output image file (.nii.gz, .nii, .nrrd, .mha, ...); written atomically")
    add_upsample_options(parser)
    add_common_options(parser)
    parser.set_defaults(handler=run_upsample)


def add_upsample_options(parser: argparse.ArgumentParser, single_file: bool = True) -> None:
    """The options of ``upsample`` (also those of ``upsample-batch``; ``single_file=False`` leaves out
    --save-adapted and --dicom-series, which name one file's things)."""
    parser.add_argument("--factor", "-k", type=int, required=True, metavar="K",
                        help=f"upsampling factor: K-1 new slices between each pair of acquired slices (2..{MAX_FACTOR})")
    parser.add_argument("--method", choices=METHODS, default="asi",
                        help="asi (the autoencoder; default) or a conventional baseline on the same grid: "
                             + ", ".join(BASELINE_METHODS))
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="model checkpoint of any model type (default: the bundled model, when installed)")
    parser.add_argument("--axis", default="auto", choices=("auto", "0", "1", "2"),
                        help="slice axis in ITK index order (0 = i/x, 1 = j/y, 2 = k/z); auto = largest spacing")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="slices per network call; lower it if memory runs out (default: 2 on the CPU, "
                             "128 on CUDA, 16 on MPS)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="network arithmetic (auto: float16 autocast on CUDA, float32 elsewhere)")
    parser.add_argument("--synthesis", choices=SYNTHESIS_MODES, default=None,
                        help="ASI only. plain: decode the latent mix (the paper). residual: linear mix of the two "
                             "acquired slices plus the autoencoder's correction (decoded latent mix minus the mix of "
                             "the two reconstructions), which cancels the autoencoder's own blur. residual-bspline: "
                             "the same correction added to cubic B-spline interpolation. "
                             "Default: the checkpoint's recommendation, else plain")
    parser.add_argument("--tta", choices=("auto", *TTA_MODES), default="auto",
                        help="test-time augmentation of pair-unet models: each new slice is the mean over the pair in "
                             "both orders (pair, 2x the time), also mirrored in-plane (pair-flip, 4x) or on all eight "
                             "in-plane turns and mirrors (dihedral, 16x); auto: the checkpoint's recommendation (the "
                             "bundled default: pair-flip), else none")
    acquired = parser.add_mutually_exclusive_group()
    acquired.add_argument("--keep-acquired", dest="keep_acquired", action="store_true", default=True,
                          help="copy the acquired slices unchanged into the output (default)")
    acquired.add_argument("--reconstruct-acquired", dest="keep_acquired", action="store_false",
                          help="ASI only: replace the acquired slices by the autoencoder's reconstructions")
    parser.add_argument("--output-type", choices=OUTPUT_TYPES, default="input",
                        help="pixel type of the output: the input's (rounded and clipped; default) or float32")
    parser.add_argument("--adapt", type=float, default=None, metavar="SECONDS",
                        help="first fine-tune a copy of the model on this scan's own acquired slices for at most "
                             "SECONDS (pair-unet and profile-routed models; K <= 3: above, the scan's own triplets "
                             "are wider than the gaps the model was trained on and the model is used as it is); the "
                             "adapted model is used only if it predicts held-out acquired slices better than before "
                             "(the report says so). The checkpoint file is never changed")
    parser.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                        help="with --adapt: also stop after N steps (a run that ends here is deterministic)")
    if single_file:
        parser.add_argument("--save-adapted", metavar="PATH", help="with --adapt: write the adapted model (if kept) here")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the adaptation (default 0)")
    parser.add_argument("--slice-thickness", default="auto", metavar="MM",
                        help="slice thickness of the acquisition in mm, for models with a slice-profile input "
                             "(thin slices far apart and contiguous thick slices need different synthesis); auto "
                             "(default) = the DICOM Slice Thickness when the input has it, else thin or thick "
                             "slices estimated from the scan; "
                             "'unknown' = do not tell the model")
    if single_file:
        parser.add_argument("--dicom-series", metavar="UID", help="SeriesInstanceUID to read when INPUT is a folder with several series")


def check_upsample_options(args: argparse.Namespace) -> int:
    """The checks of the options of :func:`add_upsample_options` that need no file; returns the factor."""
    factor = validate_factor(args.factor)
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.keep_acquired and args.method != "asi":
        raise InputError("--reconstruct-acquired applies to --method asi only")
    if args.synthesis is not None and args.method != "asi":
        raise InputError("--synthesis applies to --method asi only")
    if getattr(args, "tta", "auto") != "auto" and args.method != "asi":
        raise InputError("--tta applies to --method asi only")
    if args.adapt is not None and (args.method != "asi" or not args.adapt > 0):
        raise InputError("--adapt needs --method asi and a number of seconds above 0")
    if (args.adapt_steps is not None or getattr(args, "save_adapted", None)) and args.adapt is None:
        raise InputError("--adapt-steps and --save-adapted apply with --adapt SECONDS only")
    slice_thickness_option(args.slice_thickness)  # a bad value fails before any work
    return factor


def make_engine(args: argparse.Namespace, device: "str | None" = None) -> ASIEngine | None:
    """The engine of ``--method asi`` (None for the conventional methods); ``device`` overrides ``--device``."""
    if args.method != "asi":
        return None
    checkpoint = resolve_checkpoint(args.checkpoint)
    engine = ASIEngine(checkpoint, device or args.device, batch_size=args.batch_size, precision=args.precision,
                       synthesis=args.synthesis, test_time_augmentation=args.tta)
    logger.info("model: %s", checkpoint.summary())
    return engine


def run_upsample(args: argparse.Namespace) -> int:
    # every check that can fail runs before the (possibly long) computation
    factor = check_upsample_options(args)
    output = check_output_path(args.output, args.input)
    if args.save_adapted:
        from ..volumes.fileio import check_writable_destination

        if Path(args.save_adapted).expanduser().absolute() in (Path(args.input).expanduser().absolute(),
                                                                Path(args.output).expanduser().absolute()):
            raise InputError("--save-adapted must name a new checkpoint file, not the input or the output image")
        check_writable_destination(args.save_adapted)
    engine = make_engine(args)
    image = read_image(args.input, args.dicom_series)
    check_writable_image(image, output)  # the output keeps the input's direction: refuse NIfTI before the work

    bar = TerminalProgress(f"{args.method} x{factor}")
    started = time.perf_counter()
    try:
        result = upsample_image(image, factor, args.method, axis=args.axis, keep_acquired=args.keep_acquired,
                                output_type=args.output_type, engine=engine, adapt=args.adapt,
                                adapt_steps=args.adapt_steps, adapt_seed=args.seed, save_adapted=args.save_adapted,
                                slice_thickness=slice_thickness_option(args.slice_thickness), progress=bar)
    finally:
        bar.close()
    write_image(result, output)
    logger.info("wrote %s (%s, %s) in %.1f s", output, "x".join(map(str, result.GetSize())),
                result.GetPixelIDTypeAsString(), time.perf_counter() - started)
    return 0


