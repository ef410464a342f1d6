"""Training from MRML scene volumes (no Qt, no ``slicer.app``): the logic of the module's Training tab.

The Training tab trains in a separate process (``PythonSlicer -m SemanticInterpolationLib.cli.train``)
so that Slicer stays responsive and Stop works. Everything that process needs is prepared here,
and everything it reports is turned into MRML nodes here; the module file only adds the
``qt.QProcess``, the ``qt.QTimer`` and the widgets. The same API works from the Python console::

    from SemanticInterpolationLib.mrml.training import TrainingTabSettings, prepareTraining
    job = prepareTraining(TrainingTabSettings(trainingVolumes=[vol1, vol2], output="/data/clinic.pt",
                                              epochs=20, patchSize=64), workFolder="/tmp/asi-training")
    # job.command and job.environment start the training process (subprocess.Popen, qt.QProcess, ...);
    # requestStop(job) stops it after the current step.
    plot = TrainingPlot(scene, "clinic")
    plot.update(job.readLog())                           # call repeatedly while it runs
    status = summarizeTrainingLog(job.readLog())         # fraction done, status text, recommended checkpoint

Steps of :func:`prepareTraining`, every check before any process starts:

1. the chosen nodes are checked (scalar volumes, not label maps, at least ``2 * stride + 1``
   slices along the slice axis, different nodes);
2. they are written to NRRD files in ``workFolder`` with their storage nodes' writers (voxels and
   geometry exactly as in the scene; parent transforms are not applied, training uses slices only);
3. a :class:`~SemanticInterpolationLib.training.TrainingConfig` is built and checked with
   :class:`~SemanticInterpolationLib.training.Trainer` (reads the files, checks the checkpoint,
   patch size, device, lpips availability, output paths), which trains nothing;
4. the command line is ``[python, "-m", "SemanticInterpolationLib.cli.train", *config.to_cli_args(),
   "--stop-file", STOP]``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import vtk

from ..errors import InputError
from .logic import validateScalarVolume

#: The module run by the training process.
TRAINING_MODULE = "SemanticInterpolationLib.cli.train"
#: Node reference role that keeps the Training tab's volumes in the module's parameter node.
TRAINING_VOLUME_REFERENCE_ROLE = "trainingVolume"
#: Columns of the per-epoch table (``epoch`` records of the training log), in this order.
EPOCH_COLUMNS = ("epoch", "train_loss", "train_reconstruction", "train_synthesis", "val_loss", "val_syn_psnr",
                 "val_rec_psnr", "val_linear_psnr", "val_bspline_psnr", "val_syn_ssim", "val_rec_ssim",
                 "val_linear_ssim", "val_bspline_ssim",
                 "epoch_seconds", "triplets_per_second")
#: Columns of the running-loss table (``progress`` records): position in epochs (1.5 = half of epoch 2 done).
PROGRESS_COLUMNS = ("epoch", "loss")
#: (table, y column, series name, colour) of the loss chart.
LOSS_SERIES = (("progress", "loss", "Loss (running mean)", (0.6, 0.6, 0.6)),
               ("epoch", "train_loss", "Loss (epoch)", (0.84, 0.15, 0.16)),
               ("epoch", "train_reconstruction", "Reconstruction loss", (0.12, 0.47, 0.71)),
               ("epoch", "train_synthesis", "Synthesis loss", (0.17, 0.63, 0.17)))
#: (table, y column, series name, colour) of the validation chart (PSNR of real middle slices).
VALIDATION_SERIES = (("epoch", "val_syn_psnr", "Synthesized (ASI)", (0.84, 0.15, 0.16)),
                     ("epoch", "val_linear_psnr", "Linear interpolation", (0.5, 0.5, 0.5)),
                     ("epoch", "val_bspline_psnr", "Cubic B-spline", (0.58, 0.40, 0.74)),
                     ("epoch", "val_rec_psnr", "Reconstructed", (0.12, 0.47, 0.71)))


# ---------------------------------------------------------------------------------------------
# Settings (what the widgets hold)
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingTabSettings:
    """The Training tab's values. Node fields hold MRML volume nodes.

    ``init``: checkpoint to fine-tune (path, or ``"default"`` for the bundled model); None or ""
    trains from scratch. ``output``: the checkpoint to write (``.best.pt`` and ``.log.jsonl`` go
    beside it). ``stepsPerEpoch``: None = one pass over all triplets. ``modelType``: the network type
    (``"asi"``, ``"pair-unet"``, see ``models.registry``); None or ``"auto"`` = the starting checkpoint's
    type (``asi`` from scratch); a starting checkpoint of another type is refused. ``maxGap``: the
    largest slice gap a pair-unet model is trained on.
    """

    trainingVolumes: Sequence[Any]
    output: str | os.PathLike
    validationVolume: Any = None
    init: str | os.PathLike | None = "default"
    epochs: int = 20
    lam: float = 0.05
    synthesisLoss: str = "ssim"
    patchSize: int = 128
    batchSize: int = 12
    device: str = "auto"
    learningRate: float | None = None  # None = the training package's default
    stepsPerEpoch: int | None = None
    seed: int = 0
    tripletStride: int = 1
    modelType: str | None = None
    maxGap: int = 6


def modelTypeArgument(modelType: Any) -> str | None:
    """The ``--model-type`` value for a GUI value: None (the checkpoint's type) for None, "" or "auto"."""
    text = str(modelType or "").strip().lower()
    return None if text in ("", "auto") else text


@dataclass
class TrainingJob:
    """A prepared training run: files written, configuration checked, command line ready."""

    settings: TrainingTabSettings
    workFolder: Path
    trainingFiles: list[Path]
    validationFiles: list[Path]
    config: Any  #: the TrainingConfig (volumes are the exported files)
    command: list[str]  #: program and arguments of the training process
    environment: dict[str, str]  #: environment variables to set for it (PYTHONPATH)
    stopFile: Path
    logPath: Path
    description: str = ""  #: the Trainer's one-line description (network, triplets, steps, device)

    @property
    def program(self) -> str:
        return self.command[0]

    @property
    def arguments(self) -> list[str]:
        return self.command[1:]

    def readLog(self, since: float | None = None) -> list[dict[str, Any]]:
        """The log records written so far (see :func:`~SemanticInterpolationLib.training.read_training_log`).

        ``since``: a ``time.time()`` value; records written before it (e.g. by an earlier run into the
        same log, before the new process has started a new log) are left out.
        """
        from ..training.trainer import read_training_log

        records = read_training_log(self.logPath)
        if since is not None:
            records = [r for r in records if float(r.get("time", since)) >= since - 1.0]
        return records

    def cleanup(self) -> None:
        """Remove the exported volumes and the stop file (the checkpoints and the log stay)."""
        for path in [*self.trainingFiles, *self.validationFiles, self.stopFile]:
            try:
                Path(path).unlink()
            except FileNotFoundError:
                pass
        try:
            self.workFolder.rmdir()  # only when empty: never removes files we did not write
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Checking and exporting scene volumes
# ---------------------------------------------------------------------------------------------
def validateTrainingVolume(volumeNode: Any, role: str = "training volume", tripletStride: int = 1) -> int:
    """Check that a node can be used for training; return its slice axis (IJK).

    Besides :func:`~SemanticInterpolationLib.mrml.logic.validateScalarVolume` (scalar volume, not a label
    map, has voxels) a training triplet needs ``2 * tripletStride + 1`` slices along the slice axis.
    """
    axis = validateScalarVolume(volumeNode, role=role)
    needed = 2 * int(tripletStride) + 1
    count = volumeNode.GetImageData().GetDimensions()[axis]
    if count < needed:
        raise InputError(
            f"the {role} '{volumeNode.GetName()}' has {count} slices along its slice axis {'ijk'[axis]} "
            f"(spacing {volumeNode.GetSpacing()[axis]:g} mm, the largest): a training example is a triplet of "
            f"consecutive slices, so at least {needed} are needed. Choose a volume with more slices")
    return axis


def _safeFileStem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name or "")).strip("._")
    return stem[:60] or "volume"


