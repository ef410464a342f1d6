"""The Upsample tab: one volume (or every frame of a sequence) upsampled in the background.

Responsiveness: a run is split into prepare (GUI thread: validation, voxels copied out of MRML),
compute (a Python worker thread; torch releases the GIL while it computes) and finish (GUI thread:
output node created). A QTimer polls the worker every POLL_INTERVAL_MS for progress and its end.
MRML and Qt are only ever touched from the GUI thread, and the user can keep working (and Cancel)
during a run. Processing events from the progress callback instead would freeze the GUI for a whole
batch of slices and allow re-entrant clicks.

Adaptation to the scan (Advanced section, pair-unet checkpoints): the worker first adapts the
model to the volume (or to each frame), then upsamples; the report (held-out acquired slices:
before, after, linear, B-spline; kept or declined) is shown in the status text. The chosen
checkpoint's model type and architecture are read from its metadata when the path (or the file)
changes, to show them and to disable adaptation for model types that cannot be adapted.

Slice thickness (Advanced section): the bundled model is told the slice profile (thickness / spacing).
A value in mm wins; "auto" takes the DICOM Slice Thickness (0018,0050) of a volume loaded through
Slicer's DICOM module (from the DICOM database, by the node's instance UIDs), and otherwise lets the
logic estimate it from the scan.
"""

import importlib.util
import logging
import math
import os
import time
from typing import Callable

import ctk

import slicer
from slicer.i18n import tr as _

from .common import POLL_INTERVAL_MS, TabHelper, checkpointArgument, findDefaultCheckpoint, makeTimer, sliceAxis


