"""Evaluation of a scene volume (no Qt, no ``slicer.app``): the logic of the module's Evaluate tab.

Same three phases as upsampling (see :mod:`SemanticInterpolationLib.mrml.logic`): :func:`prepareEvaluation`
(main thread: checks, voxels copied out of MRML into a SimpleITK image), :func:`runEvaluationJob`
(any thread: pure numpy/torch, never touches MRML; :class:`BackgroundEvaluation` runs it in a worker
thread that a GUI polls), and :func:`finishEvaluation` (main thread: the summary table node). Console::

    from SemanticInterpolationLib.mrml.evaluation import EvaluationTabSettings, evaluateVolume
    tableNode, job = evaluateVolume(EvaluationTabSettings(volume, factors="2,3,4", methods=("asi", "bspline"),
                                                          checkpoint="/models/asi.pt", outputFolder="/tmp/eval"))
    job.reportFiles["boxplots"]      # the box plots PNG; job.result is the EvaluationResult
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import vtk

from .background import BackgroundTask
from ..errors import InputError, OperationCancelled
from .logic import ijkToRASArray, validateScalarVolume, voxelsFromVolumeNode

#: Methods offered by the Evaluate tab, in display order.
EVALUATION_METHODS = ("asi", "linear", "bspline", "lanczos")
DEFAULT_FACTORS_TEXT = "2,3,4,5,6"


@dataclass
class EvaluationTabSettings:
    """The Evaluate tab's values. ``checkpoint``: path, or None for the bundled default (ASI only).

    ``outputFolder``: where the report (CSV, Markdown, box plots, montage) is written; None = no files
    (the table node is still made; box plots need a folder).
    """

    volume: Any
    factors: str | Sequence[int] = DEFAULT_FACTORS_TEXT
    methods: Sequence[str] = EVALUATION_METHODS
    thickSlices: bool = False
    checkpoint: str | os.PathLike | None = None
    device: str = "auto"
    outputFolder: str | os.PathLike | None = None
    synthesis: str | None = None  #: ASI synthesis mode; None or "auto" = the checkpoint's recommendation
    #: test-time augmentation of pair-unet models; None or "auto" = the checkpoint's recommendation
    testTimeAugmentation: str | None = None
    #: Rician noise added to the kept slices, a fraction of the volume's 99th percentile (0 = none; see
    #: :mod:`..evaluation.simulate`)
    acquisitionNoise: float = 0.0


@dataclass
class EvaluationJob:
    """A prepared evaluation; :func:`runEvaluationJob` fills :attr:`result` and :attr:`reportFiles`."""

    settings: Any  #: the validated EvaluationSettings
    volumeName: str
    image: Any  #: SimpleITK image copied from the volume node
    outputFolder: Path | None
    result: Any = None  #: EvaluationResult
    reportFiles: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def boxPlotFile(self) -> Path | None:
        return self.reportFiles.get("boxplots")

    @property
    def montageFiles(self) -> list[Path]:
        return [path for key, path in self.reportFiles.items() if key.startswith("montage:")]


def sitkImageFromVolumeNode(volumeNode: Any):
    """A SimpleITK image with a copy of the node's voxels and its geometry (RAS converted to LPS).

    Same result as ``sitkUtils.PullVolumeFromSlicer`` for a scalar volume without a parent
    transform, but without Slicer's application (parent transforms are not applied).
    """
    import SimpleITK as sitk

    voxels = voxelsFromVolumeNode(volumeNode)
    image = sitk.GetImageFromArray(voxels)
    ijkToRAS = ijkToRASArray(volumeNode)
    spacing = np.linalg.norm(ijkToRAS[:3, :3], axis=0)
    directions = ijkToRAS[:3, :3] / spacing[np.newaxis, :]
    rasToLPS = np.diag([-1.0, -1.0, 1.0])
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in rasToLPS @ ijkToRAS[:3, 3]])
    image.SetDirection([float(v) for v in (rasToLPS @ directions).ravel()])
    return image


def prepareEvaluation(settings: EvaluationTabSettings) -> EvaluationJob:
    """Check everything before any work and copy the voxels out of MRML (main thread).

    Raises :class:`~SemanticInterpolationLib.errors.InputError` (or ``CheckpointError``) with the fix:
    no or a bad volume (label map, vector volume), bad factors, no method, a volume too short for the
    largest factor, missing scipy/matplotlib, a missing checkpoint for ASI, an unwritable folder.
    """
    from ..engine.synthesis import synthesis_choice
    from ..evaluation import EvaluationSettings, parse_factors, parse_methods, require_dependencies
    from ..evaluation.runner import check_volumes

    require_dependencies(plots=settings.outputFolder is not None)
    validateScalarVolume(settings.volume, role="fine-slice volume")
    factors = parse_factors(settings.factors)
    methods = parse_methods(list(settings.methods or []))
    checkpoint = str(settings.checkpoint).strip() if settings.checkpoint not in (None, "") else None
    if checkpoint in ("", "."):
        checkpoint = None
    evaluationSettings = EvaluationSettings(factors=factors, methods=methods, thick_slices=bool(settings.thickSlices),
                                            checkpoint=checkpoint, device=str(settings.device),
                                            synthesis=synthesis_choice(settings.synthesis),
                                            test_time_augmentation=None if settings.testTimeAugmentation in (None, "auto")
                                            else str(settings.testTimeAugmentation),
                                            acquisition_noise=settings.acquisitionNoise).validated()
    name = settings.volume.GetName() or "volume"
    image = sitkImageFromVolumeNode(settings.volume)
    check_volumes({name: image}, evaluationSettings)
    if "asi" in methods:
        from ..models.checkpoint import resolve_checkpoint

        resolve_checkpoint(checkpoint)  # a missing or damaged checkpoint fails here, not in the thread
    folder = None
    if settings.outputFolder not in (None, ""):
        folder = Path(settings.outputFolder).expanduser().absolute()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the report folder {str(folder)!r}: {error}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"cannot write the report into {str(folder)!r}: no write permission")
    return EvaluationJob(settings=evaluationSettings, volumeName=name, image=image, outputFolder=folder)


def runEvaluationJob(job: EvaluationJob, progress: Callable[[int, int], None] | None = None,
                     shouldCancel: Callable[[], bool] | None = None) -> EvaluationJob:
    """Evaluate and write the report (any thread; never touches MRML)."""
    from ..evaluation import run_evaluation, write_report

    started = time.perf_counter()
    job.result = run_evaluation({job.volumeName: job.image}, job.settings, progress=progress,
                                should_cancel=shouldCancel)
    if shouldCancel is not None and shouldCancel():
        raise OperationCancelled("the evaluation was cancelled")
    if job.outputFolder is not None:
        job.reportFiles = dict(write_report(job.result, job.outputFolder))
    job.seconds = time.perf_counter() - started
    return job


def fillSummaryTableNode(tableNode: Any, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """Replace the table node's content with string columns named by ``header``."""
    table = vtk.vtkTable()
    for c, name in enumerate(header):
        column = vtk.vtkStringArray()
        column.SetName(str(name))
        column.SetNumberOfValues(len(rows))
        for r, row in enumerate(rows):
            column.SetValue(r, str(row[c]))
        table.AddColumn(column)
    wasModifying = tableNode.StartModify()
    try:
        tableNode.SetAndObserveTable(table)
        tableNode.SetUseColumnTitleAsColumnHeader(True)
        tableNode.SetLocked(True)  # results: not for editing
    finally:
        tableNode.EndModify(wasModifying)
    return tableNode


