"""ASI upsampling of MRML volume nodes and volume sequences (no Qt, no ``slicer.app``).

This is the module logic of the Slicer module ``SemanticInterpolation``. It runs wherever the
MRML Python wrapping does: inside 3D Slicer (GUI, Python console, ``--no-main-window`` batch
jobs) and in plain Python with the ``slicer-core`` package. The scene is always the input
node's scene; ``slicer.mrmlScene`` is never used.

Conventions
-----------
* IJK axes: 0 = i (columns), 1 = j (rows), 2 = k (slices). A volume node's voxel array
  (``slicer.util.arrayFromVolume``) is indexed ``[k, j, i]``, so IJK axis ``a`` is numpy axis
  ``2 - a``.
* Spacing and positions are in millimetres (mm), in the node's RAS space.
* The slice (through-plane) axis is the IJK axis with the largest spacing (ties go to k).
  For ``n`` acquired slices and factor ``K`` the output has ``(n - 1) * K + 1`` slices along it;
  output slice ``s * K`` lies exactly on acquired slice ``s``.
* The output's IJKToRAS matrix is the input's with the slice-axis column divided by ``K``:
  same origin, same directions (oblique volumes stay oblique), spacing ``d / K`` along the
  slice axis.

Threading
---------
:meth:`SemanticInterpolationLogic.upsample` does everything synchronously. A GUI that must
stay responsive splits a run into three phases: :meth:`~SemanticInterpolationLogic.prepareVolumeJob`
(main thread: validates and copies the voxels out of MRML), :meth:`~SemanticInterpolationLogic.runJob`
(any thread: network only, never touches MRML) and :meth:`~SemanticInterpolationLogic.finishJob`
(main thread: creates or fills the output node). Nothing is added to the scene before
``finishJob``, so a failed or cancelled run leaves the scene as it was.

Adaptation to the scan
----------------------
``adapt=SECONDS`` (``upsample``, ``upsampleSequence``, the prepare methods) first fine-tunes the
cached engine's copy of a ``pair-unet`` model on the volume's own acquired slices for at most that
long (see ``SemanticInterpolationLib.training.adaptation``), keeps the result only when it predicts
held-out acquired slices better, upsamples, and restores the engine's weights, so every frame of a
sequence (and every later call) starts from the checkpoint's weights again. The reports are in
``job.adaptations`` (one per frame) and ``logic.lastAdaptation`` / ``logic.lastAdaptations``; each
is logged. An asi checkpoint, fewer than 4 slices or slices under 16x16 pixels fail in the prepare
phase, before any work and before any node is created; a cancelled adaptation creates no node.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import vtk
from vtk.util import numpy_support

from .background import BackgroundTask
from ..errors import CheckpointError, InputError, OperationCancelled
from ..volumes.geometry import choose_slice_axis, numpy_axis, parse_axis

if TYPE_CHECKING:  # pragma: no cover - imported lazily (torch; slicer loads all MRML libraries)
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSequenceNode

    from ..models.checkpoint import Checkpoint
    from ..engine.synthesis import ASIEngine

logger = logging.getLogger("SemanticInterpolation")

#: ``progress(done, total)``: work units done so far out of ``total`` (both int).
ProgressCallback = Callable[[int, int], None]
#: ``shouldCancel()`` returns True to stop; the run then raises :class:`OperationCancelled`.
CancelCallback = Callable[[], bool]

#: Progress units per sequence frame (frames report a fraction of this each).
_UNITS_PER_FRAME = 1000
#: Progress units of each half (adaptation, upsampling) of an adapted volume.
_HALF = 500
_AXIS_NAMES = ("i", "j", "k")
#: Node classes that derive from vtkMRMLScalarVolumeNode but hold no single scalar per voxel.
_NON_SCALAR_VOLUME_CLASSES = (
    "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLTensorVolumeNode",  # also vtkMRMLVectorVolumeNode and vtkMRMLDiffusionTensorVolumeNode
    "vtkMRMLDiffusionWeightedVolumeNode",
)


# ---------------------------------------------------------------------------------------------
# Jobs: everything a run needs, copied out of MRML so the compute phase can run in a thread
# ---------------------------------------------------------------------------------------------
@dataclass
class FrameInput:
    """One 3-D volume to upsample: a copy of its voxels and its geometry."""

    name: str
    voxels: np.ndarray  #: copy of the voxel array, ``[k, j, i]``
    ijkToRAS: np.ndarray  #: 4x4 IJK-to-RAS matrix of the input (mm)
    sliceAxis: int  #: IJK axis (0 = i, 1 = j, 2 = k) that is upsampled
    indexValue: str = ""  #: sequence index value (sequences only)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing along i, j, k in mm."""
        return tuple(float(np.linalg.norm(self.ijkToRAS[:3, a])) for a in range(3))  # type: ignore[return-value]


@dataclass
class UpsamplingJob:
    """A prepared run (see the module docstring for the three phases).

    Created by :meth:`SemanticInterpolationLogic.prepareVolumeJob` or
    :meth:`SemanticInterpolationLogic.prepareSequenceJob`; ``runJob`` fills :attr:`results`;
    ``finishJob`` turns them into nodes.
    """

    kind: str  #: "volume" or "sequence"
    inputNode: Any  #: the input vtkMRMLScalarVolumeNode or vtkMRMLSequenceNode
    factor: int
    frames: list[FrameInput]
    checkpoint: Any  #: path (str), Checkpoint, or None for the bundled default
    device: str
    keepAcquiredSlices: bool
    batchSize: int | None  #: None = the engine's default for the device
    synthesis: str | None = None  #: engine synthesis mode; None = the one the checkpoint recommends
    adapt: float | None = None  #: seconds of adaptation to each frame before upsampling it; None = no adaptation
    adaptSteps: int | None = None  #: with ``adapt``: also stop after this many steps (None = time budget only)
    adaptSeed: int = 0  #: with ``adapt``: random seed of the adaptation
    #: slice thickness in mm for networks with a slice-profile input; "auto" = estimated per frame; None = not told
    sliceThickness: Any = "auto"
    testTimeAugmentation: str = "auto"  #: engine test-time augmentation; "auto" = the checkpoint's recommendation
    outputNode: Any = None  #: caller-given output volume (volumes only) or None for a new node
    createBrowser: bool = True  #: sequences: set up a sequence browser for the result
    results: list[np.ndarray] = field(default_factory=list)
    engineDescription: str = ""  #: device and settings used, filled by ``runJob``
    seconds: float = 0.0  #: compute time of ``runJob``
    #: ``training.adaptation.AdaptationReport`` of each frame adapted to (filled by ``runJob`` with ``adapt``)
    adaptations: list[Any] = field(default_factory=list)

    @property
    def outputName(self) -> str:
        """Name given to a new output node, e.g. ``"cine ASI x4"``."""
        return upsampledName(self.inputNode.GetName(), self.factor)

    def adaptationSummary(self) -> str:
        """The adaptation reports as text (held-out scores before/after/linear/B-spline, kept or declined);
        "" when the job did not adapt. Sequences: one block per frame, headed by its index value."""
        if not self.adaptations:
            return ""
        if self.kind == "volume":
            return self.adaptations[0].summary()
        kept = sum(1 for report in self.adaptations if report.accepted)
        lines = [f"adapted to {len(self.adaptations)} frame(s): kept the adapted model for {kept}, "
                 f"the original for {len(self.adaptations) - kept}"]
        for frame, report in zip(self.frames, self.adaptations):
            lines.append(f"frame {frame.indexValue or frame.name}: {report.summary()}")
        return "\n".join(lines)


