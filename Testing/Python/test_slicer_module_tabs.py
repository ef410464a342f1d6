"""Drive the Train and Evaluate tabs' widget code without the Slicer application.

The module file is imported with stand-ins for what only Slicer has (Qt widgets built from the
names in the .ui, QTimer, a QProcess that runs a real subprocess, the parameter node wrapper as a
plain class, slicer.util dialogs); scenes and nodes are the real slicer-core ones, the training
process and the evaluation are real. It checks the glue: start -> poll -> finish, the plot and table
nodes, the new checkpoint handed to the Upsample tab, errors shown before any process starts.
What it cannot show (layout, real Qt signals, the parameter node wrapper's GUI connections) needs Slicer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_FILE = REPOSITORY / "SemanticInterpolation" / "SemanticInterpolation.py"
UI_FILE = REPOSITORY / "SemanticInterpolation" / "Resources" / "UI" / "SemanticInterpolation.ui"

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
                                 value=0, range=None, slots={}, pixmap=None, tableNode=None, width=400)
        def connect(self, signal, slot): self.slots[signal] = slot
        def setVisible(self, visible): self.visible = visible
        def setValue(self, value): self.value = value
        def setRange(self, low, high): self.range = (low, high)
        def setStyleSheet(self, style): self.style = style
        def setPixmap(self, pixmap): self.pixmap = pixmap
        def setMRMLTableNode(self, node): self.tableNode = node
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

    class QTimer:
        def __init__(self): self.active = False
        def setInterval(self, ms): pass
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

    qt = module("qt", QTimer=QTimer, QProcess=QProcess, QProcessEnvironment=QProcessEnvironment,
                Qt=types.SimpleNamespace(Checked=2, Unchecked=0, SmoothTransformation=1),
                QPixmap=lambda path: types.SimpleNamespace(path=path, scaledToWidth=lambda w, mode: ("scaled", path, w)),
                QDesktopServices=types.SimpleNamespace(openUrl=lambda url: None),
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

    shown = []
    slicer.util.tryWithErrorDisplay = tryWithErrorDisplay
    slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
    slicer.util.tempDirectory = lambda key="tmp", **kwargs: tempfile.mkdtemp(prefix=key)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    plotsLogic = types.SimpleNamespace(ShowChartInLayout=lambda chart: shown.append(chart.GetName()))
    slicer.modules = types.SimpleNamespace(plots=types.SimpleNamespace(logic=lambda: plotsLogic))
    options = types.SimpleNamespace(noMainWindow=True)
    slicer.app = types.SimpleNamespace(testingEnabled=lambda: True, commandOptions=lambda: options,
                                       defaultScenePath=tempfile.mkdtemp(prefix="scenes"))

    SI = slicer_stand_ins.load_module_file(MODULE_FILE)
    from SemanticInterpolationLib import mrml
    from SemanticInterpolationLib.mrml_training import tableNodeColumns

    def addVolume(name, shape=(5, 24, 20), spacing=(1.0, 1.0, 4.0), className="vtkMRMLScalarVolumeNode", seed=0):
        rng = np.random.default_rng(seed)
        k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
        voxels = (400 + 300 * np.sin(3 * k + 2 * j) * np.cos(4 * i) + rng.normal(0, 10, shape)).astype(np.int16)
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        node.SetIJKToRASMatrix(mrml.arrayToMatrix(np.diag([*spacing, 1.0])))
        node.SetAndObserveImageData(mrml.imageDataFromVoxels(voxels))
        return node

    widget = SI.SemanticInterpolationWidget()
    widget.ui = ui
    widget._setupTrainingTab()
    widget._setupEvaluateTab()
    parameters = SI.SemanticInterpolationParameterNode()
    for field in ("inputVolume", "outputVolume", "trainingValidationVolume", "evaluationVolume"):
        setattr(parameters, field, None)
    parameters.parameterNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "parameters")
    widget._parameterNode = parameters

    def waitFor(isBusy, poll, seconds=240):
        deadline = time.time() + seconds
        while isBusy() and time.time() < deadline:
            poll()
            time.sleep(0.05)
        assert not isBusy(), "did not finish in time"
''')


def runHarness(body: str, tmp_path: Path) -> str:
    pytest.importorskip("slicer", reason="slicer-core is not installed: cannot drive the module's tabs")
    code = (f"MODULE_FILE = {str(MODULE_FILE)!r}\nUI_FILE = {str(UI_FILE)!r}\nTMP = {str(tmp_path)!r}\n"
            f"TESTING_DIR = {str(Path(__file__).resolve().parent)!r}\n"
            + HARNESS + textwrap.dedent(body))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if "NO MRML" in result.stdout:
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_train_tab_runs_a_training_process_and_hands_the_checkpoint_to_upsample(tmp_path):
    out = runHarness('''
        train = [addVolume(f"train {s}", seed=s) for s in range(2)]
        validation = addVolume("held out", seed=5)
        label = addVolume("labels", className="vtkMRMLLabelMapVolumeNode")

        # bad input: nothing checked -> the button is off; a label map -> an error, no process
        widget._checkCanApply()
        print("start enabled without volumes:", ui.trainingStartButton.enabled)
        ui.trainingVolumesSelector.checked = [label]
        widget.onTrainingVolumesChanged()
        parameters.trainingFromScratch = True
        widget.onTrainingStartButton()
        print("label map error:", "label map" in errors[-1], "processes:", len(QProcess.started))

        ui.trainingVolumesSelector.checked = list(train)
        widget.onTrainingVolumesChanged()
        ui.trainingVolumesSelector.checked = []
        widget._trainingVolumesToGui()  # parameter node -> GUI
        print("restored from references:", [n.GetName() for n in ui.trainingVolumesSelector.checked])
        parameters.trainingValidationVolume = validation
        parameters.trainingOutputPath = os.path.join(TMP, "clinic.pt")
        parameters.trainingEpochs, parameters.trainingPatchSize, parameters.trainingBatchSize = 2, 16, 2
        parameters.trainingSynthesisLoss = SI.SynthesisLoss.MSE
        parameters.trainingDevice = SI.ComputeDevice.CPU
        widget._checkCanApply()
        print("info:", ui.trainingDataInfoLabel.text)
        print("start enabled:", ui.trainingStartButton.enabled)
        widget.onTrainingStartButton()
        print("errors:", errors[1:])
        print("training:", widget.isTraining(), "stop enabled:", ui.trainingStopButton.enabled,
              "start enabled:", ui.trainingStartButton.enabled, "charts shown:", shown)
        waitFor(widget.isTraining, widget._pollTraining)
        print("status:", ui.trainingStatusLabel.text)
        print("upsample checkpoint:", parameters.checkpointPath)
        columns = tableNodeColumns(widget._trainingPlot.epochTable)
        print("epochs in table:", columns["epoch"], "val psnr finite:", all(v == v for v in columns["val_syn_psnr"]))
        print("work folder removed:", not os.path.exists(QProcess.started[-1].cwd))
        widget._showTrainingChart(validation=True)
        print("charts shown:", shown)

        # Stop: the stop file ends the process after its current step
        parameters.trainingEpochs = 1000
        parameters.trainingValidationVolume = None
        parameters.trainingOutputPath = os.path.join(TMP, "long.pt")
        widget.onTrainingStartButton()
        widget.onTrainingStopButton()
        waitFor(widget.isTraining, widget._pollTraining)
        print("stopped:", ui.trainingStatusLabel.text)
        print("exit code:", QProcess.started[-1].popen.returncode)
    ''', tmp_path)
    assert "start enabled without volumes: False" in out
    assert "label map error: True processes: 0" in out
    assert "restored from references: ['train 0', 'train 1']" in out
    assert "info: 2 training volume(s), 6 triplets of consecutive slices" in out
    assert "start enabled: True" in out and "errors: []" in out
    assert "training: True stop enabled: True start enabled: False charts shown: ['ASI training clinic: loss']" in out
    assert "status: Finished 2 epochs" in out and "It is selected in the Upsample tab." in out
    assert f"upsample checkpoint: {tmp_path / 'clinic.best.pt'}" in out
    assert "epochs in table: [1.0, 2.0] val psnr finite: True" in out
    assert "work folder removed: True" in out
    assert "'ASI training clinic: validation PSNR'" in out
    assert "stopped: Stopped after 0 complete epoch(s); kept checkpoint: none." in out
    assert "exit code: 130" in out


def test_evaluate_tab_runs_in_the_background_and_shows_table_and_plots(tmp_path):
    out = runHarness('''
        fine = addVolume("fine", shape=(13, 24, 20), spacing=(1.0, 1.0, 1.2))
        parameters.evaluationVolume = fine
        parameters.evaluationFactors = "2,3"
        parameters.evaluateASI = parameters.evaluateLanczos = False
        parameters.evaluationOutputFolder = os.path.join(TMP, "report")
        widget._checkCanApply()
        print("evaluate enabled:", ui.evaluateButton.enabled)
        widget.onEvaluateButton()
        print("running:", widget.isEvaluating(), "cancel enabled:", ui.evaluationCancelButton.enabled)
        waitFor(widget.isEvaluating, widget._pollEvaluation)
        print("errors:", errors)
        table = ui.evaluationTableView.tableNode
        print("table:", table.GetName(), table.GetNumberOfRows(), tableNodeColumns(table)["Method"])
        print("plot:", ui.evaluationPlotLabel.pixmap[1].endswith("boxplots.png"), ui.evaluationPlotLabel.visible)
        print("status:", ui.evaluationStatusLabel.text)
        print("open folder enabled:", ui.evaluationOpenFolderButton.enabled)

        parameters.evaluationFactors = "2,x"
        widget.onEvaluateButton()
        print("bad factors:", "not a whole number" in errors[-1], "running:", widget.isEvaluating())
        parameters.evaluationFactors = "2,3"
        widget.onEvaluateButton()
        widget.onEvaluationCancelButton()
        waitFor(widget.isEvaluating, widget._pollEvaluation)
        print("cancelled:", ui.evaluationStatusLabel.text)
    ''', tmp_path)
    assert "evaluate enabled: True" in out
    assert "running: True cancel enabled: True" in out
    assert "errors: []" in out
    assert "table: fine evaluation 4 ['Linear', 'B-spline', 'Linear', 'B-spline']" in out
    assert "plot: True True" in out
    assert "status: Done in" in out and "report in" in out
    assert "open folder enabled: True" in out
    assert "bad factors: True running: False" in out
    assert "cancelled: Cancelled." in out
