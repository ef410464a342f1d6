"""Batch upsampling of volume files with the MRML module logic (the body of ``upsample_folder.py``).

Used by ``Resources/Scripts/upsample_folder.py``, which 3D Slicer runs with::

    Slicer --no-splash --no-main-window --python-script upsample_folder.py -- \\
        --input /data/scans --output /data/upsampled --factor 4 [--checkpoint model.pt] [--device cpu] \\
        [--adapt SECONDS [--adapt-steps N] [--seed S]] [--shard I/N] [--summary results.csv]

The batch itself (finding the inputs, output names and their checks, resume, shards, the summary
CSV, per-file failures) is :mod:`..cohort`, shared with ``semantic-interpolation upsample-batch``;
this module only supplies the MRML backend: files are read and written with MRML storage nodes
and upsampled with :class:`SemanticInterpolationLogic`, all on the calling thread (the MRML scene
is not thread-safe). With ``--recursive`` the outputs keep the sub-folder of their input.

Everything here also runs in plain Python with the ``slicer-core`` package (files are read and
written with MRML storage nodes, not with ``slicer.app``), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from ..cohort.discovery import VOLUME_EXTENSIONS, CohortInput, discover_inputs, volume_extension
from ..cohort.naming import CohortTask, default_suffix, output_extension, output_path_for
from ..errors import SemanticInterpolationError
from ..termination import TerminationRequested, signals_end_cleanly

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def volumeExtension(path: str | os.PathLike) -> str | None:
    """The volume file ending of ``path`` (e.g. ``".nii.gz"``), or None when it is not a volume file."""
    return volume_extension(path)


def collectInputFiles(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Volume files named in ``inputs`` (files, folders, .txt/.csv lists), without duplicates.

    Raises :class:`~..errors.InputError` for a path that does not exist and for a file that is not a
    volume or list file.
    """
    return [item.source for item in _discover(inputs, recursive)[0]]


def _discover(inputs: Sequence[str | os.PathLike], recursive: bool) -> tuple[list[CohortInput], list[Path]]:
    return discover_inputs(inputs, recursive=recursive, dicom=False)  # storage nodes read files, not series folders


def outputPathFor(inputPath: str | os.PathLike, outputFolder: str | os.PathLike, factor: int,
                  fileFormat: str | None = None) -> Path:
    """``<output folder>/<input name>_asi_x<factor><ext>``; ``fileFormat`` (e.g. "nrrd") replaces the input's ending."""
    item = CohortInput(Path(inputPath), PurePosixPath(Path(inputPath).name), 0)
    return output_path_for(item, outputFolder, default_suffix("asi", factor), output_extension(fileFormat))


def buildArgumentParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upsample_folder.py",
        description="Upsample anisotropic MRI volumes through-plane with ASI (SemanticInterpolation), "
                    "using the Slicer module logic. Each input is written to the output folder as "
                    "<name>_asi_x<factor><ext>.",
        epilog="Run in Slicer: Slicer --no-splash --no-main-window --python-script upsample_folder.py -- "
               "--input DIR_OR_FILES --output DIR --factor 4. Exit code 0: all done; 1: some files failed; "
               "2: bad arguments or no input files.",
    )
    parser.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                        help=f"volume files and/or folders holding them ({', '.join(VOLUME_EXTENSIONS)})")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the results (created if needed)")
    parser.add_argument("--factor", "-k", type=int, required=True, help="upsampling factor K >= 2 (slice spacing / K)")
    parser.add_argument("--checkpoint", "-c", default=None, metavar="PATH",
                        help="model checkpoint (.pt); default: the bundled default model")
    parser.add_argument("--device", "-d", default="auto", help="auto (GPU if available), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="slices per network call (bounds memory); default: the engine's choice for the device "
                             "(CPU 2, CUDA 128)")
    parser.add_argument("--synthesis", default="auto", choices=("auto", "plain", "residual", "residual-bspline"),
                        help="how new slices are made: auto (default) = the mode the checkpoint recommends; plain = "
                             "the paper's decoded latent mix; residual / residual-bspline = a learned correction "
                             "added to linear / cubic B-spline interpolation")
    parser.add_argument("--tta", default="auto", choices=("auto", "none", "pair", "pair-flip", "dihedral"),
                        help="test-time augmentation of pair-unet models: auto (default) = the checkpoint's "
                             "recommendation (the bundled model: pair-flip, 4x the time); none = one network call")
    parser.add_argument("--slice-thickness", default="auto", metavar="MM|auto|unknown",
                        help="slice thickness in mm told to models with a slice-profile input; auto (default) = "
                             "estimated from each scan; unknown = not told")
    parser.add_argument("--adapt", type=float, default=None, metavar="SECONDS",
                        help="adapt the model to each scan for at most SECONDS before upsampling it (pair-unet "
                             "checkpoints); the adapted model is used only when it predicts held-out acquired slices "
                             "better, and every scan starts from the checkpoint's weights. Needs at least 4 slices")
    parser.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                        help="with --adapt: also stop after N steps (a run that ends here is deterministic)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the adaptation (default 0)")
    parser.add_argument("--slice-axis", default="auto",
                        help="auto (largest spacing) or the IJK axis 0 (i), 1 (j), 2 (k)")
    parser.add_argument("--reconstruct-acquired", action="store_true",
                        help="replace acquired slices by their autoencoder reconstruction (default: keep them)")
    parser.add_argument("--format", default=None, metavar="EXT",
                        help="output file format, e.g. nrrd or nii.gz (default: same as the input)")
    parser.add_argument("--recursive", action="store_true",
                        help="also search sub-folders of input folders (the outputs keep the sub-folders)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing results (default: skip those that are complete files)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="do only shard I of N (I from 0; balanced by file size), e.g. for scheduler array jobs")
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="also write a CSV with one row per input: input, output, status, seconds, message")
    return parser


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the script's arguments; a leading ``--`` (Slicer's separator) is ignored."""
    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    return buildArgumentParser().parse_args(argv)


def loadVolume(scene: Any, path: str | os.PathLike) -> Any:
    """Read a volume file into a new vtkMRMLScalarVolumeNode in ``scene`` (with MRML storage nodes)."""
    import slicer

    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(Path(path).name[: -len(volumeExtension(path) or "")] or Path(path).name)
    volume = scene.AddNode(volume)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)  # never read neighbouring files as a series
    if not storage.ReadData(volume) or volume.GetImageData() is None:
        scene.RemoveNode(volume)
        raise OSError(f"could not read '{path}' as a volume")
    volume.CreateDefaultDisplayNodes()
    return volume


def saveVolume(volume: Any, path: str | os.PathLike) -> None:
    """Write ``volume`` to ``path`` (format from the ending); the file appears complete or not at all."""
    import slicer

    from ..volumes.fileio import atomic_output

    with atomic_output(path) as staged:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(staged))
        storage.SetUseCompression(True)
        if not storage.WriteData(volume):
            raise OSError(f"could not write '{path}'")


class MRMLBackend:
    """Read with storage nodes into ``scene``, upsample with ``logic``, write with storage nodes; one thread."""

    concurrent_io = False

    def __init__(self, arguments: argparse.Namespace, scene: Any, logic: Any, log: Callable[[str], None]) -> None:
        self.arguments, self.scene, self.logic, self.log = arguments, scene, logic, log
        self.created: list[Any] = []

    def output_problem(self, path: Path) -> str | None:
        from ..cohort.outputs import image_file_problem

        return image_file_problem(path)

    def read(self, task: CohortTask) -> Any:
        volume = loadVolume(self.scene, task.item.source)
        self.created.append(volume)
        return volume

    def process(self, task: CohortTask, volume: Any, progress: Callable[[int, int], None]) -> Any:
        a = self.arguments
        output = self.logic.upsample(
            volume, a.factor, checkpoint=a.checkpoint, device=a.device, keepAcquiredSlices=not a.reconstruct_acquired,
            progress=progress, batchSize=a.batch_size, sliceAxis=a.slice_axis, synthesis=a.synthesis,
            adapt=getattr(a, "adapt", None), adaptSteps=getattr(a, "adapt_steps", None),
            adaptSeed=getattr(a, "seed", 0), **_profileAndAugmentation(a))
        self.created.append(output)
        if self.logic.lastAdaptation is not None:
            self.log(f"{task.item.relative.as_posix()}: {self.logic.lastAdaptation.summary()}")
        return output

    def write(self, task: CohortTask, volume: Any) -> str:
        saveVolume(volume, task.output)
        return "x".join(str(d) for d in volume.GetImageData().GetDimensions()) + " voxels"

    def release(self, task: CohortTask) -> None:
        """Remove the nodes made for the task (and their display nodes) from the scene."""
        for node in self.created:
            for index in range(node.GetNumberOfDisplayNodes()):
                self.scene.RemoveNode(node.GetNthDisplayNode(index))
            self.scene.RemoveNode(node)
        self.created.clear()


@dataclass
class BatchReport:
    """What a batch run did."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exitCode(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def planBatch(arguments: argparse.Namespace) -> list[CohortTask]:
    """The tasks of this run (its shard when ``--shard`` is given); :class:`InputError` for bad inputs."""
    from ..cohort.naming import check_output_dir_outside_inputs, plan_tasks
    from ..cohort.sharding import parse_shard, select_shard

    items, roots = _discover(arguments.input, arguments.recursive)
    if not items:
        return []
    check_output_dir_outside_inputs(arguments.output, roots)
    tasks = plan_tasks(items, Path(arguments.output).expanduser(), default_suffix("asi", arguments.factor),
                       output_extension(arguments.format))
    shard = getattr(arguments, "shard", None)
    return select_shard(tasks, *parse_shard(shard)) if shard else tasks


