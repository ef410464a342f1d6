"""Drive the module widget and its three tab helpers (Upsample, Train, Evaluate) without the Slicer application.

The module file is imported with stand-ins for what only Slicer has (Qt widgets built from the
names in the .ui, QTimer, a QProcess that runs a real subprocess, the parameter node wrapper kept in
the real parameter node, slicer.util dialogs, loadUI); scenes, nodes, the Sequences logic and
slicer.util.VTKObservationMixin are the real slicer-core ones, and the upsampling, the training
process and the evaluation are real. The widget is built by its own setup(), so the checks cover the
split: the widget creates the tabs and passes the parameter node, enter/exit, scene close and
cleanup on; each tab connects its own widgets, follows the parameter node (through the widget's
observer, no manual refresh) and runs start -> poll -> finish; the module's own test_GuiRun runs on
the same widget. What it cannot show (layout, real Qt signals, the parameter node wrapper's two-way
GUI binding, dialogs) needs Slicer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY / "SemanticInterpolation"
MODULE_FILE = MODULE_DIR / "SemanticInterpolation.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SemanticInterpolation.ui"

HARNESS = textwrap.dedent('''
    import contextlib, os, subprocess, sys, tempfile, time, types
    import xml.etree.ElementTree as ElementTree
    import numpy as np
    sys.path.insert(0, TESTING_DIR)
    import slicer_stand_ins
    from slicer_stand_ins import module
    slicer = slicer_stand_ins.install(mrml=True)

    # ---------------------------------------------------------------- Qt stand-ins
    class Widget:
        def __init__(self, name):
            self.__dict__.update(name=name, enabled=True, text="", toolTip="", currentPath="", visible=True,
                                 value=0, range=None, slots={}, pixmap=None, tableNode=None, width=400, scene=None)
        def connect(self, signal, slot): self.slots[signal] = slot
        def setVisible(self, visible): self.visible = visible
        def setValue(self, value): self.value = value
        def setRange(self, low, high): self.range = (low, high)
        def setStyleSheet(self, style): self.style = style
        def setPixmap(self, pixmap): self.pixmap = pixmap
        def setMRMLTableNode(self, node): self.tableNode = node
        def setMRMLScene(self, scene): self.scene = scene
        def blockSignals(self, block): return False

    class CheckableCombo(Widget):
        def __init__(self, name):
            super().__init__(name)
            self.checked = []
        def checkedNodes(self): return list(self.checked)
        def nodeCount(self): return slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        def nodeFromIndex(self, i): return slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        def setCheckState(self, node, state):
            if state and node not in self.checked: self.checked.append(node)
            if not state and node in self.checked: self.checked.remove(node)

    names = {w.get("name"): w.get("class") for w in ElementTree.parse(UI_FILE).getroot().iter("widget")}
    ui = types.SimpleNamespace(**{n: (CheckableCombo(n) if c == "qMRMLCheckableNodeComboBox" else Widget(n))
                                  for n, c in names.items()})
    uiRoot = ui.SemanticInterpolation  # the top widget of the .ui (a qMRMLWidget)

    timers = []
    class QTimer:
        def __init__(self):
            self.active = False
            timers.append(self)
        def setInterval(self, ms): self.interval = ms
        def connect(self, signal, slot): self.slot = slot
        def start(self): self.active = True
        def stop(self): self.active = False

    class QByteArray:
        def __init__(self, data): self._data = data
        def data(self): return self._data

    class QProcessEnvironment(dict):
        @staticmethod
        def systemEnvironment(): return QProcessEnvironment(os.environ)
        def insert(self, key, value): self[key] = value

    class QProcess:
        NotRunning, Running = 0, 2
        NormalExit, CrashExit = 0, 1
        MergedChannels = 1
        started = []
        def setProgram(self, p): self.program = p
        def setArguments(self, a): self.arguments = list(a)
        def setProcessEnvironment(self, e): self.environment = dict(e)
        def setProcessChannelMode(self, m): pass
        def setWorkingDirectory(self, d): self.cwd = d
        def start(self):
            self.environment["OMP_NUM_THREADS"] = "1"
            self.popen = subprocess.Popen([self.program, *self.arguments], env=self.environment, cwd=self.cwd,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            QProcess.started.append(self)
        def waitForStarted(self, ms): return True
        def state(self): return self.Running if self.popen.poll() is None else self.NotRunning
        def exitStatus(self): return self.NormalExit
        def exitCode(self): return self.popen.returncode
        def readAll(self):
            if self.popen.poll() is None: return QByteArray(b"")
            return QByteArray(self.popen.stdout.read())
        def kill(self): self.popen.kill()
        def waitForFinished(self, ms):
            try: self.popen.wait(ms / 1000)
            except subprocess.TimeoutExpired: return False
            return True
        def errorString(self): return "stand-in"

    openedUrls = []
    qt = module("qt", QTimer=QTimer, QProcess=QProcess, QProcessEnvironment=QProcessEnvironment,
                Qt=types.SimpleNamespace(Checked=2, Unchecked=0, SmoothTransformation=1),
                QPixmap=lambda path: types.SimpleNamespace(path=path, scaledToWidth=lambda w, mode: ("scaled", path, w)),
                QDesktopServices=types.SimpleNamespace(openUrl=openedUrls.append),
                QUrl=types.SimpleNamespace(fromLocalFile=lambda p: p))
    ctk = module("ctk", ctkPathLineEdit=types.SimpleNamespace(Files=1, Dirs=2, Readable=4, Writable=8))

    # ---------------------------------------------------------------- slicer stand-ins
    errors = []

    @contextlib.contextmanager
    def tryWithErrorDisplay(message="", waitCursor=False):
        try:
            yield
        except Exception as error:
            errors.append(f"{message} {error}")

    shown, layers, activeTables, loadedUis = [], [], [], []
    slicer.util.tryWithErrorDisplay = tryWithErrorDisplay
    slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    slicer.util.tempDirectory = lambda key="tmp", **kwargs: tempfile.mkdtemp(prefix=key)
    slicer.util.loadUI = lambda path: loadedUis.append(path) or uiRoot
    slicer.util.childWidgetVariables = lambda root: ui
    slicer.util.setSliceViewerLayers = lambda background=None, **kwargs: layers.append(background.GetName())
    slicer.util.mainWindow = lambda: None
    slicer.mrmlScene = slicer.vtkMRMLScene()
    sequencesLogic = slicer.vtkSlicerSequencesLogic()
    sequencesLogic.SetMRMLScene(slicer.mrmlScene)
    plotsLogic = types.SimpleNamespace(ShowChartInLayout=lambda chart: shown.append(chart.GetName()))
    slicer.modules = types.SimpleNamespace(plots=types.SimpleNamespace(logic=lambda: plotsLogic),
                                           sequences=types.SimpleNamespace(logic=lambda: sequencesLogic))
    selectionNode = types.SimpleNamespace(SetActiveTableID=activeTables.append)
    applicationLogic = types.SimpleNamespace(GetSelectionNode=lambda: selectionNode, PropagateTableSelection=lambda: None)
    options = types.SimpleNamespace(noMainWindow=True)
    slicer.app = types.SimpleNamespace(testingEnabled=lambda: True, commandOptions=lambda: options,
                                       defaultScenePath=tempfile.mkdtemp(prefix="scenes"),
                                       layoutManager=lambda: None, applicationLogic=lambda: applicationLogic)

    SI = slicer_stand_ins.load_module_file(MODULE_FILE)
    from SemanticInterpolationLib.mrml.logic import arrayToMatrix, imageDataFromVoxels
    from SemanticInterpolationLib.mrml.training import tableNodeColumns

    def voxels(shape=(5, 24, 20), seed=0):
        rng = np.random.default_rng(seed)
        k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
        return (400 + 300 * np.sin(3 * k + 2 * j) * np.cos(4 * i) + rng.normal(0, 10, shape)).astype(np.int16)

    def addVolume(name, shape=(5, 24, 20), spacing=(1.0, 1.0, 4.0), className="vtkMRMLScalarVolumeNode", seed=0):
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        node.SetIJKToRASMatrix(arrayToMatrix(np.diag([*spacing, 1.0])))
        node.SetAndObserveImageData(imageDataFromVoxels(voxels(shape, seed)))
        return node

    def count(className="vtkMRMLScalarVolumeNode"):
        return slicer.mrmlScene.GetNumberOfNodesByClass(className)

    # ---------------------------------------------------------------- the widget, built by its own setup()
    class Layout:
        def __init__(self): self.widgets = []
        def addWidget(self, widget): self.widgets.append(widget)

    class ModulePanel:  # what Slicer passes as the widget's parent
        isEntered = True
        def __init__(self): self._layout = Layout()
        def layout(self): return self._layout

    panel = ModulePanel()
    widget = SI.SemanticInterpolationWidget(panel)
    widget.setup()
    parameters = widget._parameterNode
    upsample, train, evaluate = widget.upsampleTab, widget.trainingTab, widget.evaluateTab

    def waitFor(isBusy, poll, seconds=240):
        deadline = time.time() + seconds
        while isBusy() and time.time() < deadline:
            poll()
            time.sleep(0.05)
        assert not isBusy(), "did not finish in time"
''')


def runHarness(body: str, tmp_path: Path) -> str:
    pytest.importorskip("slicer", reason="slicer-core is not installed: cannot drive the module's tabs")
    code = (f"MODULE_FILE = {str(MODULE_FILE)!r}\nMODULE_DIR = {str(MODULE_DIR)!r}\nUI_FILE = {str(UI_FILE)!r}\n"
            f"TMP = {str(tmp_path)!r}\nTESTING_DIR = {str(Path(__file__).resolve().parent)!r}\n"
            + HARNESS + textwrap.dedent(body))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if "NO MRML" in result.stdout:
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_widget_setup_creates_the_tabs_and_they_follow_the_parameter_node(tmp_path):
    out = runHarness('''
        print("ui loaded:", loadedUis == [os.path.join(MODULE_DIR, "Resources", "UI", "SemanticInterpolation.ui")],
              os.path.isfile(loadedUis[0]))
        print("layout:", panel.layout().widgets == [uiRoot], "scene set:", uiRoot.scene is slicer.mrmlScene)
        print("tabs:", [type(tab).__name__ for tab in (upsample, train, evaluate)],
              all(tab.ui is widget.ui for tab in (upsample, train, evaluate)))
        wiring = [(ui.upsampleButton, upsample.onUpsampleButton), (ui.cancelButton, upsample.onCancelButton),
                  (ui.trainingStartButton, train.onTrainingStartButton),
                  (ui.trainingStopButton, train.onTrainingStopButton), (ui.evaluateButton, evaluate.onEvaluateButton),
                  (ui.evaluationCancelButton, evaluate.onEvaluationCancelButton),
                  (ui.evaluationShowTableButton, evaluate.onEvaluationShowTableButton)]
        print("buttons wired:", all(button.slots["clicked(bool)"] == slot for button, slot in wiring))
        print("path edits wired:", ui.checkpointPathLineEdit.slots["currentPathChanged(QString)"] == upsample.onCheckpointPathChanged,
              ui.trainingOutputPathLineEdit.slots["currentPathChanged(QString)"] == train.onTrainingOutputPathChanged,
              ui.trainingVolumesSelector.slots["checkedNodesChanged()"] == train.onTrainingVolumesChanged)
        print("timers:", [(type(t.slot.__self__).__name__, t.slot.__name__, t.interval) for t in timers])
        raw = slicer.mrmlScene.GetSingletonNode("SemanticInterpolation", "vtkMRMLScriptedModuleNode")
        print("parameter node:", parameters.parameterNode.GetID() == raw.GetID(),
              "gui:", parameters.connectedGuis.get(widget._parameterNodeGuiTag) is ui)
        print("defaults:", parameters.upsamplingFactor, parameters.computeDevice.name,
              os.path.basename(parameters.trainingOutputPath), "device info:", bool(ui.deviceInfoLabel.text))
        print("new defaults:", parameters.adaptToScan, parameters.adaptSeconds, parameters.trainingModelType.name)
        print("no volume:", ui.upsampleButton.enabled, ui.upsampleButton.toolTip, "|", ui.trainingStartButton.enabled,
              ui.evaluateButton.enabled, ui.trainingShowLossChartButton.enabled, ui.evaluationShowTableButton.enabled)

        volume = addVolume("thick")  # 5 slices of 4 mm; every change below reaches the tabs through the observer
        parameters.inputVolume = volume
        print("with input:", ui.upsampleButton.enabled, ui.upsampleButton.toolTip, "|", ui.outputGeometryLabel.text)
        parameters.upsamplingFactor = 2
        print("factor 2:", ui.outputGeometryLabel.text)
        print("sequence box:", ui.allSequenceFramesCheckBox.enabled, ui.outputVolumeSelector.enabled)
        parameters.evaluationVolume = volume
        print("evaluate:", ui.evaluateButton.enabled)
        for name in ("evaluateASI", "evaluateLinear", "evaluateBSpline", "evaluateLanczos"):
            setattr(parameters, name, False)
        print("no method:", ui.evaluateButton.enabled, ui.evaluateButton.toolTip, repr(ui.evaluationModelLabel.text))
        parameters.evaluateASI = True
        parameters.checkpointPath = "/models/clinic.pt"
        print("checkpoint to gui:", ui.checkpointPathLineEdit.currentPath, "|", ui.evaluationModelLabel.text)
        print("missing checkpoint:", ui.checkpointModelLabel.text.startswith("Model: unknown ("),
              "does not exist" in ui.checkpointModelLabel.text, "adapt box:", ui.adaptToScanCheckBox.enabled,
              "cannot be read" in ui.adaptToScanCheckBox.toolTip, ui.adaptSecondsSpinBox.enabled)
        ui.checkpointPathLineEdit.slots["currentPathChanged(QString)"]("/models/other.pt")  # the user picks a file
        print("checkpoint from gui:", parameters.checkpointPath)
        parameters.trainingFromScratch = True
        print("init path edit:", ui.trainingInitPathLineEdit.enabled)
        parameters.trainingSynthesisLoss = SI.SynthesisLoss.LPIPS
        print("lpips info:", bool(ui.trainingLossInfoLabel.text))
        parameters.trainingSynthesisLoss = SI.SynthesisLoss.MSE
        print("mse info:", repr(ui.trainingLossInfoLabel.text))

        widget.exit()
        print("after exit:", widget._parameterNodeGuiTag, parameters.connectedGuis)
        parameters.inputVolume = None
        print("not followed after exit:", ui.upsampleButton.enabled)
        widget.enter()
        print("after enter:", widget._parameterNodeGuiTag is not None, widget._parameterNode.inputVolume.GetName(),
              ui.upsampleButton.enabled)
        widget._parameterNode.inputVolume = None
        print("followed after enter:", ui.upsampleButton.enabled)

        slicer.mrmlScene.Clear(0)
        print("after scene close:", widget._parameterNode is not None and widget._parameterNode is not parameters,
              ui.upsampleButton.enabled, widget._parameterNode.inputVolume)
        widget.cleanup()
        print("cleanup:", [t.active for t in timers], len(widget.Observations))

        import SemanticInterpolationTabs  # developer mode Reload re-reads the tab files (Slicer: the module file only)
        previous = SemanticInterpolationTabs.UpsampleTab
        widget.onReload()
        print("reloaded:", SemanticInterpolationTabs.UpsampleTab is not previous,
              SemanticInterpolationTabs.UpsampleTab is sys.modules["SemanticInterpolationTabs.upsample"].UpsampleTab)
    ''', tmp_path)
    assert "ui loaded: True True" in out
    assert "layout: True scene set: True" in out
    assert "tabs: ['UpsampleTab', 'TrainingTab', 'EvaluateTab'] True" in out
    assert "buttons wired: True" in out and "path edits wired: True True True" in out
    assert "timers: [('UpsampleTab', 'poll', 100), ('TrainingTab', 'poll', 1000), ('EvaluateTab', 'poll', 100)]" in out
    assert "parameter node: True gui: True" in out
    assert "defaults: 4 AUTO asi-finetuned.pt device info: True" in out
    assert "new defaults: False 120 AUTO" in out
    assert "no volume: False Select an input volume | False False False False" in out
    assert ("with input: True Upsample the input volume through-plane with ASI | "
            "Slice axis k: 5 slices of 4 mm -> 17 slices of 1 mm") in out
    assert "factor 2: Slice axis k: 5 slices of 4 mm -> 9 slices of 2 mm" in out
    assert "sequence box: False True" in out
    assert "evaluate: True" in out
    assert "no method: False Select a fine-slice volume and at least one method ''" in out
    assert "checkpoint to gui: /models/clinic.pt | ASI uses the Upsample tab's checkpoint (clinic.pt)" in out
    assert "checkpoint from gui: /models/other.pt" in out
    assert "missing checkpoint: True True adapt box: False True False" in out
    assert "init path edit: False" in out
    assert "lpips info: True" in out and "mse info: ''" in out
    assert "after exit: None {}" in out and "not followed after exit: True" in out
    assert "after enter: True thick True" in out and "followed after enter: False" in out
    assert "after scene close: True False None" in out
    assert "cleanup: [False, False, False] 0" in out
    assert "reloaded: True True" in out


def test_upsample_tab_runs_in_the_background_and_adds_the_result(tmp_path):
    out = runHarness('''
        import torch
        from SemanticInterpolationLib import ASIAutoencoder, save_checkpoint

        torch.manual_seed(0)
        checkpoint = str(save_checkpoint(os.path.join(TMP, "random-init.pt"), ASIAutoencoder()))
        volume = addVolume("gui input", shape=(5, 20, 16))
        parameters.inputVolume = volume
        parameters.upsamplingFactor = 2
        parameters.checkpointPath = checkpoint
        parameters.computeDevice = SI.ComputeDevice.CPU
        before = count()
        upsample.onUpsampleButton()
        print("errors:", errors)
        print("running:", upsample.isRunning(), "button:", ui.upsampleButton.enabled, ui.upsampleButton.toolTip,
              "| cancel:", ui.cancelButton.enabled, "inputs:", ui.inputsCollapsibleButton.enabled,
              "progress:", ui.progressBar.visible, ui.progressBar.range, "timer:", upsample._pollTimer.active)
        print("status:", ui.statusLabel.text)
        waitFor(upsample.isRunning, upsample.poll)
        output = slicer.mrmlScene.GetFirstNodeByName("gui input ASI x2")
        print("added:", count() - before, output.GetImageData().GetDimensions(), "shown:", layers)
        print("status:", ui.statusLabel.text)
        print("after:", ui.upsampleButton.enabled, ui.cancelButton.enabled, ui.inputsCollapsibleButton.enabled,
              ui.progressBar.visible, upsample._pollTimer.active)
        print("input unchanged:", np.array_equal(slicer.util.arrayFromVolume(volume), voxels((5, 20, 16))))

        # Cancel: nothing is added
        before = count()
        upsample.onUpsampleButton()
        upsample.onCancelButton()
        print("cancelling:", ui.statusLabel.text, ui.cancelButton.enabled)
        waitFor(upsample.isRunning, upsample.poll)
        print("cancelled:", ui.statusLabel.text, count() - before)

        # Bad input: an error before anything runs
        parameters.inputVolume = addVolume("labels", className="vtkMRMLLabelMapVolumeNode")
        upsample.onUpsampleButton()
        print("label map:", errors[-1].startswith("Upsampling could not start."), upsample.isRunning())

        # A sequence: the input is a frame proxy; all frames are upsampled into a new sequence
        sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
        for seed, value in enumerate(["0", "40", "80"]):
            frame = slicer.vtkMRMLScalarVolumeNode()
            frame.SetIJKToRASMatrix(arrayToMatrix(np.diag([1.0, 1.0, 5.0, 1.0])))
            frame.SetAndObserveImageData(imageDataFromVoxels(voxels((5, 20, 16), seed)))
            sequence.SetDataNodeAtValue(frame, value)
        browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
        sequencesLogic.UpdateProxyNodesFromSequences(browser)
        parameters.inputVolume = browser.GetProxyNode(sequence)
        print("sequence box:", ui.allSequenceFramesCheckBox.enabled, ui.allSequenceFramesCheckBox.text)
        parameters.allSequenceFrames = True
        print("output selector:", ui.outputVolumeSelector.enabled)
        sequencesBefore = count("vtkMRMLSequenceNode")
        upsample.onUpsampleButton()
        waitFor(upsample.isRunning, upsample.poll)
        newest = slicer.mrmlScene.GetNthNodeByClass(count("vtkMRMLSequenceNode") - 1, "vtkMRMLSequenceNode")
        print("sequence output:", count("vtkMRMLSequenceNode") - sequencesBefore, newest.GetNumberOfDataNodes(),
              newest.GetNthDataNode(0).GetImageData().GetDimensions(), ui.statusLabel.text.startswith("Created"))
        print("errors at the end:", len(errors))
    ''', tmp_path)
    assert "errors: []" in out
    assert ("running: True button: False An upsampling is running | cancel: True inputs: False "
            "progress: True (0, 0) timer: True") in out
    assert "status: Upsampling 'gui input' x2..." in out
    assert "added: 1 (16, 20, 9) shown: ['gui input ASI x2']" in out
    assert "status: Created 'gui input ASI x2' in" in out
    assert "after: True False True False False" in out
    assert "input unchanged: True" in out
    assert "cancelling: Cancelling... False" in out
    assert "cancelled: Cancelled: nothing was added to the scene. 0" in out
    assert "label map: True False" in out
    assert "sequence box: True Upsample all 3 frames of sequence 'cine'" in out
    assert "output selector: False" in out
    assert "sequence output: 1 3 (16, 20, 9) True" in out
    assert "errors at the end: 1" in out


def test_train_tab_runs_a_training_process_and_hands_the_checkpoint_to_upsample(tmp_path):
    out = runHarness('''
        train_volumes = [addVolume(f"train {s}", seed=s) for s in range(2)]
        validation = addVolume("held out", seed=5)
        label = addVolume("labels", className="vtkMRMLLabelMapVolumeNode")

        # bad input: nothing checked -> the button is off; a label map -> an error, no process
        print("start enabled without volumes:", ui.trainingStartButton.enabled)
        ui.trainingVolumesSelector.checked = [label]
        train.onTrainingVolumesChanged()
        parameters.trainingFromScratch = True
        train.onTrainingStartButton()
        print("label map error:", "label map" in errors[-1], "processes:", len(QProcess.started))

        ui.trainingVolumesSelector.checked = list(train_volumes)
        train.onTrainingVolumesChanged()
        ui.trainingVolumesSelector.checked = []
        train.volumesToGui()  # parameter node -> GUI
        print("restored from references:", [n.GetName() for n in ui.trainingVolumesSelector.checked])
        parameters.trainingValidationVolume = validation
        parameters.trainingOutputPath = os.path.join(TMP, "clinic.pt")
        print("output path to gui:", ui.trainingOutputPathLineEdit.currentPath == parameters.trainingOutputPath)
        parameters.trainingEpochs, parameters.trainingPatchSize, parameters.trainingBatchSize = 2, 16, 2
        parameters.trainingSynthesisLoss = SI.SynthesisLoss.MSE
        parameters.trainingDevice = SI.ComputeDevice.CPU
        print("info:", ui.trainingDataInfoLabel.text)
        print("start enabled:", ui.trainingStartButton.enabled)
        train.onTrainingStartButton()
        print("errors:", errors[1:])
        print("training:", train.isTraining(), "stop enabled:", ui.trainingStopButton.enabled,
              "start enabled:", ui.trainingStartButton.enabled, "charts shown:", shown)
        print("while training:", ui.trainingDataCollapsibleButton.enabled, ui.trainingShowLossChartButton.enabled,
              ui.trainingProgressBar.visible, train._timer.active)
        waitFor(train.isTraining, train.poll)
        print("status:", ui.trainingStatusLabel.text)
        print("upsample checkpoint:", parameters.checkpointPath)
        print("upsample tab shows it:", ui.checkpointPathLineEdit.currentPath == parameters.checkpointPath,
              "clinic.best.pt" in ui.evaluationModelLabel.text)
        columns = tableNodeColumns(train.plot.epochTable)
        print("epochs in table:", columns["epoch"], "val psnr finite:", all(v == v for v in columns["val_syn_psnr"]))
        print("work folder removed:", not os.path.exists(QProcess.started[-1].cwd))
        print("after training:", ui.trainingStartButton.enabled, ui.trainingStopButton.enabled,
              ui.trainingProgressBar.visible, train._timer.active)
        train.showChart(validation=True)
        print("charts shown:", shown)

        # Stop: the stop file ends the process after its current step
        parameters.trainingEpochs = 1000
        parameters.trainingValidationVolume = None
        parameters.trainingOutputPath = os.path.join(TMP, "long.pt")
        train.onTrainingStartButton()
        train.onTrainingStopButton()
        waitFor(train.isTraining, train.poll)
        print("stopped:", ui.trainingStatusLabel.text)
        print("exit code:", QProcess.started[-1].popen.returncode)

        # Scene close: the plot's nodes are gone with the scene
        slicer.mrmlScene.Clear(0)
        print("after scene close:", train.plot, ui.trainingShowLossChartButton.enabled)
    ''', tmp_path)
    assert "start enabled without volumes: False" in out
    assert "label map error: True processes: 0" in out
    assert "restored from references: ['train 0', 'train 1']" in out
    assert "output path to gui: True" in out
    assert "info: 2 training volume(s), 6 triplets of consecutive slices" in out
    assert "start enabled: True" in out and "errors: []" in out
    assert "training: True stop enabled: True start enabled: False charts shown: ['ASI training clinic: loss']" in out
    assert "while training: False True True True" in out
    assert "status: Finished 2 epochs" in out and "It is selected in the Upsample tab." in out
    assert f"upsample checkpoint: {tmp_path / 'clinic.best.pt'}" in out
    assert "upsample tab shows it: True True" in out
    assert "epochs in table: [1.0, 2.0] val psnr finite: True" in out
    assert "work folder removed: True" in out
    assert "after training: True False False False" in out
    assert "'ASI training clinic: validation PSNR'" in out
    assert "stopped: Stopped after 0 complete epoch(s); kept checkpoint: none." in out
    assert "exit code: 130" in out
    assert "after scene close: None False" in out


def test_evaluate_tab_runs_in_the_background_and_shows_table_and_plots(tmp_path):
    out = runHarness('''
        fine = addVolume("fine", shape=(13, 24, 20), spacing=(1.0, 1.0, 1.2))
        parameters.evaluationVolume = fine
        parameters.evaluationFactors = "2,3"
        parameters.evaluateASI = parameters.evaluateLanczos = False
        parameters.evaluationOutputFolder = os.path.join(TMP, "report")
        parameters.evaluationAcquisitionNoisePercent = 3.0
        print("folder to gui:", ui.evaluationOutputFolderLineEdit.currentPath == parameters.evaluationOutputFolder)
        print("evaluate enabled:", ui.evaluateButton.enabled, "model label:", repr(ui.evaluationModelLabel.text))
        evaluate.onEvaluateButton()
        print("running:", evaluate.isEvaluating(), "cancel enabled:", ui.evaluationCancelButton.enabled,
              "evaluate enabled:", ui.evaluateButton.enabled, "inputs:", ui.evaluationInputsCollapsibleButton.enabled,
              "timer:", evaluate._timer.active)
        print("status:", ui.evaluationStatusLabel.text)
        waitFor(evaluate.isEvaluating, evaluate.poll)
        print("errors:", errors)
        table = ui.evaluationTableView.tableNode
        print("table:", table.GetName(), table.GetNumberOfRows(), tableNodeColumns(table)["Method"],
              table is evaluate.table)
        print("plot:", ui.evaluationPlotLabel.pixmap[1].endswith("boxplots.png"), ui.evaluationPlotLabel.visible)
        print("noise:", "Rician noise of sigma 0.03" in open(os.path.join(str(evaluate.folder), "summary.md"), encoding="utf-8").read())
        print("status:", ui.evaluationStatusLabel.text)
        print("result buttons:", ui.evaluationOpenFolderButton.enabled, ui.evaluationShowTableButton.enabled,
              "progress:", ui.evaluationProgressBar.visible, "timer:", evaluate._timer.active)
        ui.evaluationShowTableButton.slots["clicked(bool)"]()
        ui.evaluationOpenFolderButton.slots["clicked(bool)"]()
        print("table shown:", activeTables == [table.GetID()], "folder opened:", openedUrls == [str(evaluate.folder)])

        parameters.evaluationFactors = "2,x"
        evaluate.onEvaluateButton()
        print("bad factors:", "not a whole number" in errors[-1], "running:", evaluate.isEvaluating())
        parameters.evaluationFactors = "2,3"
        evaluate.onEvaluateButton()
        evaluate.onEvaluationCancelButton()
        waitFor(evaluate.isEvaluating, evaluate.poll)
        print("cancelled:", ui.evaluationStatusLabel.text)

        # Scene close: the table node is gone with the scene
        slicer.mrmlScene.Clear(0)
        print("after scene close:", evaluate.table, ui.evaluationShowTableButton.enabled)
    ''', tmp_path)
    assert "folder to gui: True" in out
    assert "evaluate enabled: True model label: ''" in out
    assert "running: True cancel enabled: True evaluate enabled: False inputs: False timer: True" in out
    assert "status: Evaluating 'fine' at K = 2, 3..." in out
    assert "errors: []" in out
    assert "table: fine evaluation 4 ['Linear', 'B-spline', 'Linear', 'B-spline'] True" in out
    assert "plot: True True" in out
    assert "noise: True" in out
    assert "status: Done in" in out and "report in" in out
    assert "result buttons: True True progress: False timer: False" in out
    assert "table shown: True folder opened: True" in out
    assert "bad factors: True running: False" in out
    assert "cancelled: Cancelled." in out
    assert "after scene close: None False" in out


def test_upsample_tab_shows_the_model_type_and_adapts_to_the_scan(tmp_path):
    """The Model section names the checkpoint's model type (read once per file); Advanced > Adapt to this scan is
    off for asi checkpoints, reaches the logic as adapt=SECONDS for pair-unet ones, and the report is shown."""
    out = runHarness('''
        import torch
        from SemanticInterpolationLib import ASIAutoencoder, save_checkpoint
        from SemanticInterpolationLib.models import checkpoint as checkpointModule
        from SemanticInterpolationLib.models.normalization import IntensityNormalization
        from SemanticInterpolationLib.models.pair_unet import PairUNet

        torch.manual_seed(0)
        asi = str(save_checkpoint(os.path.join(TMP, "asi.pt"), ASIAutoencoder()))
        model = PairUNet()
        with torch.no_grad():
            model.head.weight.normal_(0, 0.02)
        pair = str(save_checkpoint(os.path.join(TMP, "pair.pt"), model, normalization=IntensityNormalization(clip=False)))
        reads = []
        realLoad = checkpointModule.load_checkpoint
        checkpointModule.load_checkpoint = lambda path: reads.append(os.path.basename(str(path))) or realLoad(path)

        volume = addVolume("scan", shape=(6, 20, 16))
        parameters.inputVolume = volume
        parameters.upsamplingFactor = 2
        parameters.computeDevice = SI.ComputeDevice.CPU
        parameters.checkpointPath = asi
        print("asi:", ui.checkpointModelLabel.text, "| adapt box:", ui.adaptToScanCheckBox.enabled,
              "| tooltip:", "asi (asi-journal) model" in ui.adaptToScanCheckBox.toolTip)
        parameters.adaptToScan = True  # checked, but an asi checkpoint cannot be adapted: the run does not adapt
        print("asi checked:", ui.adaptSecondsSpinBox.enabled, upsample.adaptSeconds())
        parameters.checkpointPath = pair
        print("pair:", ui.checkpointModelLabel.text, "| adapt box:", ui.adaptToScanCheckBox.enabled,
              ui.adaptSecondsSpinBox.enabled, upsample.adaptSeconds())
        parameters.adaptToScan = False
        print("unchecked:", ui.adaptSecondsSpinBox.enabled, upsample.adaptSeconds())
        parameters.upsamplingFactor = 3
        parameters.upsamplingFactor = 2
        print("reads:", reads)  # once per file, not on every parameter change

        # a run with adaptation: 1 s budget, the report in the status text, a new volume
        parameters.adaptToScan = True
        parameters.adaptSeconds = 1
        before = count()
        upsample.onUpsampleButton()
        print("errors:", errors)
        print("status while running:", ui.statusLabel.text)
        print("job:", upsample._run.job.adapt, upsample._run.job.sliceThickness, upsample._run.job.testTimeAugmentation)
        waitFor(upsample.isRunning, upsample.poll)
        status = ui.statusLabel.text
        print("added:", count() - before, slicer.mrmlScene.GetFirstNodeByName("scan ASI x2").GetImageData().GetDimensions())
        print("status created:", status.startswith("Created 'scan ASI x2'"), "adapted to the scan (1 s budget)" in status)
        print("report:", "held-out acquired slices" in status, "PSNR before" in status, "linear" in status,
              "B-spline" in status, ("kept the adapted model" in status) or ("kept the original model" in status))

        # slice thickness: the field's mm, else a DICOM-loaded node's Slice Thickness from the database, else auto
        class DicomDatabase:
            def instanceValue(self, uid, tag):
                return {"1.2.3": {"0018,0050": "2.5"}, "9.9": {"0018,0050": ""}}.get(uid, {}).get(tag, "")
        slicer.dicomDatabase = DicomDatabase()
        print("thickness auto:", upsample.sliceThickness(volume))
        volume.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
        print("thickness dicom:", upsample.sliceThickness(volume))
        volume.SetAttribute("DICOM.instanceUIDs", "9.9")
        print("thickness empty tag:", upsample.sliceThickness(volume))
        parameters.sliceThickness = 4.0
        print("thickness field:", upsample.sliceThickness(volume))
        parameters.sliceThickness = 0.0
        del slicer.dicomDatabase

        # cancel while adapting: nothing is added
        parameters.adaptSeconds = 600
        before = count()
        upsample.onUpsampleButton()
        time.sleep(0.5)
        upsample.onCancelButton()
        waitFor(upsample.isRunning, upsample.poll)
        print("cancelled:", ui.statusLabel.text, count() - before)

        # bad input: too few slices to adapt to -> an error before anything runs
        parameters.inputVolume = addVolume("three slices", shape=(3, 20, 16))
        upsample.onUpsampleButton()
        print("three slices:", errors[-1].startswith("Upsampling could not start."), "at least 4" in errors[-1],
              upsample.isRunning())

        # the file changes (a training rewrote it): read again
        time.sleep(0.01)
        save_checkpoint(pair, ASIAutoencoder())
        parameters.upsamplingFactor = 3
        print("rewritten:", ui.checkpointModelLabel.text.startswith("Model: asi ("), ui.adaptToScanCheckBox.enabled,
              reads)  # pair.pt: the tab's first read, the engine's model (once for both runs), the tab again
    ''', tmp_path)
    assert "asi: Model: asi (asi-journal) | adapt box: False | tooltip: True" in out
    assert "asi checked: False None" in out
    assert "pair: Model: pair-unet (pair-unet-24-48-96) | adapt box: True True 120.0" in out
    assert "unchecked: False None" in out
    assert "reads: ['asi.pt', 'pair.pt']" in out
    assert "errors: []" in out
    assert "status while running: Adapting the model to 'scan' (up to 1 s), then upsampling x2..." in out
    assert "job: 1.0 auto auto" in out
    assert "thickness auto: auto" in out
    assert "thickness dicom: 2.5" in out
    assert "thickness empty tag: auto" in out
    assert "thickness field: 4.0" in out
    assert "added: 1 (16, 20, 11)" in out
    assert "status created: True True" in out
    assert "report: True True True True True" in out
    assert "cancelled: Cancelled: nothing was added to the scene. 0" in out
    assert "three slices: True True False" in out
    assert "rewritten: True False ['asi.pt', 'pair.pt', 'pair.pt', 'pair.pt']" in out


def test_train_tab_model_type_reaches_the_command_line(tmp_path):
    out = runHarness('''
        from SemanticInterpolationLib.mrml import training as mrml_training

        volumes = [addVolume(f"train {s}", shape=(8, 24, 20), seed=s) for s in range(2)]
        ui.trainingVolumesSelector.checked = list(volumes)
        train.onTrainingVolumesChanged()
        parameters.trainingOutputPath = os.path.join(TMP, "pair.pt")
        parameters.trainingFromScratch = True

        def arguments():
            job = mrml_training.prepareTraining(train.trainingSettings(), os.path.join(TMP, "work"), check=False)
            job.cleanup()
            return job.arguments

        print("auto:", train.trainingSettings().modelType, "--model-type" in arguments())
        for choice in (SI.TrainingModelType.PAIR_UNET, SI.TrainingModelType.ASI):
            parameters.trainingModelType = choice
            args = arguments()
            print(choice.name + ":", train.trainingSettings().modelType, args[args.index("--model-type") + 1])
    ''', tmp_path)
    assert "auto: auto False" in out
    assert "PAIR_UNET: pair-unet pair-unet" in out
    assert "ASI: asi asi" in out


def test_self_test_gui_run_drives_the_split_widget(tmp_path):
    """The module's own test_GuiRun (what Slicer's self-test runs) against the widget built here.

    ``slicer.app.processEvents`` stands for the Qt event loop: it fires the Upsample tab's timer.
    """
    out = runHarness('''
        slicer.modules.semanticinterpolation = types.SimpleNamespace(
            widgetRepresentation=lambda: types.SimpleNamespace(self=lambda: widget))
        slicer.app.processEvents = lambda: [timer.slot() for timer in timers if timer.active]
        test = SI.SemanticInterpolationTest("test_GuiRun")
        test.setUp()  # closes the scene: the widget's observers run
        print("parameter node after setUp:", widget._parameterNode is not None)
        test.test_GuiRun()
        print("errors:", errors, "shown:", layers)
    ''', tmp_path)
    assert "parameter node after setUp: True" in out
    assert "delayDisplay: GUI run passed" in out
    assert "errors: [] shown: ['gui input ASI x2']" in out
