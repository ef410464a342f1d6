"""3D Slicer module "Semantic Interpolation": through-plane upsampling of anisotropic MRI with ASI.

The computation lives in ``SemanticInterpolationLib`` (plain Python, importable without Slicer);
this file is the thin Slicer layer: module description, GUI (Upsample, Train and Evaluate tabs),
the bundled sample in the Sample Data module, dependency installation on first use, and the self-test.
The Qt-free logic of the tabs is in ``SemanticInterpolationLib.mrml`` (upsampling),
``SemanticInterpolationLib.mrml_training`` (training process, log -> plot nodes) and
``SemanticInterpolationLib.mrml_evaluation`` (evaluation -> table node); only QProcess, QTimer and
widget glue are here.

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
#: Milliseconds between two reads of the training log (progress, chart).
TRAINING_POLL_INTERVAL_MS = 1000
#: Packages the Evaluate tab needs besides those of Slicer (installed on first use after confirmation).
EVALUATION_REQUIREMENTS = ["scipy", "matplotlib"]
#: Sample Data module category of the bundled sample.
SAMPLE_DATA_CATEGORY = "Semantic Interpolation"


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
Train: fine-tune the model (or train one from scratch) on your own anisotropic scans, in a background process,
with a live loss and validation chart; the new checkpoint is then selected for upsampling.
Evaluate: remove slices from a fine-slice volume, upsample back with ASI and conventional interpolation, and
compare them (SSIM, PSNR, VIF, Wilcoxon test) in a table and box plots.
The same logic is available from the Python console and in batch jobs:
<code>from SemanticInterpolationLib import SemanticInterpolationLogic</code>, <code>mrml_training</code>,
<code>mrml_evaluation</code>. A real anisotropic brain MRI to try it on is in the Sample Data module.
""")
        self.parent.acknowledgementText = _("""
The method is described in: {citation}. <a href="{url}">Paper</a>.
PyTorch is provided by the PyTorch extension (PyTorchUtils).
The bundled sample is brain1_image.nrrd of PyRadiomics (BSD-3-Clause, see Resources/SampleData/NOTICE.txt).
""").format(citation=PAPER_CITATION, url=PAPER_URL)

        # Register the bundled sample once the application (and the Sample Data module) has started.
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "connect"):
            app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def sampleDataSourceArguments() -> Optional[dict]:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` for the bundled
    sample (a local file URI with its SHA-256), or None when the sample file is not installed."""
    from SemanticInterpolationLib.sampledata import SAMPLE, find_sample  # light: no torch
    from SemanticInterpolationLib.errors import InputError

    try:
        path = find_sample()
    except InputError:
        return None
    icon = Path(__file__).resolve().parent / "Resources" / "Icons" / "SemanticInterpolation.png"
    return dict(category=SAMPLE_DATA_CATEGORY, sampleName=SAMPLE.name, thumbnailFileName=str(icon),
                uris=path.resolve().as_uri(), fileNames=SAMPLE.file_name, nodeNames=SAMPLE.name,
                checksums=f"SHA256:{SAMPLE.sha256}", loadFileType="VolumeFile")


def registerSampleData() -> None:
    """Add the bundled anisotropic brain MRI to the Sample Data module (category "Semantic Interpolation")."""
    try:
        import SampleData
    except ImportError:
        return
    arguments = sampleDataSourceArguments()
    if arguments is None:
        logging.warning("Semantic Interpolation: the bundled sample is not installed; not registered in Sample Data")
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**arguments)


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


def ensurePythonRequirements(askConfirmation: bool, requirements: Optional[list] = None) -> None:
    """Install the packages of Resources/requirements.txt (or ``requirements``) that are missing,
    after the user confirms.

    In testing mode nothing is installed (the environment must not change under a test); in
    batch mode packages are installed without asking.
    """
    if requirements is None:
        requirements = _readRequirements(_requirementsFile())
    missing = _missingRequirements(requirements)
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


def ensureEvaluationDependencies(askConfirmation: Optional[bool] = None) -> None:
    """What the Evaluate tab needs besides torch: scipy (statistics, filters) and matplotlib (box plots)."""
    if askConfirmation is None:
        askConfirmation = not _isUnattended()
    ensurePythonDependencies(askConfirmation)
    ensurePythonRequirements(askConfirmation, EVALUATION_REQUIREMENTS)


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


class SynthesisMode(enum.Enum):
    """How new slices are made; the value is passed to the logic's ``synthesis`` argument."""

    AUTO = "auto"
    PLAIN = "plain"
    RESIDUAL = "residual"
    RESIDUAL_BSPLINE = "residual-bspline"

    def label(self) -> str:
        return {SynthesisMode.AUTO: _("The model's recommendation"),
                SynthesisMode.PLAIN: _("Plain (the paper: decoded latent mix)"),
                SynthesisMode.RESIDUAL: _("Learned correction on linear interpolation"),
                SynthesisMode.RESIDUAL_BSPLINE: _("Learned correction on cubic B-spline")}[self]


class SynthesisLoss(enum.Enum):
    """Synthesis distance of the training loss; the value is the ``--synthesis-loss`` choice."""

    SSIM = "ssim"
    MSE = "mse"
    L1 = "l1"
    LPIPS = "lpips"

    def label(self) -> str:
        return {SynthesisLoss.SSIM: _("SSIM (default)"),
                SynthesisLoss.MSE: _("MSE"),
                SynthesisLoss.L1: _("L1"),
                SynthesisLoss.LPIPS: _("LPIPS (the paper's; needs lpips and torchvision)")}[self]


@parameterNodeWrapper
class SemanticInterpolationParameterNode:
    """
    The parameters of the Upsample, Train and Evaluate tabs (saved with the scene).

    inputVolume - Anisotropic scalar volume to upsample.
    allSequenceFrames - Upsample every frame of the sequence that the input volume shows.
    upsamplingFactor - K: slice spacing divided by K.
    checkpointPath - ASI model checkpoint file (.pt); empty = the bundled default model. A str, not a
        pathlib.Path, so that "no file" is empty rather than "."; synced with the ctkPathLineEdit in the widget.
    computeDevice - Where the network runs.
    keepAcquiredSlices - Copy the acquired slices unchanged into the result.
    synthesisMode - How new slices are made (the engine's synthesis mode); AUTO = the checkpoint's choice.
    outputVolume - Volume to overwrite; none = create a new volume for each run.

    Train tab (the training volumes are node references of the parameter node, role "trainingVolume",
    see SemanticInterpolationLib.mrml_training.setTrainingVolumeReferences):
    trainingValidationVolume - Optional held-out volume scored after each epoch.
    trainingFromScratch - Start from a random network instead of the starting checkpoint.
    trainingInitPath - Checkpoint to fine-tune; empty = the bundled default model.
    trainingOutputPath - Checkpoint to write (with .best.pt and .log.jsonl beside it).
    trainingEpochs, trainingLambda, trainingSynthesisLoss, trainingPatchSize, trainingBatchSize,
    trainingDevice - The training settings (see Docs/Training.md).

    Evaluate tab (ASI uses the Upsample tab's checkpoint, device and synthesis mode):
    evaluationVolume - Fine-slice volume (ground truth).
    evaluationFactors - Factors K, e.g. "2,3,4,5,6" or "2-6".
    evaluateASI, evaluateLinear, evaluateBSpline, evaluateLanczos - Methods to compare.
    evaluationThickSlices - Simulate thick slices (through-plane blur) before removing slices.
    evaluationOutputFolder - Report folder; empty = a new temporary folder.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    allSequenceFrames: bool = False
    upsamplingFactor: Annotated[int, WithinRange(2, 32)] = 4
    checkpointPath: str = ""
    computeDevice: ComputeDevice = ComputeDevice.AUTO
    keepAcquiredSlices: bool = True
    synthesisMode: SynthesisMode = SynthesisMode.AUTO
    outputVolume: vtkMRMLScalarVolumeNode

    trainingValidationVolume: vtkMRMLScalarVolumeNode
    trainingFromScratch: bool = False
    trainingInitPath: str = ""
    trainingOutputPath: str = ""
    trainingEpochs: Annotated[int, WithinRange(1, 100000)] = 20
    trainingLambda: Annotated[float, WithinRange(0.0, 100.0)] = 0.05
    trainingSynthesisLoss: SynthesisLoss = SynthesisLoss.SSIM
    trainingPatchSize: Annotated[int, WithinRange(16, 1024)] = 128
    trainingBatchSize: Annotated[int, WithinRange(1, 1024)] = 12
    trainingDevice: ComputeDevice = ComputeDevice.AUTO

    evaluationVolume: vtkMRMLScalarVolumeNode
    evaluationFactors: str = "2,3,4,5,6"
    evaluateASI: bool = True
    evaluateLinear: bool = True
    evaluateBSpline: bool = True
    evaluateLanczos: bool = True
    evaluationThickSlices: bool = False
    evaluationOutputFolder: str = ""


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
        # Train tab: the training process (qt.QProcess) and what it needs
        self._training = None  # mrml_training.TrainingJob of the running training
        self._trainingProcess = None
        self._trainingStarted = 0.0  # time.time() at start: older log records are ignored
        self._trainingStopRequested = False
        self._trainingOutput = ""  # the process's output (last part), for error messages
        self._trainingPlot = None  # mrml_training.TrainingPlot of the latest run
        self._trainingLogCount = -1
        self._trainingTimer = None
        self._lpipsReason = None  # None: not checked yet; "": available; else why not
        # Evaluate tab
        self._evaluation = None  # mrml_evaluation.BackgroundEvaluation in progress
        self._evaluationStarted = 0.0
        self._evaluationTimer = None
        self._evaluationTable = None
        self._evaluationFolder = None

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
        self._setupTrainingTab()
        self._setupEvaluateTab()

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
        if self._evaluation is not None:
            self._evaluation.cancel()
            self._evaluation.wait(10)
        for timer in (self._pollTimer, self._trainingTimer, self._evaluationTimer):
            if timer is not None:
                timer.stop()
        self._stopTrainingProcess(waitSeconds=10)
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
        if self._evaluation is not None:
            self._evaluation.cancel()
        self._trainingPlot = None  # its nodes go with the scene; a running training goes on
        self._evaluationTable = None
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
        default = None
        if checkpointArgument(self._parameterNode.checkpointPath) is None:
            default = self._findDefaultCheckpoint()
            if default is not None:
                self._parameterNode.checkpointPath = str(default)
        if checkpointArgument(self._parameterNode.trainingInitPath) is None:
            default = default or self._findDefaultCheckpoint()
            if default is not None:
                self._parameterNode.trainingInitPath = str(default)
        if not self._parameterNode.trainingOutputPath:
            self._parameterNode.trainingOutputPath = str(self._defaultTrainingOutput())
        if not self._parameterNode.evaluationVolume and self._parameterNode.inputVolume:
            self._parameterNode.evaluationVolume = self._parameterNode.inputVolume

    @staticmethod
    def _defaultTrainingOutput() -> Path:
        """``<Slicer's default scene folder>/asi-finetuned.pt``: a writable place users know."""
        folder = None
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "defaultScenePath"):
            folder = app.defaultScenePath
        return Path(folder or Path.home()) / "asi-finetuned.pt"

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
            self._trainingVolumesToGui()
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
        self._updateTrainingGui()
        self._updateEvaluationGui()

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
                            keepAcquiredSlices=parameters.keepAcquiredSlices,
                            synthesis=parameters.synthesisMode.value)
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

    # ================================================================== Train tab
    def _setupTrainingTab(self) -> None:
        ui = self.ui
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
        ui.trainingShowLossChartButton.connect("clicked(bool)", lambda: self._showTrainingChart(validation=False))
        ui.trainingShowValidationChartButton.connect("clicked(bool)", lambda: self._showTrainingChart(validation=True))
        self._trainingTimer = qt.QTimer()
        self._trainingTimer.setInterval(TRAINING_POLL_INTERVAL_MS)
        self._trainingTimer.connect("timeout()", self._pollTraining)

    def _rawParameterNode(self):
        """The vtkMRMLScriptedModuleNode behind the parameter node wrapper (for node reference lists)."""
        return self._parameterNode.parameterNode if self._parameterNode else None

    def _trainingVolumesToGui(self) -> None:
        """Parameter node (node references) -> checkable combo box."""
        raw = self._rawParameterNode()
        if raw is None:
            return
        from SemanticInterpolationLib.mrml_training import trainingVolumeReferences  # no torch

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
        raw = self._rawParameterNode()
        if raw is None:
            return
        from SemanticInterpolationLib.mrml_training import setTrainingVolumeReferences

        setTrainingVolumeReferences(raw, self.ui.trainingVolumesSelector.checkedNodes())
        self._checkCanApply()

    def _trainingVolumes(self) -> list:
        raw = self._rawParameterNode()
        if raw is None:
            return []
        from SemanticInterpolationLib.mrml_training import trainingVolumeReferences

        return trainingVolumeReferences(raw)

    def onTrainingInitPathChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.trainingInitPath != path:
            self._parameterNode.trainingInitPath = path

    def onTrainingOutputPathChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.trainingOutputPath != path:
            self._parameterNode.trainingOutputPath = path

    def isTraining(self) -> bool:
        """True while a training process started from the GUI runs."""
        return self._trainingProcess is not None

    def _updateTrainingGui(self) -> None:
        parameters = self._parameterNode
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
        volumes = self._trainingVolumes()
        if volumes:
            slices = []
            for node in volumes:
                image = node.GetImageData()
                if image is not None:
                    spacing = node.GetSpacing()
                    axis = max(a for a in range(3) if spacing[a] >= max(spacing) * (1 - 1e-6))
                    slices.append(image.GetDimensions()[axis])
            ui.trainingDataInfoLabel.text = _("{count} training volume(s), {triplets} triplets of consecutive "
                                              "slices").format(count=len(volumes),
                                                               triplets=sum(max(n - 2, 0) for n in slices))
        else:
            ui.trainingDataInfoLabel.text = _("Check one or more training volumes.")
        self._updateLossInformation()
        ui.trainingStopButton.enabled = training and self._trainingProcess is not None
        if training:
            ui.trainingStartButton.enabled = False
            ui.trainingStartButton.toolTip = _("A training is running")
        elif volumes and (parameters.trainingOutputPath or "").strip():
            ui.trainingStartButton.enabled = True
            ui.trainingStartButton.toolTip = _("Check the settings, then train in a background process")
        else:
            ui.trainingStartButton.enabled = False
            ui.trainingStartButton.toolTip = _("Check at least one training volume and choose the output checkpoint")
        hasPlot = self._trainingPlot is not None
        ui.trainingShowLossChartButton.enabled = hasPlot
        ui.trainingShowValidationChartButton.enabled = hasPlot

    def _updateLossInformation(self) -> None:
        """Say whether the LPIPS loss can be used (checked once, only when it is chosen: it imports torchvision)."""
        parameters = self._parameterNode
        label = self.ui.trainingLossInfoLabel
        if parameters.trainingSynthesisLoss != SynthesisLoss.LPIPS:
            label.text = ""
            return
        if self._lpipsReason is None and importlib.util.find_spec("torch") is not None:
            try:
                from SemanticInterpolationLib.mrml_training import lpipsAvailability

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
        """The Train tab's values as a ``mrml_training.TrainingTabSettings`` (also for console use)."""
        from SemanticInterpolationLib.mrml_training import TrainingTabSettings

        parameters = self._parameterNode
        init = None if parameters.trainingFromScratch else (checkpointArgument(parameters.trainingInitPath) or "default")
        return TrainingTabSettings(
            trainingVolumes=self._trainingVolumes(), output=parameters.trainingOutputPath,
            validationVolume=parameters.trainingValidationVolume, init=init, epochs=parameters.trainingEpochs,
            lam=parameters.trainingLambda, synthesisLoss=parameters.trainingSynthesisLoss.value,
            patchSize=parameters.trainingPatchSize, batchSize=parameters.trainingBatchSize,
            device=parameters.trainingDevice.value)

    def onTrainingStartButton(self) -> None:
        """Check everything, save the volumes to temporary files and start the training process."""
        if self.isTraining():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            ensurePythonDependencies()
            from SemanticInterpolationLib import mrml_training

            settings = self.trainingSettings()
            if settings.init == "default" and self._findDefaultCheckpoint() is None:
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
            self._trainingStarted = time.time()
            process.start()
            if not process.waitForStarted(30000):
                job.cleanup()
                raise RuntimeError(_("The training process could not be started ({program}): {error}").format(
                    program=job.program, error=process.errorString()))
            logging.info("Semantic Interpolation: training started: %s", " ".join(job.command))
            self._training = job
            self._trainingProcess = process
            self._trainingStopRequested = False
            self._trainingOutput = ""
            self._trainingLogCount = -1
            self._trainingPlot = mrml_training.TrainingPlot(slicer.mrmlScene,
                                                            _("ASI training {name}").format(name=Path(job.config.output).stem))
            self._showTrainingChart(validation=False)
            self.ui.trainingProgressBar.setVisible(True)
            self.ui.trainingProgressBar.setValue(0)
            self.ui.trainingStatusLabel.text = _("Training started: {description}").format(description=job.description)
            self._trainingTimer.start()
            self._checkCanApply()

    def onTrainingStopButton(self) -> None:
        """First click: stop after the current step (stop file). Second click: end the process now."""
        if self._training is None:
            return
        from SemanticInterpolationLib.mrml_training import requestStop

        if not self._trainingStopRequested:
            requestStop(self._training)
            self._trainingStopRequested = True
            self.ui.trainingStatusLabel.text = _("Stopping after the current step (click Stop again to end it now)...")
        elif self._trainingProcess is not None:
            self._trainingProcess.kill()

    def _stopTrainingProcess(self, waitSeconds: float = 10) -> None:
        """Application closing: ask the process to stop, wait a little, then end it."""
        process, job = self._trainingProcess, self._training
        if process is None or job is None:
            return
        from SemanticInterpolationLib.mrml_training import requestStop

        requestStop(job)
        if not process.waitForFinished(int(waitSeconds * 1000)):
            process.kill()
            process.waitForFinished(2000)
        self._trainingProcess = None
        self._training = None
        job.cleanup()

    def _readTrainingOutput(self) -> None:
        if self._trainingProcess is None:
            return
        data = self._trainingProcess.readAll()
        raw = data.data() if hasattr(data, "data") else data
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        if text:
            self._trainingOutput = (self._trainingOutput + text.replace("\r", "\n"))[-20000:]

    def _pollTraining(self) -> None:
        """Timer slot: read the log (progress bar, status, chart) and notice the end of the process."""
        job, process = self._training, self._trainingProcess
        if job is None or process is None:
            self._trainingTimer.stop()
            return
        from SemanticInterpolationLib.mrml_training import summarizeTrainingLog

        self._readTrainingOutput()
        records = job.readLog(since=self._trainingStarted)
        if len(records) != self._trainingLogCount:
            self._trainingLogCount = len(records)
            status = summarizeTrainingLog(records)
            if self._trainingPlot is not None:
                self._trainingPlot.update(records)
            self.ui.trainingProgressBar.setValue(int(round(1000 * status.fraction)))
            if status.text and not (self._trainingStopRequested and not status.ended):
                self.ui.trainingStatusLabel.text = status.text
        if process.state() != qt.QProcess.NotRunning:
            return
        self._trainingTimer.stop()
        self._readTrainingOutput()
        exitCode = process.exitCode() if process.exitStatus() == qt.QProcess.NormalExit else None
        self._trainingProcess = None
        self._training = None
        try:
            self._finishTraining(job, exitCode)
        finally:
            job.cleanup()
            self.ui.trainingProgressBar.setVisible(False)
            self._checkCanApply()

    def _finishTraining(self, job, exitCode) -> None:
        from SemanticInterpolationLib.mrml_training import summarizeTrainingLog

        records = job.readLog(since=self._trainingStarted)
        if self._trainingPlot is not None:
            self._trainingPlot.update(records)
        status = summarizeTrainingLog(records)
        seconds = time.time() - self._trainingStarted
        checkpoint = status.recommendedCheckpoint
        if status.endStatus in ("finished", "cancelled") and checkpoint and Path(checkpoint).is_file():
            self._parameterNode.checkpointPath = checkpoint  # the Upsample tab uses the new model
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
            tail = "\n".join(self._trainingOutput.strip().splitlines()[-15:])
            message = status.message or (_("the process ended with exit code {code}").format(code=exitCode)
                                         if exitCode is not None else _("the process crashed or was ended"))
            self.ui.trainingStatusLabel.text = _("Training failed: {message}").format(message=message)
            logging.error("Semantic Interpolation training failed: %s\n%s", message, self._trainingOutput)
            slicer.util.errorDisplay(_("Training failed: {message}").format(message=message), detailedText=tail)

    def _showTrainingChart(self, validation: bool = False) -> None:
        """Show the loss (or validation) chart of the latest training in the layout's plot view."""
        plot = self._trainingPlot
        if plot is None:
            return
        chart = plot.validationChart if validation else plot.lossChart
        plots = getattr(slicer.modules, "plots", None)
        if plots is not None:
            plots.logic().ShowChartInLayout(chart)

    # ================================================================== Evaluate tab
    def _setupEvaluateTab(self) -> None:
        ui = self.ui
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
        self._evaluationTimer = qt.QTimer()
        self._evaluationTimer.setInterval(POLL_INTERVAL_MS)
        self._evaluationTimer.connect("timeout()", self._pollEvaluation)

    def onEvaluationOutputFolderChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.evaluationOutputFolder != path:
            self._parameterNode.evaluationOutputFolder = path

    def isEvaluating(self) -> bool:
        """True while an evaluation started from the GUI is computing."""
        return self._evaluation is not None

    def _evaluationMethods(self) -> list:
        parameters = self._parameterNode
        return [method for method, chosen in (("asi", parameters.evaluateASI), ("linear", parameters.evaluateLinear),
                                              ("bspline", parameters.evaluateBSpline),
                                              ("lanczos", parameters.evaluateLanczos)) if chosen]

    def _updateEvaluationGui(self) -> None:
        parameters = self._parameterNode
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
        methods = self._evaluationMethods()
        if running:
            ui.evaluateButton.enabled = False
            ui.evaluateButton.toolTip = _("An evaluation is running")
        elif parameters.evaluationVolume and methods:
            ui.evaluateButton.enabled = True
            ui.evaluateButton.toolTip = _("Remove slices, upsample back with each method and score the result")
        else:
            ui.evaluateButton.enabled = False
            ui.evaluateButton.toolTip = _("Select a fine-slice volume and at least one method")
        ui.evaluationOpenFolderButton.enabled = self._evaluationFolder is not None
        ui.evaluationShowTableButton.enabled = self._evaluationTable is not None

    def onEvaluateButton(self) -> None:
        """Check, then evaluate in a background thread (the GUI stays usable)."""
        if self.isEvaluating():
            return
        with slicer.util.tryWithErrorDisplay(_("The evaluation could not start."), waitCursor=True):
            ensureEvaluationDependencies()
            from SemanticInterpolationLib.mrml_evaluation import (BackgroundEvaluation, EvaluationTabSettings,
                                                                  prepareEvaluation)

            parameters = self._parameterNode
            folder = (parameters.evaluationOutputFolder or "").strip() or slicer.util.tempDirectory(
                "SemanticInterpolationEvaluation")
            job = prepareEvaluation(EvaluationTabSettings(
                volume=parameters.evaluationVolume, factors=parameters.evaluationFactors,
                methods=self._evaluationMethods(), thickSlices=parameters.evaluationThickSlices,
                checkpoint=checkpointArgument(parameters.checkpointPath), device=parameters.computeDevice.value,
                outputFolder=folder, synthesis=parameters.synthesisMode.value))
            self._evaluation = BackgroundEvaluation(job)
            self._evaluationStarted = time.perf_counter()
            self._evaluation.start()
            self.ui.evaluationStatusLabel.text = _("Evaluating '{name}' at K = {factors}...").format(
                name=job.volumeName, factors=", ".join(str(k) for k in job.settings.factors))
            self.ui.evaluationProgressBar.setVisible(True)
            self.ui.evaluationProgressBar.setRange(0, 0)
            self._evaluationTimer.start()
            self._checkCanApply()

    def onEvaluationCancelButton(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()
            self.ui.evaluationCancelButton.enabled = False
            self.ui.evaluationStatusLabel.text = _("Cancelling...")

    def _pollEvaluation(self) -> None:
        """Timer slot (GUI thread): progress; at the end the table node and the box plots."""
        run = self._evaluation
        if run is None:
            self._evaluationTimer.stop()
            return
        done, total = run.progress
        if done > 0:
            self.ui.evaluationProgressBar.setRange(0, total)
            self.ui.evaluationProgressBar.setValue(done)
        if run.isRunning:
            return
        self._evaluationTimer.stop()
        self._evaluation = None
        try:
            self._finishEvaluation(run)
        finally:
            self.ui.evaluationProgressBar.setVisible(False)
            self._checkCanApply()

    def _finishEvaluation(self, run) -> None:
        from SemanticInterpolationLib.errors import OperationCancelled
        from SemanticInterpolationLib.mrml_evaluation import finishEvaluation

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
            self._evaluationTable = finishEvaluation(job, slicer.mrmlScene)
            self._evaluationFolder = job.outputFolder
            self.ui.evaluationTableView.setMRMLTableNode(self._evaluationTable)
            self.ui.evaluationTableView.setVisible(True)
            plotFile = job.boxPlotFile
            if plotFile is not None and plotFile.is_file():
                pixmap = qt.QPixmap(str(plotFile))
                width = max(200, self.ui.evaluateTab.width - 20)
                self.ui.evaluationPlotLabel.setPixmap(pixmap.scaledToWidth(width, qt.Qt.SmoothTransformation))
                self.ui.evaluationPlotLabel.setVisible(True)
            seconds = time.perf_counter() - self._evaluationStarted
            notes = " ".join(job.result.notes)
            self.ui.evaluationStatusLabel.text = _("Done in {seconds:.0f} s: table '{table}', report in {folder}. "
                                                   "{notes}").format(seconds=seconds, table=self._evaluationTable.GetName(),
                                                                     folder=job.outputFolder, notes=notes).strip()

    def onEvaluationOpenFolderButton(self) -> None:
        if self._evaluationFolder is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self._evaluationFolder)))

    def onEvaluationShowTableButton(self) -> None:
        """Show the summary table in the layout's table view."""
        if self._evaluationTable is None:
            return
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None and layoutManager.tableWidget(0) is None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        appLogic = slicer.app.applicationLogic()
        appLogic.GetSelectionNode().SetActiveTableID(self._evaluationTable.GetID())
        appLogic.PropagateTableSelection()


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
        self.test_TrainAndEvaluateLogic()
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

    def test_TrainAndEvaluateLogic(self):
        """The Train tab's process (exported volumes, checked command, log -> plot nodes) and the Evaluate tab's table."""
        import subprocess

        import numpy as np
        from SemanticInterpolationLib import mrml_evaluation, mrml_training

        ensurePythonDependencies(askConfirmation=False)
        folder = Path(slicer.util.tempDirectory("SemanticInterpolationTrainingTest"))
        volumes = []
        for seed in range(2):
            volumes.append(slicer.util.addVolumeFromArray(self._voxels((5, 24, 20), seed=seed),
                                                          ijkToRAS=np.diag([1.0, 1.0, 4.0, 1.0]), name=f"train{seed}"))
        settings = mrml_training.TrainingTabSettings(
            trainingVolumes=volumes, output=str(folder / "model.pt"), init=None, epochs=1, stepsPerEpoch=2,
            patchSize=16, batchSize=2, synthesisLoss="mse", device="cpu")
        job = mrml_training.prepareTraining(settings, folder / "work")
        completed = subprocess.run(job.command, env={**os.environ, **job.environment}, capture_output=True,
                                   text=True, timeout=300)
        self.assertEqual(completed.returncode, 0, completed.stdout[-2000:] + completed.stderr[-2000:])
        status = mrml_training.summarizeTrainingLog(job.readLog())
        self.assertEqual(status.endStatus, "finished")
        self.assertTrue(Path(status.recommendedCheckpoint).is_file())
        plot = mrml_training.TrainingPlot(slicer.mrmlScene, "self-test training")
        plot.update(job.readLog())
        self.assertEqual(plot.epochTable.GetNumberOfRows(), 1)
        job.cleanup()

        fine = slicer.util.addVolumeFromArray(self._voxels((13, 24, 20)), ijkToRAS=np.diag([1.0, 1.0, 1.2, 1.0]),
                                              name="fine")
        table, evaluation = mrml_evaluation.evaluateVolume(mrml_evaluation.EvaluationTabSettings(
            fine, factors="2,3", methods=("asi", "linear"), checkpoint=status.recommendedCheckpoint, device="cpu"))
        self.assertEqual(table.GetNumberOfRows(), 4)
        self.assertEqual(table.GetTable().GetColumnName(1), "Method")
        self.delayDisplay("Training and evaluation logic passed")

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