def runBatch(arguments: argparse.Namespace, scene: Any = None, log: Callable[[str], None] = print,
             logic: Any = None) -> BatchReport:
    """Upsample every input file into the output folder; failures are reported and counted, not raised.

    ``scene``: the MRML scene to work in (default: a private new scene); nodes made for a file
    are removed after it. ``logic``: a SemanticInterpolationLogic (default: a new one), reused
    for all files so the model is loaded once.
    """
    import slicer

    from ..cohort.runner import run_cohort
    from ..cohort.summary import DONE, SKIPPED, write_summary
    from .logic import SemanticInterpolationLogic

    scene = scene if scene is not None else slicer.vtkMRMLScene()
    logic = logic if logic is not None else SemanticInterpolationLogic()
    adapt = getattr(arguments, "adapt", None)
    logic.validateSettings(arguments.factor, arguments.checkpoint, arguments.device, arguments.batch_size,
                           synthesis=arguments.synthesis, adapt=adapt, adaptSteps=getattr(arguments, "adapt_steps", None),
                           adaptSeed=getattr(arguments, "seed", 0), **_profileAndAugmentation(arguments))
    tasks = planBatch(arguments)
    outputFolder = Path(arguments.output).expanduser()
    outputFolder.mkdir(parents=True, exist_ok=True)
    log(f"SemanticInterpolation batch: {len(tasks)} volume(s), factor {arguments.factor}, "
        f"device {arguments.device}, output folder {outputFolder}"
        + (f", shard {arguments.shard}" if getattr(arguments, "shard", None) else "")
        + (f", adaptation to each scan for up to {adapt:g} s" if adapt is not None else ""))
    rows = run_cohort(tasks, MRMLBackend(arguments, scene, logic, log), overwrite=arguments.overwrite, log=log,
                      log_file_progress=True, prefix="")
    report = BatchReport()
    for task, row in zip(tasks, rows):
        if row.status == DONE:
            report.done.append(task.item.source)
        elif row.status == SKIPPED:
            report.skipped.append(task.item.source)
        else:
            report.failed.append((task.item.source, row.message))
    if getattr(arguments, "summary", None):
        log(f"summary: {write_summary(Path(arguments.summary).expanduser(), rows)}")
    log(f"SemanticInterpolation batch finished: {len(report.done)} done, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed")
    for path, message in report.failed:
        log(f"  failed: {path}: {message}")
    return report


def main(argv: Sequence[str] | None = None, scene: Any = None, log: Callable[[str], None] | None = None) -> int:
    """Parse ``argv``, run the batch and return the exit code (0 ok, 1 some failed, 2 usage)."""
    def printFlushed(message: str) -> None:
        print(message, flush=True)

    log = log or printFlushed
    try:
        arguments = parseArguments(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # argparse printed the problem
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    if arguments.factor < 2:
        log(f"error: --factor must be at least 2 (got {arguments.factor})")
        return EXIT_USAGE
    if arguments.adapt_steps is not None and arguments.adapt is None:
        log("error: --adapt-steps applies with --adapt SECONDS only")
        return EXIT_USAGE
    try:
        output_extension(arguments.format)
        if not collectInputFiles(arguments.input, arguments.recursive):
            log(f"error: no volume files ({', '.join(VOLUME_EXTENSIONS)}) found in {' '.join(arguments.input)}")
            return EXIT_USAGE
        with signals_end_cleanly():  # SIGTERM/SIGHUP: the file being written is removed, as on Ctrl-C
            return runBatch(arguments, scene=scene, log=log).exitCode
    except TerminationRequested as stop:
        log(f"{stop}: the file being written was not completed; files written before are complete")
        return stop.exit_code
    except (SemanticInterpolationError, OSError, ValueError) as error:  # settings wrong for every file
        log(f"error: {error}")
        return EXIT_USAGE


def _profileAndAugmentation(arguments) -> dict:
    """The logic's ``sliceThickness`` and ``testTimeAugmentation`` from ``--slice-thickness`` and ``--tta``
    (arguments made without them, e.g. by older callers, get the defaults)."""
    from ..volumes.slice_profile import slice_thickness_option

    return {"sliceThickness": slice_thickness_option(getattr(arguments, "slice_thickness", "auto")),
            "testTimeAugmentation": getattr(arguments, "tta", "auto")}
