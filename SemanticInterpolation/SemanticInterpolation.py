"""3D Slicer module "Semantic Interpolation": through-plane upsampling of anisotropic MRI with ASI.

The computation lives in ``SemanticInterpolationLib`` (plain Python, importable without Slicer);
this file is the thin Slicer layer: module description, GUI (Upsample tab), dependency
installation on first use, and the self-test.

Importing this file (Slicer does it at startup) imports neither torch nor SemanticInterpolationLib:
torch may not be installed yet, and importing it would slow down every Slicer start. The module
logic class, a subclass of ``SemanticInterpolationLib.SemanticInterpolationLogic``, is therefore
created on first use (see :func:`getLogicClass`); ``SemanticInterpolation.SemanticInterpolationLogic``
still works as an attribute of this module.
"""

import enum
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import ctk
import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import *  # noqa: F403 (Slicer's scripted module convention)
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import (
    parameterNodeWrapper,
    WithinRange,
)

from slicer import vtkMRMLScalarVolumeNode

#: torch versions the engine is tested with (the PyTorch extension installs a matching build).
MINIMUM_TORCH_VERSION = "2.2"
PAPER_CITATION = (
    'J. Sander, B. D. de Vos, I. Isgum, "Autoencoding low-resolution MRI for semantically smooth '
    'interpolation of anisotropic MRI", Medical Image Analysis, 2022 (arXiv:2202.09258)'
)
PAPER_URL = "https://arxiv.org/abs/2202.09258"
#: Milliseconds between two looks at a running upsampling (progress bar, end of the run).
POLL_INTERVAL_MS = 100


#
# SemanticInterpolation
#


class SemanticInterpolation(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Semantic Interpolation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering"), "Image Synthesis"]
        self.parent.dependencies = []  # PyTorchUtils (PyTorch extension) is needed only on first use
        self.parent.contributors = ["SemanticInterpolation developers"]
        self.parent.helpText = _("""
Upsamples anisotropic MRI (thick slices) in the through-plane direction with ASI, an autoencoder that
synthesizes the missing slices by decoding convex combinations of the latent codes of adjacent acquired slices.
Select a scalar volume, the factor K and a model checkpoint, then click Upsample: a new volume with K times
thinner slices appears in the same place in space (same origin, directions and parent transform).
For a volume sequence (e.g. cardiac cine) all frames can be upsampled at once.
The same logic is available from the Python console and in batch jobs:
<code>from SemanticInterpolationLib import SemanticInterpolationLogic</code>.
""")
        self.parent.acknowledgementText = _("""
The method is described in: {citation}. <a href="{url}">Paper</a>.
PyTorch is provided by the PyTorch extension (PyTorchUtils).
""").format(citation=PAPER_CITATION, url=PAPER_URL)


#
# Dependencies (installed on first use, never at import)
#


def _isUnattended() -> bool:
    """True in testing and batch (no main window) mode: nobody can answer a dialog."""
    app = getattr(slicer, "app", None)
    if app is None:
        return True
    return bool(app.testingEnabled() or app.commandOptions().noMainWindow)


def _requirementsFile() -> Path:
    return Path(__file__).resolve().parent / "Resources" / "requirements.txt"


def _readRequirements(path: Path) -> list:
    """Requirement strings of a requirements.txt (comments and blank lines skipped)."""
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _missingRequirements(requirements: list) -> list:
    from importlib.metadata import PackageNotFoundError, version
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def ensureTorch(askConfirmation: bool) -> None:
    """Make ``import torch`` work, installing PyTorch with the PyTorch extension if needed.

    Raises RuntimeError with what to do when the PyTorch extension is missing, the user
    declines, or the installed torch is too old.
    """
    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_(
                "Semantic Interpolation needs PyTorch, which is provided by the PyTorch extension. "
                "Install the 'PyTorch' extension from the Extensions Manager, restart Slicer and try again."))
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            logging.info("Semantic Interpolation: installing PyTorch (this may take several minutes)...")
            torch = torchLogic.installTorch(askConfirmation=askConfirmation,
                                            torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            if torch is None:
                raise RuntimeError(_("PyTorch was not installed, so upsampling cannot run. Click Upsample again "
                                     "to install it, or install it in the PyTorch Utils module."))
    import torch
    from packaging import version

    if version.parse(torch.__version__.split("+")[0]) < version.parse(MINIMUM_TORCH_VERSION):
        raise RuntimeError(_(
            "PyTorch {found} is too old (at least {minimum} is needed). Uninstall it in the PyTorch Utils module, "
            "restart Slicer and click Upsample again to install a current version.").format(
                found=torch.__version__, minimum=MINIMUM_TORCH_VERSION))


def ensurePythonRequirements(askConfirmation: bool) -> None:
    """Install the packages of Resources/requirements.txt that are missing (after the user confirms).

    In testing mode nothing is installed (the environment must not change under a test); in
    batch mode packages are installed without asking.
    """
    missing = _missingRequirements(_readRequirements(_requirementsFile()))
    if not missing:
        return
    try:
        import slicer.packaging as slicerPackaging  # Slicer versions since 2026 (pip_ensure)
    except ImportError:
        slicerPackaging = None
    if slicerPackaging is not None and hasattr(slicerPackaging, "pip_ensure"):
        slicerPackaging.pip_ensure(missing, prompt_install=askConfirmation, requester="Semantic Interpolation")
        return
    app = getattr(slicer, "app", None)
    if app is not None and app.testingEnabled():
        logging.warning("Semantic Interpolation: testing mode, not installing missing packages: %s", ", ".join(missing))
        return
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("Semantic Interpolation needs these Python packages, which will be downloaded and installed now:\n\n"
              "{packages}").format(packages="\n".join(missing)),
            _("Install Python packages")):
        raise RuntimeError(_("The required Python packages were not installed: {packages}").format(
            packages=", ".join(missing)))
    with slicer.util.WaitCursor():
        slicer.util.pip_install(missing)