def exportVolumeNode(volumeNode: Any, path: str | os.PathLike) -> Path:
    """Write a volume node's voxels and geometry (IJK-to-RAS) to ``path`` (e.g. ``.nrrd``).

    Uses the node's default storage node class (the writer Slicer uses for "Save"); the node,
    its storage nodes and the scene are not changed. Parent transforms are not applied.
    """
    path = Path(path).expanduser().absolute()
    storage = volumeNode.CreateDefaultStorageNode()
    if storage is None:
        raise InputError(f"volume '{volumeNode.GetName()}' ({volumeNode.GetClassName()}) cannot be written to a file")
    storage.SetFileName(str(path))
    if hasattr(storage, "SetUseCompression"):
        storage.SetUseCompression(False)  # temporary files: speed over size
    if not storage.WriteData(volumeNode) or not path.is_file():
        raise InputError(f"could not write volume '{volumeNode.GetName()}' to {str(path)!r}: "
                         f"{_storageErrors(storage) or 'the writer failed'}")
    return path


def _storageErrors(storage: Any) -> str:
    messages = getattr(storage, "GetUserMessages", lambda: None)()
    if messages is None or not hasattr(messages, "GetNumberOfMessages"):
        return ""
    return "; ".join(messages.GetNthMessageText(i) for i in range(messages.GetNumberOfMessages()))


