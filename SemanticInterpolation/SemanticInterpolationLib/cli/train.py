"""``semantic-interpolation train``: train or fine-tune an ASI model on anisotropic volumes.

The same program runs under ``torchrun`` for several GPUs or machines (see
:mod:`SemanticInterpolationLib.training.distributed`); ``python -m SemanticInterpolationLib.cli.train``
is equivalent to ``semantic-interpolation train``.

Cancel: Ctrl-C (SIGINT), SIGTERM, SIGHUP, or creating the ``--stop-file`` stops training after the current
step; the checkpoint of the last completed epoch stays intact (exit code 130). A second Ctrl-C
aborts at once (still without corrupting any file: every write is atomic).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from ..engine.devices import DEVICE_CHOICES, PRECISION_CHOICES
from ..errors import InputError

logger = logging.getLogger("SemanticInterpolation")

EXIT_CANCELLED = 130


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand (handler :func:`run_train`)."""
    from ..training.losses import SYNTHESIS_LOSSES
    from ..training.trainer import (ARCHITECTURES, BEST_METRICS, DEFAULT_LAMBDA, DEFAULT_LEARNING_RATE,
                                   DEFAULT_SYNTHESIS_LOSS)

    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune an ASI model on anisotropic volumes",
        description="Train the ASI autoencoder on the slices of anisotropic volumes (no high-resolution data "
                    "needed): it learns to reconstruct slices and to synthesise each slice from the latent mix of "
                    "its two neighbours (journal eq. 3). Writes OUTPUT after every epoch (atomically), "
                    "OUTPUT.best.pt (best epoch on --validation volumes) and OUTPUT.log.jsonl (one JSON record "
                    "per epoch). The result works with 'upsample --checkpoint' at once.",
        epilog="Examples:\n"
               "  semantic-interpolation train scans/*.nii.gz --validation held_out.nii.gz --output clinic.pt \\\n"
               "      --init default --epochs 50\n"
               "  semantic-interpolation train scans/*.nii.gz --output clinic.pt --epochs 80 --resume\n"
               "  torchrun --nproc_per_node 4 -m SemanticInterpolationLib.cli.train scans/*.nii.gz --output m.pt\n"
               "Cancel with Ctrl-C (or --stop-file): training stops after the current step and the last\n"
               "completed epoch's checkpoint is kept; --resume continues from it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("volumes", nargs="+", metavar="VOLUME",
                        help="training volumes: image files SimpleITK reads or DICOM series folders; several "
                             "sizes and spacings may be mixed")
    parser.add_argument("--output", "-o", required=True, metavar="CKPT", help="checkpoint to write (e.g. model.pt)")
    parser.add_argument("--validation", nargs="+", default=[], metavar="VOLUME",
                        help="held-out volumes for validation after each epoch (PSNR/SSIM of real middle slices); "
                             "the best epoch is kept in CKPT's .best.pt")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="CKPT",
                       help="fine-tune this checkpoint ('default' = the bundled model); default: train from scratch")
    start.add_argument("--resume", action="store_true",
                       help="continue the run saved in --output (raise --epochs to train longer)")
    from ..models.registry import get_model_type, model_type_names

    parser.add_argument("--model-type", choices=model_type_names(), metavar="TYPE",
                        help="network type: " + "; ".join(f"{n} = {get_model_type(n).description}"
                                                          for n in model_type_names())
                             + ". Default: the --init/--resume checkpoint's type, else asi")
    parser.add_argument("--max-gap", type=_whole_number, default=6, metavar="G",
                        help="pair-unet: largest distance in slices between the two input slices on fine volumes "
                             "(gaps 2..G are drawn, the gaps that factors K = 2..G fill; default 6)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES),
                        help="network when training from scratch (default journal). With --init the network is "
                             "the checkpoint's; naming another one is an error")
    parser.add_argument("--epochs", type=_whole_number, default=100, metavar="N", help="epochs to train (default 100)")
    parser.add_argument("--steps-per-epoch", type=_whole_number, metavar="N",
                        help="optimisation steps per epoch (default: one pass over all triplets)")
    parser.add_argument("--synthesis-loss", choices=SYNTHESIS_LOSSES, default=DEFAULT_SYNTHESIS_LOSS,
                        help=f"distance between the real middle slice and the synthesised one (default "
                             f"{DEFAULT_SYNTHESIS_LOSS}; lpips is the paper's and needs the lpips package, "
                             "torchvision and the VGG-16 weights)")
    parser.add_argument("--synthesis-target", choices=("auto", "decoded", "residual", "residual-bspline"),
                        default="auto",
                        help="what the synthesis loss scores: auto (default) = the target of the mode the --init "
                             "checkpoint recommends (the bundled model: residual-bspline), decoded from scratch; "
                             "decoded = the decoded latent mix (the paper); "
                             "residual = the engine's residual synthesis (mean of the neighbours + decoded mix - mean "
                             "of their reconstructions), so the checkpoint recommends --synthesis residual; "
                             "residual-bspline = the same correction on the cubic B-spline of the slices around the "
                             "triplet (recommends --synthesis residual-bspline)")
    parser.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA, metavar="L",
                        help=f"weight of the synthesis loss, >= 0 (default {DEFAULT_LAMBDA:g}; 0 = reconstruction "
                             "only, the paper's ablation; the paper used 0.05 and 0.001 with lpips)")
    parser.add_argument("--patch-size", type=_whole_number, default=128, metavar="P",
                        help="square training patches, a multiple of 4, at most the slice size (default 128)")
    parser.add_argument("--batch-size", type=_whole_number, default=12, metavar="B",
                        help="triplets per step and process (default 12, as in the paper)")
    parser.add_argument("--learning-rate", "--lr", type=float, default=DEFAULT_LEARNING_RATE, metavar="LR",
                        help=f"Adam learning rate (default {DEFAULT_LEARNING_RATE:g}; the paper's 1e-5 is slow)")
    parser.add_argument("--triplet-stride", type=_whole_number, default=1, metavar="S",
                        help="triplets are slices (n-S, n, n+S) (default 1: consecutive slices)")
    parser.add_argument("--slice-axis", default="auto", choices=("auto", "0", "1", "2"),
                        help="slice axis in ITK index order; auto = largest spacing, per volume")
    parser.add_argument("--noise-std", type=float, default=0.0, metavar="S",
                        help="noise augmentation: independent Gaussian noise per slice with a standard deviation "
                             "drawn from [0, S] (a fraction of the normalised intensity range; default 0 = off). "
                             "Use about 0.05 when the scans to upsample are noisier than the training volumes "
                             "(e.g. fine-tuning on averaged templates for single-subject scans)")
    parser.add_argument("--thick-slice-probability", type=float, default=0.0, metavar="P",
                        help="share of the triplets of fine volumes (slice spacing at most 1.5 x in-plane) whose "
                             "outer slices are simulated thick slices (Gaussian through-plane blur, FWHM = twice the "
                             "triplet gap) while the middle stays sharp: trains synthesis from thick-slice "
                             "acquisitions. Default 0 (off)")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="no rotations, flips or intensity changes")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: float16 mixed precision on CUDA, float32 elsewhere")
    parser.add_argument("--workers", type=_whole_number, default=0, metavar="N",
                        help="data-loading worker processes (default 0)")
    parser.add_argument("--data-on-device", action="store_true",
                        help="pair-unet: keep the training slices on the device and draw whole batches there "
                             "(no data-loading workers; for GPUs, where it keeps the GPU busy)")
    parser.add_argument("--validation-triplets", type=_whole_number, default=16, metavar="N",
                        help="triplets per validation volume, evenly spread (default 16)")
    parser.add_argument("--best-metric", choices=["auto", *sorted(BEST_METRICS)], default="auto",
                        help="validation score that picks the best epoch; auto (default): val_thin_thick_psnr for "
                             "profile-routed models (both networks count), val_syn_psnr for every other type")
    parser.add_argument("--best-output", metavar="CKPT", help="best-epoch checkpoint (default CKPT with .best.pt)")
    parser.add_argument("--log", metavar="FILE", help="JSON-lines log (default CKPT with .log.jsonl)")
    parser.add_argument("--stop-file", metavar="FILE",
                        help="stop after the current step once this file exists (for GUIs and batch systems)")
    from ..training.xuan import OPTION_HELP as XUAN_OPTIONS

    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the model type's own training (repeatable; VALUE read as JSON when it "
                             "is JSON, else as text), e.g. hrinet sequence_length=5. xuan-vae: "
                             + "; ".join(f"{k} = {v}" for k, v in XUAN_OPTIONS.items()))
    from ..training.hrinet import add_cli_options as add_hrinet_options

    add_hrinet_options(parser)
    from .app import add_common_options

    add_common_options(parser)
    parser.set_defaults(handler=run_train)