def ensurePythonDependencies(askConfirmation: Optional[bool] = None) -> None:
    """Install torch (PyTorch extension) and the other Python packages on first use.

    ``askConfirmation``: show confirmation dialogs; default: yes, except in testing and batch mode.
    """
    if askConfirmation is None:
        askConfirmation = not _isUnattended()
    ensureTorch(askConfirmation)
    ensurePythonRequirements(askConfirmation)


def computeDeviceReport() -> tuple:
    """``(text, isWarning)`` saying which compute devices PyTorch sees, with advice when there is no GPU."""
    if importlib.util.find_spec("torch") is None:
        return _("PyTorch is not installed yet: it is installed (PyTorch extension) on the first Upsample."), False
    try:
        import torch
        from SemanticInterpolationLib.devices import available_devices, describe_device
    except Exception as error:  # a broken torch install must not break the module GUI
        return _("PyTorch cannot be loaded ({error}). Reinstall it in the PyTorch Utils module.").format(
            error=error), True
    found = available_devices()
    described = ", ".join(describe_device(torch.device(name)) for name in found)
    if any(name != "cpu" for name in found):
        return _("Found: {devices}").format(devices=described), False
    if torch.version.cuda is None:
        return _("Only the CPU can be used: PyTorch {version} is a CPU-only build (upsampling is slower). To use an "
                 "NVIDIA GPU, uninstall PyTorch in the PyTorch Utils module, restart Slicer and install it again "
                 "(a CUDA build is chosen when an NVIDIA driver is found).").format(version=torch.__version__), True
    return _("No GPU found by PyTorch {version} (CUDA {cuda}): the CPU is used. Check that an NVIDIA GPU and a "
             "current driver are installed (nvidia-smi).").format(version=torch.__version__,
                                                                  cuda=torch.version.cuda), True


