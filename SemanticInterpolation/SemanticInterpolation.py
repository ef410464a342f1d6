"""3D Slicer module "Semantic Interpolation": through-plane upsampling of anisotropic MRI with ASI.

The computation lives in ``SemanticInterpolationLib`` (plain Python, importable without Slicer);
this file is the thin Slicer layer: module description, the bundled sample in the Sample Data module,
dependency installation on first use, the parameter node, the widget that loads the .ui and hands the
Upsample, Train and Evaluate tabs to their helpers, and the self-test. The tabs' widget glue (QTimer,
QProcess, signals) is in ``SemanticInterpolationTabs`` (upsample.py, training.py, evaluate.py, next to
this file); their Qt-free logic is in ``SemanticInterpolationLib.mrml.logic`` (upsampling),
``SemanticInterpolationLib.mrml.training`` (training process, log -> plot nodes) and
``SemanticInterpolationLib.mrml.evaluation`` (evaluation -> table node).

Importing this file (Slicer does it at startup) imports neither torch nor SemanticInterpolationLib,
and neither does importing SemanticInterpolationTabs: torch may not be installed yet, and importing
it would slow down every Slicer start. The module
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

# The tabs' GUI code (the module folder is on sys.path in Slicer); imports neither torch nor the library.
from SemanticInterpolationTabs import EvaluateTab, TrainingTab, UpsampleTab
from SemanticInterpolationTabs.common import (POLL_INTERVAL_MS, TRAINING_POLL_INTERVAL_MS,  # noqa: F401 (re-exported)
                                              checkpointArgument, defaultTrainingOutput, findDefaultCheckpoint)

#: torch versions the engine is tested with (the PyTorch extension installs a matching build).
MINIMUM_TORCH_VERSION = "2.2"
PAPER_CITATION = (
    'J. Sander, B. D. de Vos, I. Isgum, "Autoencoding low-resolution MRI for semantically smooth '
    'interpolation of anisotropic MRI", Medical Image Analysis, 2022 (arXiv:2202.09258)'
)
PAPER_URL = "https://arxiv.org/abs/2202.09258"
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
With a pair-unet or profile-routed checkpoint (the default), Advanced > Adapt to this scan first fine-tunes
a copy of the model on the scan's own slices for a time budget and keeps it only when it predicts held-out
acquired slices better (the result says so).
Train: fine-tune the model (or train one from scratch) on your own anisotropic scans, in a background process,
with a live loss and validation chart; the new checkpoint is then selected for upsampling.
Evaluate: remove slices from a fine-slice volume, upsample back with ASI and conventional interpolation, and
compare them (SSIM, PSNR, VIF, Wilcoxon test) in a table and box plots.
The same logic is available from the Python console and in batch jobs:
<code>from SemanticInterpolationLib import SemanticInterpolationLogic</code>,
<code>SemanticInterpolationLib.mrml.training</code>, <code>SemanticInterpolationLib.mrml.evaluation</code>.
A real anisotropic brain MRI to try it on is in the Sample Data module.
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
    from SemanticInterpolationLib.bundled.sampledata import SAMPLE, find_sample  # light: no torch
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
        from SemanticInterpolationLib.engine.devices import available_devices, describe_device
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


class AugmentationMode(enum.Enum):
    """Test-time augmentation of pair-unet models; the value is passed to the logic's ``testTimeAugmentation``."""

    AUTO = "auto"
    NONE = "none"
    PAIR = "pair"
    PAIR_FLIP = "pair-flip"
    DIHEDRAL = "dihedral"

    def label(self) -> str:
        return {AugmentationMode.AUTO: _("The model's recommendation"),
                AugmentationMode.NONE: _("None (fastest)"),
                AugmentationMode.PAIR: _("Both slice orders (2x the time)"),
                AugmentationMode.PAIR_FLIP: _("Both orders, mirrored too (4x the time)"),
                AugmentationMode.DIHEDRAL: _("Both orders, all in-plane turns and mirrors (16x the time)")}[self]


