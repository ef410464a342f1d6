"""The Training tab's Qt-free logic (SemanticInterpolationLib.mrml.training) on real MRML nodes (slicer-core).

Exported volumes read back equal, the command line is what cli_train parses, log records become
table/plot nodes, bad inputs fail before any process starts, and a real tiny training run through
the exported files and the built command writes a checkpoint that loads.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is not installed (pip install slicer-core): the MRML training tests need it")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)", allow_module_level=True)
torch = pytest.importorskip("torch")

from SemanticInterpolationLib import InputError  # noqa: E402
from SemanticInterpolationLib.mrml import logic as mrml  # noqa: E402
from SemanticInterpolationLib.mrml import training as mt  # noqa: E402

from mrml_helpers import addVolumeNode, smoothVoxels  # noqa: E402


def makeVoxels(shapeKJI=(6, 24, 20), dtype=np.int16, seed=1) -> np.ndarray:
    return smoothVoxels(shapeKJI, dtype, seed)


def addVolume(scene, voxels, matrix=None, name="MR", className="vtkMRMLScalarVolumeNode"):
    if matrix is None:
        matrix = np.diag([0.9, 0.8, 4.0, 1.0])
        matrix[:3, 3] = (10.0, -20.0, 30.0)
    return addVolumeNode(scene, voxels, matrix, name, className)


def obliqueMatrix(spacing=(0.9, 0.8, 4.0)):
    a = 0.4
    rotation = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(spacing)[np.newaxis, :]
    matrix[:3, 3] = (-5.5, 12.25, 7.0)
    return matrix


# --------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_exported_volume_reads_back_equal(scene, tmp_path, dtype):
    voxels = makeVoxels(dtype=dtype)
    node = addVolume(scene, voxels, obliqueMatrix(), name="T2 / cine #1")
    before = scene.GetNumberOfNodes()

    [path] = mt.exportVolumeNodes([node], tmp_path)

    assert path.suffix == ".nrrd" and "/" not in path.name and "#" not in path.name
    assert scene.GetNumberOfNodes() == before and node.GetStorageNode() is None  # scene untouched
    reread = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reread")
    storage = reread.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(reread)
    np.testing.assert_array_equal(mrml.voxelsFromVolumeNode(reread), voxels)
    assert mrml.voxelsFromVolumeNode(reread).dtype == voxels.dtype
    np.testing.assert_allclose(mrml.ijkToRASArray(reread), obliqueMatrix(), atol=1e-9)

    import SimpleITK as sitk  # the training process reads it with SimpleITK: same voxels and spacing

    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    np.testing.assert_allclose(image.GetSpacing(), (0.9, 0.8, 4.0))


# --------------------------------------------------------------------------------------------- bad input
def settingsFor(volumes, tmp_path, **overrides):
    values = dict(trainingVolumes=volumes, output=str(tmp_path / "out" / "model.pt"), init=None, epochs=1,
                  patchSize=16, batchSize=2, device="cpu")
    values.update(overrides)
    (tmp_path / "out").mkdir(exist_ok=True)
    return mt.TrainingTabSettings(**values)


def test_bad_inputs_fail_before_any_file_or_process(scene, tmp_path):
    good = addVolume(scene, makeVoxels(), name="good")
    label = addVolume(scene, np.zeros((6, 24, 20), np.uint8), name="labels", className="vtkMRMLLabelMapVolumeNode")
    short = addVolume(scene, makeVoxels((2, 24, 20)), name="two slices")
    work = tmp_path / "work"
    cases = [
        (settingsFor([], tmp_path), "at least one training volume"),
        (settingsFor([label], tmp_path), "label map"),
        (settingsFor([short], tmp_path), "at least 3"),
        (settingsFor([good], tmp_path, validationVolume=short), "validation volume 'two slices'"),
        (settingsFor([good, good], tmp_path), "selected twice"),
        (settingsFor([good], tmp_path, validationVolume=good), "held-out"),
        (settingsFor([good], tmp_path, init=str(tmp_path / "missing.pt")), "does not exist"),
        (settingsFor([good], tmp_path, output=""), "output checkpoint"),
        (settingsFor([good], tmp_path, patchSize=18), "not divisible by 4"),
        (settingsFor([good], tmp_path, patchSize=32), "larger than the slices"),
        (settingsFor([good], tmp_path, lam=-1.0), "lambda"),
        (settingsFor([good], tmp_path, output=str(tmp_path / "no such folder" / "m.pt")), "does not exist"),
    ]
    for settings, words in cases:
        with pytest.raises(InputError, match=words):
            mt.prepareTraining(settings, work, python=sys.executable)
        leftovers = [p.name for p in work.iterdir()] if work.exists() else []
        assert leftovers == [], f"{words}: files left behind {leftovers}"
    assert not (tmp_path / "out" / "model.pt").exists()


# --------------------------------------------------------------------------------------------- command line
def test_command_line_is_what_cli_train_parses(scene, tmp_path):
    from SemanticInterpolationLib.cli.app import build_parser
    from SemanticInterpolationLib.cli.train import config_from_args

    volumes = [addVolume(scene, makeVoxels(seed=s), name=f"scan {s}") for s in range(2)]
    validation = addVolume(scene, makeVoxels(seed=9), name="held out")
    settings = settingsFor(volumes, tmp_path, validationVolume=validation, epochs=7, lam=0.125,
                           synthesisLoss="L1", batchSize=3, seed=5, learningRate=1e-4, stepsPerEpoch=4)
    job = mt.prepareTraining(settings, tmp_path / "work", python="/opt/Slicer/bin/PythonSlicer")

    assert job.command[:3] == ["/opt/Slicer/bin/PythonSlicer", "-m", "SemanticInterpolationLib.cli.train"]
    assert job.command[-2:] == ["--stop-file", str(job.stopFile)]
    assert "2 training volume(s)" in job.description and "1 validation volume(s)" in job.description
    args = build_parser().parse_args(["train", *job.arguments[2:]])
    parsed = config_from_args(args)
    assert parsed.settings() == job.config.settings()
    assert [os.path.basename(p) for p in parsed.training_volumes] == ["train00_scan_0.nrrd", "train01_scan_1.nrrd"]
    assert [os.path.basename(p) for p in parsed.validation_volumes] == ["validation_held_out.nrrd"]
    assert parsed.epochs == 7 and parsed.lam == 0.125 and parsed.synthesis_loss == "l1"
    assert parsed.patch_size == 16 and parsed.batch_size == 3 and parsed.device == "cpu" and parsed.seed == 5
    assert parsed.learning_rate == 1e-4 and parsed.steps_per_epoch == 4 and parsed.init is None
    assert args.stop_file == str(job.stopFile)
    assert job.logPath == tmp_path / "out" / "model.log.jsonl"
    assert job.environment["PYTHONPATH"].split(os.pathsep)[0] == str(mt.libraryFolder())
    assert (mt.libraryFolder() / "SemanticInterpolationLib" / "cli" / "train.py").is_file()

    mt.requestStop(job)
    assert job.stopFile.is_file()
    job.cleanup()
    assert not (tmp_path / "work").exists()


def test_init_default_and_checkpoint_path(scene, tmp_path, random_checkpoint):
    volume = addVolume(scene, makeVoxels())
    job = mt.prepareTraining(settingsFor([volume], tmp_path, init=str(random_checkpoint)), tmp_path / "w",
                             python=sys.executable)
    assert job.arguments[job.arguments.index("--init") + 1] == str(random_checkpoint)
    assert "fine-tuned from" in job.description
    for scratch in (None, "", "."):
        config = mt.buildTrainingConfig(settingsFor([volume], tmp_path, init=scratch), ["a.nrrd"])
        assert config.init is None and "--init" not in config.to_cli_args()
    config = mt.buildTrainingConfig(settingsFor([volume], tmp_path, init="default"), ["a.nrrd"])
    assert config.to_cli_args()[config.to_cli_args().index("--init") + 1] == "default"


def test_model_type_reaches_the_command_line(scene, tmp_path, random_checkpoint):
    """"auto" (the Train tab's first entry) and None give no --model-type (the checkpoint's type is kept); a
    chosen type is passed as --model-type, checked by the Trainer before any process starts, and parsed back."""
    from SemanticInterpolationLib.cli.app import build_parser
    from SemanticInterpolationLib.cli.train import config_from_args

    volume = addVolume(scene, makeVoxels((8, 24, 20)))
    for auto in (None, "", "auto", "AUTO"):
        config = mt.buildTrainingConfig(settingsFor([volume], tmp_path, modelType=auto), ["a.nrrd"])
        assert config.model_type is None and "--model-type" not in config.to_cli_args()
    job = mt.prepareTraining(settingsFor([volume], tmp_path, modelType="pair-unet", maxGap=4), tmp_path / "w",
                             python=sys.executable)
    arguments = job.arguments
    assert arguments[arguments.index("--model-type") + 1] == "pair-unet"
    assert arguments[arguments.index("--max-gap") + 1] == "4"
    parsed = config_from_args(build_parser().parse_args(["train", *arguments[2:]]))
    assert parsed.model_type == "pair-unet" and parsed.max_gap == 4
    assert parsed.settings() == job.config.settings()
    job.cleanup()
    job = mt.prepareTraining(settingsFor([volume], tmp_path, modelType="asi"), tmp_path / "w", python=sys.executable)
    assert job.arguments[job.arguments.index("--model-type") + 1] == "asi"
    job.cleanup()
    # fine-tuning an asi checkpoint as pair-unet is refused before any process starts, leaving no files
    from SemanticInterpolationLib import CheckpointError

    with pytest.raises(CheckpointError, match="is a asi model, but model type 'pair-unet'"):
        mt.prepareTraining(settingsFor([volume], tmp_path, init=str(random_checkpoint), modelType="pair-unet"),
                           tmp_path / "w2", python=sys.executable)
    assert not (tmp_path / "w2").exists() or not any((tmp_path / "w2").iterdir())
    with pytest.raises(InputError, match="unknown model type 'cnn'"):
        mt.prepareTraining(settingsFor([volume], tmp_path, modelType="cnn"), tmp_path / "w3", python=sys.executable)


def test_training_volume_references_in_the_parameter_node(scene):
    parameterNode = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "parameters")
    volumes = [addVolume(scene, makeVoxels(seed=s), name=f"v{s}") for s in range(3)]
    mt.setTrainingVolumeReferences(parameterNode, [volumes[2], volumes[0]])
    assert mt.trainingVolumeReferences(parameterNode) == [volumes[2], volumes[0]]
    scene.RemoveNode(volumes[0])
    assert mt.trainingVolumeReferences(parameterNode) == [volumes[2]]
    mt.setTrainingVolumeReferences(parameterNode, [])
    assert mt.trainingVolumeReferences(parameterNode) == []


# --------------------------------------------------------------------------------------------- log -> nodes
LOG = [
    {"event": "start", "epochs": 3, "first_epoch": 1, "description": "journal scratch"},
    {"event": "progress", "epoch": 1, "epochs": 3, "step": 2, "steps": 4, "loss": 0.5, "fraction": 2 / 12},
    {"event": "epoch", "epoch": 1, "epochs": 3, "train_loss": 0.4, "train_reconstruction": 0.3,
     "train_synthesis": 2.0, "val_loss": 0.35, "val_syn_psnr": 20.0, "val_rec_psnr": 25.0, "val_linear_psnr": 19.0,
     "val_syn_ssim": 0.7, "val_rec_ssim": 0.8, "val_linear_ssim": 0.65, "epoch_seconds": 1.5,
     "triplets_per_second": 10.0, "best": True},
    {"event": "progress", "epoch": 2, "epochs": 3, "step": 1, "steps": 4, "loss": 0.3, "fraction": 5 / 12},
    {"event": "epoch", "epoch": 2, "epochs": 3, "train_loss": 0.2, "train_reconstruction": 0.15,
     "train_synthesis": None, "val_syn_psnr": 22.5, "val_linear_psnr": 19.0, "val_rec_psnr": 26.0,
     "epoch_seconds": 1.4, "triplets_per_second": 11.0, "best": True},
]


def test_log_records_become_table_and_plot_nodes(scene):
    plot = mt.TrainingPlot(scene, "ASI training model")
    assert mt.tableNodeColumns(plot.epochTable) == {c: [] for c in mt.EPOCH_COLUMNS}

    plot.update(LOG)

    epochs = mt.tableNodeColumns(plot.epochTable)
    assert list(epochs) == list(mt.EPOCH_COLUMNS)
    assert epochs["epoch"] == [1.0, 2.0]
    assert epochs["train_loss"] == [0.4, 0.2]
    assert epochs["val_syn_psnr"] == [20.0, 22.5]
    assert epochs["train_synthesis"][0] == 2.0 and math.isnan(epochs["train_synthesis"][1])
    assert math.isnan(epochs["val_loss"][1]) and math.isnan(epochs["val_syn_ssim"][1])
    progress = mt.tableNodeColumns(plot.progressTable)
    assert progress == {"epoch": [0.5, 1.0, 1.25, 2.0], "loss": [0.5, 0.4, 0.3, 0.2]}

    assert plot.lossChart.IsA("vtkMRMLPlotChartNode") and plot.validationChart.IsA("vtkMRMLPlotChartNode")
    assert plot.lossChart.GetXAxisTitle() == "epoch" and plot.validationChart.GetYAxisTitle() == "PSNR (dB)"
    series = {plot.lossChart.GetNthPlotSeriesNode(n).GetYColumnName(): plot.lossChart.GetNthPlotSeriesNode(n)
              for n in range(plot.lossChart.GetNumberOfPlotSeriesNodes())}
    assert set(series) == {"loss", "train_loss", "train_reconstruction", "train_synthesis"}
    assert series["loss"].GetTableNode() is plot.progressTable
    assert series["train_loss"].GetTableNode() is plot.epochTable
    assert all(s.GetXColumnName() == "epoch" for s in plot.seriesNodes)
    validation = [plot.validationChart.GetNthPlotSeriesNode(n).GetYColumnName()
                  for n in range(plot.validationChart.GetNumberOfPlotSeriesNodes())]
    assert validation == ["val_syn_psnr", "val_linear_psnr", "val_bspline_psnr", "val_rec_psnr"]
    assert all(node.GetScene() is scene for node in plot.nodes())

    plot.update(LOG[:1])  # refilled, not appended; the series still point at the same tables
    assert mt.tableNodeColumns(plot.epochTable)["epoch"] == []
    assert series["train_loss"].GetTableNode() is plot.epochTable


def test_log_summary_status_and_recommended_checkpoint():
    status = mt.summarizeTrainingLog(LOG[:2])
    assert status.started and not status.ended and status.fraction == pytest.approx(2 / 12)
    assert "step 2/4" in status.text and "0.50000" in status.text
    status = mt.summarizeTrainingLog(LOG)
    assert status.epochsDone == 2 and status.fraction == pytest.approx(2 / 3) and "best so far" in status.text
    assert len(status.epochRecords) == 2
    end = {"event": "end", "status": "finished", "epochs_done": 3, "checkpoint": "/m.pt",
           "best_checkpoint": "/m.best.pt", "recommended_checkpoint": "/m.best.pt"}
    status = mt.summarizeTrainingLog(LOG + [end])
    assert status.ended and status.endStatus == "finished" and status.recommendedCheckpoint == "/m.best.pt"
    assert status.fraction == 1.0
    failed = mt.summarizeTrainingLog(LOG + [{"event": "end", "status": "failed", "message": "TrainingDiverged: NaN"}])
    assert failed.endStatus == "failed" and "NaN" in failed.text
    resumed = LOG + [{"event": "start", "epochs": 5, "first_epoch": 3}]
    assert mt.summarizeTrainingLog(resumed).epochsDone == 2
    assert mt.trainingLogTables(resumed)["epoch"]["epoch"] == [1.0, 2.0]  # the history before the resume stays


# --------------------------------------------------------------------------------------------- real run
def test_real_tiny_training_through_exported_files_and_command(scene, tmp_path):
    """Scene volumes -> files -> the command the GUI starts -> a checkpoint that loads and upsamples."""
    from SemanticInterpolationLib import load_checkpoint

    volumes = [addVolume(scene, makeVoxels((5, 24, 20), seed=s), name=f"train {s}") for s in range(2)]
    validation = addVolume(scene, makeVoxels((5, 24, 20), seed=7), name="validation")
    settings = settingsFor(volumes, tmp_path, validationVolume=validation, epochs=2, stepsPerEpoch=2, batchSize=2,
                           patchSize=16, synthesisLoss="mse")
    job = mt.prepareTraining(settings, tmp_path / "work", python=sys.executable)
    environment = {**os.environ, **job.environment, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(job.command, env=environment, capture_output=True, text=True, timeout=300,
                               cwd=str(tmp_path))
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]

    records = job.readLog()
    status = mt.summarizeTrainingLog(records)
    assert status.ended and status.endStatus == "finished" and status.epochsDone == 2
    assert status.recommendedCheckpoint == str(tmp_path / "out" / "model.best.pt")
    checkpoint = load_checkpoint(status.recommendedCheckpoint)
    assert checkpoint.model is not None
    plot = mt.TrainingPlot(scene, "run")
    plot.update(records)
    columns = mt.tableNodeColumns(plot.epochTable)
    assert columns["epoch"] == [1.0, 2.0] and all(math.isfinite(v) for v in columns["train_loss"])
    assert all(math.isfinite(v) for v in columns["val_syn_psnr"])
    json.dumps(records)  # plain data

    from SemanticInterpolationLib import SemanticInterpolationLogic

    output = SemanticInterpolationLogic(batchSize=4).upsample(volumes[0], 2, checkpoint=status.recommendedCheckpoint,
                                                              device="cpu")
    assert mrml.voxelsFromVolumeNode(output).shape == (9, 24, 20)
    job.cleanup()
    assert not (tmp_path / "work").exists()


def test_stop_file_stops_the_process_and_keeps_no_partial_checkpoint(scene, tmp_path):
    volume = addVolume(scene, makeVoxels((5, 24, 20)), name="train")
    settings = settingsFor([volume], tmp_path, epochs=50, stepsPerEpoch=1000, batchSize=2, patchSize=16,
                           synthesisLoss="mse")
    job = mt.prepareTraining(settings, tmp_path / "work", python=sys.executable, check=False)
    mt.requestStop(job)  # before it starts: it stops after its first step
    environment = {**os.environ, **job.environment, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(job.command, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 130, completed.stderr[-2000:]
    status = mt.summarizeTrainingLog(job.readLog())
    assert status.endStatus == "cancelled" and status.recommendedCheckpoint is None
    assert not (tmp_path / "out" / "model.pt").exists()
