"""``semantic-interpolation train-sr``: Xuan et al.'s stage II (a 3-D SR generator from a stage-I model's output).

See :mod:`..training.sr_pairs`. Cancel with Ctrl-C or ``--stop-file``: the run stops after the current
step and writes its state (``--resume`` continues).
"""

from __future__ import annotations

import argparse
import logging

from ..engine.devices import DEVICE_CHOICES

logger = logging.getLogger("SemanticInterpolation")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-sr`` subcommand."""
    from .app import add_common_options

    parser = subparsers.add_parser(
        "train-sr",
        help="train a fast 3-D super-resolution generator on volumes a slice model synthesises (Xuan et al.)",
        description="Stage II of Xuan et al.: upsample each low-resolution SCAN by --factor K with the stage-I "
                    "model (any slice model type, through the same engine as 'upsample'), keep every K-th slice "
                    "of the result, and train a residual 3-D CNN (model type sr-generator) with L1 to restore "
                    "the synthesised volume from the cubic B-spline of the thinned one. 'upsample --checkpoint "
                    "OUTPUT --factor K' then runs the generator (for that K only).",
        epilog="Examples:\n"
               "  semantic-interpolation train-sr scans/*.nii.gz --stage1 xuan-vae.pt --factor 4 --output sr.pt\n"
               "  semantic-interpolation train-sr fine/*.nii.gz --real-pairs --factor 4 --output sr-real.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scans", nargs="+", metavar="SCAN",
                        help="low-resolution scans (files SimpleITK reads or DICOM folders); with --real-pairs "
                             "fine-slice volumes")
    parser.add_argument("--stage1", metavar="CKPT", help="stage-I slice model checkpoint ('default' = the bundled "
                                                        "model) that synthesises V(Y)")
    parser.add_argument("--real-pairs", action="store_true",
                        help="train on real fine-slice pairs (T X, X) along all three axes instead (the paper's "
                             "'real HR supervision' reference); no --stage1")
    parser.add_argument("--factor", "-k", type=int, required=True, metavar="K", help="through-plane factor")
    parser.add_argument("--output", "-o", required=True, metavar="CKPT", help="generator checkpoint to write")
    parser.add_argument("--validation", nargs="+", default=[], metavar="VOLUME",
                        help="fine-slice volumes: thinned by K and scored (PSNR) to pick the best step "
                             "(OUTPUT with .best.pt)")
    parser.add_argument("--steps", type=int, default=1500, metavar="N", help="optimisation steps (default 1500)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="B", help="patches per step (default 4)")
    parser.add_argument("--patch-size", type=int, default=32, metavar="P", help="cubic patch edge (default 32)")
    parser.add_argument("--learning-rate", "--lr", type=float, default=1e-3, metavar="LR", help="Adam (default 1e-3)")
    parser.add_argument("--features", type=int, default=16, metavar="F", help="hidden channels (default 16)")
    parser.add_argument("--layers", type=int, default=6, metavar="L", help="3x3x3 convolutions (default 6)")
    parser.add_argument("--slice-axis", default="auto", choices=("auto", "0", "1", "2"),
                        help="slice axis of the scans in ITK order; auto = largest spacing")
    parser.add_argument("--synthesis", default=None, help="stage-I synthesis mode (default: its checkpoint's)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--stop-file", metavar="FILE", help="stop after the current step once this file exists")
    add_common_options(parser)
    parser.set_defaults(handler=run_train_sr)


def run_train_sr(args: argparse.Namespace) -> int:
    """Handler: 0 when finished, 130 when cancelled."""
    from ..training.sr_pairs import SRTrainingConfig, train_sr
    from .train import EXIT_CANCELLED, _CancelFlag

    config = SRTrainingConfig(
        scans=list(args.scans), output=args.output, factor=args.factor, stage1=args.stage1,
        real_pairs=bool(args.real_pairs), steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
        learning_rate=args.learning_rate, features=args.features, layers=args.layers, seed=args.seed,
        device=args.device, resume=bool(args.resume), slice_axis=args.slice_axis, synthesis=args.synthesis,
        validation_volumes=list(args.validation or []))
    with _CancelFlag(args.stop_file) as cancel:
        result = train_sr(config, progress=lambda text: logger.info("%s", text), should_cancel=cancel)
    logger.info("%s", result)
    return EXIT_CANCELLED if result.status == "cancelled" else 0