def exportVolumeNodes(volumeNodes: Sequence[Any], folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Write each node to ``folder/<prefix><n>_<name>.nrrd`` (unique names); return the paths in order."""
    folder = Path(folder).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return [exportVolumeNode(node, folder / f"{prefix}{index:02d}_{_safeFileStem(node.GetName())}.nrrd")
            for index, node in enumerate(volumeNodes)]


# ---------------------------------------------------------------------------------------------
# Configuration and command line
# ---------------------------------------------------------------------------------------------
def initArgument(init: Any) -> str | None:
    """The ``--init`` value for a GUI value: None (train from scratch) for None, "" or "."."""
    text = str(init or "").strip()
    return None if text in ("", ".") else text


def buildTrainingConfig(settings: TrainingTabSettings, trainingFiles: Sequence[str | os.PathLike],
                        validationFiles: Sequence[str | os.PathLike] = ()):
    """The :class:`~SemanticInterpolationLib.training.TrainingConfig` for the tab's values and exported files."""
    from ..training.trainer import DEFAULT_LEARNING_RATE, TrainingConfig

    output = str(settings.output or "").strip()
    if not output or output == ".":
        raise InputError("choose the output checkpoint file (e.g. clinic-model.pt) in 'Output checkpoint'")
    learningRate = DEFAULT_LEARNING_RATE if settings.learningRate is None else float(settings.learningRate)
    return TrainingConfig(
        training_volumes=[str(p) for p in trainingFiles], output=str(Path(output).expanduser().absolute()),
        validation_volumes=[str(p) for p in validationFiles], init=initArgument(settings.init),
        epochs=int(settings.epochs), steps_per_epoch=int(settings.stepsPerEpoch) if settings.stepsPerEpoch else None,
        batch_size=int(settings.batchSize), patch_size=int(settings.patchSize), learning_rate=learningRate,
        synthesis_loss=str(settings.synthesisLoss).lower(), lam=float(settings.lam),
        triplet_stride=int(settings.tripletStride), seed=int(settings.seed), device=str(settings.device),
        model_type=modelTypeArgument(settings.modelType), max_gap=int(settings.maxGap))


def libraryFolder() -> Path:
    """The folder that holds the ``SemanticInterpolationLib`` package (the module folder in Slicer)."""
    return Path(__file__).resolve().parents[2]


def pythonExecutable() -> str:
    """The Python interpreter for the training process.

    In Slicer: ``PythonSlicer`` (Slicer's Python with Slicer's packages, e.g. torch from the PyTorch
    extension), which Slicer puts on PATH. Elsewhere: the running interpreter.
    """
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    if candidate.is_file():
        return str(candidate)
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    raise InputError("cannot find Slicer's Python executable (PythonSlicer) to run the training process; "
                     "train from a terminal with 'PythonSlicer -m SemanticInterpolationLib.cli.train ...' instead")


def trainingEnvironment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for the training process: ``PYTHONPATH`` starts with :func:`libraryFolder`.

    Returns only the variables to set (merge them into the current environment).
    """
    base = os.environ if base is None else base
    parts = [str(libraryFolder())] + [p for p in str(base.get("PYTHONPATH", "")).split(os.pathsep) if p]
    unique = list(dict.fromkeys(parts))
    return {"PYTHONPATH": os.pathsep.join(unique), "PYTHONUNBUFFERED": "1"}


def trainingCommand(config: Any, stopFile: str | os.PathLike, python: str | None = None) -> list[str]:
    """``[python, "-m", "SemanticInterpolationLib.cli.train", *config.to_cli_args(), "--stop-file", stopFile]``."""
    return [python or pythonExecutable(), "-m", TRAINING_MODULE, *config.to_cli_args(), "--stop-file", str(stopFile)]


def checkTrainingConfig(config: Any) -> str:
    """Run every check of the training package (reads the volumes, trains nothing); return its description.

    Raises :class:`~SemanticInterpolationLib.errors.SemanticInterpolationError` subclasses with the fix.
    """
    from ..training.trainer import Trainer

    trainer = Trainer(config)
    try:
        return trainer.describe()
    finally:
        from ..training.distributed import shutdown

        shutdown(trainer.context)  # no-op for a single process; run() is never called here


def prepareTraining(settings: TrainingTabSettings, workFolder: str | os.PathLike, python: str | None = None,
                    check: bool = True) -> TrainingJob:
    """Check the tab's values, export the volumes, check the configuration and build the command.

    Nothing is started. On any error the files written so far are removed again and an
    :class:`~SemanticInterpolationLib.errors.InputError` (or another
    :class:`~SemanticInterpolationLib.errors.SemanticInterpolationError`) says what to fix.
    ``check=False`` skips the :class:`~SemanticInterpolationLib.training.Trainer` check (it reads the
    files and loads the init checkpoint; the training process repeats it anyway).
    """
    volumes = [v for v in (settings.trainingVolumes or []) if v is not None]
    if not volumes:
        raise InputError("select at least one training volume (Training volumes: check one or more scalar volumes)")
    seen = set()
    for node in volumes:
        if node.GetID() in seen:
            raise InputError(f"training volume '{node.GetName()}' is selected twice")
        seen.add(node.GetID())
        validateTrainingVolume(node, "training volume", settings.tripletStride)
    validation = settings.validationVolume
    if validation is not None:
        validateTrainingVolume(validation, "validation volume", settings.tripletStride)
        if validation.GetID() in seen:
            raise InputError(f"'{validation.GetName()}' is both a training and the validation volume: validation "
                             "must use held-out data (choose another volume, or none)")
    if initArgument(settings.init) not in (None, "default") and not Path(str(settings.init)).expanduser().is_file():
        raise InputError(f"the starting checkpoint {str(settings.init)!r} does not exist: choose a .pt file, or "
                         "train from scratch")

    folder = Path(workFolder).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    trainingFiles: list[Path] = []
    validationFiles: list[Path] = []
    stopFile = folder / "stop-training"
    try:
        stopFile.unlink()  # a stale stop file would end the run at once
    except FileNotFoundError:
        pass
    try:
        for index, node in enumerate(volumes):
            trainingFiles.append(exportVolumeNode(node, folder / f"train{index:02d}_{_safeFileStem(node.GetName())}.nrrd"))
        if validation is not None:
            validationFiles.append(exportVolumeNode(validation, folder / f"validation_{_safeFileStem(validation.GetName())}.nrrd"))
        config = buildTrainingConfig(settings, trainingFiles, validationFiles)
        description = checkTrainingConfig(config) if check else ""
        from ..training.trainer import default_log_path

        logPath = Path(config.log_path) if config.log_path else default_log_path(config.output)
        command = trainingCommand(config, stopFile, python)
    except BaseException:
        for path in trainingFiles + validationFiles:
            path.unlink(missing_ok=True)
        raise
    return TrainingJob(settings=settings, workFolder=folder, trainingFiles=trainingFiles,
                       validationFiles=validationFiles, config=config, command=command,
                       environment=trainingEnvironment(), stopFile=stopFile, logPath=logPath, description=description)


def requestStop(job: TrainingJob) -> None:
    """Ask the training process to stop after its current step (it keeps the last completed epoch)."""
    job.stopFile.parent.mkdir(parents=True, exist_ok=True)
    job.stopFile.write_text("stop\n", encoding="utf-8")


def lpipsAvailability() -> str | None:
    """None when the lpips synthesis loss can be imported, else the reason (for the loss choice's tooltip)."""
    from ..training.losses import lpips_unavailable_reason

    return lpips_unavailable_reason()


# ---------------------------------------------------------------------------------------------
# Parameter node: the list of training volumes as node references
# ---------------------------------------------------------------------------------------------
def setTrainingVolumeReferences(parameterNode: Any, volumeNodes: Sequence[Any]) -> None:
    """Store the training volumes as node references (role :data:`TRAINING_VOLUME_REFERENCE_ROLE`).

    Node references survive saving and loading the scene (node IDs are updated on import).
    """
    ids = [node.GetID() for node in volumeNodes if node is not None]
    if ids == [parameterNode.GetNthNodeReferenceID(TRAINING_VOLUME_REFERENCE_ROLE, n)
               for n in range(parameterNode.GetNumberOfNodeReferences(TRAINING_VOLUME_REFERENCE_ROLE))]:
        return
    wasModifying = parameterNode.StartModify()
    try:
        parameterNode.RemoveNodeReferenceIDs(TRAINING_VOLUME_REFERENCE_ROLE)
        for nodeID in ids:
            parameterNode.AddNodeReferenceID(TRAINING_VOLUME_REFERENCE_ROLE, nodeID)
    finally:
        parameterNode.EndModify(wasModifying)


def trainingVolumeReferences(parameterNode: Any) -> list[Any]:
    """The training volumes stored by :func:`setTrainingVolumeReferences` (removed nodes are skipped)."""
    nodes = []
    for n in range(parameterNode.GetNumberOfNodeReferences(TRAINING_VOLUME_REFERENCE_ROLE)):
        node = parameterNode.GetNthNodeReference(TRAINING_VOLUME_REFERENCE_ROLE, n)
        if node is not None:
            nodes.append(node)
    return nodes


# ---------------------------------------------------------------------------------------------
# The log: progress and status
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingStatus:
    """What the log says so far (see :func:`summarizeTrainingLog`)."""

    started: bool = False
    fraction: float = 0.0  #: share of the run done, 0..1
    epochsDone: int = 0
    epochs: int = 0
    lastLoss: float | None = None
    text: str = ""
    ended: bool = False
    endStatus: str | None = None  #: "finished", "cancelled" or "failed" once ended
    message: str | None = None  #: the error of a failed run
    recommendedCheckpoint: str | None = None  #: best on validation, else the latest checkpoint
    epochRecords: list[dict[str, Any]] = field(default_factory=list)


def summarizeTrainingLog(records: Sequence[Mapping[str, Any]]) -> TrainingStatus:
    """Fraction done, a one-line status text and the end of the run, from log records.

    Only the records after the last ``start`` count (a resumed run appends to the log).
    """
    status = TrainingStatus()
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    current = list(records[starts[-1]:]) if starts else list(records)
    for record in current:
        event = record.get("event")
        if event == "start":
            status.started = True
            status.epochs = int(record.get("epochs") or 0)
            status.epochsDone = int(record.get("first_epoch") or 1) - 1
            status.fraction = status.epochsDone / status.epochs if status.epochs else 0.0
            status.text = f"Started: {record.get('description', '')}".strip()
        elif event == "progress":
            status.fraction = float(record.get("fraction") or status.fraction)
            status.lastLoss = record.get("loss")
            loss = "" if status.lastLoss is None else f", loss {status.lastLoss:.5f}"
            status.text = (f"Epoch {record.get('epoch')}/{record.get('epochs')}, step {record.get('step')}/"
                           f"{record.get('steps')}{loss}")
        elif event == "epoch":
            status.epochRecords.append(dict(record))
            status.epochsDone = int(record.get("epoch") or 0)
            status.epochs = int(record.get("epochs") or status.epochs)
            status.fraction = status.epochsDone / status.epochs if status.epochs else 1.0
            status.lastLoss = record.get("train_loss")
            text = f"Epoch {status.epochsDone}/{status.epochs} done"
            if status.lastLoss is not None:
                text += f": loss {status.lastLoss:.5f}"
            if record.get("val_syn_psnr") is not None:
                text += (f", validation: synthesized {record['val_syn_psnr']:.2f} dB vs linear "
                         f"{record.get('val_linear_psnr', float('nan')):.2f} dB")
            if record.get("best"):
                text += " (best so far)"
            status.text = text
        elif event == "end":
            status.ended = True
            status.endStatus = record.get("status")
            status.message = record.get("message")
            status.recommendedCheckpoint = record.get("recommended_checkpoint") or record.get("checkpoint")
            if status.endStatus == "finished":
                status.fraction = 1.0
                status.text = (f"Finished {record.get('epochs_done', status.epochsDone)} epochs; checkpoint "
                               f"{status.recommendedCheckpoint}")
            elif status.endStatus == "cancelled":
                kept = status.recommendedCheckpoint or "none (no epoch completed)"
                status.text = f"Stopped after epoch {record.get('epochs_done', status.epochsDone)}; kept checkpoint: {kept}"
            else:
                status.text = f"Training failed: {status.message or 'see the process output'}"
    return status


# ---------------------------------------------------------------------------------------------
# The log as MRML table and plot nodes
# ---------------------------------------------------------------------------------------------
def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def trainingLogTables(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """``{"epoch": {column: values}, "progress": {column: values}}`` of the run in ``records``.

    The per-epoch table has :data:`EPOCH_COLUMNS` (missing values NaN); the progress table has the
    running loss at fractional epoch positions (``epoch - 1 + step / steps``), with the epoch ends
    added so the curve runs to the last epoch.
    """
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    current = list(records[starts[-1]:]) if starts else list(records)
    first = int(records[starts[-1]].get("first_epoch") or 1) if starts else 1
    # a resumed run keeps the history before its first epoch; a new run (first epoch 1) has none
    previous = [r for r in (records[:starts[-1]] if starts else [])
                if r.get("event") == "epoch" and int(r.get("epoch") or 0) < first]
    epochs: dict[int, Mapping[str, Any]] = {int(r["epoch"]): r for r in previous}  # a resumed run keeps its history
    progress: list[tuple[float, float]] = []
    for record in current:
        if record.get("event") == "epoch":
            epochs[int(record["epoch"])] = record
        elif record.get("event") == "progress" and record.get("steps"):
            position = int(record["epoch"]) - 1 + float(record["step"]) / float(record["steps"])
            progress.append((position, _number(record.get("loss"))))
    epochTable = {name: [] for name in EPOCH_COLUMNS}
    for number in sorted(epochs):
        record = epochs[number]
        for name in EPOCH_COLUMNS:
            epochTable[name].append(float(number) if name == "epoch" else _number(record.get(name)))
    progress += [(float(n), _number(epochs[n].get("train_loss"))) for n in epochs]
    progress.sort(key=lambda item: item[0])
    progressTable = {"epoch": [p[0] for p in progress], "loss": [p[1] for p in progress]}
    return {"epoch": epochTable, "progress": progressTable}


def fillTableNode(tableNode: Any, columns: Mapping[str, Sequence[float]]) -> None:
    """Replace the table node's content with numeric columns (vtkDoubleArray each, names kept)."""
    table = vtk.vtkTable()
    for name, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        array.SetNumberOfValues(len(values))
        for index, value in enumerate(values):
            array.SetValue(index, float(value))
        table.AddColumn(array)
    wasModifying = tableNode.StartModify()
    try:
        tableNode.SetAndObserveTable(table)
        tableNode.SetUseColumnTitleAsColumnHeader(True)
    finally:
        tableNode.EndModify(wasModifying)


def tableNodeColumns(tableNode: Any) -> dict[str, list]:
    """``{column name: values}`` of a table node (numbers as float, strings as str)."""
    table = tableNode.GetTable()
    result = {}
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        if column.IsA("vtkStringArray"):
            result[column.GetName()] = [column.GetValue(r) for r in range(column.GetNumberOfValues())]
        else:
            result[column.GetName()] = [float(column.GetValue(r)) for r in range(column.GetNumberOfTuples())]
    return result


class TrainingPlot:
    """Table, plot series and chart nodes that show a training log (created in ``scene`` once).

    * :attr:`epochTable` (``"<name> epochs"``): one row per epoch, columns :data:`EPOCH_COLUMNS`;
    * :attr:`progressTable` (``"<name> loss"``): running loss during the epochs;
    * :attr:`lossChart`: running and per-epoch loss (and its reconstruction and synthesis parts) per epoch;
    * :attr:`validationChart`: PSNR of real middle slices of the validation volume, synthesized by
      ASI, by linear interpolation, and reconstructed, per epoch.

    Show a chart in Slicer with ``slicer.modules.plots.logic().ShowChartInLayout(plot.lossChart)``.
    """

    def __init__(self, scene: Any, name: str = "ASI training") -> None:
        self.scene = scene
        self.name = name
        self.epochTable = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} epochs")
        self.progressTable = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} loss")
        fillTableNode(self.epochTable, {c: [] for c in EPOCH_COLUMNS})
        fillTableNode(self.progressTable, {c: [] for c in PROGRESS_COLUMNS})
        tables = {"epoch": self.epochTable, "progress": self.progressTable}
        self.lossChart = self._chart(f"{name}: loss", "loss", LOSS_SERIES, tables)
        self.validationChart = self._chart(f"{name}: validation PSNR", "PSNR (dB)", VALIDATION_SERIES, tables)

    def _chart(self, title: str, yTitle: str, seriesSpecs, tables) -> Any:
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
        chart.SetTitle(title)
        chart.SetXAxisTitle("epoch")
        chart.SetYAxisTitle(yTitle)
        chart.SetLegendVisibility(True)
        for tableKey, column, seriesName, colour in seriesSpecs:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.name}: {seriesName}")
            series.SetAndObserveTableNodeID(tables[tableKey].GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetMarkerStyle(series.MarkerStyleNone if tableKey == "progress" else series.MarkerStyleCircle)
            series.SetColor(*colour)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    @property
    def seriesNodes(self) -> list[Any]:
        """All plot series nodes of both charts."""
        nodes = []
        for chart in (self.lossChart, self.validationChart):
            nodes += [chart.GetNthPlotSeriesNode(n) for n in range(chart.GetNumberOfPlotSeriesNodes())]
        return nodes

    def update(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Refill both tables from the log records (cheap: a few hundred rows at most)."""
        tables = trainingLogTables(records)
        fillTableNode(self.epochTable, tables["epoch"])
        fillTableNode(self.progressTable, tables["progress"])

    def nodes(self) -> list[Any]:
        """Every node this plot created."""
        return [self.epochTable, self.progressTable, self.lossChart, self.validationChart, *self.seriesNodes]
