"""The Evaluate tab's Qt-free logic (SemanticInterpolationLib.mrml.evaluation) on real MRML nodes (slicer-core)."""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is not installed (pip install slicer-core): the MRML evaluation tests need it")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)", allow_module_level=True)
sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("scipy", reason="the evaluation needs scipy")

from SemanticInterpolationLib import InputError, OperationCancelled  # noqa: E402
from SemanticInterpolationLib.mrml import logic as mrml  # noqa: E402
from SemanticInterpolationLib.mrml import evaluation as me  # noqa: E402
from SemanticInterpolationLib.mrml.training import tableNodeColumns  # noqa: E402

from mrml_helpers import addVolumeNode, smoothVoxels  # noqa: E402


def fineVolume(scene, shapeKJI=(13, 24, 20), name="fine T1", matrix=None, className="vtkMRMLScalarVolumeNode"):
    voxels = smoothVoxels(shapeKJI, np.int16, seed=3, base=300.0, amplitude=200.0, frequencies=(4.0, 3.0, 5.0),
                          noise=5.0)
    if matrix is None:
        matrix = np.diag([1.0, 1.0, 1.2, 1.0])
        matrix[:3, 3] = (4.0, -8.0, 12.0)
    return addVolumeNode(scene, voxels, matrix, name, className), voxels


def test_sitk_image_matches_the_file_slicer_writes(scene, tmp_path):
    a = 0.3
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]) * [0.9, 0.8, 3.0]
    matrix[:3, 3] = (1.5, -2.5, 3.5)
    node, voxels = fineVolume(scene, matrix=matrix)
    image = me.sitkImageFromVolumeNode(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "v.nrrd"))
    assert storage.WriteData(node)
    written = sitk.ReadImage(str(tmp_path / "v.nrrd"))
    np.testing.assert_allclose(image.GetSpacing(), written.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), written.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(image.GetDirection(), written.GetDirection(), atol=1e-9)


def test_evaluation_summary_becomes_a_table_node(scene, tmp_path):
    node, voxels = fineVolume(scene)
    before = mrml.voxelsFromVolumeNode(node).copy()
    settings = me.EvaluationTabSettings(node, factors="2,3", methods=("linear", "bspline"),
                                        outputFolder=str(tmp_path / "report"))
    job = me.prepareEvaluation(settings)
    progress = []
    me.runEvaluationJob(job, progress=lambda done, total: progress.append((done, total)))
    table = me.finishEvaluation(job, scene)

    from SemanticInterpolationLib.evaluation import summary_table

    header, rows = summary_table(job.result)
    columns = tableNodeColumns(table)
    assert list(columns) == header
    assert table.GetNumberOfRows() == len(rows) == 4  # 2 factors x 2 methods
    for r, row in enumerate(rows):
        assert [columns[h][r] for h in header] == row
    assert columns["K"] == ["2", "2", "3", "3"] and columns["Method"] == ["Linear", "B-spline"] * 2
    assert table.GetName() == "fine T1 evaluation" and table.GetScene() is scene
    assert "factors 2, 3" in table.GetDescription()
    assert job.boxPlotFile.is_file() and job.boxPlotFile.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in job.montageFiles] == ["montage_fine_T1.png"]
    assert progress and progress[-1][0] == progress[-1][1]
    np.testing.assert_array_equal(mrml.voxelsFromVolumeNode(node), before)  # input untouched

    again = me.summaryTableNode(scene, job.result, tableNode=table)  # refilled in place
    assert again is table and table.GetNumberOfRows() == 4


def test_asi_is_evaluated_with_the_given_checkpoint(scene, random_checkpoint):
    node, _ = fineVolume(scene, shapeKJI=(9, 24, 20))
    table, job = me.evaluateVolume(me.EvaluationTabSettings(node, factors="2", methods=("asi", "linear"),
                                                            checkpoint=str(random_checkpoint), device="cpu"))
    columns = tableNodeColumns(table)
    assert columns["Method"] == ["ASI", "Linear"]
    assert columns["p SSIM (ASI >)"][0] == "" and columns["p SSIM (ASI >)"][1] != ""
    assert job.reportFiles == {} and job.result.model


