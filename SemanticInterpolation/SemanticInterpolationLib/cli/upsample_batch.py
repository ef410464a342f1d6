"""``semantic-interpolation upsample-batch``: a whole cohort with one model, on one or many processes.

The work is done by :mod:`..cohort` (shared with the Slicer batch script); this module parses the
arguments, loads the model once and, under ``torchrun``, gives each process its shard and device::

    semantic-interpolation upsample-batch /data/scans --output-dir /data/x4 --factor 4
    torchrun --nproc_per_node 4 -m SemanticInterpolationLib.cli upsample-batch /data/scans --output-dir /data/x4 --factor 4

Exit codes: 0 every input done (or already done), 1 some failed (see the summary CSV), 2 bad
arguments (nothing was upsampled), 130 cancelled.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..errors import SemanticInterpolationError

logger = logging.getLogger("SemanticInterpolation")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    from .app import add_common_options
    from .upsample import add_upsample_options

    parser = subparsers.add_parser(
        "upsample-batch",
        help="upsample many volumes (files, folders, lists) with one model; torchrun spreads them over GPUs",
        description="Upsample every volume named by INPUTS into --output-dir, loading the model once. Outputs keep "
                    "the input's path below the folder given, with a suffix (default _<method>_x<K>). Reading and "
                    "writing overlap with the network. Finished outputs are skipped (a rerun resumes) unless "
                    "--overwrite; a file that fails is recorded and the batch goes on. A summary CSV (input, "
                    "output, status, seconds, message) is written to the output folder. Under torchrun every "
                    "process takes a shard (balanced by file size) on its own device. Exit code 0: all done; "
                    "1: some failed; 2: bad arguments.",
        epilog="Examples:\n"
               "  semantic-interpolation upsample-batch /data/scans --output-dir /data/x4 --factor 4\n"
               "  semantic-interpolation upsample-batch scans.txt --output-dir out --factor 3 --format nrrd\n"
               "  semantic-interpolation upsample-batch /data/scans --output-dir /data/x4 --factor 4 "
               "--shard $SLURM_ARRAY_TASK_ID/8\n"
               "  torchrun --nproc_per_node 4 -m SemanticInterpolationLib.cli upsample-batch /data/scans "
               "--output-dir /data/x4 --factor 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="volume files (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd), folders (searched recursively; "
                             "a folder of DICOM files is one input) or .txt/.csv lists of those")
    parser.add_argument("--output-dir", "-o", required=True, metavar="DIR",
                        help="folder for the results (created if needed); must not lie inside an input folder")
    add_upsample_options(parser, single_file=False)
    parser.add_argument("--suffix", default=None, metavar="TEXT",
                        help="added to each output's name before its ending (default _<method>_x<K>, e.g. _asi_x4)")
    parser.add_argument("--format", default=None, metavar="EXT",
                        help="output file format, e.g. nrrd or nii.gz (default: the input's; DICOM series: nrrd)")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists (default: skip them)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="do only shard I of N (I from 0; balanced by file size), e.g. for scheduler array jobs")
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="summary CSV (default: <output-dir>/upsample-batch-summary.csv, with --shard "
                             "upsample-batch-summary.shard-I-of-N.csv)")
    parser.add_argument("--queue-depth", type=int, default=2, metavar="N",
                        help="volumes read ahead and results waiting to be written (bounds memory; default 2)")
    add_common_options(parser)
    parser.set_defaults(handler=run_upsample_batch)


def _usage_error(message: str) -> int:
    from .app import PROG

    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_upsample_batch(args: argparse.Namespace) -> int:
    from ..cohort.distributed import WAIT_TIMEOUT, gather_rows
    from ..engine.devices import resolve_device
    from ..training.distributed import DistributedContext, init_distributed, launched_distributed, shutdown

    try:
        context = (init_distributed(resolve_device(args.device), timeout=WAIT_TIMEOUT) if launched_distributed()
                   else DistributedContext())
    except SemanticInterpolationError as exc:
        return _usage_error(str(exc))
    try:
        problem, prepared = None, None
        try:
            prepared = _prepare(args, context)
        except SemanticInterpolationError as exc:
            problem = str(exc)
        except OSError as exc:  # e.g. the output folder cannot be created
            problem = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
        if context.enabled:  # every process stops when one has a bad argument (none waits for the others forever)
            import torch.distributed as dist

            problems: list = [None] * context.world_size
            dist.all_gather_object(problems, problem)
            problem = next((p for p in problems if p), None)
        if problem:
            return _usage_error(problem)
        rows = gather_rows(_run(args, context, *prepared), context)
        from ..cohort.summary import FAILED, count_statuses, write_summary

        counts = count_statuses(rows)
        if context.is_main:
            summary = write_summary(prepared[2], rows)
            logger.info("%d input(s): %d done, %d skipped (already done), %d failed; summary %s", len(rows),
                        counts["done"], counts["skipped"], counts[FAILED], summary)
            for row in rows:
                if row.status == FAILED:
                    logger.warning("failed: %s: %s", row.input, row.message)
        if context.enabled:  # leave the group together: a rank that tears gloo down while another still
            import torch.distributed as dist  # writes the summary was seen to abort under heavy load

            dist.barrier()
        return EXIT_SOME_FAILED if counts[FAILED] else EXIT_OK
    finally:
        shutdown(context)


def _prepare(args: argparse.Namespace, context):
    """Every check before any work; returns (this process's tasks, all tasks, summary path, engine, settings)."""
    from ..cohort.discovery import discover_inputs
    from ..cohort.distributed import tasks_of_process
    from ..cohort.naming import check_output_dir_outside_inputs, default_suffix, output_extension, plan_tasks
    from ..cohort.sharding import parse_shard
    from ..cohort.summary import summary_name
    from ..errors import InputError
    from ..volumes.fileio import check_writable_destination
    from .upsample import check_upsample_options

    factor = check_upsample_options(args)
    if args.queue_depth < 1:
        raise InputError(f"--queue-depth must be at least 1, got {args.queue_depth}")
    shard = parse_shard(args.shard) if args.shard is not None else None
    extension = output_extension(args.format)
    output_dir = Path(args.output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir {str(output_dir)!r} is a file: give a folder")
    items, roots = discover_inputs(args.inputs)
    if not items:
        raise InputError(f"no volume files found in {' '.join(args.inputs)} (looked for .nii.gz, .nii, .nrrd, .nhdr, "
                         ".mha, .mhd and DICOM series folders)")
    check_output_dir_outside_inputs(output_dir, roots)
    suffix = args.suffix if args.suffix is not None else default_suffix(args.method, factor)
    tasks = plan_tasks(items, output_dir, suffix, extension)
    summary = Path(args.summary).expanduser() if args.summary else output_dir / summary_name(shard)
    if summary.resolve() in {t.output.resolve() for t in tasks} | {i.source.resolve() for i in items}:
        raise InputError(f"--summary {str(summary)!r} is an input or an output: choose another file")
    mine = tasks_of_process(tasks, shard, context.rank, context.world_size)
    pool = tasks_of_process(tasks, shard, 0, 1)  # the inputs the processes of this job share
    if context.world_size > len(pool) and context.is_main:
        logger.warning("%d processes for %d input(s): %d process(es) have no input and stay idle",
                       context.world_size, len(pool), context.world_size - len(pool))
    output_dir.mkdir(parents=True, exist_ok=True)
    check_writable_destination(summary)
    engine = _engine(args, context) if mine else None
    return mine, tasks, summary, engine, factor, shard


def _engine(args: argparse.Namespace, context):
    from ..engine.devices import resolve_device
    from ..training.distributed import process_device
    from .upsample import make_engine

    device = process_device(resolve_device(args.device), context)
    engine = make_engine(args, device=str(device))
    if engine is not None:
        logger.info("%s%s", f"rank {context.rank}: " if context.enabled else "", engine.describe())
    return engine


def _run(args: argparse.Namespace, context, mine, tasks, summary, engine, factor, shard):
    from ..cohort.backends import ImageFileBackend, UpsampleSettings
    from ..cohort.runner import run_cohort
    from ..progress import TerminalProgress

    prefix = f"rank {context.rank}/{context.world_size}: " if context.enabled else ""
    where = f"shard {shard[0]}/{shard[1]}: " if shard is not None else ""
    if not mine:
        logger.info("%s%sno input to do (%d input(s) for %d process(es)); waiting for the others", prefix, where,
                    len(tasks), context.world_size)
        return []
    logger.info("%s%s%d of %d input(s), factor %d, method %s -> %s", prefix, where, len(mine), len(tasks), factor,
                args.method, args.output_dir)
    from ..volumes.slice_profile import slice_thickness_option

    settings = UpsampleSettings(factor, args.method, args.axis, args.keep_acquired, args.output_type, args.adapt,
                                args.adapt_steps, args.seed, slice_thickness_option(args.slice_thickness))
    bar = TerminalProgress(f"{prefix}{len(mine)} file(s)") if context.is_main else None
    try:
        return run_cohort(mine, ImageFileBackend(settings, engine), overwrite=args.overwrite,
                          queue_depth=args.queue_depth, progress=bar, prefix=prefix)
    finally:
        if bar is not None:
            bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m SemanticInterpolationLib.cli.upsample_batch ARGS`` = ``semantic-interpolation upsample-batch ARGS``."""
    from .app import main as cli_main

    return cli_main(["upsample-batch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
