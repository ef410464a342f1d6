"""``semantic-interpolation evaluate``: does ASI beat conventional interpolation on these volumes?

Removes slices from fine-slice volumes, upsamples back with each method and scores the
synthesized slices against the removed real ones (see :mod:`.evaluation`).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..engine.baselines import BASELINE_METHODS
from ..models.checkpoint import find_default_checkpoint
from ..engine.devices import DEVICE_CHOICES
from ..engine.test_time_augmentation import TTA_MODES
from ..engine.synthesis import SYNTHESIS_MODES
from ..errors import InputError
from ..progress import TerminalProgress
from ..upsampling import METHODS

logger = logging.getLogger("SemanticInterpolation")
DEFAULT_OUTPUT = "evaluation"


def register(subparsers: argparse._SubParsersAction) -> None:
    from .app import add_common_options

    parser = subparsers.add_parser(
        "evaluate",
        help="score ASI and the baselines on fine-slice volumes (SSIM, PSNR, VIF, Wilcoxon test)",
        description="For each fine-slice VOLUME and factor K: keep every K-th slice along the slice axis (with "
                    "--thick-slices after a Gaussian through-plane blur whose FWHM is the simulated slice "
                    "thickness, K x spacing), upsample back by K with each method, and score only the synthesized "
                    "slices against the removed real ones: PSNR, 2-D SSIM and pixel-domain VIF per slice, on the "
                    "reference's 1st-99th percentile range scaled to [0, 1]. Writes scores.csv (per slice), "
                    "summary.csv and summary.md (mean and standard deviation per method and K, one-sided Wilcoxon "
                    "signed-rank p-values of ASI against each baseline), boxplots.png and montage_<volume>.png "
                    "into --output (existing files of those names are replaced).",
        epilog="Examples:\n"
               "  semantic-interpolation evaluate t1_1mm.nii.gz --checkpoint model.pt --thick-slices\n"
               "  semantic-interpolation evaluate a.nii.gz b.nii.gz --factors 2-4 --methods bspline,linear "
               "--output results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("volumes", metavar="VOLUME", nargs="+",
                        help="fine-slice (e.g. 1 mm isotropic) image file SimpleITK reads, or a DICOM series folder")
    parser.add_argument("--factors", "-k", default="2,3,4,5,6", metavar="LIST",
                        help="upsampling factors to simulate, e.g. 2,3,4,5,6 (default) or 2-6")
    parser.add_argument("--methods", metavar="LIST",
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all four when a model is given "
                             f"or installed, else {','.join(BASELINE_METHODS)})")
    parser.add_argument("--checkpoint", metavar="PATH", help="model checkpoint of any model type (default: the bundled model, when installed)")
    parser.add_argument("--axis", default="auto", choices=("auto", "0", "1", "2"),
                        help="slice axis in ITK index order (0 = i/x, 1 = j/y, 2 = k/z); auto = largest spacing, "
                             "ties go to k")
    parser.add_argument("--thick-slices", action="store_true",
                        help="simulate thick slices: Gaussian through-plane blur (FWHM = K x spacing) before removing "
                             "slices, as in the paper's brain experiments")
    parser.add_argument("--acquisition-noise", type=float, default=0.0, metavar="FRACTION",
                        help="add Rician noise of sigma FRACTION x the volume's 99th percentile (e.g. 0.03) to the kept "
                             "slices only, after the blur, and score against the volume's own removed slices: a "
                             "noisy acquisition simulated from a clean volume without the leak of a noisy volume "
                             "blurred into thick slices (whose thick slices carry the scored slices' noise); "
                             "default 0 (none)")
    parser.add_argument("--noise-seed", type=int, default=2026, metavar="N",
                        help="seed of --acquisition-noise (each K draws its own noise from it; default 2026)")
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"folder for the report (default: ./{DEFAULT_OUTPUT}; created when missing)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N for ASI (auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--synthesis", choices=SYNTHESIS_MODES, default=None,
                        help="ASI synthesis mode (see 'upsample --help'); default: the checkpoint's recommendation")
    parser.add_argument("--tta", choices=("auto", *TTA_MODES), default="auto",
                        help="test-time augmentation of pair-unet models: each new slice is the mean over the pair in "
                             "both orders (pair, 2x the time), also mirrored in-plane (pair-flip, 4x) or on all eight "
                             "in-plane turns and mirrors (dihedral, 16x); auto: the checkpoint's recommendation (the "
                             "bundled default: pair-flip), else none")
    parser.add_argument("--compare", nargs="+", default=[], metavar="CKPT",
                        help="more model checkpoints (any model type) scored side by side as methods "
                             "model:<file name>, e.g. the bundled ASI default beside a new model")
    parser.add_argument("--slice-profile", choices=("auto", "told", "unknown"), default="auto",
                        help="what models with a slice-profile input are told: auto (default; as for a NIfTI "
                             "file: estimated from the thinned volume), told (the simulated thickness, as a DICOM "
                             "header would say) or unknown (nothing)")
    parser.add_argument("--adapt", type=float, default=None, metavar="SECONDS",
                        help="also score the model after adapting it for at most SECONDS to each thinned volume "
                             "(method asi+adapt; adaptation sees only the thinned volume, never the removed slices)")
    parser.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                        help="with --adapt: also stop after N steps (deterministic)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="slices per network call (default: 2 on the CPU, 128 on CUDA)")
    add_common_options(parser)
    parser.set_defaults(handler=run_evaluate)


def check_output_folder(path: str | os.PathLike) -> Path:
    """Fail before any work when the report folder cannot be created or written; returns it (absolute)."""
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--output {str(folder)!r} is a file: give a folder for the report")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the report folder {str(folder)!r}: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the report into {str(folder)!r}: no write permission in {str(existing)!r}")
    return folder


def default_methods(checkpoint: str | None) -> tuple[tuple[str, ...], str | None]:
    """Methods when --methods is not given, and a note when ASI had to be left out."""
    if checkpoint or find_default_checkpoint() is not None:
        return METHODS, None
    return BASELINE_METHODS, ("ASI is not evaluated: no trained default model is installed yet and no --checkpoint "
                              "was given; the report covers the conventional baselines only")


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import EvaluationSettings, parse_factors, parse_methods, require_dependencies
    from ..volumes.imageio import read_image

    require_dependencies()
    from ..evaluation.report import model_label, summary_markdown, timing_text, write_report
    from ..evaluation.runner import run_evaluation, volume_name

    # every check that can fail runs before the (long) computation
    factors = parse_factors(args.factors)
    note = None
    if args.methods is None:
        methods, note = default_methods(args.checkpoint)
    else:
        methods = parse_methods(args.methods)
    if args.checkpoint and "asi" not in methods:
        logger.warning("--checkpoint is ignored: asi is not among the methods (%s)", ",".join(methods))
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    from ..evaluation.simulate import check_noise_fraction

    check_noise_fraction(args.acquisition_noise, "--acquisition-noise")
    output = check_output_folder(args.output)
    if args.compare:
        from ..models.checkpoint import resolve_checkpoint

        for path in args.compare:  # fail before any work
            resolve_checkpoint(path)
    volumes = {}
    for path in args.volumes:
        name = volume_name(path)
        while name in volumes:
            name += "_"
        volumes[name] = read_image(path)
    if note:
        logger.warning("%s", note)
    if args.adapt is not None and not args.adapt > 0:
        raise InputError(f"--adapt must be a number of seconds above 0, got {args.adapt:g}")
    if args.adapt is not None and "asi" not in methods:
        raise InputError("--adapt adapts the learned model: add asi to --methods")
    settings = EvaluationSettings(factors, methods, args.axis, args.thick_slices, args.checkpoint, args.device,
                                  args.batch_size, args.synthesis, adapt_seconds=args.adapt,
                                  adapt_steps=args.adapt_steps, compare=tuple(args.compare),
                                  slice_profile=args.slice_profile,
                                  test_time_augmentation=None if args.tta == "auto" else args.tta,
                                  acquisition_noise=args.acquisition_noise, noise_seed=args.noise_seed)
    bar = TerminalProgress("evaluate")
    level = logger.level
    if not args.verbose:
        logger.setLevel(max(level, logging.WARNING))  # one line per upsampling would break the progress bar
    try:
        result = run_evaluation(volumes, settings, progress=bar)
    finally:
        logger.setLevel(level)
        bar.close()
    if note:
        result.notes.insert(0, note)
    if result.model:
        logger.info("Model (%s): %s", model_label(result.model_type), result.model)
    files = write_report(result, output)
    print(summary_markdown(result), end="")
    logger.info("wrote %s", ", ".join(str(p) for p in files.values()))
    n_runs = len(result.runs)
    logger.info("evaluated %d volume(s) x %d factor(s) x %d method(s) (%d upsamplings) in %s",
                len(volumes), len(factors), len(methods), n_runs, timing_text(result))
    return 0