class UpsampleTab(TabHelper):
    """GUI code of the Upsample tab (see :class:`.common.TabHelper` for ``ui``, ``getParameterNode``, ``refresh``).

    ``getLogic``: returns the module logic (creating it on first use);
    ``ensureDependencies``: installs torch and the other packages, or raises with what to do;
    ``deviceReport``: returns ``(text, isWarning)`` about the compute devices PyTorch sees.
    """

    def __init__(self, ui, getParameterNode: Callable, getLogic: Callable, ensureDependencies: Callable,
                 deviceReport: Callable, refresh: Callable, pollIntervalMs: int = POLL_INTERVAL_MS) -> None:
        super().__init__(ui, getParameterNode, refresh)
        self._getLogic = getLogic
        self._ensureDependencies = ensureDependencies
        self._deviceReport = deviceReport
        self._run = None  # BackgroundRun of the upsampling in progress
        self._runStarted = 0.0
        self._checkpointKey = None  # (path, mtime, size) of the checkpoint described below
        self.checkpointInfo = None  # mrml.logic.CheckpointInfo of the chosen checkpoint, None when unknown
        self._checkpointProblem = ""  # why the checkpoint could not be described ("" = no problem)

        ui.checkpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        ui.checkpointPathLineEdit.nameFilters = [_("ASI checkpoint (*.pt *.pth)"), _("All files (*)")]
        ui.checkpointPathLineEdit.settingKey = "SemanticInterpolation/RecentCheckpoints"
        ui.progressBar.setVisible(False)
        self._pollTimer = makeTimer(pollIntervalMs, self.poll)
        ui.upsampleButton.connect("clicked(bool)", self.onUpsampleButton)
        ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onCheckpointPathChanged)
        ui.cancelButton.connect("clicked(bool)", self.onCancelButton)

    def isRunning(self) -> bool:
        """True while an upsampling started from the GUI is computing."""
        return self._run is not None

    def onCheckpointPathChanged(self, path: str) -> None:
        """ctkPathLineEdit -> parameter node (a str parameter, see SemanticInterpolationParameterNode)."""
        parameters = self.parameterNode
        if parameters and parameters.checkpointPath != path:
            parameters.checkpointPath = path

    def sequenceOfInput(self):
        """``(sequenceNode, browserNode)`` when the input volume is a sequence frame proxy, else ``(None, None)``."""
        parameters = self.parameterNode
        volume = parameters.inputVolume if parameters else None
        sequences = getattr(slicer.modules, "sequences", None)
        if volume is None or sequences is None:
            return None, None
        browser = sequences.logic().GetFirstBrowserNodeForProxyNode(volume)
        if browser is None:
            return None, None
        return browser.GetSequenceNode(volume), browser

    # ------------------------------------------------------------------ GUI state
    def updateGui(self) -> None:
        ui, parameters = self.ui, self.parameterNode
        running = self.isRunning()
        sequence, _browser = self.sequenceOfInput() if parameters else (None, None)
        ui.allSequenceFramesCheckBox.enabled = sequence is not None and not running
        if sequence is not None:
            ui.allSequenceFramesCheckBox.text = _("Upsample all {count} frames of sequence '{name}'").format(
                count=sequence.GetNumberOfDataNodes(), name=sequence.GetName())
        else:
            ui.allSequenceFramesCheckBox.text = _("Upsample all frames of the sequence")
        useSequence = sequence is not None and parameters.allSequenceFrames
        ui.outputVolumeSelector.enabled = not useSequence and not running
        ui.outputGeometryLabel.text = self.describeOutputGrid()
        if parameters and ui.checkpointPathLineEdit.currentPath != parameters.checkpointPath:
            ui.checkpointPathLineEdit.currentPath = parameters.checkpointPath  # parameter node -> GUI
        self.updateCheckpointInformation()
        self._updateAdaptationWidgets(running)
        if running:
            ui.upsampleButton.enabled = False
            ui.upsampleButton.toolTip = _("An upsampling is running")
        elif parameters and parameters.inputVolume:
            ui.upsampleButton.enabled = True
            ui.upsampleButton.toolTip = _("Upsample the input volume through-plane with ASI")
        else:
            ui.upsampleButton.enabled = False
            ui.upsampleButton.toolTip = _("Select an input volume")

    def describeOutputGrid(self) -> str:
        """E.g. "slice axis k: 12 slices of 8 mm -> 45 slices of 2 mm"."""
        parameters = self.parameterNode
        volume = parameters.inputVolume if parameters else None
        if volume is None or volume.GetImageData() is None:
            return ""
        spacing = volume.GetSpacing()
        dims = volume.GetImageData().GetDimensions()
        axis = sliceAxis(spacing)
        factor = parameters.upsamplingFactor
        if dims[axis] < 2:
            return _("Only 1 slice along the slice axis: nothing to interpolate.")
        text = _("Slice axis {axis}: {n} slices of {spacing:g} mm -> {m} slices of {newSpacing:g} mm").format(
            axis="ijk"[axis], n=dims[axis], spacing=spacing[axis], m=(dims[axis] - 1) * factor + 1,
            newSpacing=spacing[axis] / factor)
        if max(spacing) <= min(spacing) * 1.01:
            text += _(" (the volume is isotropic: upsampling it is rarely useful)")
        return text

    # ------------------------------------------------------------------ checkpoint model type, adaptation
    def _checkpointFile(self):
        """The checkpoint file the run would use (the bundled default when the path is empty), or None."""
        parameters = self.parameterNode
        path = checkpointArgument(parameters.checkpointPath) if parameters else None
        if path is None:
            default = findDefaultCheckpoint()
            return str(default) if default is not None else None
        return path

    def updateCheckpointInformation(self, force: bool = False) -> None:
        """Show the chosen checkpoint's model type and architecture, e.g. "Model: pair-unet (pair-unet-24-48-96)".

        The file's metadata is read (torch.load with weights_only=True, which never runs code from it) only
        when the path, the file's modification time or its size changed, and only when torch is installed.
        """
        if self.parameterNode is None:
            return
        if importlib.util.find_spec("torch") is None:
            self._checkpointKey, self.checkpointInfo, self._checkpointProblem = None, None, ""
            self.ui.checkpointModelLabel.text = _("Model: shown once PyTorch is installed (on the first Upsample).")
            self.ui.checkpointModelLabel.setStyleSheet("")
            return
        path = self._checkpointFile()
        try:
            stat = os.stat(path) if path else None
            key = (path, stat.st_mtime_ns, stat.st_size) if stat else (path, None, None)
        except OSError:
            key = (path, None, None)
        if key == self._checkpointKey and not force:
            return
        self._checkpointKey = key
        self.checkpointInfo, self._checkpointProblem = None, ""
        if path is None:
            self._checkpointProblem = _("no checkpoint chosen and no default model installed")
        else:
            try:
                from SemanticInterpolationLib.mrml.logic import describeCheckpoint

                self.checkpointInfo = describeCheckpoint(path)
            except Exception as error:  # a bad file must not break the GUI; Upsample reports it in full
                self._checkpointProblem = str(error)
        label = self.ui.checkpointModelLabel
        if self.checkpointInfo is not None:
            label.text = _("Model: {model}").format(model=self.checkpointInfo.label())
            label.toolTip = self.checkpointInfo.details or self.checkpointInfo.label()
            label.setStyleSheet("")
        else:
            label.text = _("Model: unknown ({problem})").format(problem=self._checkpointProblem)
            label.toolTip = self._checkpointProblem
            label.setStyleSheet("color: #c0392b")

    def adaptationAvailable(self) -> bool:
        """False when the chosen checkpoint is known to be of a type that cannot be adapted (or cannot be read);
        True when it can be, or when its type is not known yet (the logic checks it when the run starts)."""
        if self.checkpointInfo is not None:
            return bool(self.checkpointInfo.adaptable)
        return not self._checkpointProblem

    def _updateAdaptationWidgets(self, running: bool) -> None:
        ui, parameters = self.ui, self.parameterNode
        available = self.adaptationAvailable()
        ui.adaptToScanCheckBox.enabled = available and not running
        if self.checkpointInfo is not None and not available:
            ui.adaptToScanCheckBox.toolTip = _(
                "Not available for this checkpoint: it is a {model} model. Adaptation to the scan needs a "
                "pair-unet checkpoint (train one in the Train tab with model type pair-unet).").format(
                    model=self.checkpointInfo.label())
        elif not available:
            ui.adaptToScanCheckBox.toolTip = _("Not available: the checkpoint cannot be read ({problem}).").format(
                problem=self._checkpointProblem)
        else:
            ui.adaptToScanCheckBox.toolTip = _(
                "Before upsampling, fine-tune a copy of the model on this scan's own acquired slices for at most the "
                "time below; the adapted model is used only when it predicts held-out acquired slices better. The "
                "checkpoint file is never changed.")
        ui.adaptSecondsSpinBox.enabled = bool(available and parameters and parameters.adaptToScan and not running)

    def adaptSeconds(self):
        """The logic's ``adapt`` argument: the time budget when "Adapt to this scan" is checked and usable, else None."""
        parameters = self.parameterNode
        if parameters is None or not parameters.adaptToScan or not self.adaptationAvailable():
            return None
        return float(parameters.adaptSeconds)

    def sliceThickness(self, node):
        """The logic's ``sliceThickness`` for ``node``: the field's mm when set, else the DICOM Slice Thickness
        of a DICOM-loaded node (slices along k), else "auto" (estimated from the scan)."""
        parameters = self.parameterNode
        if parameters is not None and parameters.sliceThickness > 0:
            return float(parameters.sliceThickness)
        thickness = dicomSliceThickness(node)
        return thickness if thickness is not None else "auto"

    def updateDeviceInformation(self) -> None:
        """Show which devices PyTorch found (and advice when there is no GPU)."""
        text, isWarning = self._deviceReport()
        self.ui.deviceInfoLabel.text = text
        self.ui.deviceInfoLabel.setStyleSheet("color: #c0392b" if isWarning else "")

    def _setRunning(self, running: bool) -> None:
        ui = self.ui
        for widget in (ui.inputsCollapsibleButton, ui.modelCollapsibleButton,
                       ui.outputsCollapsibleButton, ui.advancedCollapsibleButton):
            widget.enabled = not running
        ui.cancelButton.enabled = running
        ui.progressBar.setVisible(running)
        if running:
            ui.progressBar.setRange(0, 0)  # busy until the first progress report (model loading)
        self._refresh()

    # ------------------------------------------------------------------ actions
    def onUpsampleButton(self) -> None:
        """Validate, then start the upsampling in the background (the GUI stays usable)."""
        if self._run is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Upsampling could not start."), waitCursor=True):
            self._ensureDependencies()
            self.updateDeviceInformation()
            self.updateCheckpointInformation()  # torch may have been installed just now
            from SemanticInterpolationLib.mrml.logic import BackgroundRun

            logic = self._getLogic()
            parameters = self.parameterNode
            adapt = self.adaptSeconds()
            settings = dict(factor=parameters.upsamplingFactor,
                            checkpoint=checkpointArgument(parameters.checkpointPath),
                            device=parameters.computeDevice.value,
                            keepAcquiredSlices=parameters.keepAcquiredSlices,
                            synthesis=parameters.synthesisMode.value,
                            testTimeAugmentation=parameters.testTimeAugmentation.value,
                            adapt=adapt, sliceThickness=self.sliceThickness(parameters.inputVolume))
            sequence, _browser = self.sequenceOfInput()
            if sequence is not None and parameters.allSequenceFrames:
                job = logic.prepareSequenceJob(sequence, **settings)
            else:
                job = logic.prepareVolumeJob(parameters.inputVolume, outputVolume=parameters.outputVolume, **settings)
            self._run = BackgroundRun(logic, job)
            self._runStarted = time.perf_counter()
            self._run.start()
            if adapt is not None:
                self.ui.statusLabel.text = _("Adapting the model to '{name}' (up to {seconds:g} s{perFrame}), then "
                                             "upsampling x{factor}...").format(
                    name=job.inputNode.GetName(), seconds=adapt, factor=job.factor,
                    perFrame=_(" per frame") if job.kind == "sequence" else "")
            else:
                self.ui.statusLabel.text = _("Upsampling '{name}' x{factor}...").format(
                    name=job.inputNode.GetName(), factor=job.factor)
            self._setRunning(True)
            self._pollTimer.start()

    def onCancelButton(self) -> None:
        """Ask the running upsampling to stop; nothing is added to the scene."""
        if self._run is not None:
            self._run.cancel()
            self.ui.cancelButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling...")

    def poll(self) -> None:
        """Timer slot (GUI thread): show progress; when the worker has ended, finish or report."""
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        done, total = run.progress
        if done > 0:
            self.ui.progressBar.setRange(0, total)
            self.ui.progressBar.setValue(done)
        if run.isRunning:
            return
        self._pollTimer.stop()
        self._run = None
        try:
            self.finish(run)
        finally:
            self._setRunning(False)

    def finish(self, run) -> None:
        """GUI thread, after the worker has ended: add the result to the scene and show it, or report."""
        from SemanticInterpolationLib.errors import OperationCancelled

        if isinstance(run.error, OperationCancelled) or run.cancelRequested:
            self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            return
        if run.error is not None:
            self.ui.statusLabel.text = _("Failed: {error}").format(error=run.error)
            logging.error("Semantic Interpolation failed", exc_info=run.error)
            slicer.util.errorDisplay(_("Upsampling failed: {error}").format(error=run.error))
            return
        with slicer.util.tryWithErrorDisplay(_("The result could not be added to the scene."), waitCursor=True):
            logic = self._getLogic()
            output = logic.finishJob(run.job)
            shown = logic.showResult(output)
            seconds = time.perf_counter() - self._runStarted
            text = _("Created '{name}' in {seconds:.1f} s ({engine}).").format(
                name=(shown or output).GetName(), seconds=seconds, engine=run.job.engineDescription)
            summary = run.adaptationSummary
            if summary:
                logging.info("Semantic Interpolation: %s", summary)
                text += "\n" + summary
            self.ui.statusLabel.text = text

    # ------------------------------------------------------------------ scene and application
    def onSceneStartClose(self) -> None:
        if self._run is not None:
            self._run.cancel()  # its nodes would belong to a closed scene

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self._run.wait(10)
        self._pollTimer.stop()


def dicomSliceThickness(node) -> "float | None":
    """Slice Thickness (0018,0050) in mm of a volume node loaded from DICOM, from Slicer's DICOM database (the
    node's ``DICOM.instanceUIDs`` attribute); None when the node was not loaded from DICOM, the database is not
    open, the value is missing or not a positive number, or the node's slices are not along k (the axis the
    DICOM thickness applies to; the logic's automatic slice axis is the largest spacing)."""
    if node is None or not hasattr(node, "GetAttribute"):
        return None
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return None
    spacing = node.GetSpacing()
    if sliceAxis(spacing) != 2:
        return None
    try:
        value = float(database.instanceValue(uids[0], "0018,0050"))
    except (TypeError, ValueError, AttributeError):
        return None
    return value if value > 0 and math.isfinite(value) else None