class TrainingModelType(enum.Enum):
    """The network the Train tab trains; the value is the ``--model-type`` choice ("auto": none given)."""

    AUTO = "auto"
    ASI = "asi"
    PAIR_UNET = "pair-unet"
    PROFILE_ROUTED = "profile-routed"
    HRINET = "hrinet"
    XUAN_VAE = "xuan-vae"
    SR_GENERATOR = "sr-generator"  # trained by train-sr; choosing it here gives that error

    def label(self) -> str:
        return {TrainingModelType.AUTO: _("auto (checkpoint's type)"),
                TrainingModelType.ASI: _("asi (the paper's autoencoder)"),
                TrainingModelType.PAIR_UNET: _("pair-unet (U-Net correction of the linear mix)"),
                TrainingModelType.PROFILE_ROUTED: _("profile-routed (two pair-unets: thick slices, the rest)"),
                TrainingModelType.HRINET: _("hrinet (feature maps mixed at several scales, two critics)"),
                TrainingModelType.XUAN_VAE: _("xuan-vae (Xuan et al. stage I: slice VAE)"),
                TrainingModelType.SR_GENERATOR: _("sr-generator (stage II: use train-sr)")}[self]


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
    testTimeAugmentation - Views averaged for each new slice (pair-unet models); AUTO = the checkpoint's choice.
    adaptToScan - Adapt the model to the scan before upsampling it (pair-unet checkpoints; the logic's ``adapt``).
    adaptSeconds - Time budget of that adaptation in seconds (per frame for sequences).
    sliceThickness - Slice thickness (mm) told to models with a slice-profile input (the bundled default);
        0 = auto: the DICOM Slice Thickness of a volume loaded from DICOM, else estimated from the scan.
    outputVolume - Volume to overwrite; none = create a new volume for each run.

    Train tab (the training volumes are node references of the parameter node, role "trainingVolume",
    see SemanticInterpolationLib.mrml.training.setTrainingVolumeReferences):
    trainingValidationVolume - Optional held-out volume scored after each epoch.
    trainingFromScratch - Start from a random network instead of the starting checkpoint.
    trainingInitPath - Checkpoint to fine-tune; empty = the bundled default model.
    trainingOutputPath - Checkpoint to write (with .best.pt and .log.jsonl beside it).
    trainingModelType - Network type to train; AUTO = the starting checkpoint's type (asi from scratch).
    trainingEpochs, trainingLambda, trainingSynthesisLoss, trainingPatchSize, trainingBatchSize,
    trainingDevice - The training settings (see Docs/Training.md).

    Evaluate tab (ASI uses the Upsample tab's checkpoint, device and synthesis mode):
    evaluationVolume - Fine-slice volume (ground truth).
    evaluationFactors - Factors K, e.g. "2,3,4,5,6" or "2-6".
    evaluateASI, evaluateLinear, evaluateBSpline, evaluateLanczos - Methods to compare.
    evaluationThickSlices - Simulate thick slices (through-plane blur) before removing slices.
    evaluationAcquisitionNoisePercent - Rician noise added to the kept slices (percent of the 99th percentile).
    evaluationOutputFolder - Report folder; empty = a new temporary folder.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    allSequenceFrames: bool = False
    upsamplingFactor: Annotated[int, WithinRange(2, 32)] = 4
    checkpointPath: str = ""
    computeDevice: ComputeDevice = ComputeDevice.AUTO
    keepAcquiredSlices: bool = True
    synthesisMode: SynthesisMode = SynthesisMode.AUTO
    testTimeAugmentation: AugmentationMode = AugmentationMode.AUTO
    adaptToScan: bool = False
    adaptSeconds: Annotated[int, WithinRange(1, 86400)] = 120
    sliceThickness: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    outputVolume: vtkMRMLScalarVolumeNode

    trainingValidationVolume: vtkMRMLScalarVolumeNode
    trainingFromScratch: bool = False
    trainingInitPath: str = ""
    trainingOutputPath: str = ""
    trainingModelType: TrainingModelType = TrainingModelType.AUTO
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
    evaluationAcquisitionNoisePercent: Annotated[float, WithinRange(0.0, 50.0)] = 0.0
    evaluationOutputFolder: str = ""


class _ParameterNodeLogic(ScriptedLoadableModuleLogic):
    """Finds or creates the module's parameter node; unlike the full logic it needs no torch."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "SemanticInterpolation"

    def getParameterNode(self):
        return SemanticInterpolationParameterNode(super().getParameterNode())


#
# SemanticInterpolationWidget
#


class SemanticInterpolationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Thin: it loads the .ui, owns the parameter node and the scene observers, and passes enter,
    exit, scene close and cleanup on to the three tab helpers of SemanticInterpolationTabs
    (``upsampleTab``, ``trainingTab``, ``evaluateTab``), which connect their own widgets and run
    their work in the background (a worker thread or a process polled by a QTimer).
    """

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self._logic = None  # created on first use (see the logic property): it imports torch
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.upsampleTab = None
        self.trainingTab = None
        self.evaluateTab = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemanticInterpolation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets ("mrmlSceneChanged(vtkMRMLScene*)" is connected in the .ui).
        uiWidget.setMRMLScene(slicer.mrmlScene)

        # The tabs connect their own widgets; they read the current parameter node through a function.
        parameterNode = self._currentParameterNode
        self.upsampleTab = UpsampleTab(self.ui, parameterNode, self.getLogic, ensurePythonDependencies,
                                       computeDeviceReport, self._checkCanApply)
        self.trainingTab = TrainingTab(self.ui, parameterNode, ensurePythonDependencies, self._checkCanApply)
        self.evaluateTab = EvaluateTab(self.ui, parameterNode, ensureEvaluationDependencies, self._checkCanApply)

        # These connections ensure that we update parameter node when scene is closed
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()
        self.upsampleTab.updateDeviceInformation()

    def _currentParameterNode(self):
        """The parameter node wrapper the widget shows now (None while the scene closes)."""
        return self._parameterNode

    def _tabs(self) -> list:
        """The tab helpers (none before setup): Upsample, Train, Evaluate."""
        return [tab for tab in (self.upsampleTab, self.trainingTab, self.evaluateTab) if tab is not None]

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        for tab in (self.upsampleTab, self.evaluateTab, self.trainingTab):  # threads first, then the process
            if tab is not None:
                tab.cleanup()
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

    def onReload(self) -> None:
        """Developer mode "Reload": re-read the tab files too (Slicer reloads only this file)."""
        import SemanticInterpolationTabs

        SemanticInterpolationTabs.reloadModules()
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        for tab in self._tabs():
            tab.onSceneStartClose()  # runs whose nodes would belong to a closed scene are cancelled
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed; preselect an input and the default checkpoint."""
        self.setParameterNode(_ParameterNodeLogic().getParameterNode())
        parameters = self._parameterNode

        if not parameters.inputVolume:
            # the first plain scalar volume (not a label map or vector volume, which derive from it)
            for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
                volume = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
                if volume.GetClassName() == "vtkMRMLScalarVolumeNode":
                    parameters.inputVolume = volume
                    break
        default = None
        if checkpointArgument(parameters.checkpointPath) is None:
            default = findDefaultCheckpoint()
            if default is not None:
                parameters.checkpointPath = str(default)
        if checkpointArgument(parameters.trainingInitPath) is None:
            default = default or findDefaultCheckpoint()
            if default is not None:
                parameters.trainingInitPath = str(default)
        if not parameters.trainingOutputPath:
            parameters.trainingOutputPath = str(defaultTrainingOutput())
        if not parameters.evaluationVolume and parameters.inputVolume:
            parameters.evaluationVolume = parameters.inputVolume

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe parameter node (the GUI follows it through the SlicerParameterName properties)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.trainingTab.volumesToGui()
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Parameter node (and what runs) -> every tab's buttons, labels and enabled states."""
        for tab in self._tabs():
            tab.updateGui()

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
        from SemanticInterpolationLib.mrml.logic import SemanticInterpolationLogic as LibraryLogic

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
        self.test_AdaptToScan()
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

    def test_AdaptToScan(self):
        """adapt=SECONDS with a pair-unet checkpoint: a report, the usual result; an asi checkpoint is refused
        before any node is created."""
        import numpy as np
        import torch
        from SemanticInterpolationLib import save_checkpoint
        from SemanticInterpolationLib.errors import InputError
        from SemanticInterpolationLib.models.normalization import IntensityNormalization
        from SemanticInterpolationLib.models.pair_unet import PairUNet

        asiCheckpoint = self._checkpoint()
        torch.manual_seed(0)
        folder = Path(slicer.util.tempDirectory("SemanticInterpolationTest"))
        pairCheckpoint = str(save_checkpoint(folder / "pair-unet-random.pt", PairUNet(),
                                             normalization=IntensityNormalization(clip=False)))
        inputVolume = self._volume("adapt input")
        inputVoxels = slicer.util.arrayFromVolume(inputVolume).copy()
        logic = getLogicClass()()
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            logic.upsample(inputVolume, 2, checkpoint=asiCheckpoint, device="cpu", adapt=60)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)

        output = logic.upsample(inputVolume, 2, checkpoint=pairCheckpoint, device="cpu", adapt=600, adaptSteps=2)
        self.assertIsNotNone(logic.lastAdaptation)
        self.assertEqual(logic.lastAdaptation.steps, 2)
        self.assertIn("held-out acquired slices", logic.lastAdaptation.summary())
        self.assertEqual(output.GetImageData().GetDimensions(), (16, 20, 9))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(output)[::2], inputVoxels)
        self.delayDisplay("Adaptation to the scan passed")

    def test_TrainAndEvaluateLogic(self):
        """The Train tab's process (exported volumes, checked command, log -> plot nodes) and the Evaluate tab's table."""
        import subprocess

        import numpy as np
        from SemanticInterpolationLib.mrml import evaluation as mrml_evaluation
        from SemanticInterpolationLib.mrml import training as mrml_training

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
        upsampleTab = widget.upsampleTab
        upsampleTab.onUpsampleButton()
        deadline = time.time() + 120
        while upsampleTab.isRunning() and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        self.assertFalse(upsampleTab.isRunning(), "the GUI run did not finish in time")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), before + 1)
        output = slicer.mrmlScene.GetFirstNodeByName("gui input ASI x2")
        self.assertIsNotNone(output)
        self.assertEqual(output.GetImageData().GetDimensions(), (16, 20, 9))
        self.delayDisplay("GUI run passed")
