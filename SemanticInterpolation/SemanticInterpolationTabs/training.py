"""The Train tab: fine-tune (or train from scratch) an ASI or pair-unet model in a background process.

The model type ("auto" = the starting checkpoint's type) reaches the training command as ``--model-type``.

The Qt-free part (exported volumes, checked command, log -> plot nodes) is
SemanticInterpolationLib.mrml.training; here are the qt.QProcess, the timer that reads the training
log, and the widgets. A finished training's checkpoint is selected in the Upsample tab.
"""

import importlib.util
import logging
import time
from pathlib import Path
from typing import Callable

import ctk
import qt

import slicer
from slicer.i18n import tr as _

from .common import TRAINING_POLL_INTERVAL_MS, TabHelper, checkpointArgument, findDefaultCheckpoint, makeTimer, sliceAxis


class TrainingTab(TabHelper):
    """GUI code of the Train tab (see :class:`.common.TabHelper` for ``ui``, ``getParameterNode``, ``refresh``).

    ``ensureDependencies``: installs torch and the other packages, or raises with what to do.
    The training volumes are node references of the raw parameter node (role "trainingVolume").
    """

    def __init__(self, ui, getParameterNode: Callable, ensureDependencies: Callable, refresh: Callable,
                 pollIntervalMs: int = TRAINING_POLL_INTERVAL_MS) -> None:
        super().__init__(ui, getParameterNode, refresh)
        self._ensureDependencies = ensureDependencies
        self._job = None  # mrml.training.TrainingJob of the running training
        self._process = None  # its qt.QProcess
        self._started = 0.0  # time.time() at start: older log records are ignored
        self._stopRequested = False
        self._output = ""  # the process's output (last part), for error messages
        self._logCount = -1
        self._lpipsReason = None  # None: not checked yet; "": available; else why not
        self.plot = None  # mrml.training.TrainingPlot of the latest run (its table and chart nodes)

        ui.trainingInitPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        ui.trainingInitPathLineEdit.nameFilters = [_("ASI checkpoint (*.pt *.pth)"), _("All files (*)")]
        ui.trainingInitPathLineEdit.settingKey = "SemanticInterpolation/RecentCheckpoints"
        # Files | Writable: the browse button opens a "save as" dialog (the file need not exist yet)
        ui.trainingOutputPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Writable
        ui.trainingOutputPathLineEdit.nameFilters = [_("ASI checkpoint (*.pt)")]
        ui.trainingOutputPathLineEdit.settingKey = "SemanticInterpolation/TrainingOutputs"
        ui.trainingProgressBar.setVisible(False)
        ui.trainingInitPathLineEdit.connect("currentPathChanged(QString)", self.onTrainingInitPathChanged)
        ui.trainingOutputPathLineEdit.connect("currentPathChanged(QString)", self.onTrainingOutputPathChanged)
        ui.trainingVolumesSelector.connect("checkedNodesChanged()", self.onTrainingVolumesChanged)
        ui.trainingStartButton.connect("clicked(bool)", self.onTrainingStartButton)
        ui.trainingStopButton.connect("clicked(bool)", self.onTrainingStopButton)
        ui.trainingShowLossChartButton.connect("clicked(bool)", lambda: self.showChart(validation=False))
        ui.trainingShowValidationChartButton.connect("clicked(bool)", lambda: self.showChart(validation=True))
        self._timer = makeTimer(pollIntervalMs, self.poll)

    def isTraining(self) -> bool:
        """True while a training process started from the GUI runs."""
        return self._process is not None

    # ------------------------------------------------------------------ parameter node <-> GUI
    def volumesToGui(self) -> None:
        """Parameter node (node references) -> checkable combo box."""
        raw = self.rawParameterNode()
        if raw is None:
            return
        from SemanticInterpolationLib.mrml.training import trainingVolumeReferences  # no torch

        chosen = {node.GetID() for node in trainingVolumeReferences(raw)}
        selector = self.ui.trainingVolumesSelector
        wasBlocked = selector.blockSignals(True)
        try:
            for index in range(selector.nodeCount()):
                node = selector.nodeFromIndex(index)
                selector.setCheckState(node, qt.Qt.Checked if node.GetID() in chosen else qt.Qt.Unchecked)
        finally:
            selector.blockSignals(wasBlocked)

    def onTrainingVolumesChanged(self) -> None:
        """Checkable combo box -> parameter node (node references, saved with the scene)."""
        raw = self.rawParameterNode()
        if raw is None:
            return
        from SemanticInterpolationLib.mrml.training import setTrainingVolumeReferences

        setTrainingVolumeReferences(raw, self.ui.trainingVolumesSelector.checkedNodes())
        self._refresh()

    def trainingVolumes(self) -> list:
        raw = self.rawParameterNode()
        if raw is None:
            return []
        from SemanticInterpolationLib.mrml.training import trainingVolumeReferences

        return trainingVolumeReferences(raw)

    def onTrainingInitPathChanged(self, path: str) -> None:
        parameters = self.parameterNode
        if parameters and parameters.trainingInitPath != path:
            parameters.trainingInitPath = path

    def onTrainingOutputPathChanged(self, path: str) -> None:
        parameters = self.parameterNode
        if parameters and parameters.trainingOutputPath != path:
            parameters.trainingOutputPath = path

    def updateGui(self) -> None:
        parameters = self.parameterNode
        if parameters is None:
            return
        ui = self.ui
        training = self.isTraining()
        for path, edit in ((parameters.trainingInitPath, ui.trainingInitPathLineEdit),
                           (parameters.trainingOutputPath, ui.trainingOutputPathLineEdit)):
            if edit.currentPath != path:
                edit.currentPath = path  # parameter node -> GUI
        for widget in (ui.trainingDataCollapsibleButton, ui.trainingModelCollapsibleButton,
                       ui.trainingSettingsCollapsibleButton):
            widget.enabled = not training
        ui.trainingInitPathLineEdit.enabled = not parameters.trainingFromScratch
        volumes = self.trainingVolumes()
        if volumes:
            slices = [node.GetImageData().GetDimensions()[sliceAxis(node.GetSpacing())]
                      for node in volumes if node.GetImageData() is not None]
            ui.trainingDataInfoLabel.text = _("{count} training volume(s), {triplets} triplets of consecutive "
                                              "slices").format(count=len(volumes),
                                                               triplets=sum(max(n - 2, 0) for n in slices))
        else:
            ui.trainingDataInfoLabel.text = _("Check one or more training volumes.")
        self._updateLossInformation()
        ui.trainingStopButton.enabled = training
        if training:
            ui.trainingStartButton.enabled = False
            ui.trainingStartButton.toolTip = _("A training is running")
        elif volumes and (parameters.trainingOutputPath or "").strip():
            ui.trainingStartButton.enabled = True
            ui.trainingStartButton.toolTip = _("Check the settings, then train in a background process")
        else:
            ui.trainingStartButton.enabled = False
            ui.trainingStartButton.toolTip = _("Check at least one training volume and choose the output checkpoint")
        hasPlot = self.plot is not None
        ui.trainingShowLossChartButton.enabled = hasPlot
        ui.trainingShowValidationChartButton.enabled = hasPlot

    def _updateLossInformation(self) -> None:
        """Say whether the LPIPS loss can be used (checked once, only when it is chosen: it imports torchvision)."""
        label = self.ui.trainingLossInfoLabel
        if self.parameterNode.trainingSynthesisLoss.value != "lpips":
            label.text = ""
            return
        if self._lpipsReason is None and importlib.util.find_spec("torch") is not None:
            try:
                from SemanticInterpolationLib.mrml.training import lpipsAvailability

                self._lpipsReason = lpipsAvailability() or ""
            except Exception as error:  # a broken torch install must not break the GUI
                self._lpipsReason = str(error)
        if self._lpipsReason:
            label.text = _("LPIPS cannot be used here: {reason}. Install it with slicer.util.pip_install('lpips') "
                           "(needs torchvision), or choose SSIM, MSE or L1.").format(reason=self._lpipsReason)
            label.setStyleSheet("color: #c0392b")
        else:
            label.text = _("LPIPS needs the VGG-16 ImageNet weights (downloaded once by torchvision).")
            label.setStyleSheet("")

    def trainingSettings(self):
        """The Train tab's values as a ``mrml.training.TrainingTabSettings`` (also for console use)."""
        from SemanticInterpolationLib.mrml.training import TrainingTabSettings

        parameters = self.parameterNode
        init = None if parameters.trainingFromScratch else (checkpointArgument(parameters.trainingInitPath) or "default")
        return TrainingTabSettings(
            trainingVolumes=self.trainingVolumes(), output=parameters.trainingOutputPath,
            validationVolume=parameters.trainingValidationVolume, init=init, epochs=parameters.trainingEpochs,
            lam=parameters.trainingLambda, synthesisLoss=parameters.trainingSynthesisLoss.value,
            patchSize=parameters.trainingPatchSize, batchSize=parameters.trainingBatchSize,
            device=parameters.trainingDevice.value, modelType=parameters.trainingModelType.value)

    # ------------------------------------------------------------------ actions
    def onTrainingStartButton(self) -> None:
        """Check everything, save the volumes to temporary files and start the training process."""
        if self.isTraining():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            self._ensureDependencies()
            from SemanticInterpolationLib.mrml import training as mrml_training

            settings = self.trainingSettings()
            if settings.init == "default" and findDefaultCheckpoint() is None:
                raise ValueError(_("No default model is installed: choose a starting checkpoint, or check "
                                   "'Train from scratch'."))
            workFolder = slicer.util.tempDirectory("SemanticInterpolationTraining")
            job = mrml_training.prepareTraining(settings, workFolder)  # raises before anything starts
            process = qt.QProcess()
            environment = qt.QProcessEnvironment.systemEnvironment()
            for key, value in job.environment.items():
                environment.insert(key, value)
            process.setProcessEnvironment(environment)
            process.setProcessChannelMode(qt.QProcess.MergedChannels)
            process.setWorkingDirectory(str(job.workFolder))
            process.setProgram(job.program)
            process.setArguments(job.arguments)
            self._started = time.time()
            process.start()
            if not process.waitForStarted(30000):
                job.cleanup()
                raise RuntimeError(_("The training process could not be started ({program}): {error}").format(
                    program=job.program, error=process.errorString()))
            logging.info("Semantic Interpolation: training started: %s", " ".join(job.command))
            self._job = job
            self._process = process
            self._stopRequested = False
            self._output = ""
            self._logCount = -1
            self.plot = mrml_training.TrainingPlot(slicer.mrmlScene,
                                                   _("ASI training {name}").format(name=Path(job.config.output).stem))
            self.showChart(validation=False)
            self.ui.trainingProgressBar.setVisible(True)
            self.ui.trainingProgressBar.setValue(0)
            self.ui.trainingStatusLabel.text = _("Training started: {description}").format(description=job.description)
            self._timer.start()
            self._refresh()

    def onTrainingStopButton(self) -> None:
        """First click: stop after the current step (stop file). Second click: end the process now."""
        if self._job is None:
            return
        from SemanticInterpolationLib.mrml.training import requestStop

        if not self._stopRequested:
            requestStop(self._job)
            self._stopRequested = True
            self.ui.trainingStatusLabel.text = _("Stopping after the current step (click Stop again to end it now)...")
        elif self._process is not None:
            self._process.kill()

    def stopProcess(self, waitSeconds: float = 10) -> None:
        """Application closing: ask the process to stop, wait a little, then end it."""
        process, job = self._process, self._job
        if process is None or job is None:
            return
        from SemanticInterpolationLib.mrml.training import requestStop

        requestStop(job)
        if not process.waitForFinished(int(waitSeconds * 1000)):
            process.kill()
            process.waitForFinished(2000)
        self._process = None
        self._job = None
        job.cleanup()

    def _readOutput(self) -> None:
        if self._process is None:
            return
        data = self._process.readAll()
        raw = data.data() if hasattr(data, "data") else data
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        if text:
            self._output = (self._output + text.replace("\r", "\n"))[-20000:]

    def poll(self) -> None:
        """Timer slot: read the log (progress bar, status, chart) and notice the end of the process."""
        job, process = self._job, self._process
        if job is None or process is None:
            self._timer.stop()
            return
        from SemanticInterpolationLib.mrml.training import summarizeTrainingLog

        self._readOutput()
        records = job.readLog(since=self._started)
        if len(records) != self._logCount:
            self._logCount = len(records)
            status = summarizeTrainingLog(records)
            if self.plot is not None:
                self.plot.update(records)
            self.ui.trainingProgressBar.setValue(int(round(1000 * status.fraction)))
            if status.text and not (self._stopRequested and not status.ended):
                self.ui.trainingStatusLabel.text = status.text
        if process.state() != qt.QProcess.NotRunning:
            return
        self._timer.stop()
        self._readOutput()
        exitCode = process.exitCode() if process.exitStatus() == qt.QProcess.NormalExit else None
        self._process = None
        self._job = None
        try:
            self.finish(job, exitCode)
        finally:
            job.cleanup()
            self.ui.trainingProgressBar.setVisible(False)
            self._refresh()

    def finish(self, job, exitCode) -> None:
        """After the process has ended: final chart, status, and the new checkpoint for the Upsample tab."""
        from SemanticInterpolationLib.mrml.training import summarizeTrainingLog

        records = job.readLog(since=self._started)
        if self.plot is not None:
            self.plot.update(records)
        status = summarizeTrainingLog(records)
        seconds = time.time() - self._started
        checkpoint = status.recommendedCheckpoint
        if status.endStatus in ("finished", "cancelled") and checkpoint and Path(checkpoint).is_file():
            self.parameterNode.checkpointPath = checkpoint  # the Upsample tab uses the new model
            selected = _(" It is selected in the Upsample tab.")
        else:
            selected = ""
        if status.endStatus == "finished":
            self.ui.trainingStatusLabel.text = _("Finished {epochs} epochs in {minutes:.1f} min; checkpoint "
                                                 "{checkpoint}.{selected}").format(
                epochs=status.epochsDone, minutes=seconds / 60, checkpoint=checkpoint, selected=selected)
        elif status.endStatus == "cancelled" or (exitCode == 130 and not status.ended):
            self.ui.trainingStatusLabel.text = _("Stopped after {epochs} complete epoch(s); kept checkpoint: "
                                                 "{checkpoint}.{selected}").format(
                epochs=status.epochsDone, checkpoint=checkpoint or _("none"), selected=selected)
        else:
            tail = "\n".join(self._output.strip().splitlines()[-15:])
            message = status.message or (_("the process ended with exit code {code}").format(code=exitCode)
                                         if exitCode is not None else _("the process crashed or was ended"))
            self.ui.trainingStatusLabel.text = _("Training failed: {message}").format(message=message)
            logging.error("Semantic Interpolation training failed: %s\n%s", message, self._output)
            slicer.util.errorDisplay(_("Training failed: {message}").format(message=message), detailedText=tail)

    def showChart(self, validation: bool = False) -> None:
        """Show the loss (or validation) chart of the latest training in the layout's plot view."""
        plot = self.plot
        if plot is None:
            return
        chart = plot.validationChart if validation else plot.lossChart
        plots = getattr(slicer.modules, "plots", None)
        if plots is not None:
            plots.logic().ShowChartInLayout(chart)

    # ------------------------------------------------------------------ scene and application
    def onSceneStartClose(self) -> None:
        self.plot = None  # its nodes go with the scene; a running training goes on

    def cleanup(self) -> None:
        self._timer.stop()
        self.stopProcess(waitSeconds=10)