def test_the_synthesis_choice_reaches_the_evaluation(scene, random_checkpoint):
    """The Evaluate tab passes the Upsample tab's synthesis choice: auto -> the checkpoint's, a mode
    as given (and reported with the model), an unknown mode -> a clear error before any work."""
    node, _ = fineVolume(scene, shapeKJI=(9, 24, 20))

    def settings(synthesis):
        return me.EvaluationTabSettings(node, factors="2", methods=("asi",), checkpoint=str(random_checkpoint),
                                        device="cpu", synthesis=synthesis)

    assert me.prepareEvaluation(settings("auto")).settings.synthesis is None
    job = me.prepareEvaluation(settings("residual-bspline"))
    assert job.settings.synthesis == "residual-bspline"
    me.runEvaluationJob(job)
    assert job.result.model.endswith("residual-bspline synthesis")
    with pytest.raises(InputError, match="synthesis mode must be one of"):
        me.prepareEvaluation(settings("cubic"))


def test_acquisition_noise_reaches_the_evaluation(scene):
    """The Evaluate tab's acquisition noise (a fraction) reaches the simulation and the report; a bad value is a
    clear error before any work."""
    node, _ = fineVolume(scene, shapeKJI=(9, 24, 20))
    job = me.prepareEvaluation(me.EvaluationTabSettings(node, factors="2", methods=("linear",), acquisitionNoise=0.03))
    assert job.settings.acquisition_noise == 0.03
    me.runEvaluationJob(job)
    table = me.summaryTableNode(scene, job.result)  # its description says what was simulated
    assert "thin slices, Rician noise 3 % on the kept slices" in table.GetDescription()
    clean = me.prepareEvaluation(me.EvaluationTabSettings(node, factors="2", methods=("linear",)))
    me.runEvaluationJob(clean)
    assert not np.array_equal(job.result.scores("linear", 2, "psnr"), clean.result.scores("linear", 2, "psnr"))
    with pytest.raises(InputError, match="acquisition noise must be a fraction"):
        me.prepareEvaluation(me.EvaluationTabSettings(node, factors="2", methods=("linear",), acquisitionNoise=2.0))


def test_bad_inputs_are_clear_errors_before_any_work(scene, tmp_path):
    node, _ = fineVolume(scene)
    short, _ = fineVolume(scene, shapeKJI=(5, 24, 20), name="short")
    label, _ = fineVolume(scene, name="labels", className="vtkMRMLLabelMapVolumeNode")
    cases = [
        (me.EvaluationTabSettings(None), "no fine-slice volume"),
        (me.EvaluationTabSettings(label), "label map"),
        (me.EvaluationTabSettings(node, factors="2,x"), "not a whole number"),
        (me.EvaluationTabSettings(node, factors=""), "at least one upsampling factor"),
        (me.EvaluationTabSettings(node, methods=()), "at least one method"),
        (me.EvaluationTabSettings(short, factors="2,3,4,5,6", methods=("linear",)), "short"),
        (me.EvaluationTabSettings(node, methods=("asi",), checkpoint=str(tmp_path / "missing.pt")), "missing.pt"),
    ]
    before = scene.GetNumberOfNodes()
    for settings, words in cases:
        with pytest.raises(Exception, match=words) as caught:
            me.prepareEvaluation(settings)
        assert "Error" in type(caught.value).__name__ or isinstance(caught.value, InputError)
    assert scene.GetNumberOfNodes() == before


def test_background_evaluation_runs_and_cancels(scene):
    node, _ = fineVolume(scene)
    job = me.prepareEvaluation(me.EvaluationTabSettings(node, factors="2", methods=("linear",)))
    run = me.BackgroundEvaluation(job)
    run.start()
    assert run.wait(120) and run.error is None and not run.isRunning
    assert run.progress[0] == run.progress[1]
    assert me.finishEvaluation(run.job, scene).GetNumberOfRows() == 1

    job = me.prepareEvaluation(me.EvaluationTabSettings(node, factors="2,3", methods=("linear", "bspline")))
    run = me.BackgroundEvaluation(job)
    run.cancel()
    run.start()
    assert run.wait(120) and isinstance(run.error, OperationCancelled)
    with pytest.raises(RuntimeError):
        me.finishEvaluation(job, scene)