def upsampledName(inputName: str | None, factor: int) -> str:
    """Name of an upsampled node: ``"<input name> ASI x<factor>"``."""
    return f"{inputName or 'Volume'} ASI x{factor}"


@dataclass(frozen=True)
class CheckpointInfo:
    """What the GUI shows of a checkpoint: its model type and architecture (see :func:`describeCheckpoint`)."""

    path: str | None  #: the file (None for a checkpoint in memory)
    modelType: str  #: registry name, e.g. "asi" or "pair-unet"
    architecture: str  #: the configuration's name, e.g. "pair-unet-24-48-96"
    details: str = ""  #: the network's own one-line description
    adaptable: bool = False  #: ``adapt=`` can be used with it

    def label(self) -> str:
        """E.g. ``"pair-unet (pair-unet-24-48-96)"``."""
        return f"{self.modelType} ({self.architecture})" if self.architecture else self.modelType


_checkpointInfoCache: dict[tuple, CheckpointInfo] = {}
_checkpointInfoLock = threading.Lock()


def describeCheckpoint(checkpoint: Any) -> CheckpointInfo:
    """Model type and architecture of a checkpoint path (or a loaded Checkpoint).

    A file is read once with ``torch.load(weights_only=True)`` (through
    ``models.checkpoint.load_checkpoint``, which never runs code from it) and remembered by path,
    modification time and size. Raises :class:`CheckpointError` for a missing or unreadable file.
    """
    from ..models.checkpoint import Checkpoint, load_checkpoint
    from ..training.adaptation import ADAPTABLE_TYPES

    def info(loaded: Checkpoint, path: str | None) -> CheckpointInfo:
        describe = getattr(loaded.model, "describe_architecture", None)
        return CheckpointInfo(path=path, modelType=loaded.model_type,
                              architecture=str(getattr(loaded.config, "name", "") or ""),
                              details=describe() if callable(describe) else "",
                              adaptable=loaded.model_type in ADAPTABLE_TYPES)

    if isinstance(checkpoint, Checkpoint):
        return info(checkpoint, checkpoint.path)
    path = Path(os.fspath(checkpoint)).expanduser()
    try:
        stat = path.stat()
    except OSError:
        raise CheckpointError(f"checkpoint file '{path}' does not exist or is not a file: choose an existing .pt file")
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _checkpointInfoLock:
        cached = _checkpointInfoCache.get(key)
    if cached is not None:
        return cached
    result = info(load_checkpoint(path), key[0])
    with _checkpointInfoLock:
        if len(_checkpointInfoCache) >= 16:  # a long session picks many files (and rewrites them): stay small
            _checkpointInfoCache.clear()
        _checkpointInfoCache[key] = result
    return result


# ---------------------------------------------------------------------------------------------
# Geometry and conversion helpers (MRML <-> numpy)
# ---------------------------------------------------------------------------------------------
def matrixToArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """4x4 numpy array from a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def arrayToMatrix(values: np.ndarray) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4 from a 4x4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(values[r, c]))
    return matrix


def ijkToRASArray(volumeNode: Any) -> np.ndarray:
    """The volume node's IJK-to-RAS matrix (mm) as a 4x4 numpy array (transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def upsampledIJKToRAS(ijkToRAS: np.ndarray, sliceAxis: int, factor: int) -> np.ndarray:
    """IJK-to-RAS of the upsampled grid: column ``sliceAxis`` (IJK) divided by ``factor``.

    The origin and the axis directions are kept, so output voxel ``s * factor`` along the slice
    axis is at the position of input voxel ``s``; oblique volumes stay oblique.
    """
    result = np.array(ijkToRAS, dtype=float, copy=True)
    result[:3, sliceAxis] /= float(factor)
    return result


def voxelsFromVolumeNode(volumeNode: Any) -> np.ndarray:
    """A *copy* of the node's voxels as a ``[k, j, i]`` array (the node is not modified)."""
    imageData = volumeNode.GetImageData()
    scalars = imageData.GetPointData().GetScalars()
    dims = imageData.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]).copy()


def imageDataFromVoxels(voxels: np.ndarray) -> vtk.vtkImageData:
    """New vtkImageData (origin 0, spacing 1, as MRML volume nodes keep it) holding a copy of a ``[k, j, i]`` array."""
    if voxels.ndim != 3:
        raise InputError(f"expected a 3-D [k, j, i] array, got shape {voxels.shape}")
    contiguous = np.ascontiguousarray(voxels)
    scalars = numpy_support.numpy_to_vtk(contiguous.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(int(voxels.shape[2]), int(voxels.shape[1]), int(voxels.shape[0]))
    imageData.GetPointData().SetScalars(scalars)
    return imageData


def sliceAxisOfVolume(volumeNode: Any, sliceAxis: int | str | None = "auto") -> int:
    """IJK axis to upsample: ``"auto"`` = the axis with the largest spacing (ties go to k)."""
    spacing = volumeNode.GetSpacing()
    if sliceAxis is None or (isinstance(sliceAxis, str) and sliceAxis.strip().lower() == "auto"):
        return choose_slice_axis(spacing)
    return parse_axis(sliceAxis, spacing)


def _describeNode(node: Any) -> str:
    return f"'{node.GetName()}' ({node.GetClassName()})"


def validateScalarVolume(volumeNode: Any, role: str = "input volume", sliceAxis: int | str | None = "auto") -> int:
    """Check that ``volumeNode`` can be upsampled; return its slice axis (IJK).

    Raises :class:`InputError` naming the problem and the fix for: no node, a node that is
    not a scalar volume, a label map, a vector/tensor/diffusion volume, no voxels, more than
    one component per voxel, or fewer than 2 slices along the slice axis.
    """
    if volumeNode is None:
        raise InputError(f"no {role} given: select a scalar volume")
    if not hasattr(volumeNode, "IsA") or not volumeNode.IsA("vtkMRMLVolumeNode"):
        what = volumeNode.GetClassName() if hasattr(volumeNode, "GetClassName") else type(volumeNode).__name__
        raise InputError(f"the {role} must be a scalar volume node (vtkMRMLScalarVolumeNode), got a {what}")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} is a label map: ASI synthesizes image intensities and "
            "would turn labels into meaningless values. Upsample the intensity image instead (or, if the "
            "values really are intensities, convert it with Volumes > Convert to scalar volume)"
        )
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or any(volumeNode.IsA(c) for c in _NON_SCALAR_VOLUME_CLASSES):
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} is not a scalar volume: ASI upsamples single-component "
            "(grey-value) MRI. Extract one component first (e.g. Vector to Scalar Volume module)"
        )
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData() is None or imageData.GetPointData().GetScalars() is None:
        raise InputError(f"the {role} {_describeNode(volumeNode)} has no voxels: load or compute its image first")
    components = imageData.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} has {components} components per voxel (a vector/RGB image): "
            "ASI needs one grey value per voxel. Extract one component first (e.g. Vector to Scalar Volume module)"
        )
    dims = imageData.GetDimensions()
    if min(dims) < 1:
        raise InputError(f"the {role} {_describeNode(volumeNode)} is empty (dimensions {dims})")
    axis = sliceAxisOfVolume(volumeNode, sliceAxis)
    if dims[axis] < 2:
        spacing = volumeNode.GetSpacing()
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} has only {dims[axis]} slice along its slice axis "
            f"{_AXIS_NAMES[axis]} (spacing {spacing[axis]:g} mm, the largest): there is nothing to interpolate "
            "between. ASI needs at least 2 acquired slices; use a multi-slice volume"
        )
    return axis


