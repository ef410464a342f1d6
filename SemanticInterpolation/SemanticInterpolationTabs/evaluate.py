"""The Evaluate tab: remove slices from a fine-slice volume, upsample back, score (in the background).

The Qt-free part (settings, the worker thread, the summary table node) is
SemanticInterpolationLib.mrml.evaluation; here are the timer, the box plot image and the widgets.
ASI uses the Upsample tab's checkpoint, device and synthesis mode.
"""

import logging
import time
from pathlib import Path
from typing import Callable

import ctk
import qt

import slicer
from slicer.i18n import tr as _

from .common import POLL_INTERVAL_MS, TabHelper, checkpointArgument, makeTimer


class EvaluateTab(TabHelper):
    """GUI code of the Evaluate tab (see :class:`.common.TabHelper` for ``ui``, ``getParameterNode``, ``refresh``).

    ``ensureDependencies``: installs torch and what the evaluation needs (scipy, matplotlib), or raises.
    """

    def __init__(self, ui, getParameterNode: Callable, ensureDependencies: Callable, refresh: Callable,
                 pollIntervalMs: int = POLL_INTERVAL_MS) -> None:
        super().__init__(ui, getParameterNode, refresh)
        self._ensureDependencies = ensureDependencies
        self._evaluation = None  # mrml.evaluation.BackgroundEvaluation in progress
        self._started = 0.0
        self.table = None  # summary table node of the latest evaluation
        self.folder = None  # report folder of the latest evaluation

        ui.evaluationOutputFolderLineEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Writable
        ui.evaluationOutputFolderLineEdit.settingKey = "SemanticInterpolation/EvaluationFolders"
        ui.evaluationProgressBar.setVisible(False)
        ui.evaluationPlotLabel.setVisible(False)
        ui.evaluationTableView.setVisible(False)
        ui.evaluationOutputFolderLineEdit.connect("currentPathChanged(QString)", self.onEvaluationOutputFolderChanged)
        ui.evaluateButton.connect("clicked(bool)", self.onEvaluateButton)
        ui.evaluationCancelButton.connect("clicked(bool)", self.onEvaluationCancelButton)
        ui.evaluationOpenFolderButton.connect("clicked(bool)", self.onEvaluationOpenFolderButton)
        ui.evaluationShowTableButton.connect("clicked(bool)", self.onEvaluationShowTableButton)
        self._timer = makeTimer(pollIntervalMs, self.poll)

    def isEvaluating(self) -> bool:
        """True while an evaluation started from the GUI is computing."""
        return self._evaluation is not None

    def onEvaluationOutputFolderChanged(self, path: str) -> None:
        parameters = self.parameterNode
        if parameters and parameters.evaluationOutputFolder != path:
            parameters.evaluationOutputFolder = path

    def methods(self) -> list:
        """The chosen methods, in the order of the table: "asi", "linear", "bspline", "lanczos"."""
        parameters = self.parameterNode
        return [method for method, chosen in (("asi", parameters.evaluateASI), ("linear", parameters.evaluateLinear),
                                              ("bspline", parameters.evaluateBSpline),
                                              ("lanczos", parameters.evaluateLanczos)) if chosen]

    def updateGui(self) -> None:
        parameters = self.parameterNode
        if parameters is None:
            return
        ui = self.ui
        running = self.isEvaluating()
        if ui.evaluationOutputFolderLineEdit.currentPath != parameters.evaluationOutputFolder:
            ui.evaluationOutputFolderLineEdit.currentPath = parameters.evaluationOutputFolder
        ui.evaluationInputsCollapsibleButton.enabled = not running
        ui.evaluationCancelButton.enabled = running
        checkpoint = checkpointArgument(parameters.checkpointPath)
        ui.evaluationModelLabel.text = (
            _("ASI uses the Upsample tab's checkpoint ({name}) and device ({device}).").format(
                name=Path(checkpoint).name if checkpoint else _("bundled default"), device=parameters.computeDevice.label())
            if parameters.evaluateASI else "")
        methods = self.methods()
        if running:
            ui.evaluateButton.enabled = False
            ui.evaluateButton.toolTip = _("An evaluation is running")
        elif parameters.evaluationVolume and methods:
            ui.evaluateButton.enabled = True
            ui.evaluateButton.toolTip = _("Remove slices, upsample back with each method and score the result")
        else:
            ui.evaluateButton.enabled = False
            ui.evaluateButton.toolTip = _("Select a fine-slice volume and at least one method")
        ui.evaluationOpenFolderButton.enabled = self.folder is not None
        ui.evaluationShowTableButton.enabled = self.table is not None

    # ------------------------------------------------------------------ actions
    def onEvaluateButton(self) -> None:
        """Check, then evaluate in a background thread (the GUI stays usable)."""
        if self.isEvaluating():
            return
        with slicer.util.tryWithErrorDisplay(_("The evaluation could not start."), waitCursor=True):
            self._ensureDependencies()
            from SemanticInterpolationLib.mrml.evaluation import (BackgroundEvaluation, EvaluationTabSettings,
                                                                  prepareEvaluation)

            parameters = self.parameterNode
            folder = (parameters.evaluationOutputFolder or "").strip() or slicer.util.tempDirectory(
                "SemanticInterpolationEvaluation")
            job = prepareEvaluation(EvaluationTabSettings(
                volume=parameters.evaluationVolume, factors=parameters.evaluationFactors,
                methods=self.methods(), thickSlices=parameters.evaluationThickSlices,
                acquisitionNoise=parameters.evaluationAcquisitionNoisePercent / 100.0,
                checkpoint=checkpointArgument(parameters.checkpointPath), device=parameters.computeDevice.value,
                outputFolder=folder, synthesis=parameters.synthesisMode.value,
                testTimeAugmentation=parameters.testTimeAugmentation.value))
            self._evaluation = BackgroundEvaluation(job)
            self._started = time.perf_counter()
            self._evaluation.start()
            self.ui.evaluationStatusLabel.text = _("Evaluating '{name}' at K = {factors}...").format(
                name=job.volumeName, factors=", ".join(str(k) for k in job.settings.factors))
            self.ui.evaluationProgressBar.setVisible(True)
            self.ui.evaluationProgressBar.setRange(0, 0)
            self._timer.start()
            self._refresh()

    def onEvaluationCancelButton(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()
            self.ui.evaluationCancelButton.enabled = False
            self.ui.evaluationStatusLabel.text = _("Cancelling...")

    def poll(self) -> None:
        """Timer slot (GUI thread): progress; at the end the table node and the box plots."""
        run = self._evaluation
        if run is None:
            self._timer.stop()
            return
        done, total = run.progress
        if done > 0:
            self.ui.evaluationProgressBar.setRange(0, total)
            self.ui.evaluationProgressBar.setValue(done)
        if run.isRunning:
            return
        self._timer.stop()
        self._evaluation = None
        try:
            self.finish(run)
        finally:
            self.ui.evaluationProgressBar.setVisible(False)
            self._refresh()

    def finish(self, run) -> None:
        """GUI thread, after the worker has ended: the summary table node and the box plots, or report."""
        from SemanticInterpolationLib.errors import OperationCancelled
        from SemanticInterpolationLib.mrml.evaluation import finishEvaluation

        if isinstance(run.error, OperationCancelled) or run.cancelRequested:
            self.ui.evaluationStatusLabel.text = _("Cancelled.")
            return
        if run.error is not None:
            self.ui.evaluationStatusLabel.text = _("Failed: {error}").format(error=run.error)
            logging.error("Semantic Interpolation evaluation failed", exc_info=run.error)
            slicer.util.errorDisplay(_("The evaluation failed: {error}").format(error=run.error))
            return
        with slicer.util.tryWithErrorDisplay(_("The result could not be shown."), waitCursor=True):
            job = run.job
            self.table = finishEvaluation(job, slicer.mrmlScene)
            self.folder = job.outputFolder
            self.ui.evaluationTableView.setMRMLTableNode(self.table)
            self.ui.evaluationTableView.setVisible(True)
            plotFile = job.boxPlotFile
            if plotFile is not None and plotFile.is_file():
                pixmap = qt.QPixmap(str(plotFile))
                width = max(200, self.ui.evaluateTab.width - 20)
                self.ui.evaluationPlotLabel.setPixmap(pixmap.scaledToWidth(width, qt.Qt.SmoothTransformation))
                self.ui.evaluationPlotLabel.setVisible(True)
            seconds = time.perf_counter() - self._started
            notes = " ".join(job.result.notes)
            self.ui.evaluationStatusLabel.text = _("Done in {seconds:.0f} s: table '{table}', report in {folder}. "
                                                   "{notes}").format(seconds=seconds, table=self.table.GetName(),
                                                                     folder=job.outputFolder, notes=notes).strip()

    def onEvaluationOpenFolderButton(self) -> None:
        if self.folder is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.folder)))

    def onEvaluationShowTableButton(self) -> None:
        """Show the summary table in the layout's table view."""
        if self.table is None:
            return
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None and layoutManager.tableWidget(0) is None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        appLogic = slicer.app.applicationLogic()
        appLogic.GetSelectionNode().SetActiveTableID(self.table.GetID())
        appLogic.PropagateTableSelection()

    # ------------------------------------------------------------------ scene and application
    def onSceneStartClose(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()
        self.table = None  # it goes with the scene

    def cleanup(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()
            self._evaluation.wait(10)
        self._timer.stop()
