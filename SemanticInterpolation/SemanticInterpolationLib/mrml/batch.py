"""Batch upsampling of volume files with the MRML module logic (the body of ``upsample_folder.py``).

Used by ``Resources/Scripts/upsample_folder.py``, which 3D Slicer runs with::

    Slicer --no-splash --no-main-window --python-script upsample_folder.py -- \\
        --input /data/scans --output /data/upsampled --factor 4 [--checkpoint model.pt] [--device cpu] \\
        [--adapt SECONDS [--adapt-steps N] [--seed S]]

Everything here also runs in plain Python with the ``slicer-core`` package (files are read and
written with MRML storage nodes, not with ``slicer.app``), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import SemanticInterpolationError
from ..termination import TerminationRequested, signals_end_cleanly

#: File name endings read as volumes (lower case; compound endings first).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def volumeExtension(path: str | os.PathLike) -> str | None:
    """The volume file ending of ``path`` (e.g. ``".nii.gz"``), or None when it is not a volume file."""
    name = Path(path).name.lower()
    for extension in VOLUME_EXTENSIONS:
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return None


def collectInputFiles(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Volume files named in ``inputs``: files as given, folders expanded (sorted, no duplicates).

    Raises :class:`FileNotFoundError` for a path that does not exist and :class:`ValueError`
    for a file that is not a volume file.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found += sorted(p for p in pattern if p.is_file() and volumeExtension(p) and not p.name.startswith("."))
        elif path.is_file():
            if volumeExtension(path) is None:
                raise ValueError(f"'{path}' is not a volume file (expected one of {', '.join(VOLUME_EXTENSIONS)})")
            found.append(path)
        else:
            raise FileNotFoundError(f"input '{path}' does not exist")
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(path)
    return unique


def outputPathFor(inputPath: str | os.PathLike, outputFolder: str | os.PathLike, factor: int,
                  fileFormat: str | None = None) -> Path:
    """``<output folder>/<input name>_asi_x<factor><ext>``; ``fileFormat`` (e.g. "nrrd") replaces the input's ending."""
    inputPath = Path(inputPath)
    extension = volumeExtension(inputPath) or ".nrrd"
    stem = inputPath.name[: -len(extension)]
    if fileFormat:
        extension = "." + fileFormat.lower().lstrip(".")
        if extension not in VOLUME_EXTENSIONS:
            raise ValueError(f"unknown output format '{fileFormat}': use one of "
                             f"{', '.join(e.lstrip('.') for e in VOLUME_EXTENSIONS)}")
    return Path(outputFolder) / f"{stem}_asi_x{factor}{extension}"


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
    parser.add_argument("--recursive", action="store_true", help="also search sub-folders of input folders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results (default: skip them)")
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


@dataclass
class BatchReport:
    """What a batch run did."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exitCode(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def runBatch(arguments: argparse.Namespace, scene: Any = None, log: Callable[[str], None] = print,
             logic: Any = None) -> BatchReport:
    """Upsample every input file into the output folder; failures are reported and counted, not raised.

    ``scene``: the MRML scene to work in (default: a private new scene); nodes made for a file
    are removed after it. ``logic``: a SemanticInterpolationLogic (default: a new one), reused
    for all files so the model is loaded once.
    """
    import slicer

    from .logic import SemanticInterpolationLogic

    scene = scene if scene is not None else slicer.vtkMRMLScene()
    logic = logic if logic is not None else SemanticInterpolationLogic()
    adapt = getattr(arguments, "adapt", None)
    adaptSteps = getattr(arguments, "adapt_steps", None)
    adaptSeed = getattr(arguments, "seed", 0)
    logic.validateSettings(arguments.factor, arguments.checkpoint, arguments.device, arguments.batch_size,
                           synthesis=arguments.synthesis, adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed)
    files = collectInputFiles(arguments.input, arguments.recursive)
    outputFolder = Path(arguments.output).expanduser()
    outputFolder.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    log(f"SemanticInterpolation batch: {len(files)} volume(s), factor {arguments.factor}, "
        f"device {arguments.device}, output folder {outputFolder}"
        + (f", adaptation to each scan for up to {adapt:g} s" if adapt is not None else ""))
    for number, inputPath in enumerate(files, start=1):
        prefix = f"[{number}/{len(files)}] {inputPath.name}"
        outputPath = outputPathFor(inputPath, outputFolder, arguments.factor, arguments.format)
        if outputPath.exists() and not arguments.overwrite:
            log(f"{prefix}: skipped, {outputPath} exists (use --overwrite to replace it)")
            report.skipped.append(inputPath)
            continue
        started = time.perf_counter()
        created: list[Any] = []
        lastPercent = [-1]

        def progress(done: int, total: int) -> None:
            percent = int(100 * done / total) if total else 100
            if percent // 25 > lastPercent[0] // 25:  # 0, 25, 50, 75, 100 %
                lastPercent[0] = percent
                log(f"{prefix}: {percent}%")

        try:
            inputVolume = loadVolume(scene, inputPath)
            created.append(inputVolume)
            outputVolume = logic.upsample(
                inputVolume, arguments.factor, checkpoint=arguments.checkpoint, device=arguments.device,
                keepAcquiredSlices=not arguments.reconstruct_acquired, progress=progress,
                batchSize=arguments.batch_size, sliceAxis=arguments.slice_axis, synthesis=arguments.synthesis,
                adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed)
            created.append(outputVolume)
            if logic.lastAdaptation is not None:
                log(f"{prefix}: {logic.lastAdaptation.summary()}")
            saveVolume(outputVolume, outputPath)
        except (SemanticInterpolationError, OSError, RuntimeError, ValueError) as error:
            log(f"{prefix}: FAILED: {error}")
            report.failed.append((inputPath, str(error)))
        else:
            dims = "x".join(str(d) for d in outputVolume.GetImageData().GetDimensions())
            log(f"{prefix}: wrote {outputPath} ({dims} voxels) in {time.perf_counter() - started:.1f} s")
            report.done.append(inputPath)
        finally:
            for node in created:
                for index in range(node.GetNumberOfDisplayNodes()):
                    scene.RemoveNode(node.GetNthDisplayNode(index))
                scene.RemoveNode(node)
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
        files = collectInputFiles(arguments.input, arguments.recursive)
    except (OSError, ValueError) as error:
        log(f"error: {error}")
        return EXIT_USAGE
    if not files:
        log(f"error: no volume files ({', '.join(VOLUME_EXTENSIONS)}) found in {' '.join(arguments.input)}")
        return EXIT_USAGE
    try:
        if arguments.format:
            outputPathFor(files[0], arguments.output, arguments.factor, arguments.format)
        with signals_end_cleanly():  # SIGTERM/SIGHUP: the file being written is removed, as on Ctrl-C
            return runBatch(arguments, scene=scene, log=log).exitCode
    except TerminationRequested as stop:
        log(f"{stop}: the file being written was not completed; files written before are complete")
        return stop.exit_code
    except (SemanticInterpolationError, OSError, ValueError) as error:  # settings wrong for every file
        log(f"error: {error}")
        return EXIT_USAGE