def _checkFinite(voxels: np.ndarray, role: str) -> None:
    """Refuse NaN/Inf voxels, naming the node (and the frame of a sequence) in ``role``."""
    if voxels.dtype.kind == "f" and not np.isfinite(voxels).all():
        bad = int(voxels.size - np.count_nonzero(np.isfinite(voxels)))
        raise InputError(f"the {role} contains {bad} NaN or infinite voxel(s): replace them (e.g. with 0 or the "
                         "background value) first")


def validateAdaptableVolume(volumeNode: Any, role: str = "input volume", sliceAxis: int | None = None) -> int:
    """Check that a scalar volume (already checked by :func:`validateScalarVolume`) can be adapted to.

    Adaptation trains on triplets of acquired slices and checks on held-out ones, so it needs at
    least 4 slices along the slice axis, and slices of at least 16 x 16 pixels. Raises
    :class:`InputError` naming the problem and the fix; returns the slice axis (IJK).
    """
    from ..training.adaptation import MIN_SLICE_SIZE

    axis = sliceAxisOfVolume(volumeNode) if sliceAxis is None else int(sliceAxis)
    dims = volumeNode.GetImageData().GetDimensions()
    if dims[axis] < 4:
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} has {dims[axis]} slices along its slice axis {_AXIS_NAMES[axis]}: "
            "adaptation to the scan needs at least 4 acquired slices (training triplets and a held-out one). "
            "Upsample without adaptation")
    inPlane = [dims[a] for a in range(3) if a != axis]
    if min(inPlane) < MIN_SLICE_SIZE:
        raise InputError(
            f"the {role} {_describeNode(volumeNode)} has slices of {inPlane[0]} x {inPlane[1]} pixels: adaptation to "
            f"the scan needs at least {MIN_SLICE_SIZE} x {MIN_SLICE_SIZE}. Upsample without adaptation")
    return axis


def _copyDisplaySettings(source: Any, target: Any) -> None:
    """Copy window/level, thresholds, interpolation and colour table between scalar volume display nodes."""
    if source is None or target is None:
        return
    if not (source.IsA("vtkMRMLScalarVolumeDisplayNode") and target.IsA("vtkMRMLScalarVolumeDisplayNode")):
        return
    wasModifying = target.StartModify()
    try:
        if source.GetColorNodeID():
            target.SetAndObserveColorNodeID(source.GetColorNodeID())
        target.SetAutoWindowLevel(source.GetAutoWindowLevel())
        if not source.GetAutoWindowLevel():
            target.SetWindowLevel(source.GetWindow(), source.GetLevel())
        target.SetInterpolate(source.GetInterpolate())
        target.SetAutoThreshold(source.GetAutoThreshold())
        target.SetApplyThreshold(source.GetApplyThreshold())
        if not source.GetAutoThreshold():
            target.SetThreshold(source.GetLowerThreshold(), source.GetUpperThreshold())
    finally:
        target.EndModify(wasModifying)


def _fillVolumeNode(node: Any, voxels: np.ndarray, ijkToRAS: np.ndarray, name: str | None = None,
                    transformNodeID: str | None = None) -> None:
    """Set a volume node's voxels and geometry in one modification (everything built first)."""
    imageData = imageDataFromVoxels(voxels)
    matrix = arrayToMatrix(ijkToRAS)
    wasModifying = node.StartModify()
    try:
        if name is not None:
            node.SetName(name)
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveImageData(imageData)
        if transformNodeID is not None or node.GetTransformNodeID():
            node.SetAndObserveTransformNodeID(transformNodeID)
    finally:
        node.EndModify(wasModifying)


def _removeNodeAndDependents(scene: Any, node: Any) -> None:
    """Remove a node we created, with its display and storage nodes."""
    if scene is None or node is None or node.GetScene() is not scene:
        return
    dependents = []
    for getter in ("GetNumberOfDisplayNodes", "GetNumberOfStorageNodes"):
        if hasattr(node, getter):
            count = getattr(node, getter)()
            nth = getattr(node, "GetNthDisplayNode" if "Display" in getter else "GetNthStorageNode")
            dependents += [nth(i) for i in range(count)]
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)
    scene.RemoveNode(node)