#
# SemanticInterpolationParameterNode
#


class ComputeDevice(enum.Enum):
    """Device choice of the GUI; the value is passed to the logic's ``device`` argument."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self) -> str:
        return {ComputeDevice.AUTO: _("Automatic (GPU if available)"),
                ComputeDevice.CPU: _("CPU"),
                ComputeDevice.GPU: _("GPU (CUDA)")}[self]


@parameterNodeWrapper
class SemanticInterpolationParameterNode:
    """
    The parameters of the Upsample tab (saved with the scene).

    inputVolume - Anisotropic scalar volume to upsample.
    allSequenceFrames - Upsample every frame of the sequence that the input volume shows.
    upsamplingFactor - K: slice spacing divided by K.
    checkpointPath - ASI model checkpoint file (.pt); empty = the bundled default model. A str, not a
        pathlib.Path, so that "no file" is empty rather than "."; synced with the ctkPathLineEdit in the widget.
    computeDevice - Where the network runs.
    keepAcquiredSlices - Copy the acquired slices unchanged into the result.
    outputVolume - Volume to overwrite; none = create a new volume for each run.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    allSequenceFrames: bool = False
    upsamplingFactor: Annotated[int, WithinRange(2, 32)] = 4
    checkpointPath: str = ""
    computeDevice: ComputeDevice = ComputeDevice.AUTO
    keepAcquiredSlices: bool = True
    outputVolume: vtkMRMLScalarVolumeNode


class _ParameterNodeLogic(ScriptedLoadableModuleLogic):
    """Finds or creates the module's parameter node; unlike the full logic it needs no torch."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "SemanticInterpolation"

    def getParameterNode(self):
        return SemanticInterpolationParameterNode(super().getParameterNode())


def checkpointArgument(path) -> Optional[str]:
    """The logic's ``checkpoint`` argument for a path from the GUI: None (default model) when empty."""
    text = str(path or "").strip()
    return None if text in ("", ".") else text


#
# SemanticInterpolationWidget
#


class SemanticInterpolationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Responsiveness: a run is split into prepare (GUI thread: validation, voxels copied out of
    MRML), compute (a Python worker thread; torch releases the GIL while it computes) and finish
    (GUI thread: output node created). A QTimer polls the worker every POLL_INTERVAL_MS for
    progress and its end. MRML and Qt are only ever touched from the GUI thread, and the user
    can keep working (and Cancel) during a run. Processing events from the progress callback
    instead would freeze the GUI for a whole batch of slices and allow re-entrant clicks.
    """

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self._logic = None  # created on first use (see the logic property): it imports torch
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # BackgroundRun of the upsampling in progress
        self._runStarted = 0.0
        self._pollTimer = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemanticInterpolation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets ("mrmlSceneChanged(vtkMRMLScene*)" is connected in the .ui).
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.ui.checkpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.checkpointPathLineEdit.nameFilters = [_("ASI checkpoint (*.pt *.pth)"), _("All files (*)")]
        self.ui.checkpointPathLineEdit.settingKey = "SemanticInterpolation/RecentCheckpoints"
        self.ui.progressBar.setVisible(False)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._pollRun)

        # These connections ensure that we update parameter node when scene is closed
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Buttons
        self.ui.upsampleButton.connect("clicked(bool)", self.onUpsampleButton)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onCheckpointPathChanged)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()
        self.updateDeviceInformation()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._run is not None:
            self._run.cancel()
            self._run.wait(10)
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module (a running upsampling goes on)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        if self._run is not None:
            self._run.cancel()  # its nodes would belong to a closed scene
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed; preselect an input and the default checkpoint."""
        self.setParameterNode(_ParameterNodeLogic().getParameterNode())

        if not self._parameterNode.inputVolume:
            # the first plain scalar volume (not a label map or vector volume, which derive from it)
            for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
                volume = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
                if volume.GetClassName() == "vtkMRMLScalarVolumeNode":
                    self._parameterNode.inputVolume = volume
                    break
        if checkpointArgument(self._parameterNode.checkpointPath) is None:
            default = self._findDefaultCheckpoint()
            if default is not None:
                self._parameterNode.checkpointPath = str(default)

    @staticmethod
    def _findDefaultCheckpoint():
        """The bundled default checkpoint, or None (also while torch is not installed yet)."""
        if importlib.util.find_spec("torch") is None:
            return None
        try:
            from SemanticInterpolationLib.checkpoint import find_default_checkpoint  # imports torch
        except Exception as error:  # a broken torch install must not break the module GUI
            logging.warning("Semantic Interpolation: cannot look for the default checkpoint: %s", error)
            return None
        return find_default_checkpoint()

    def onCheckpointPathChanged(self, path: str) -> None:
        """ctkPathLineEdit -> parameter node (a str parameter, see SemanticInterpolationParameterNode)."""
        if self._parameterNode and self._parameterNode.checkpointPath != path:
            self._parameterNode.checkpointPath = path

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe parameter node (the GUI follows it through the SlicerParameterName properties)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    # ------------------------------------------------------------------ GUI state
    def _sequenceOfInput(self):
        """``(sequenceNode, browserNode)`` when the input volume is a sequence frame proxy, else ``(None, None)``."""
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        sequences = getattr(slicer.modules, "sequences", None)
        if volume is None or sequences is None:
            return None, None
        browser = sequences.logic().GetFirstBrowserNodeForProxyNode(volume)
        if browser is None:
            return None, None
        return browser.GetSequenceNode(volume), browser

    def _checkCanApply(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        running = self._run is not None
        sequence, _browser = self._sequenceOfInput() if parameters else (None, None)
        self.ui.allSequenceFramesCheckBox.enabled = sequence is not None and not running
        if sequence is not None:
            self.ui.allSequenceFramesCheckBox.text = _("Upsample all {count} frames of sequence '{name}'").format(
                count=sequence.GetNumberOfDataNodes(), name=sequence.GetName())
        else:
            self.ui.allSequenceFramesCheckBox.text = _("Upsample all frames of the sequence")
        useSequence = sequence is not None and parameters.allSequenceFrames
        self.ui.outputVolumeSelector.enabled = not useSequence and not running
        self.ui.outputGeometryLabel.text = self._describeOutputGrid()
        if parameters and self.ui.checkpointPathLineEdit.currentPath != parameters.checkpointPath:
            self.ui.checkpointPathLineEdit.currentPath = parameters.checkpointPath  # parameter node -> GUI
        if running:
            self.ui.upsampleButton.enabled = False
            self.ui.upsampleButton.toolTip = _("An upsampling is running")
        elif parameters and parameters.inputVolume:
            self.ui.upsampleButton.enabled = True
            self.ui.upsampleButton.toolTip = _("Upsample the input volume through-plane with ASI")
        else:
            self.ui.upsampleButton.enabled = False
            self.ui.upsampleButton.toolTip = _("Select an input volume")

    def _describeOutputGrid(self) -> str:
        """E.g. "slice axis k: 12 slices of 8 mm -> 45 slices of 2 mm"."""
        parameters = self._parameterNode
        volume = parameters.inputVolume if parameters else None
        if volume is None or volume.GetImageData() is None:
            return ""
        spacing = volume.GetSpacing()
        dims = volume.GetImageData().GetDimensions()
        # same rule as SemanticInterpolationLib.geometry.choose_slice_axis (not imported: it would import torch)
        axis = max(a for a in range(3) if spacing[a] >= max(spacing) * (1 - 1e-6))
        factor = parameters.upsamplingFactor
        if dims[axis] < 2:
            return _("Only 1 slice along the slice axis: nothing to interpolate.")
        text = _("Slice axis {axis}: {n} slices of {spacing:g} mm -> {m} slices of {newSpacing:g} mm").format(
            axis="ijk"[axis], n=dims[axis], spacing=spacing[axis], m=(dims[axis] - 1) * factor + 1,
            newSpacing=spacing[axis] / factor)
        if max(spacing) <= min(spacing) * 1.01:
            text += _(" (the volume is isotropic: upsampling it is rarely useful)")
        return text

    def updateDeviceInformation(self) -> None:
        """Show which devices PyTorch found (and advice when there is no GPU)."""
        text, isWarning = computeDeviceReport()
        self.ui.deviceInfoLabel.text = text
        self.ui.deviceInfoLabel.setStyleSheet("color: #c0392b" if isWarning else "")

    def _setRunning(self, running: bool) -> None:
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.outputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setVisible(running)
        if running:
            self.ui.progressBar.setRange(0, 0)  # busy until the first progress report (model loading)
        self._checkCanApply()

    def isRunning(self) -> bool:
        """True while an upsampling started from the GUI is computing."""
        return self._run is not None

    @property
    def logic(self):
        """The module logic, created on first use after installing missing dependencies.

        ``slicer.util.getModuleLogic("SemanticInterpolation")`` reads this property.
        """
        if self._logic is None:
            ensurePythonDependencies()
            self._logic = getLogicClass()()
        return self._logic

    @logic.setter
    def logic(self, value) -> None:
        self._logic = value

    def getLogic(self):
        """The module logic (same as the ``logic`` property)."""
        return self.logic

    # ------------------------------------------------------------------ actions
    def onUpsampleButton(self) -> None:
        """Validate, then start the upsampling in the background (the GUI stays usable)."""
        if self._run is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Upsampling could not start."), waitCursor=True):
            ensurePythonDependencies()
            self.updateDeviceInformation()
            from SemanticInterpolationLib.mrml import BackgroundRun

            logic = self.getLogic()
            parameters = self._parameterNode
            settings = dict(factor=parameters.upsamplingFactor,
                            checkpoint=checkpointArgument(parameters.checkpointPath),
                            device=parameters.computeDevice.value,
                            keepAcquiredSlices=parameters.keepAcquiredSlices)
            sequence, _browser = self._sequenceOfInput()
            if sequence is not None and parameters.allSequenceFrames:
                job = logic.prepareSequenceJob(sequence, **settings)
            else:
                job = logic.prepareVolumeJob(parameters.inputVolume, outputVolume=parameters.outputVolume, **settings)
            self._run = BackgroundRun(logic, job)
            self._runStarted = time.perf_counter()
            self._run.start()
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

    def _pollRun(self) -> None:
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
            self._finishRun(run)
        finally:
            self._setRunning(False)

    def _finishRun(self, run) -> None:
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
            output = self.getLogic().finishJob(run.job)
            shown = self.getLogic().showResult(output)
            seconds = time.perf_counter() - self._runStarted
            self.ui.statusLabel.text = _("Created '{name}' in {seconds:.1f} s ({engine}).").format(
                name=(shown or output).GetName(), seconds=seconds, engine=run.job.engineDescription)


#
# SemanticInterpolationLogic (created on first use: it imports torch through SemanticInterpolationLib)
#

_logicClass = None


def getLogicClass():
    """The module logic class: SemanticInterpolationLib's logic plus ScriptedLoadableModuleLogic.

    Created on first call, because importing SemanticInterpolationLib imports torch, which may
    not be installed when Slicer loads this module. Call :func:`ensurePythonDependencies` first.
    """
    global _logicClass
    if _logicClass is None:
        from SemanticInterpolationLib.mrml import SemanticInterpolationLogic as LibraryLogic

        class SemanticInterpolationLogic(LibraryLogic, ScriptedLoadableModuleLogic):
            """Module logic for use inside Slicer (all computation is in the library base class).

            Adds the module's parameter node, the application's Sequences logic for browsers of
            upsampled sequences, and showing results in the slice views. Usable without the GUI::

                logic = slicer.util.getModuleLogic("SemanticInterpolation")  # or SemanticInterpolationLogic()
                outputVolume = logic.upsample(inputVolume, 4, checkpoint="/path/model.pt")
            """

            def __init__(self, **kwargs) -> None:
                super().__init__(**kwargs)  # both bases cooperate: one call initializes both

            def getParameterNode(self):
                return SemanticInterpolationParameterNode(ScriptedLoadableModuleLogic.getParameterNode(self))

            def _updateProxyNodes(self, browser) -> None:
                sequences = getattr(slicer.modules, "sequences", None)
                if sequences is None:
                    super()._updateProxyNodes(browser)
                    return
                sequences.logic().UpdateProxyNodesFromSequences(browser)

            def showResult(self, outputNode):
                """Show an upsampled volume (or the proxy of an upsampled sequence) in the slice views; return it."""
                volume, browser = outputNode, None
                if outputNode.IsA("vtkMRMLSequenceNode"):
                    sequences = getattr(slicer.modules, "sequences", None)
                    browser = sequences.logic().GetFirstBrowserNodeForSequenceNode(outputNode) if sequences else None
                    volume = browser.GetProxyNode(outputNode) if browser else None
                    if browser is not None and sequences is not None and slicer.util.mainWindow():
                        sequences.setToolBarActiveBrowserNode(browser)
                if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode"):
                    slicer.util.setSliceViewerLayers(background=volume, fit=True)
                return volume

        SemanticInterpolationLogic.__module__ = __name__
        _logicClass = SemanticInterpolationLogic
    return _logicClass


def __getattr__(name):
    """``SemanticInterpolation.SemanticInterpolationLogic`` creates the logic class on first access."""
    if name == "SemanticInterpolationLogic":
        return getLogicClass()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#
# SemanticInterpolationTest
#


class SemanticInterpolationTest(ScriptedLoadableModuleTest):
    """
    Self-test on CPU with a small volume made in the test and a randomly initialised model
    (saved to a temporary folder): checks geometry, bookkeeping and the GUI path, not image quality.
    Uses ScriptedLoadableModuleTest base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_UpsampleSmallVolume()
        self.setUp()
        self.test_BadInputCreatesNoNode()
        self.setUp()
        self.test_Sequence()
        self.setUp()
        self.test_GuiRun()

    # ---------------------------------------------------------------- helpers
    def _checkpoint(self) -> str:
        """A checkpoint of a freshly initialised ASI model in a temporary folder."""
        ensurePythonDependencies(askConfirmation=False)
        import torch
        from SemanticInterpolationLib import ASIAutoencoder, save_checkpoint

        folder = Path(slicer.util.tempDirectory("SemanticInterpolationTest"))
        torch.manual_seed(0)
        return str(save_checkpoint(folder / "random-init.pt", ASIAutoencoder()))

    @staticmethod
    def _voxels(shapeKJI=(5, 20, 16), seed=0):
        import numpy as np

        rng = np.random.default_rng(seed)
        k, j, i = np.meshgrid(*[np.linspace(0, 1, n) for n in shapeKJI], indexing="ij")
        return (500 + 300 * np.sin(3 * k + 2 * j) * np.cos(4 * i) + rng.normal(0, 10, shapeKJI)).astype("int16")

    def _volume(self, name="anisotropic"):
        import numpy as np

        ijkToRAS = np.diag([1.0, 1.0, 4.0, 1.0])
        ijkToRAS[:3, 3] = (5.0, -10.0, 20.0)
        return slicer.util.addVolumeFromArray(self._voxels(), ijkToRAS=ijkToRAS, name=name)

    # ---------------------------------------------------------------- tests
    def test_UpsampleSmallVolume(self):
        self.delayDisplay("Starting the test")
        import numpy as np

        checkpoint = self._checkpoint()
        inputVolume = self._volume()
        inputVoxels = slicer.util.arrayFromVolume(inputVolume).copy()
        logic = getLogicClass()()

        progress = []
        output = logic.upsample(inputVolume, 3, checkpoint=checkpoint, device="cpu",
                                progress=lambda done, total: progress.append((done, total)))

        self.assertEqual(output.GetName(), "anisotropic ASI x3")
        self.assertEqual(output.GetImageData().GetDimensions(), (16, 20, 13))
        np.testing.assert_allclose(output.GetSpacing(), (1.0, 1.0, 4.0 / 3.0))
        np.testing.assert_allclose(output.GetOrigin(), inputVolume.GetOrigin())
        outputVoxels = slicer.util.arrayFromVolume(output)
        np.testing.assert_array_equal(outputVoxels[::3], inputVoxels)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), inputVoxels)
        self.assertTrue(progress and progress[-1][0] == progress[-1][1])
        self.delayDisplay("Test passed")

    def test_BadInputCreatesNoNode(self):
        import numpy as np
        from SemanticInterpolationLib.errors import InputError, OperationCancelled

        checkpoint = self._checkpoint()
        logic = getLogicClass()()
        labelMap = slicer.util.addVolumeFromArray(np.zeros((4, 8, 8), "uint8"), nodeClassName="vtkMRMLLabelMapVolumeNode")
        singleSlice = slicer.util.addVolumeFromArray(self._voxels((1, 20, 16)), ijkToRAS=np.diag([1, 1, 4, 1.0]))
        volume = self._volume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        for node, factor in ((labelMap, 2), (singleSlice, 2), (volume, 1)):
            with self.assertRaises(InputError):
                logic.upsample(node, factor, checkpoint=checkpoint, device="cpu")
        with self.assertRaises(OperationCancelled):
            logic.upsample(volume, 2, checkpoint=checkpoint, device="cpu", shouldCancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Bad input rejected")

    def test_Sequence(self):
        checkpoint = self._checkpoint()
        sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
        sequence.SetIndexName("time")
        sequence.SetIndexUnit("ms")
        values = ["0", "40", "80"]
        for seed, value in enumerate(values):
            frame = slicer.vtkMRMLScalarVolumeNode()
            frame.SetSpacing(1.0, 1.0, 5.0)
            slicer.util.updateVolumeFromArray(frame, self._voxels(seed=seed))
            sequence.SetDataNodeAtValue(frame, value)
        output = getLogicClass()().upsampleSequence(sequence, 2, checkpoint=checkpoint, device="cpu")
        self.assertEqual([output.GetNthIndexValue(n) for n in range(output.GetNumberOfDataNodes())], values)
        self.assertEqual(output.GetNthDataNode(0).GetImageData().GetDimensions(), (16, 20, 9))
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(output)
        self.assertIsNotNone(browser)
        self.delayDisplay("Sequence upsampled")

    def test_GuiRun(self):
        """Drive the Upsample tab: background run, progress polling, result added and shown."""
        checkpoint = self._checkpoint()
        inputVolume = self._volume("gui input")
        widget = slicer.modules.semanticinterpolation.widgetRepresentation().self()
        parameters = widget._parameterNode or _ParameterNodeLogic().getParameterNode()
        parameters.inputVolume = inputVolume
        parameters.upsamplingFactor = 2
        parameters.checkpointPath = checkpoint
        parameters.computeDevice = ComputeDevice.CPU
        parameters.outputVolume = None
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        widget.onUpsampleButton()
        deadline = time.time() + 120
        while widget.isRunning() and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        self.assertFalse(widget.isRunning(), "the GUI run did not finish in time")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), before + 1)
        output = slicer.mrmlScene.GetFirstNodeByName("gui input ASI x2")
        self.assertIsNotNone(output)
        self.assertEqual(output.GetImageData().GetDimensions(), (16, 20, 9))
        self.delayDisplay("GUI run passed")