def config_from_args(args: argparse.Namespace):
    """The :class:`~SemanticInterpolationLib.training.TrainingConfig` the parsed options describe."""
    from ..training import TrainingConfig

    return TrainingConfig(
        training_volumes=list(args.volumes), output=args.output, validation_volumes=list(args.validation or []),
        init=args.init, resume=bool(args.resume), architecture=args.architecture, epochs=args.epochs,
        model_type=args.model_type, max_gap=args.max_gap,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, patch_size=args.patch_size,
        learning_rate=args.learning_rate, synthesis_loss=args.synthesis_loss, synthesis_target=args.synthesis_target, lam=args.lam,
        triplet_stride=args.triplet_stride, slice_axis=args.slice_axis, augment=args.augment,
        noise_std=args.noise_std, thick_slice_probability=args.thick_slice_probability, seed=args.seed,
        device=args.device, precision=args.precision, num_workers=args.workers,
        data_on_device=bool(getattr(args, "data_on_device", False)),
        validation_triplets=args.validation_triplets, best_metric=args.best_metric,
        best_output=args.best_output, log_path=args.log, model_options=_model_options(args))


def _model_options(args: argparse.Namespace) -> dict:
    """``--model-option KEY=JSON`` and the HRINet options as one dictionary (``TrainingConfig.model_options``)."""
    import json

    from ..training.hrinet import options_from_args

    options = {}
    for item in getattr(args, "model_option", None) or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise InputError(f"--model-option needs KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    options.update(options_from_args(args))
    return options


class _CancelFlag:
    """Set by SIGINT/SIGTERM/SIGHUP or by the stop file; a second Ctrl-C aborts at once."""

    def __init__(self, stop_file: str | None) -> None:
        self.stop_file = Path(stop_file).expanduser() if stop_file else None
        self.requested = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        if not self.requested and self.stop_file is not None and self.stop_file.exists():
            self.requested = True
            logger.warning("stop file %s found: stopping after this step", self.stop_file)
        return self.requested

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("\nstopping after the current step (Ctrl-C again to abort now); the last completed "
                         "epoch's checkpoint is kept\n")

    def __enter__(self) -> "_CancelFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def epoch_summary(record: dict) -> str:
    """One line per epoch: losses, validation metrics, time."""
    parts = [f"epoch {record['epoch']}/{record['epochs']}",
             f"loss {_fmt(record.get('train_loss'), '{:.5f}')}",
             f"(rec {_fmt(record.get('train_reconstruction'), '{:.5f}')}"
             + (f", syn {_fmt(record.get('train_synthesis'), '{:.4f}')})" if record.get("train_synthesis") is not None
                else ")")]
    if record.get("val_syn_psnr") is not None:
        parts.append(f"| val synthesis {record['val_syn_psnr']:.2f} dB SSIM {record['val_syn_ssim']:.3f}"
                     f" (linear {record['val_linear_psnr']:.2f} dB {record['val_linear_ssim']:.3f}"
                     + (f", B-spline {record['val_bspline_psnr']:.2f} dB {record['val_bspline_ssim']:.3f}"
                        if record.get("val_bspline_psnr") is not None else "") + ")"
                     f", reconstruction {record['val_rec_psnr']:.2f} dB SSIM {record['val_rec_ssim']:.3f}")
    parts.append(f"| {record['epoch_seconds']:.1f} s, {record['triplets_per_second']:.1f} triplets/s")
    if record.get("best"):
        parts.append("[best]")
    return " ".join(parts)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``train``: 0 when finished, 130 when cancelled; user errors raise before any work."""
    from ..progress import TerminalProgress
    from ..training import Trainer, TrainingProgress
    from ..training.distributed import launched_distributed

    if launched_distributed() and os.environ.get("RANK", "0") != "0":
        logger.setLevel(logging.WARNING)  # only rank 0 reports
    config = config_from_args(args)
    trainer = Trainer(config)
    logger.info("training %s", trainer.describe())
    for volume in trainer.volumes:
        logger.debug("  %s", volume.describe())

    bar: TerminalProgress | None = None

    def progress(info: TrainingProgress) -> None:
        nonlocal bar
        if info.phase == "train":
            if bar is None:
                bar = TerminalProgress(f"epoch {info.epoch}/{info.epochs}")
            bar.label = (f"epoch {info.epoch}/{info.epochs} loss {info.loss:.5f}" if info.loss is not None
                         else f"epoch {info.epoch}/{info.epochs}")
            bar(info.step, info.steps)
        elif info.phase == "epoch":
            if bar is not None:
                bar.close()
                bar = None
            logger.info("%s", epoch_summary(info.record or {}))

    with _CancelFlag(args.stop_file) as cancel:
        try:
            result = trainer.run(progress=progress, should_cancel=cancel)
        finally:
            if bar is not None:
                bar.close()
    if result.cancelled:
        kept = f"{result.output} (epoch {result.epochs_done})" if result.output else "none (no epoch completed)"
        if result.output is None and trainer.output.is_file():
            kept += f"; the earlier run's {trainer.output} and its log were left unchanged"
        logger.warning("training cancelled; last complete checkpoint: %s", kept)
        return EXIT_CANCELLED
    logger.info("finished %d epochs; checkpoint %s%s; log %s", result.epochs_done, result.output,
                f", best {result.best_output}" if result.best_output else "", result.log_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m SemanticInterpolationLib.cli.train ARGS`` = ``semantic-interpolation train ARGS``."""
    from .app import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