# ---------------------------------------------------------------------------------------------
# The logic
# ---------------------------------------------------------------------------------------------
class SemanticInterpolationLogic:
    """Upsample MRML scalar volumes and volume sequences through-plane with the ASI autoencoder.

    Public API (Python console, batch scripts, the Slicer module)::

        from SemanticInterpolationLib import SemanticInterpolationLogic
        logic = SemanticInterpolationLogic()
        outputVolume = logic.upsample(inputVolume, 4)                     # bundled default model
        outputVolume = logic.upsample(inputVolume, 4, checkpoint="/path/model.pt", device="cpu")
        outputSequence = logic.upsampleSequence(cineSequence, 4, checkpoint="/path/model.pt")

    The model is loaded once and kept (for the same checkpoint, device and batch size), so
    repeated calls and all frames of a sequence share it. Inputs are never modified.

    With ``adapt=SECONDS`` (pair-unet and profile-routed checkpoints) the model is first adapted to each volume (see the
    module docstring); the reports of the latest run are :attr:`lastAdaptation` (the last frame's,
    or None) and :attr:`lastAdaptations` (one per frame)::

        outputVolume = logic.upsample(inputVolume, 4, checkpoint="/path/pair-unet.pt", adapt=120)
        print(logic.lastAdaptation.summary())
    """

    #: Slices per encoder/decoder call unless a call says otherwise (bounds memory);
    #: None = the engine's measured default for the device (2 on the CPU, 128 on CUDA).
    defaultBatchSize: int | None = None

    def __init__(self, *, batchSize: int | None = None, precision: str = "auto") -> None:
        super().__init__()
        self.batchSize = int(batchSize) if batchSize is not None else self.defaultBatchSize
        self.precision = precision
        self._engine: ASIEngine | None = None
        self._engineKey: tuple | None = None
        self._engineLock = threading.Lock()
        #: ``AdaptationReport`` of the last frame adapted to by the latest run (None: it did not adapt)
        self.lastAdaptation: Any = None
        #: the latest run's reports, one per frame (empty: it did not adapt)
        self.lastAdaptations: list[Any] = []

    # ----------------------------------------------------------------- one-call API
    def upsample(
        self,
        inputVolume: vtkMRMLScalarVolumeNode,
        factor: int,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        device: str = "auto",
        outputVolume: vtkMRMLScalarVolumeNode | None = None,
        keepAcquiredSlices: bool = True,
        progress: ProgressCallback | None = None,
        shouldCancel: CancelCallback | None = None,
        batchSize: int | None = None,
        sliceAxis: int | str = "auto",
        synthesis: str | None = None,
        adapt: float | None = None,
        adaptSteps: int | None = None,
        adaptSeed: int = 0,
        sliceThickness: float | str | None = "auto",
        testTimeAugmentation: str = "auto",
    ) -> vtkMRMLScalarVolumeNode:
        """Upsample a scalar volume node by ``factor`` along its slice axis; return the output node.

        :param inputVolume: vtkMRMLScalarVolumeNode in a scene (not modified).
        :param factor: whole number >= 2; the slice spacing (mm) is divided by it and
            ``n`` slices become ``(n - 1) * factor + 1``.
        :param checkpoint: model file path, a loaded Checkpoint, or None for the bundled default.
        :param device: "auto" (GPU if there is one), "cpu", "cuda"/"gpu", "cuda:N" or "mps".
        :param outputVolume: existing vtkMRMLScalarVolumeNode to overwrite (keeps its name),
            or None to add a new node named ``"<input> ASI x<factor>"``.
        :param keepAcquiredSlices: copy the acquired slices unchanged (default) instead of
            replacing them with the autoencoder's reconstruction.
        :param progress: ``progress(done, total)`` called as work proceeds.
        :param shouldCancel: returns True to stop; then :class:`OperationCancelled` is raised.
        :param batchSize: slices per network call (default: the logic's ``batchSize``).
        :param sliceAxis: "auto" (largest spacing) or the IJK axis 0, 1, 2.
        :param synthesis: how new slices are made (``SemanticInterpolationLib.engine``): "plain" (the
            paper: the decoded latent mix), "residual" or "residual-bspline" (a learned correction added
            to linear or cubic B-spline interpolation); None or "auto" = the mode the checkpoint
            recommends (the bundled model: residual-bspline).
        :param adapt: seconds (> 0) to adapt the model to this volume first (pair-unet and profile-routed checkpoints; the
            adapted weights are used only when they predict held-out acquired slices better); None = no
            adaptation. The report is :attr:`lastAdaptation` (also logged); the checkpoint and the cached
            model are not changed.
        :param adaptSteps: with ``adapt``: also stop after this many steps (a run that ends here is
            deterministic for a given ``adaptSeed``).
        :param adaptSeed: with ``adapt``: random seed of the adaptation.
        :param sliceThickness: for models with a slice-profile input (the bundled default): the acquisition's
            slice thickness in mm (e.g. DICOM Slice Thickness, 0018,0050), ``"auto"`` (default: estimated from
            each frame, since volume nodes do not carry it) or None (the model is not told).
        :param testTimeAugmentation: pair-unet models: "none", "pair" (the pair in both orders, 2x the time),
            "pair-flip" (also mirrored in-plane, 4x), "dihedral" (all eight in-plane turns and mirrors, 16x)
            or "auto" (the checkpoint's recommendation; the bundled default: pair-flip).
        :returns: the output vtkMRMLScalarVolumeNode, in the input's scene, with the input's
            parent transform and display settings.
        :raises InputError, CheckpointError, DeviceError: bad input, before any node is created (also an
            ``adapt`` with an asi checkpoint, or a volume of fewer than 4 slices).
        :raises OperationCancelled: when ``shouldCancel`` asked to stop (no node is left behind).
        """
        job = self.prepareVolumeJob(inputVolume, factor, checkpoint=checkpoint, device=device,
                                    outputVolume=outputVolume, keepAcquiredSlices=keepAcquiredSlices,
                                    batchSize=batchSize, sliceAxis=sliceAxis, synthesis=synthesis,
                                    adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed,
                                    sliceThickness=sliceThickness, testTimeAugmentation=testTimeAugmentation)
        self.runJob(job, progress=progress, shouldCancel=shouldCancel)
        return self.finishJob(job)

    def upsampleSequence(
        self,
        inputSequence: vtkMRMLSequenceNode,
        factor: int,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        device: str = "auto",
        keepAcquiredSlices: bool = True,
        progress: ProgressCallback | None = None,
        shouldCancel: CancelCallback | None = None,
        batchSize: int | None = None,
        sliceAxis: int | str = "auto",
        synthesis: str | None = None,
        createBrowser: bool = True,
        adapt: float | None = None,
        adaptSteps: int | None = None,
        adaptSeed: int = 0,
        sliceThickness: float | str | None = "auto",
        testTimeAugmentation: str = "auto",
    ) -> vtkMRMLSequenceNode:
        """Upsample every frame of a volume sequence (e.g. cardiac cine) into a new sequence node.

        :param inputSequence: vtkMRMLSequenceNode whose data nodes are scalar volumes (not modified).
        :param createBrowser: also add a sequence browser node (with a proxy volume that shows
            the result) for the new sequence.
        :returns: a new vtkMRMLSequenceNode named ``"<input> ASI x<factor>"`` with the same index
            name, unit, type and values; frame ``n`` is frame ``n`` of the input upsampled.
            The model is loaded once for all frames.
        :param adapt: adapt the model to each frame for at most this many seconds before upsampling it;
            the engine goes back to the checkpoint's weights between frames, so every frame is adapted
            from the same start. :attr:`lastAdaptations` holds one report per frame.

        Other arguments as in :meth:`upsample`.
        """
        job = self.prepareSequenceJob(inputSequence, factor, checkpoint=checkpoint, device=device,
                                      keepAcquiredSlices=keepAcquiredSlices, batchSize=batchSize,
                                      sliceAxis=sliceAxis, createBrowser=createBrowser, synthesis=synthesis,
                                      adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed,
                                    sliceThickness=sliceThickness, testTimeAugmentation=testTimeAugmentation)
        self.runJob(job, progress=progress, shouldCancel=shouldCancel)
        return self.finishJob(job)

    # ----------------------------------------------------------------- phase 1: prepare (main thread)
    def prepareVolumeJob(
        self,
        inputVolume: vtkMRMLScalarVolumeNode,
        factor: int,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        device: str = "auto",
        outputVolume: vtkMRMLScalarVolumeNode | None = None,
        keepAcquiredSlices: bool = True,
        batchSize: int | None = None,
        sliceAxis: int | str = "auto",
        synthesis: str | None = None,
        adapt: float | None = None,
        adaptSteps: int | None = None,
        adaptSeed: int = 0,
        sliceThickness: float | str | None = "auto",
        testTimeAugmentation: str = "auto",
    ) -> UpsamplingJob:
        """Validate everything and copy the input voxels; nothing is created or modified."""
        axis = validateScalarVolume(inputVolume, "input volume", sliceAxis)
        scene = inputVolume.GetScene()
        if scene is None:
            raise InputError(f"the input volume {_describeNode(inputVolume)} is not in a scene: add it to one first")
        if outputVolume is not None:
            self._validateOutputVolume(outputVolume, inputVolume)
        common = self.validateSettings(factor, checkpoint, device, batchSize, keepAcquiredSlices, synthesis,
                                       adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed,
                                    sliceThickness=sliceThickness, testTimeAugmentation=testTimeAugmentation)
        if common["adapt"] is not None:
            validateAdaptableVolume(inputVolume, "input volume", axis)
        frame = FrameInput(inputVolume.GetName() or "Volume", voxelsFromVolumeNode(inputVolume),
                           ijkToRASArray(inputVolume), axis)
        _checkFinite(frame.voxels, f"input volume {_describeNode(inputVolume)}")
        return UpsamplingJob(kind="volume", inputNode=inputVolume, frames=[frame], outputNode=outputVolume, **common)

    def prepareSequenceJob(
        self,
        inputSequence: vtkMRMLSequenceNode,
        factor: int,
        checkpoint: str | os.PathLike | Checkpoint | None = None,
        device: str = "auto",
        keepAcquiredSlices: bool = True,
        batchSize: int | None = None,
        sliceAxis: int | str = "auto",
        synthesis: str | None = None,
        createBrowser: bool = True,
        adapt: float | None = None,
        adaptSteps: int | None = None,
        adaptSeed: int = 0,
        sliceThickness: float | str | None = "auto",
        testTimeAugmentation: str = "auto",
    ) -> UpsamplingJob:
        """Validate a volume sequence and copy all frames' voxels; nothing is created or modified."""
        if inputSequence is None or not hasattr(inputSequence, "IsA") or not inputSequence.IsA("vtkMRMLSequenceNode"):
            what = inputSequence.GetClassName() if hasattr(inputSequence, "GetClassName") else type(inputSequence).__name__
            raise InputError(f"the input must be a sequence node (vtkMRMLSequenceNode) of scalar volumes, got {what}")
        if inputSequence.GetScene() is None:
            raise InputError(f"the input sequence {_describeNode(inputSequence)} is not in a scene: add it to one first")
        count = inputSequence.GetNumberOfDataNodes()
        if count < 1:
            raise InputError(f"the input sequence {_describeNode(inputSequence)} has no frames")
        frames = []
        checked = []
        for index in range(count):
            frameNode = inputSequence.GetNthDataNode(index)
            indexValue = inputSequence.GetNthIndexValue(index)
            role = f"frame {index} (index value {indexValue}) of sequence '{inputSequence.GetName()}'"
            axis = validateScalarVolume(frameNode, role, sliceAxis)
            checked.append((frameNode, role, axis))
        common = self.validateSettings(factor, checkpoint, device, batchSize, keepAcquiredSlices, synthesis,
                                       adapt=adapt, adaptSteps=adaptSteps, adaptSeed=adaptSeed,
                                    sliceThickness=sliceThickness, testTimeAugmentation=testTimeAugmentation)
        for index, (frameNode, role, axis) in enumerate(checked):
            if common["adapt"] is not None:
                validateAdaptableVolume(frameNode, role, axis)
            frames.append(FrameInput(frameNode.GetName() or f"frame {index}", voxelsFromVolumeNode(frameNode),
                                     ijkToRASArray(frameNode), axis, inputSequence.GetNthIndexValue(index)))
            _checkFinite(frames[-1].voxels, role)
        return UpsamplingJob(kind="sequence", inputNode=inputSequence, frames=frames,
                             createBrowser=createBrowser, **common)

    def _validateOutputVolume(self, outputVolume: Any, inputVolume: Any) -> None:
        if not hasattr(outputVolume, "IsA") or not outputVolume.IsA("vtkMRMLScalarVolumeNode") or any(
                outputVolume.IsA(c) for c in _NON_SCALAR_VOLUME_CLASSES):
            what = outputVolume.GetClassName() if hasattr(outputVolume, "GetClassName") else type(outputVolume).__name__
            raise InputError(f"the output volume must be a scalar volume node (vtkMRMLScalarVolumeNode), got a {what}; "
                             "pass outputVolume=None to create a new one")
        if outputVolume.GetScene() is not inputVolume.GetScene():  # first: node IDs repeat across scenes
            raise InputError(f"the output volume {_describeNode(outputVolume)} is in another scene than the input "
                             f"volume {_describeNode(inputVolume)}: choose an output volume of the input's scene, or "
                             "None to create a new one")
        if outputVolume is inputVolume or (outputVolume.GetID() and outputVolume.GetID() == inputVolume.GetID()):
            raise InputError("the output volume is the input volume: the input is never overwritten. "
                             "Choose another output volume or None to create a new one")

    def validateSettings(self, factor: int, checkpoint: Any = None, device: str = "auto", batchSize: int | None = None,
                         keepAcquiredSlices: bool = True, synthesis: str | None = None, *, adapt: float | None = None,
                         adaptSteps: int | None = None, adaptSeed: int = 0,
                         sliceThickness: float | str | None = "auto",
                         testTimeAugmentation: str = "auto") -> dict[str, Any]:
        """Check the settings shared by volumes and sequences; return them as UpsamplingJob fields.

        Raises InputError (factor, batch size, synthesis mode, adaptation settings, ``adapt`` with a
        checkpoint whose model type cannot be adapted), CheckpointError (no such file, no default
        model, unreadable file when ``adapt`` is given) or DeviceError (device not available). Batch
        jobs call it once before the first file.
        """
        from ..engine.synthesis import synthesis_choice, validate_factor  # imports torch, so only on use

        factor = validate_factor(factor)
        mode = synthesis_choice(synthesis)
        batch = self.batchSize if batchSize is None else batchSize
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
            raise InputError(f"batch size must be a positive whole number, got {batch!r}")
        resolved = self._validateCheckpoint(checkpoint)
        seconds, steps, seed = self._validateAdaptation(adapt, adaptSteps, adaptSeed, resolved)
        return {
            "factor": factor,
            "checkpoint": resolved,
            "device": self._validateDevice(device),
            "keepAcquiredSlices": bool(keepAcquiredSlices),
            "batchSize": None if batch is None else int(batch),
            "synthesis": mode,
            "adapt": seconds,
            "adaptSteps": steps,
            "adaptSeed": seed,
            "sliceThickness": self._validateSliceThickness(sliceThickness),
            "testTimeAugmentation": self._validateTestTimeAugmentation(testTimeAugmentation, resolved),
        }

    @staticmethod
    def _validateTestTimeAugmentation(mode: Any, checkpoint: Any) -> str:
        """``"auto"`` or a mode of ``engine.test_time_augmentation`` that the checkpoint's model type takes."""
        from ..engine.test_time_augmentation import TTA_MODES, validate_tta

        if not isinstance(mode, str) or mode not in TTA_MODES or mode == "none":
            return validate_tta(mode, None, allow_auto=True)  # the mode alone: no network needed
        info = describeCheckpoint(checkpoint)
        return validate_tta(mode, info.modelType, allow_auto=True, subject=f"the checkpoint {info.path or 'in memory'}",
                            fix="choose auto or none")

    @staticmethod
    def _validateSliceThickness(sliceThickness: Any) -> float | str | None:
        """``"auto"``, None or a positive finite number of mm (returned as float)."""
        if sliceThickness is None or (isinstance(sliceThickness, str) and sliceThickness == "auto"):
            return sliceThickness
        if isinstance(sliceThickness, bool) or not isinstance(sliceThickness, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(sliceThickness)) or float(sliceThickness) <= 0:
            raise InputError(f"slice thickness must be a positive number of mm, 'auto' (estimated from the scan) or "
                             f"None (not told to the model), got {sliceThickness!r}")
        return float(sliceThickness)

    @staticmethod
    def _validateAdaptation(adapt: Any, adaptSteps: Any, adaptSeed: Any, checkpoint: Any) -> tuple:
        """``(seconds or None, steps or None, seed)`` for the job; the checkpoint must be of an adaptable type."""
        if adapt is None:
            if adaptSteps is not None:
                raise InputError("adaptSteps applies with adapt=SECONDS only")
            return None, None, 0
        if isinstance(adapt, bool) or not isinstance(adapt, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(adapt)) or not 0 < float(adapt) <= 24 * 3600:
            raise InputError(f"the adaptation time must be a number of seconds above 0 (at most a day), got {adapt!r}")
        if adaptSteps is not None and (isinstance(adaptSteps, bool) or not isinstance(adaptSteps, (int, np.integer))
                                       or adaptSteps < 1):
            raise InputError(f"adaptation steps must be a whole number >= 1, got {adaptSteps!r}")
        if isinstance(adaptSeed, bool) or not isinstance(adaptSeed, (int, np.integer)):
            raise InputError(f"the adaptation seed must be a whole number, got {adaptSeed!r}")
        info = describeCheckpoint(checkpoint)
        if not info.adaptable:
            from ..training.adaptation import ADAPTABLE_TYPES

            raise InputError(
                f"adaptation to the scan is available for {', '.join(ADAPTABLE_TYPES)} models; the checkpoint "
                f"{info.path or 'in memory'} is a {info.modelType} model ({info.label()}). Upsample without "
                "adaptation, or choose a pair-unet or profile-routed checkpoint (the bundled default)")
        return float(adapt), None if adaptSteps is None else int(adaptSteps), int(adaptSeed)

    @staticmethod
    def _validateCheckpoint(checkpoint: Any) -> Any:
        """The checkpoint to load later: a Checkpoint as is, or an existing file path (str)."""
        from ..models.checkpoint import DEFAULT_CHECKPOINT_ENV, Checkpoint, find_default_checkpoint

        if isinstance(checkpoint, Checkpoint):
            return checkpoint
        if checkpoint is None or str(checkpoint).strip() == "":
            default = find_default_checkpoint()
            if default is None:
                raise CheckpointError(
                    "no model checkpoint given and no default model is installed: choose a checkpoint file "
                    f"(.pt) trained for ASI, or install the default one (or set {DEFAULT_CHECKPOINT_ENV})"
                )
            return str(default)
        path = Path(os.fspath(checkpoint)).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint file '{path}' does not exist or is not a file: choose an existing .pt file")
        return str(path.resolve())

    @staticmethod
    def _validateDevice(device: Any) -> str:
        from ..engine.devices import resolve_device

        name = "auto" if device is None else str(device).strip().lower()
        resolve_device(name)  # raises DeviceError with what was found instead
        return name

    # ----------------------------------------------------------------- phase 2: compute (any thread)
    def engineFor(self, checkpoint: Any, device: str, batchSize: int | None, synthesis: str | None = None,
                  testTimeAugmentation: str = "auto") -> ASIEngine:
        """The cached engine for these settings, loading the checkpoint when they changed.
        ``synthesis``: engine mode, None = the checkpoint's recommendation; ``testTimeAugmentation``: likewise
        ("auto" = the checkpoint's)."""
        from ..models.checkpoint import Checkpoint, resolve_checkpoint
        from ..engine.synthesis import ASIEngine

        if isinstance(checkpoint, Checkpoint):
            key: tuple = ("object", id(checkpoint), device, batchSize, self.precision, synthesis, testTimeAugmentation)
        else:
            stat = os.stat(checkpoint)
            key = (str(checkpoint), stat.st_mtime_ns, stat.st_size, device, batchSize, self.precision, synthesis,
                   testTimeAugmentation)
        with self._engineLock:
            if self._engine is None or self._engineKey != key:
                self._engine = None  # release the previous model before loading another
                loaded = resolve_checkpoint(checkpoint)
                logger.info("ASI model: %s", loaded.summary())
                self._engine = ASIEngine(loaded, device, precision=self.precision, batch_size=batchSize,
                                         synthesis=synthesis, test_time_augmentation=testTimeAugmentation)
                self._engineKey = key
            return self._engine

    def releaseModel(self) -> None:
        """Forget the cached model (frees its memory, e.g. GPU memory, until the next run)."""
        with self._engineLock:
            self._engine = None
            self._engineKey = None

    def runJob(self, job: UpsamplingJob, progress: ProgressCallback | None = None,
               shouldCancel: CancelCallback | None = None) -> None:
        """Upsample the job's voxels into ``job.results``. Never touches MRML, so it may run in a worker thread."""
        started = time.perf_counter()
        self.lastAdaptation, self.lastAdaptations = None, []
        engine = self.engineFor(job.checkpoint, job.device, job.batchSize, job.synthesis, job.testTimeAugmentation)
        job.engineDescription = engine.describe()
        job.results = []
        job.adaptations = []
        frameCount = len(job.frames)
        for index, frame in enumerate(job.frames):
            if shouldCancel is not None and shouldCancel():
                raise OperationCancelled("upsampling was cancelled")
            if frameCount == 1:
                frameProgress = progress
            else:
                frameProgress = self._frameProgress(progress, index, frameCount)
            ratio = self._sliceProfile(engine, job, frame)  # before any adaptation: the checkpoint's own model decides
            if job.adapt is not None:
                job.results.append(self._adaptAndUpsample(engine, job, frame, frameProgress, shouldCancel, ratio))
                continue
            job.results.append(engine.upsample(
                frame.voxels, job.factor, axis=numpy_axis(frame.sliceAxis), keep_acquired=job.keepAcquiredSlices,
                progress=frameProgress, should_cancel=shouldCancel, slice_thickness_ratio=ratio))
        if job.adaptations:
            self.lastAdaptations = list(job.adaptations)
            self.lastAdaptation = job.adaptations[-1]
            kept = sum(1 for report in job.adaptations if report.accepted)
            job.engineDescription += (f"; adapted to the scan ({job.adapt:g} s budget): "
                                      f"{'kept' if kept else 'declined'}" if frameCount == 1 else
                                      f"; adapted to each frame ({job.adapt:g} s budget): kept for {kept} of {frameCount}")
        job.seconds = time.perf_counter() - started
        logger.info("ASI upsampled %d frame(s) of '%s' by %d in %.1f s (%s)", frameCount,
                    job.frames[0].name if frameCount == 1 else job.inputNode.GetName(), job.factor, job.seconds,
                    job.engineDescription)

    @staticmethod
    def _adaptAndUpsample(engine: ASIEngine, job: UpsamplingJob, frame: FrameInput, progress: ProgressCallback | None,
                          shouldCancel: CancelCallback | None, ratio: float | None = None) -> np.ndarray:
        """Adapt the engine to one frame (first half of its progress), upsample it (second half), restore the
        engine's weights (also after an error or a cancel). The report goes to ``job.adaptations``."""
        from ..training.adaptation import adapt_engine, check_adaptable

        axis = numpy_axis(frame.sliceAxis)
        check_adaptable(engine, frame.voxels, axis)  # the prepare phase checked the node; this checks the engine

        # both halves in the same units (the adaptation counts per mille, the upsampling slices)
        def firstHalf(done: int, total: int) -> None:
            if progress is not None:
                progress(min(_HALF, int(_HALF * done / total)) if total else _HALF, 2 * _HALF)

        def secondHalf(done: int, total: int) -> None:
            if progress is not None:
                progress(_HALF + (min(_HALF, int(_HALF * done / total)) if total else _HALF), 2 * _HALF)

        engine.adaptation = None
        try:
            report = adapt_engine(engine, frame.voxels, axis=axis, seconds=float(job.adapt), max_steps=job.adaptSteps,
                                  seed=int(job.adaptSeed), thickness_ratio=ratio, factor=job.factor, progress=firstHalf,
                                  should_cancel=shouldCancel)
            engine.adaptation = report
            job.adaptations.append(report)
            logger.info("adaptation to '%s': %s", frame.name, report.summary())
            return engine.upsample(frame.voxels, job.factor, axis=axis, keep_acquired=job.keepAcquiredSlices,
                                   progress=secondHalf, should_cancel=shouldCancel, slice_thickness_ratio=ratio)
        finally:
            engine.restore()

    @staticmethod
    def _sliceProfile(engine: ASIEngine, job: UpsamplingJob, frame: FrameInput) -> float | None:
        """Thickness / spacing for a network with a slice-profile input: from the job's slice thickness (mm)
        when given, else (``"auto"``) estimated from the frame (volume nodes do not carry the DICOM Slice
        Thickness); None for other networks, for ``sliceThickness=None`` or when the estimate is not clear."""
        if not engine.takes_slice_profile or job.sliceThickness is None:
            return None
        if not isinstance(job.sliceThickness, str):
            spacing = frame.spacing[frame.sliceAxis]
            logger.info("'%s': slice thickness %.4g mm given (slice spacing %.4g mm)", frame.name,
                        job.sliceThickness, spacing)
            return float(job.sliceThickness) / spacing
        estimate = engine.estimate_slice_profile(frame.voxels, job.factor, numpy_axis(frame.sliceAxis))
        if estimate is None:
            return None
        logger.info("'%s': %s", frame.name, estimate.summary())
        return estimate.ratio

    @staticmethod
    def _frameProgress(progress: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
        if progress is None:
            return None

        def report(done: int, total: int) -> None:
            within = int(_UNITS_PER_FRAME * done / total) if total else _UNITS_PER_FRAME
            progress(index * _UNITS_PER_FRAME + within, count * _UNITS_PER_FRAME)

        return report

    # ----------------------------------------------------------------- phase 3: finish (main thread)
    def finishJob(self, job: UpsamplingJob) -> Any:
        """Create (or fill the caller-given) output node from ``job.results``; return it.

        If anything fails here, nodes this call added are removed again and a caller-given
        output volume is left as it was.
        """
        if len(job.results) != len(job.frames):
            raise RuntimeError("finishJob() needs a job that runJob() completed")
        if job.kind == "volume":
            return self._finishVolume(job)
        return self._finishSequence(job)

    def _finishVolume(self, job: UpsamplingJob) -> Any:
        inputVolume, frame, voxels = job.inputNode, job.frames[0], job.results[0]
        scene = inputVolume.GetScene()
        if scene is None:
            raise InputError("the input volume was removed from the scene during the run; nothing was created")
        ijkToRAS = upsampledIJKToRAS(frame.ijkToRAS, frame.sliceAxis, job.factor)
        transformID = inputVolume.GetTransformNodeID()
        output = job.outputNode
        if output is not None:
            if output.GetScene() is not scene:
                raise InputError("the output volume was removed from the scene during the run; it was not filled")
            _fillVolumeNode(output, voxels, ijkToRAS, None, transformID)  # builds everything before modifying
            try:
                if output.GetDisplayNode() is None:
                    output.CreateDefaultDisplayNodes()
                _copyDisplaySettings(inputVolume.GetDisplayNode(), output.GetDisplayNode())
            except Exception:  # display settings are cosmetic; the voxels are already right
                logger.exception("could not copy the display settings to '%s'", output.GetName())
            return output

        import slicer  # MRML node classes (Slicer or slicer-core)

        output = slicer.vtkMRMLScalarVolumeNode()
        _fillVolumeNode(output, voxels, ijkToRAS, job.outputName, transformID)
        output.SetDescription(self._description(job))
        added = None
        try:
            added = scene.AddNode(output)
            output = added
            output.CreateDefaultDisplayNodes()
            _copyDisplaySettings(inputVolume.GetDisplayNode(), output.GetDisplayNode())
            self._placeInSubjectHierarchy(scene, inputVolume, output)
        except BaseException:
            _removeNodeAndDependents(scene, added)
            raise
        return output

    def _finishSequence(self, job: UpsamplingJob) -> Any:
        import slicer

        inputSequence = job.inputNode
        scene = inputSequence.GetScene()
        if scene is None:
            raise InputError("the input sequence was removed from the scene during the run; nothing was created")
        outputSequence = slicer.vtkMRMLSequenceNode()
        outputSequence.SetName(job.outputName)
        outputSequence.SetIndexName(inputSequence.GetIndexName())
        outputSequence.SetIndexUnit(inputSequence.GetIndexUnit())
        outputSequence.SetIndexType(inputSequence.GetIndexType())
        outputSequence.SetDescription(self._description(job))
        for frame, voxels in zip(job.frames, job.results):
            frameNode = slicer.vtkMRMLScalarVolumeNode()
            _fillVolumeNode(frameNode, voxels, upsampledIJKToRAS(frame.ijkToRAS, frame.sliceAxis, job.factor),
                            upsampledName(frame.name, job.factor))
            outputSequence.SetDataNodeAtValue(frameNode, frame.indexValue)  # stores a copy
        created: list[Any] = []
        try:
            outputSequence = scene.AddNode(outputSequence)
            created.append(outputSequence)
            if job.createBrowser:
                created += self.createSequenceBrowser(outputSequence, inputSequence)
        except BaseException:
            for node in reversed(created):
                _removeNodeAndDependents(scene, node)
            raise
        return outputSequence

    def createSequenceBrowser(self, outputSequence: Any, inputSequence: Any = None) -> list[Any]:
        """Add a sequence browser for ``outputSequence`` with a proxy volume; return the nodes added.

        The proxy gets the parent transform and display settings of the input sequence's proxy
        volume when the input is shown by a browser. Slicer's module overrides
        :meth:`_updateProxyNodes` to use the application's Sequences logic.
        """
        import slicer

        scene = outputSequence.GetScene()
        browser = slicer.vtkMRMLSequenceBrowserNode()
        browser.SetName(scene.GenerateUniqueName(f"{outputSequence.GetName()} browser"))
        browser = scene.AddNode(browser)
        added = [browser]
        browser.SetAndObserveMasterSequenceNodeID(outputSequence.GetID())
        self._updateProxyNodes(browser)
        proxy = browser.GetProxyNode(outputSequence)
        if proxy is not None:
            added.append(proxy)
            inputProxy = self._proxyNodeOf(inputSequence) if inputSequence is not None else None
            if proxy.IsA("vtkMRMLScalarVolumeNode"):
                if proxy.GetDisplayNode() is None:
                    proxy.CreateDefaultDisplayNodes()
                if inputProxy is not None:
                    _copyDisplaySettings(inputProxy.GetDisplayNode(), proxy.GetDisplayNode())
                    proxy.SetAndObserveTransformNodeID(inputProxy.GetTransformNodeID())
        return added

    def _updateProxyNodes(self, browser: Any) -> None:
        """Create the browser's proxy nodes (Slicer overrides this to use ``slicer.modules.sequences``)."""
        import slicer

        sequencesLogic = slicer.vtkSlicerSequencesLogic()
        sequencesLogic.SetMRMLScene(browser.GetScene())
        try:
            sequencesLogic.UpdateProxyNodesFromSequences(browser)
        finally:
            sequencesLogic.SetMRMLScene(None)

    @staticmethod
    def _proxyNodeOf(sequence: Any) -> Any:
        """The proxy node showing ``sequence`` in the first browser that synchronizes it, or None."""
        scene = sequence.GetScene()
        if scene is None:
            return None
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
            browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
            if browser.IsSynchronizedSequenceNode(sequence.GetID(), True):
                return browser.GetProxyNode(sequence)
        return None

    @staticmethod
    def _placeInSubjectHierarchy(scene: Any, inputNode: Any, outputNode: Any) -> None:
        """Put the output next to the input in the subject hierarchy (same patient/study folder)."""
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if hierarchy is None:
            return
        inputItem = hierarchy.GetItemByDataNode(inputNode)
        outputItem = hierarchy.GetItemByDataNode(outputNode)
        if inputItem and outputItem:
            hierarchy.SetItemParent(outputItem, hierarchy.GetItemParent(inputItem))

    @staticmethod
    def _description(job: UpsamplingJob) -> str:
        checkpoint = job.checkpoint if isinstance(job.checkpoint, str) else (getattr(job.checkpoint, "path", None) or "in memory")
        text = (f"ASI through-plane upsampling x{job.factor} of '{job.inputNode.GetName()}' "
                f"(keep acquired slices: {job.keepAcquiredSlices}; checkpoint {checkpoint}; {job.engineDescription})")
        summary = job.adaptationSummary()
        return f"{text}\n{summary}" if summary else text


class BackgroundRun(BackgroundTask):
    """Runs :meth:`SemanticInterpolationLogic.runJob` in a worker thread, for a GUI that polls it.

    The worker only runs the network on the voxels copied by the prepare phase; it never
    touches MRML or Qt. The GUI thread polls :attr:`progress` and :attr:`isRunning` (e.g. from a
    ``qt.QTimer``), may call :meth:`cancel`, and calls ``logic.finishJob(run.job)`` once
    :attr:`isRunning` is False and :attr:`error` is None. torch releases the GIL while it
    computes, so the GUI stays responsive.
    """

    def __init__(self, logic: SemanticInterpolationLogic, job: UpsamplingJob) -> None:
        super().__init__(lambda progress, shouldCancel: logic.runJob(job, progress=progress, shouldCancel=shouldCancel),
                         "SemanticInterpolation upsampling")
        self.logic = logic
        self.job = job

    @property
    def adaptations(self) -> list[Any]:
        """The adaptation reports of the run (one per frame; empty without ``adapt`` or before they exist)."""
        return list(self.job.adaptations)

    @property
    def adaptationSummary(self) -> str:
        """The reports as text for the status line ("" without adaptation); see :meth:`UpsamplingJob.adaptationSummary`."""
        return self.job.adaptationSummary()
