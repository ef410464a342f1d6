"""SemanticInterpolationLogic on real MRML nodes (needs the ``slicer-core`` package, no Slicer app).

Volumes are tiny (at most 24 voxels a side) and the model is a freshly initialised ASI
autoencoder, so these tests check geometry, bookkeeping and error handling, not image quality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is not installed (pip install slicer-core): the MRML logic tests need it")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)", allow_module_level=True)
vtk = pytest.importorskip("vtk")
torch = pytest.importorskip("torch")

from SemanticInterpolationLib import (ASIAutoencoder, CheckpointError, InputError,  # noqa: E402
                                      OperationCancelled, SemanticInterpolationLogic, save_checkpoint)
from SemanticInterpolationLib.mrml import logic as mrml  # noqa: E402

from mrml_helpers import addVolumeNode, smoothVoxels  # noqa: E402


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def checkpointPath(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "m.pt", ASIAutoencoder())


@pytest.fixture(scope="module")
def logic():
    return SemanticInterpolationLogic(batchSize=4)


def ijkToRAS(spacing=(1.0, 1.2, 4.0), origin=(10.0, -20.0, 30.0), rotation=None) -> np.ndarray:
    """4x4 IJK-to-RAS (mm): columns are the i, j, k axis directions scaled by the spacing."""
    matrix = np.eye(4)
    directions = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    matrix[:3, :3] = directions * np.asarray(spacing, dtype=float)[np.newaxis, :]
    matrix[:3, 3] = origin
    return matrix


def rotationMatrix(ax=0.3, ay=-0.2, az=0.5) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def makeVoxels(shapeKJI=(6, 20, 16), dtype=np.int16, seed=1) -> np.ndarray:
    return smoothVoxels(shapeKJI, dtype, seed)


def addVolume(scene, voxels, matrix=None, name="MR", className="vtkMRMLScalarVolumeNode"):
    return addVolumeNode(scene, voxels, ijkToRAS() if matrix is None else matrix, name, className, displayNodes=True)


def volumeCount(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")


def nodeCount(scene) -> int:
    return scene.GetNumberOfNodes()


def arrayOf(node) -> np.ndarray:
    return mrml.voxelsFromVolumeNode(node)


# --------------------------------------------------------------------------------------------- geometry
def test_axis_aligned_volume_geometry_name_and_acquired_slices(scene, logic, checkpointPath):
    voxels = makeVoxels()
    inputVolume = addVolume(scene, voxels, ijkToRAS(spacing=(1.0, 1.2, 4.0)), name="T2 cine")
    before = volumeCount(scene)

    output = logic.upsample(inputVolume, 4, checkpoint=checkpointPath, device="cpu")

    assert volumeCount(scene) == before + 1
    assert output.IsA("vtkMRMLScalarVolumeNode") and output.GetScene() is scene
    assert output.GetName() == "T2 cine ASI x4"
    result = arrayOf(output)
    assert result.shape == ((6 - 1) * 4 + 1, 20, 16)
    assert result.dtype == np.int16
    np.testing.assert_array_equal(result[::4], voxels)  # acquired slices bit-exact
    np.testing.assert_allclose(output.GetSpacing(), (1.0, 1.2, 1.0))
    np.testing.assert_allclose(output.GetOrigin(), (10.0, -20.0, 30.0))
    np.testing.assert_allclose(mrml.ijkToRASArray(output), ijkToRAS(spacing=(1.0, 1.2, 1.0)))
    assert output.GetDisplayNode() is not None


def test_synthesis_mode_is_passed_to_the_engine_and_auto_follows_the_checkpoint(scene, tmp_path):
    """Each mode gives exactly the engine's output for that mode; auto/None use the checkpoint's
    recommendation; an unknown mode fails before any node is made."""
    from SemanticInterpolationLib import ASIEngine, load_checkpoint

    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "residual.pt", ASIAutoencoder(),
                           metadata={"inference": {"synthesis": "residual-bspline"}})
    checkpoint = load_checkpoint(path)
    voxels = makeVoxels(dtype=np.float32)
    inputVolume = addVolume(scene, voxels)
    logic = SemanticInterpolationLogic()
    outputs = {}
    for mode in ("plain", "residual", "residual-bspline", "auto", None):
        outputs[mode] = arrayOf(logic.upsample(inputVolume, 3, checkpoint=path, device="cpu", synthesis=mode))
    for mode in ("plain", "residual", "residual-bspline"):
        expected = ASIEngine(checkpoint, "cpu", synthesis=mode).upsample(voxels, 3, axis=0)
        np.testing.assert_allclose(outputs[mode], expected, rtol=1e-5, atol=1e-3)
    assert np.abs(outputs["plain"] - outputs["residual-bspline"]).max() > 1.0  # the modes really differ
    np.testing.assert_array_equal(outputs["auto"], outputs["residual-bspline"])
    np.testing.assert_array_equal(outputs[None], outputs["residual-bspline"])
    before = nodeCount(scene)
    with pytest.raises(InputError, match="synthesis mode must be one of"):
        logic.upsample(inputVolume, 3, checkpoint=path, device="cpu", synthesis="cubic")
    assert nodeCount(scene) == before


def test_oblique_volume_keeps_directions_and_voxel_positions(scene, logic, checkpointPath):
    rotation = rotationMatrix()
    matrix = ijkToRAS(spacing=(0.9, 0.9, 5.0), origin=(-12.5, 40.0, 7.25), rotation=rotation)
    inputVolume = addVolume(scene, makeVoxels((5, 20, 16)), matrix)

    output = logic.upsample(inputVolume, 3, checkpoint=checkpointPath, device="cpu")

    outMatrix = mrml.ijkToRASArray(output)
    expected = matrix.copy()
    expected[:3, 2] /= 3
    np.testing.assert_allclose(outMatrix, expected, atol=1e-9)
    directions = vtk.vtkMatrix4x4()
    output.GetIJKToRASDirectionMatrix(directions)
    np.testing.assert_allclose(mrml.matrixToArray(directions)[:3, :3], rotation, atol=1e-9)
    # output voxel (i, j, 3 s) is at the RAS position of input voxel (i, j, s)
    for s in range(5):
        inputPoint = matrix @ np.array([3, 7, s, 1.0])
        outputPoint = outMatrix @ np.array([3, 7, 3 * s, 1.0])
        np.testing.assert_allclose(outputPoint, inputPoint, atol=1e-9)


def test_parent_transform_is_kept(scene, logic, checkpointPath):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transformMatrix = vtk.vtkMatrix4x4()
    transformMatrix.SetElement(0, 3, 15.0)
    transform.SetMatrixTransformToParent(transformMatrix)
    inputVolume = addVolume(scene, makeVoxels())
    inputVolume.SetAndObserveTransformNodeID(transform.GetID())

    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")

    assert output.GetTransformNodeID() == transform.GetID()
    assert output.GetParentTransformNode() is transform


@pytest.mark.parametrize("sliceAxis", [0, 1, 2])
def test_each_slice_axis_is_upsampled_when_it_has_the_largest_spacing(scene, logic, checkpointPath, sliceAxis):
    spacing = [1.0, 1.1, 1.2]
    spacing[sliceAxis] = 4.5
    sizesIJK = [16, 20, 24]
    sizesIJK[sliceAxis] = 5
    voxels = makeVoxels(tuple(reversed(sizesIJK)), np.float32)
    inputVolume = addVolume(scene, voxels, ijkToRAS(spacing=spacing, rotation=rotationMatrix()))

    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")

    expectedSizes = list(sizesIJK)
    expectedSizes[sliceAxis] = (5 - 1) * 2 + 1
    assert output.GetImageData().GetDimensions() == tuple(expectedSizes)
    expectedSpacing = list(spacing)
    expectedSpacing[sliceAxis] /= 2
    np.testing.assert_allclose(output.GetSpacing(), expectedSpacing, rtol=1e-9)
    acquired = np.take(arrayOf(output), range(0, 9, 2), axis=2 - sliceAxis)
    np.testing.assert_array_equal(acquired, voxels)


def test_explicit_slice_axis_overrides_the_automatic_choice(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels((6, 20, 16)), ijkToRAS(spacing=(1.0, 1.0, 4.0)))
    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu", sliceAxis=1)
    assert output.GetImageData().GetDimensions() == (16, 39, 6)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_voxel_type_is_kept(scene, logic, checkpointPath, dtype):
    voxels = makeVoxels(dtype=dtype) if dtype != np.uint8 else (makeVoxels() // 4).clip(0, 255).astype(np.uint8)
    inputVolume = addVolume(scene, voxels)
    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")
    result = arrayOf(output)
    assert result.dtype == dtype
    assert np.isfinite(result.astype(float)).all()
    np.testing.assert_array_equal(result[::2], voxels)


def test_input_node_and_voxels_are_not_modified(scene, logic, checkpointPath):
    voxels = makeVoxels()
    matrix = ijkToRAS(rotation=rotationMatrix())
    inputVolume = addVolume(scene, voxels, matrix, name="original")
    imageData = inputVolume.GetImageData()
    inputDisplay = inputVolume.GetDisplayNode()
    inputDisplay.SetAutoWindowLevel(False)
    inputDisplay.SetWindowLevel(123.0, 45.0)
    modifiedTime = imageData.GetPointData().GetScalars().GetMTime()

    logic.upsample(inputVolume, 3, checkpoint=checkpointPath, device="cpu", keepAcquiredSlices=False)

    assert inputVolume.GetName() == "original"
    assert inputVolume.GetImageData() is imageData
    assert imageData.GetPointData().GetScalars().GetMTime() == modifiedTime
    np.testing.assert_array_equal(arrayOf(inputVolume), voxels)
    np.testing.assert_allclose(mrml.ijkToRASArray(inputVolume), matrix)
    assert (inputDisplay.GetWindow(), inputDisplay.GetLevel()) == (123.0, 45.0)


def test_display_settings_follow_the_input(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels())
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MyColors")
    colors.SetTypeToWarm1()
    display = inputVolume.GetDisplayNode()
    display.SetAndObserveColorNodeID(colors.GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(250.0, 410.0)
    display.SetInterpolate(False)

    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")

    outDisplay = output.GetDisplayNode()
    assert outDisplay.GetColorNodeID() == colors.GetID()
    assert not outDisplay.GetAutoWindowLevel()
    assert (outDisplay.GetWindow(), outDisplay.GetLevel()) == (250.0, 410.0)
    assert not outDisplay.GetInterpolate()


def test_works_without_display_nodes(scene, logic, checkpointPath):
    inputVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "bare")
    inputVolume.SetAndObserveImageData(mrml.imageDataFromVoxels(makeVoxels()))
    inputVolume.SetSpacing(1.0, 1.0, 3.0)
    output = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")
    assert output.GetImageData().GetDimensions() == (16, 20, 11)


# --------------------------------------------------------------------------------------------- progress, cancel, output reuse
def test_progress_reports_increasing_work_up_to_the_total(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels((7, 20, 16)))
    calls = []
    logic.upsample(inputVolume, 3, checkpoint=checkpointPath, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls, "progress was never called"
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert calls[-1][0] == calls[-1][1] > 0


def test_cancel_raises_and_leaves_no_node(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels((9, 20, 16)))
    before = nodeCount(scene)
    calls = []

    def progress(done, total):
        calls.append(done)

    with pytest.raises(OperationCancelled):
        logic.upsample(inputVolume, 4, checkpoint=checkpointPath, device="cpu", progress=progress,
                       shouldCancel=lambda: len(calls) >= 2, batchSize=2)
    assert nodeCount(scene) == before


def test_given_output_volume_is_reused_and_keeps_its_name(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels(), name="in")
    outputVolume = addVolume(scene, np.zeros((2, 3, 4), np.int16), name="my result")
    before = nodeCount(scene)

    result = logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu", outputVolume=outputVolume)

    assert result is outputVolume
    assert nodeCount(scene) == before
    assert outputVolume.GetName() == "my result"
    assert outputVolume.GetImageData().GetDimensions() == (16, 20, 11)
    np.testing.assert_allclose(outputVolume.GetSpacing(), (1.0, 1.2, 2.0))


def test_cancelled_run_leaves_a_given_output_volume_as_it_was(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels())
    old = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    oldMatrix = ijkToRAS(spacing=(2, 2, 2), origin=(1, 2, 3))
    outputVolume = addVolume(scene, old, oldMatrix, name="keep me")
    with pytest.raises(OperationCancelled):
        logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu", outputVolume=outputVolume,
                       shouldCancel=lambda: True)
    np.testing.assert_array_equal(arrayOf(outputVolume), old)
    np.testing.assert_allclose(mrml.ijkToRASArray(outputVolume), oldMatrix)
    assert outputVolume.GetName() == "keep me"


def test_three_phase_api_creates_nothing_before_finish(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels())
    before = nodeCount(scene)
    job = logic.prepareVolumeJob(inputVolume, 2, checkpoint=checkpointPath, device="cpu")
    logic.runJob(job)
    assert nodeCount(scene) == before
    output = logic.finishJob(job)
    assert output.GetScene() is scene and nodeCount(scene) > before
    assert "cpu" in job.engineDescription


# --------------------------------------------------------------------------------------------- sequences
def addSequence(scene, frames, indexValues, name="cine"):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    for index, (voxels, value) in enumerate(zip(frames, indexValues)):
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetName(f"{name} frame {index}")
        frame.SetIJKToRASMatrix(mrml.arrayToMatrix(ijkToRAS(spacing=(1.5, 1.5, 6.0), rotation=rotationMatrix())))
        frame.SetAndObserveImageData(mrml.imageDataFromVoxels(voxels))
        sequence.SetDataNodeAtValue(frame, value)
    return sequence


def test_sequence_frames_keep_index_values_and_share_one_model(scene, checkpointPath, monkeypatch):
    from SemanticInterpolationLib.models import checkpoint as checkpointModule

    loads = []
    original = checkpointModule.resolve_checkpoint
    monkeypatch.setattr(checkpointModule, "resolve_checkpoint", lambda c: loads.append(c) or original(c))
    frames = [makeVoxels((4, 20, 16), np.int16, seed=s) for s in range(3)]
    values = ["0", "37.5", "75"]
    sequence = addSequence(scene, frames, values)
    progressCalls = []

    output = SemanticInterpolationLogic().upsampleSequence(
        sequence, 3, checkpoint=checkpointPath, device="cpu", progress=lambda d, t: progressCalls.append((d, t)))

    assert len(loads) == 1, "the model must be loaded once for all frames"
    assert output.IsA("vtkMRMLSequenceNode") and output.GetScene() is scene
    assert output.GetName() == "cine ASI x3"
    assert (output.GetIndexName(), output.GetIndexUnit(), output.GetIndexType()) == ("time", "ms", sequence.GetIndexType())
    assert [output.GetNthIndexValue(n) for n in range(output.GetNumberOfDataNodes())] == values
    for n, voxels in enumerate(frames):
        frame = output.GetNthDataNode(n)
        assert frame.GetImageData().GetDimensions() == (16, 20, 10)
        np.testing.assert_array_equal(arrayOf(frame)[::3], voxels)
        expected = ijkToRAS(spacing=(1.5, 1.5, 2.0), rotation=rotationMatrix())
        np.testing.assert_allclose(mrml.ijkToRASArray(frame), expected, atol=1e-9)
    # the input sequence is untouched
    assert sequence.GetNumberOfDataNodes() == 3
    np.testing.assert_array_equal(arrayOf(sequence.GetNthDataNode(1)), frames[1])
    # a browser shows the result
    browser = scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    assert browser is not None and browser.GetMasterSequenceNode() is output
    proxy = browser.GetProxyNode(output)
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")
    done = [d for d, _ in progressCalls]
    assert done == sorted(done) and progressCalls[-1][0] == progressCalls[-1][1]


def test_sequence_cancel_leaves_no_node(scene, checkpointPath):
    sequence = addSequence(scene, [makeVoxels((4, 20, 16), seed=s) for s in range(3)], ["1", "2", "3"])
    before = nodeCount(scene)
    calls = []
    with pytest.raises(OperationCancelled):
        SemanticInterpolationLogic().upsampleSequence(
            sequence, 2, checkpoint=checkpointPath, device="cpu",
            progress=lambda d, t: calls.append(d), shouldCancel=lambda: len(calls) > 3)
    assert nodeCount(scene) == before


def test_sequence_of_non_volumes_is_rejected(scene, checkpointPath):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "transforms")
    sequence.SetDataNodeAtValue(slicer.vtkMRMLLinearTransformNode(), "0")
    before = nodeCount(scene)
    with pytest.raises(InputError, match="frame 0 .*scalar volume"):
        SemanticInterpolationLogic().upsampleSequence(sequence, 2, checkpoint=checkpointPath, device="cpu")
    with pytest.raises(InputError, match="sequence node"):
        SemanticInterpolationLogic().upsampleSequence(addVolume(scene, makeVoxels()), 2, checkpoint=checkpointPath)
    assert nodeCount(scene) == before + 2  # only the volume this test added (and its display node)


# --------------------------------------------------------------------------------------------- bad input
def vectorVolume(scene):
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    node.SetAndObserveImageData(mrml.imageDataFromVoxels(makeVoxels()))  # replaced below by 3 components
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(16, 20, 6)
    imageData.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(imageData)
    return node


def multiComponentScalarVolume(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "two components")
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(16, 20, 6)
    imageData.AllocateScalars(vtk.VTK_FLOAT, 2)
    node.SetAndObserveImageData(imageData)
    return node


BAD_INPUTS = {
    "not a volume": (lambda s: s.AddNewNodeByClass("vtkMRMLModelNode", "surface"), 2, "must be a scalar volume node"),
    "transform": (lambda s: s.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t"), 2, "must be a scalar volume node"),
    "nothing": (lambda s: None, 2, "no input volume"),
    "label map": (lambda s: addVolume(s, makeVoxels(), className="vtkMRMLLabelMapVolumeNode"), 2, "label map"),
    "vector volume": (vectorVolume, 2, "not a scalar volume"),
    "two components": (multiComponentScalarVolume, 2, "2 components per voxel"),
    "no voxels": (lambda s: s.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"), 2, "has no voxels"),
    "one slice": (lambda s: addVolume(s, makeVoxels((1, 20, 16))), 2, "only 1 slice along its slice axis k"),
    "factor 1": (lambda s: addVolume(s, makeVoxels()), 1, "at least 2"),
    "factor 0": (lambda s: addVolume(s, makeVoxels()), 0, "at least 2"),
    "factor 2.5": (lambda s: addVolume(s, makeVoxels()), 2.5, "whole number"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_clearly_and_creates_no_node(scene, logic, checkpointPath, case):
    makeInput, factor, message = BAD_INPUTS[case]
    inputNode = makeInput(scene)
    before = nodeCount(scene)
    with pytest.raises(InputError, match=message):
        logic.upsample(inputNode, factor, checkpoint=checkpointPath, device="cpu")
    assert nodeCount(scene) == before


def test_output_volume_must_not_be_the_input_or_a_label_map(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels())
    labels = addVolume(scene, np.zeros((2, 2, 2), np.uint8), className="vtkMRMLLabelMapVolumeNode")
    before = nodeCount(scene)
    with pytest.raises(InputError, match="is the input volume"):
        logic.upsample(inputVolume, 2, checkpoint=checkpointPath, outputVolume=inputVolume)
    with pytest.raises(InputError, match="output volume must be a scalar volume"):
        logic.upsample(inputVolume, 2, checkpoint=checkpointPath, outputVolume=labels)
    assert nodeCount(scene) == before


def test_volume_outside_a_scene_is_rejected(logic, checkpointPath):
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetAndObserveImageData(mrml.imageDataFromVoxels(makeVoxels()))
    with pytest.raises(InputError, match="not in a scene"):
        logic.upsample(node, 2, checkpoint=checkpointPath)


def test_missing_checkpoint_file_fails_before_any_node(scene, logic, tmp_path):
    inputVolume = addVolume(scene, makeVoxels())
    before = nodeCount(scene)
    with pytest.raises(CheckpointError, match="does not exist"):
        logic.upsample(inputVolume, 2, checkpoint=tmp_path / "missing.pt")
    assert nodeCount(scene) == before


def test_no_default_checkpoint_gives_advice(scene, logic, monkeypatch):
    from SemanticInterpolationLib.models import checkpoint as checkpointModule

    monkeypatch.setattr(checkpointModule, "find_default_checkpoint", lambda: None)
    inputVolume = addVolume(scene, makeVoxels())
    before = nodeCount(scene)
    with pytest.raises(CheckpointError, match="choose a checkpoint file"):
        logic.upsample(inputVolume, 2)
    assert nodeCount(scene) == before


def test_unknown_device_fails_before_any_node(scene, logic, checkpointPath):
    from SemanticInterpolationLib import DeviceError

    inputVolume = addVolume(scene, makeVoxels())
    before = nodeCount(scene)
    with pytest.raises(DeviceError):
        logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="tpu")
    assert nodeCount(scene) == before


def test_importing_the_package_does_not_import_vtk():
    import subprocess
    import sys

    code = ("import sys, SemanticInterpolationLib; "
            "print(any(m == 'vtk' or m.startswith(('vtkmodules', 'slicer')) for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_failure_while_finishing_removes_the_new_node(scene, logic, checkpointPath, monkeypatch):
    inputVolume = addVolume(scene, makeVoxels())
    before = nodeCount(scene)

    def broken(*args):
        raise RuntimeError("simulated failure after the node was added")

    monkeypatch.setattr(mrml, "_copyDisplaySettings", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        logic.upsample(inputVolume, 2, checkpoint=checkpointPath, device="cpu")
    assert nodeCount(scene) == before


def test_background_run_computes_in_a_thread_and_can_be_cancelled(scene, logic, checkpointPath):
    inputVolume = addVolume(scene, makeVoxels((9, 20, 16)))
    before = nodeCount(scene)
    job = logic.prepareVolumeJob(inputVolume, 2, checkpoint=checkpointPath, device="cpu")
    run = mrml.BackgroundRun(logic, job)
    run.start()
    assert run.wait(120), "the worker did not finish"
    assert run.error is None and not run.isRunning
    done, total = run.progress
    assert done == total > 1
    assert nodeCount(scene) == before  # the worker never touches the scene
    output = logic.finishJob(run.job)
    assert output.GetImageData().GetDimensions() == (16, 20, 17)

    cancelled = mrml.BackgroundRun(logic, logic.prepareVolumeJob(inputVolume, 2, checkpoint=checkpointPath,
                                                                 device="cpu", batchSize=1))
    cancelled.cancel()
    cancelled.start()
    assert cancelled.wait(120)
    assert isinstance(cancelled.error, OperationCancelled)


# --------------------------------------------------------------------------------------------- batch (upsample_folder.py)
def writeNifti(path, voxels, spacing=(1.0, 1.2, 4.0)):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(spacing)
    image.SetOrigin((3.0, -4.0, 5.0))
    sitk.WriteImage(image, str(path))
    return path


def test_batch_upsamples_a_folder_counts_failures_and_skips_existing(tmp_path, checkpointPath):
    import SimpleITK as sitk
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    inputs = tmp_path / "in"
    inputs.mkdir()
    writeNifti(inputs / "a.nii.gz", makeVoxels((5, 20, 16), seed=1))
    writeNifti(inputs / "b.nrrd", makeVoxels((4, 20, 16), np.float32, seed=2), spacing=(5.0, 1.0, 1.0))
    (inputs / "broken.nii").write_bytes(b"not a nifti file")
    (inputs / "notes.txt").write_text("ignored")
    output = tmp_path / "out"
    messages = []
    argv = ["--", "--input", str(inputs), "--output", str(output), "--factor", "2",
            "--checkpoint", str(checkpointPath), "--device", "cpu"]

    code = mrml_batch.main(argv, log=messages.append)

    assert code == mrml_batch.EXIT_SOME_FAILED, messages
    assert sorted(p.name for p in output.iterdir()) == ["a_asi_x2.nii.gz", "b_asi_x2.nrrd"]
    a = sitk.ReadImage(str(output / "a_asi_x2.nii.gz"))
    assert a.GetSize() == (16, 20, 9)
    np.testing.assert_allclose(a.GetSpacing(), (1.0, 1.2, 2.0), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), (3.0, -4.0, 5.0), rtol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a)[::2], makeVoxels((5, 20, 16), seed=1))
    b = sitk.ReadImage(str(output / "b_asi_x2.nrrd"))
    assert b.GetSize() == (31, 20, 4)  # largest spacing (5 mm) along i: 16 -> 31 columns
    assert any("broken.nii: FAILED" in m for m in messages)
    assert any("2 done, 0 skipped, 1 failed" in m for m in messages)
    assert any("[1/3]" in m and "%" in m for m in messages), "progress is printed"

    (inputs / "broken.nii").unlink()
    messages.clear()
    assert mrml_batch.main(argv[1:], log=messages.append) == mrml_batch.EXIT_OK
    assert any("0 done, 2 skipped, 0 failed" in m for m in messages)
    assert mrml_batch.main(argv[1:] + ["--overwrite", "--format", "nrrd"], log=messages.append) == mrml_batch.EXIT_OK
    assert (output / "a_asi_x2.nrrd").is_file()


def test_batch_usage_errors_exit_with_2(tmp_path, checkpointPath):
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    empty = tmp_path / "empty"
    empty.mkdir()
    volume = writeNifti(tmp_path / "v.nii.gz", makeVoxels())
    messages = []
    common = ["--output", str(tmp_path / "out"), "--checkpoint", str(checkpointPath), "--device", "cpu"]
    assert mrml_batch.main(["--input", str(empty), "--factor", "2"] + common, log=messages.append) == 2
    assert "no volume files" in messages[-1]
    assert mrml_batch.main(["--input", str(tmp_path / "missing"), "--factor", "2"] + common, log=messages.append) == 2
    assert mrml_batch.main(["--input", str(volume), "--factor", "1"] + common, log=messages.append) == 2
    assert mrml_batch.main(["--input", str(volume), "--factor", "2", "--output", str(tmp_path / "o"),
                            "--checkpoint", str(tmp_path / "nope.pt")], log=messages.append) == 2
    assert "does not exist" in messages[-1]
    assert mrml_batch.main(["--input", str(volume), "--factor", "2", "--format", "png"] + common,
                           log=messages.append) == 2
    with pytest.raises(SystemExit):
        mrml_batch.parseArguments(["--factor", "2"])  # --input and --output are required
    with pytest.raises(SystemExit):
        mrml_batch.parseArguments(["--input", "a", "--output", "b", "--factor", "2", "--synthesis", "cubic"])
    assert mrml_batch.parseArguments(["--input", "a", "--output", "b", "--factor", "2"]).synthesis == "auto"
    assert mrml_batch.main(["--input", str(volume), "--factor", "2", "--tta", "pair"] + common,
                           log=messages.append) == 2  # an asi checkpoint takes no test-time augmentation
    assert "applies to networks whose state is the slice (pair-unet, profile-routed)" in messages[-1]
    assert mrml_batch.main(["--input", str(volume), "--factor", "2", "--slice-thickness", "thick"] + common,
                           log=messages.append) == 2
    assert "--slice-thickness 'thick': give a thickness in mm (e.g. 5), auto or unknown" in messages[-1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_batch_helpers():
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    assert mrml_batch.volumeExtension("x/scan.NII.GZ") == ".nii.gz"
    assert mrml_batch.volumeExtension("scan.txt") is None
    assert mrml_batch.outputPathFor("/d/scan.nii.gz", "/o", 4).as_posix() == "/o/scan_asi_x4.nii.gz"
    assert mrml_batch.outputPathFor("/d/scan.mha", "/o", 3, "nrrd").as_posix() == "/o/scan_asi_x3.nrrd"


def test_batch_script_runs_outside_slicer_and_returns_the_exit_code(tmp_path, checkpointPath):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "SemanticInterpolation" / "Resources" / "Scripts" / "upsample_folder.py"
    volume = writeNifti(tmp_path / "v.nii.gz", makeVoxels((4, 20, 16)))
    command = [sys.executable, str(script), "--input", str(volume), "--output", str(tmp_path / "out"),
               "--factor", "3", "--checkpoint", str(checkpointPath), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "v_asi_x3.nii.gz").is_file()
    assert "1 done" in result.stdout
    failed = subprocess.run(command[:2] + ["--input", str(tmp_path / "none"), "--output", str(tmp_path / "o"),
                                           "--factor", "2"], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2


# --------------------------------------------------------------------------------------------- adaptation to the scan
@pytest.fixture(scope="module")
def pairCheckpointPath(tmp_path_factory):
    from SemanticInterpolationLib.models.normalization import IntensityNormalization
    from SemanticInterpolationLib.models.pair_unet import PairUNet

    torch.manual_seed(0)
    model = PairUNet()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.02)  # not the zero-started head: adaptation has something to change
    return save_checkpoint(tmp_path_factory.mktemp("pair") / "pair.pt", model,
                           normalization=IntensityNormalization(clip=False))


def weightsOf(model) -> list:
    return [tensor.detach().cpu().clone() for tensor in model.state_dict().values()]


def sameWeights(first, second) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second))


def test_adapt_reports_keeps_acquired_slices_and_leaves_engine_and_checkpoint_unchanged(scene, pairCheckpointPath):
    from SemanticInterpolationLib import load_checkpoint
    from conftest import file_digest

    digest = file_digest(pairCheckpointPath)
    original = weightsOf(load_checkpoint(pairCheckpointPath).model)
    voxels = makeVoxels((6, 20, 16))
    inputVolume = addVolume(scene, voxels, name="pair input")
    logic = SemanticInterpolationLogic()
    calls = []

    output = logic.upsample(inputVolume, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=600, adaptSteps=2,
                            adaptSeed=3, progress=lambda d, t: calls.append((d, t)))

    report = logic.lastAdaptation
    assert report is not None and logic.lastAdaptations == [report]
    assert report.steps == 2 and report.settings["seed"] == 3 and report.settings["max_steps"] == 2
    assert all(math.isfinite(v) for v in (report.before_psnr, report.after_psnr, report.linear_psnr, report.bspline_psnr))
    np.testing.assert_array_equal(arrayOf(output)[::2], voxels)
    assert output.GetImageData().GetDimensions() == (16, 20, 11)
    assert "adapted to the scan (600 s budget)" in output.GetDescription()
    assert "held-out acquired slices" in output.GetDescription()  # the report is kept with the result
    assert sameWeights(weightsOf(logic._engine.model), original), "the cached engine must be restored"
    assert file_digest(pairCheckpointPath) == digest
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]
    # a later run without adapt forgets the report
    logic.upsample(inputVolume, 2, checkpoint=pairCheckpointPath, device="cpu")
    assert logic.lastAdaptation is None and logic.lastAdaptations == []


ADAPT_BAD_INPUTS = {
    "asi checkpoint": (dict(adapt=60), (6, 20, 16), "asi", "available for pair-unet, profile-routed models"),
    "three slices": (dict(adapt=60), (3, 20, 16), "pair", "at least 4 acquired slices"),
    "small slices": (dict(adapt=60), (6, 12, 12), "pair", "at least 16 x 16"),
    "zero seconds": (dict(adapt=0), (6, 20, 16), "pair", "number of seconds above 0"),
    "text seconds": (dict(adapt="60"), (6, 20, 16), "pair", "number of seconds above 0"),
    "steps without adapt": (dict(adaptSteps=3), (6, 20, 16), "pair", "with adapt=SECONDS only"),
    "zero steps": (dict(adapt=60, adaptSteps=0), (6, 20, 16), "pair", "whole number >= 1"),
}


@pytest.mark.parametrize("case", sorted(ADAPT_BAD_INPUTS))
def test_adapt_bad_input_fails_before_any_node(scene, checkpointPath, pairCheckpointPath, case):
    arguments, shape, kind, message = ADAPT_BAD_INPUTS[case]
    checkpoint = checkpointPath if kind == "asi" else pairCheckpointPath
    inputVolume = addVolume(scene, makeVoxels(shape))
    before = nodeCount(scene)
    logic = SemanticInterpolationLogic()
    with pytest.raises(InputError, match=message):
        logic.upsample(inputVolume, 2, checkpoint=checkpoint, device="cpu", **arguments)
    with pytest.raises(InputError, match=message):  # the GUI's path: the prepare phase refuses it
        logic.prepareVolumeJob(inputVolume, 2, checkpoint=checkpoint, device="cpu", **arguments)
    assert nodeCount(scene) == before
    assert logic._engine is None, "nothing was loaded onto a device"


def test_adapt_sequence_with_a_short_frame_fails_before_any_node(scene, pairCheckpointPath, checkpointPath):
    sequence = addSequence(scene, [makeVoxels((5, 20, 16)), makeVoxels((3, 20, 16), seed=2)], ["0", "1"])
    before = nodeCount(scene)
    with pytest.raises(InputError, match="frame 1 .*at least 4 acquired slices"):
        SemanticInterpolationLogic().upsampleSequence(sequence, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=60)
    with pytest.raises(InputError, match="available for pair-unet, profile-routed models"):
        SemanticInterpolationLogic().upsampleSequence(sequence, 2, checkpoint=checkpointPath, device="cpu", adapt=60)
    assert nodeCount(scene) == before


def test_cancelled_adaptation_creates_no_node_and_restores_the_engine(scene, pairCheckpointPath):
    from SemanticInterpolationLib import load_checkpoint

    inputVolume = addVolume(scene, makeVoxels((6, 20, 16)))
    outputVolume = addVolume(scene, np.zeros((2, 3, 4), np.int16), name="keep me")
    before = nodeCount(scene)
    logic = SemanticInterpolationLogic()
    calls = []
    with pytest.raises(OperationCancelled, match="adaptation was cancelled"):
        logic.upsample(inputVolume, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=600,
                       progress=lambda d, t: calls.append(d), shouldCancel=lambda: len(calls) >= 2)
    with pytest.raises(OperationCancelled):
        logic.upsample(inputVolume, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=600,
                       outputVolume=outputVolume, shouldCancel=lambda: True)
    assert nodeCount(scene) == before
    assert outputVolume.GetImageData().GetDimensions() == (4, 3, 2)
    assert logic.lastAdaptation is None
    assert sameWeights(weightsOf(logic._engine.model), weightsOf(load_checkpoint(pairCheckpointPath).model))


def test_adapt_sequence_adapts_each_frame_from_the_checkpoint_weights(scene, pairCheckpointPath, monkeypatch):
    from SemanticInterpolationLib import load_checkpoint
    from SemanticInterpolationLib.training import adaptation

    original = weightsOf(load_checkpoint(pairCheckpointPath).model)
    startWeights = []
    realAdapt = adaptation.adapt_engine

    def recordingAdapt(engine, volume, **kwargs):
        startWeights.append(weightsOf(engine.model))
        report = realAdapt(engine, volume, **kwargs)
        with torch.no_grad():  # pretend it was kept with changed weights: the next frame must not see them
            next(engine.model.parameters()).add_(1.0)
        return report

    monkeypatch.setattr(adaptation, "adapt_engine", recordingAdapt)
    frames = [makeVoxels((5, 20, 16), seed=s) for s in range(2)]
    sequence = addSequence(scene, frames, ["0", "40"])
    logic = SemanticInterpolationLogic()
    output = logic.upsampleSequence(sequence, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=600, adaptSteps=1)

    assert output.GetNumberOfDataNodes() == 2
    assert len(startWeights) == 2 and all(sameWeights(w, original) for w in startWeights)
    assert len(logic.lastAdaptations) == 2 and logic.lastAdaptation is logic.lastAdaptations[-1]
    assert sameWeights(weightsOf(logic._engine.model), original)
    assert "adapted to each frame (600 s budget)" in output.GetDescription()
    assert "frame 0: adaptation: 1 steps" in output.GetDescription()
    assert "frame 40: adaptation: 1 steps" in output.GetDescription()


def test_background_run_with_adapt_hands_the_report_to_the_gui(scene, pairCheckpointPath):
    inputVolume = addVolume(scene, makeVoxels((6, 20, 16)))
    logic = SemanticInterpolationLogic()
    job = logic.prepareVolumeJob(inputVolume, 2, checkpoint=pairCheckpointPath, device="cpu", adapt=600, adaptSteps=1)
    assert (job.adapt, job.adaptSteps, job.adaptSeed) == (600.0, 1, 0)
    run = mrml.BackgroundRun(logic, job)
    assert run.adaptations == [] and run.adaptationSummary == ""
    run.start()
    assert run.wait(300) and run.error is None
    assert len(run.adaptations) == 1
    assert run.adaptationSummary.startswith("adaptation: 1 steps") and "B-spline" in run.adaptationSummary
    assert ("kept the adapted model" in run.adaptationSummary) != ("kept the original model" in run.adaptationSummary)
    output = logic.finishJob(run.job)
    assert output.GetImageData().GetDimensions() == (16, 20, 11)


def test_describe_checkpoint_gives_model_type_and_architecture(checkpointPath, pairCheckpointPath, tmp_path):
    pair = mrml.describeCheckpoint(pairCheckpointPath)
    assert (pair.modelType, pair.architecture, pair.adaptable) == ("pair-unet", "pair-unet-24-48-96", True)
    assert pair.label() == "pair-unet (pair-unet-24-48-96)"
    assert mrml.describeCheckpoint(pairCheckpointPath) is pair  # read once per file version
    asi = mrml.describeCheckpoint(checkpointPath)
    assert asi.modelType == "asi" and not asi.adaptable and asi.label().startswith("asi (")
    with pytest.raises(CheckpointError, match="does not exist"):
        mrml.describeCheckpoint(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        mrml.describeCheckpoint(broken)


def test_batch_adapt_option_exit_codes(tmp_path, checkpointPath, pairCheckpointPath):
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    inputs = tmp_path / "in"
    inputs.mkdir()
    writeNifti(inputs / "a.nii.gz", makeVoxels((5, 20, 16), seed=1))
    messages = []
    common = ["--input", str(inputs), "--output", str(tmp_path / "out"), "--factor", "2", "--device", "cpu"]
    assert mrml_batch.parseArguments(common).adapt is None
    code = mrml_batch.main(common + ["--checkpoint", str(pairCheckpointPath), "--adapt", "600", "--adapt-steps", "1"],
                           log=messages.append)
    assert code == mrml_batch.EXIT_OK, messages
    assert (tmp_path / "out" / "a_asi_x2.nii.gz").is_file()
    assert any("a.nii.gz: adaptation: 1 steps" in m for m in messages), messages
    # settings wrong for every file: exit 2 before any file
    for extra, message in ((["--checkpoint", str(checkpointPath), "--adapt", "60"], "available for pair-unet"),
                           (["--checkpoint", str(pairCheckpointPath), "--adapt", "0"], "seconds above 0"),
                           (["--checkpoint", str(pairCheckpointPath), "--adapt-steps", "2"], "with --adapt")):
        messages.clear()
        assert mrml_batch.main(common + ["--overwrite"] + extra, log=messages.append) == mrml_batch.EXIT_USAGE, extra
        assert message in messages[-1], messages
    # a file too short to adapt to fails alone: exit 1
    writeNifti(inputs / "short.nii.gz", makeVoxels((3, 20, 16), seed=2))
    messages.clear()
    code = mrml_batch.main(common + ["--checkpoint", str(pairCheckpointPath), "--adapt", "600", "--adapt-steps", "1"],
                           log=messages.append)
    assert code == mrml_batch.EXIT_SOME_FAILED, messages
    assert any("short.nii.gz: FAILED" in m and "at least 4 acquired slices" in m for m in messages), messages


def _profileCheckpoint(tmp_path):
    """A small random pair U-Net with the slice-profile input whose profile planes matter, saved to a file."""
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

    torch.manual_seed(2)
    net = PairUNet(PairUNetConfig(widths=(4, 8))).with_thickness_input()
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.5)
        net.down[0][0].weight[:, 3:].normal_(0.0, 1.0)
    return save_checkpoint(tmp_path / "profile.pt", net)


def test_a_slice_profile_network_gets_the_profile_estimated_from_the_volume(scene, tmp_path):
    """Volume nodes carry no slice thickness: the logic tells a profile network the estimate, as the CLI does."""
    from SemanticInterpolationLib import ASIEngine, load_checkpoint

    path = _profileCheckpoint(tmp_path)
    voxels = makeVoxels(shapeKJI=(9, 20, 16), dtype=np.float32)
    inputVolume = addVolume(scene, voxels)
    output = arrayOf(SemanticInterpolationLogic().upsample(inputVolume, 2, checkpoint=path, device="cpu"))
    engine = ASIEngine(load_checkpoint(path), "cpu")
    estimate = engine.estimate_slice_profile(voxels, 2, 0)
    assert estimate is not None
    expected = engine.upsample(voxels, 2, axis=0, slice_thickness_ratio=estimate.ratio)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    others = [r for r in (None, 0.5, 1.0) if r != estimate.ratio]
    assert all(np.abs(engine.upsample(voxels, 2, axis=0, slice_thickness_ratio=r) - output).max() > 1e-4
               for r in others)  # it is the estimate that reached the network


def test_a_given_slice_thickness_reaches_the_network_and_the_profile_is_decided_before_adaptation(scene, tmp_path):
    """``sliceThickness`` in mm is told as thickness / spacing; None tells nothing; a bad value is refused before any
    node is made; with ``adapt`` the profile (estimated by the checkpoint's own model) also reaches the adaptation."""
    from SemanticInterpolationLib import ASIEngine, load_checkpoint
    from SemanticInterpolationLib.training import adaptation

    path = _profileCheckpoint(tmp_path)
    voxels = makeVoxels(shapeKJI=(9, 20, 16), dtype=np.float32)
    inputVolume = addVolume(scene, voxels)  # slice spacing 4 mm along k
    logic = SemanticInterpolationLogic()
    engine = ASIEngine(load_checkpoint(path), "cpu")
    told = arrayOf(logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", sliceThickness=2.0))
    np.testing.assert_allclose(told, engine.upsample(voxels, 2, axis=0, slice_thickness_ratio=0.5), rtol=1e-5, atol=1e-5)
    untold = arrayOf(logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", sliceThickness=None))
    np.testing.assert_allclose(untold, engine.upsample(voxels, 2, axis=0, slice_thickness_ratio=None), rtol=1e-5,
                               atol=1e-5)
    nodes = scene.GetNumberOfNodes()
    for bad in (-1.0, float("nan"), "thick", True):
        with pytest.raises(InputError, match="slice thickness must be a positive number of mm"):
            logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", sliceThickness=bad)
    assert scene.GetNumberOfNodes() == nodes

    seen = []
    real = adaptation.adapt_engine
    estimate = engine.estimate_slice_profile(voxels, 2, 0)
    try:
        adaptation.adapt_engine = lambda *a, **k: seen.append(k["thickness_ratio"]) or real(*a, **k)
        logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", adapt=5.0, adaptSteps=2)
        logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", adapt=5.0, adaptSteps=2, sliceThickness=4.0)
    finally:
        adaptation.adapt_engine = real
    assert seen == [estimate.ratio, 1.0]


def test_test_time_augmentation_reaches_the_engine_and_is_checked_before_any_node(scene, tmp_path):
    """``testTimeAugmentation``: "auto" takes the checkpoint's recommendation, an explicit mode wins, and a mode that
    the checkpoint's model type does not take (or an unknown one) is refused before anything is created."""
    from SemanticInterpolationLib import ASIEngine, load_checkpoint
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

    torch.manual_seed(4)
    net = PairUNet(PairUNetConfig(widths=(4, 8)))
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.5)
    path = save_checkpoint(tmp_path / "pair.pt", net, metadata={"inference": {"test_time_augmentation": "pair"}})
    voxels = makeVoxels(shapeKJI=(6, 20, 16), dtype=np.float32)
    inputVolume = addVolume(scene, voxels)
    logic = SemanticInterpolationLogic()
    outputs = {mode: arrayOf(logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", testTimeAugmentation=mode))
               for mode in ("auto", "none", "pair-flip")}
    for mode, recommended in (("auto", "pair"), ("none", "none"), ("pair-flip", "pair-flip")):
        expected = ASIEngine(load_checkpoint(path), "cpu", test_time_augmentation=recommended).upsample(voxels, 2)
        np.testing.assert_allclose(outputs[mode], expected, rtol=1e-5, atol=1e-5)
    assert np.abs(outputs["auto"] - outputs["none"]).max() > 1e-4
    asi = save_checkpoint(tmp_path / "asi.pt", ASIAutoencoder())
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"applies to networks whose state is the slice \(pair-unet, profile-routed\); the checkpoint .*choose auto or none"):
        logic.upsample(inputVolume, 2, checkpoint=asi, device="cpu", testTimeAugmentation="pair")
    with pytest.raises(InputError, match="must be one of auto, none, pair, pair-flip"):
        logic.upsample(inputVolume, 2, checkpoint=path, device="cpu", testTimeAugmentation="flip")
    assert scene.GetNumberOfNodes() == nodes


def test_batch_tells_the_slice_thickness_and_the_test_time_augmentation(scene, tmp_path):
    """The Slicer batch script's --slice-thickness and --tta reach the logic as sliceThickness and
    testTimeAugmentation: its output file equals the logic's upsampling with those settings."""
    import SimpleITK as sitk

    from SemanticInterpolationLib.mrml import batch as mrml_batch

    path = _profileCheckpoint(tmp_path)
    voxels = makeVoxels(shapeKJI=(9, 20, 16), dtype=np.float32)
    source = writeNifti(tmp_path / "scan.nii.gz", voxels)
    messages = []
    assert mrml_batch.main(["--input", str(source), "--output", str(tmp_path / "out"), "--factor", "2", "--checkpoint",
                            str(path), "--device", "cpu", "--slice-thickness", "8", "--tta", "pair"],
                           log=messages.append) == mrml_batch.EXIT_OK, messages
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "scan_asi_x2.nii.gz")))
    expected = arrayOf(SemanticInterpolationLogic().upsample(addVolume(scene, voxels), 2, checkpoint=path, device="cpu",
                                                             sliceThickness=8.0, testTimeAugmentation="pair"))
    untold = arrayOf(SemanticInterpolationLogic().upsample(addVolume(scene, voxels), 2, checkpoint=path, device="cpu",
                                                           sliceThickness=None, testTimeAugmentation="none"))
    np.testing.assert_allclose(written, expected, rtol=1e-4, atol=1e-3)
    assert np.abs(written - untold).max() > 1e-3