def summaryTableNode(scene: Any, result: Any, name: str | None = None, tableNode: Any = None) -> Any:
    """A table node (new, or ``tableNode`` refilled) holding :func:`~SemanticInterpolationLib.evaluation.summary_table`."""
    from ..evaluation import summary_table
    from ..evaluation.report import model_label

    header, rows = summary_table(result)
    if tableNode is None:
        volumes = ", ".join(result.volumes)
        tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", name or f"{volumes} evaluation")
    fillSummaryTableNode(tableNode, header, rows)
    noise = result.settings.acquisition_noise
    noiseText = f", Rician noise {100 * noise:g} % on the kept slices" if noise else ""
    description = [f"Evaluation of {', '.join(result.volumes)}: factors {', '.join(map(str, result.factors))}, "
                   f"{'thick' if result.settings.thick_slices else 'thin'} slices{noiseText}, {result.seconds:.1f} s."]
    if result.model:
        description.append(f"Model ({model_label(result.model_type)}): {result.model}")
    description += list(result.notes)
    tableNode.SetDescription(" ".join(description))
    return tableNode


def finishEvaluation(job: EvaluationJob, scene: Any, tableNode: Any = None) -> Any:
    """Main thread: the summary table node of a finished job."""
    if job.result is None:
        raise RuntimeError("the evaluation has not run (call runEvaluationJob first)")
    return summaryTableNode(scene, job.result, tableNode=tableNode)


def evaluateVolume(settings: EvaluationTabSettings, tableNode: Any = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[Any, EvaluationJob]:
    """Prepare, run and finish in one call (console, batch): ``(tableNode, job)``."""
    job = prepareEvaluation(settings)
    runEvaluationJob(job, progress=progress)
    return finishEvaluation(job, settings.volume.GetScene(), tableNode), job


class BackgroundEvaluation(BackgroundTask):
    """Runs :func:`runEvaluationJob` in a worker thread for a GUI that polls it (like ``mrml.BackgroundRun``).

    The GUI thread polls :attr:`progress` and :attr:`isRunning`, may :meth:`cancel`, and calls
    :func:`finishEvaluation` once :attr:`isRunning` is False and :attr:`error` is None.
    """

    def __init__(self, job: EvaluationJob) -> None:
        super().__init__(lambda progress, shouldCancel: runEvaluationJob(job, progress=progress, shouldCancel=shouldCancel),
                         "SemanticInterpolation evaluation")
        self.job = job
