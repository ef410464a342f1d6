"""Issue 14 items 4, 14, 15 and the run-time messages: a new training run into an earlier run's files,
full disks while saving checkpoints and reports, SIGTERM/SIGHUP during a write, library warnings on
stderr, and the messages of the MRML logic (real slicer-core scenes)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import SemanticInterpolationLib
from conftest import T1_2MM, file_digest
from SemanticInterpolationLib.cli import main
from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.pair_unet import PairUNet
from SemanticInterpolationLib.training import TrainingConfig, read_training_log, train
from SemanticInterpolationLib.volumes import fileio
from SemanticInterpolationLib.volumes.imageio import write_image

LIBRARY_ROOT = str(Path(SemanticInterpolationLib.__file__).parents[1])


def small_config(folder: Path, **overrides) -> TrainingConfig:
    settings = dict(training_volumes=[str(T1_2MM)], output=str(folder / "model.pt"), epochs=1, steps_per_epoch=2,
                    batch_size=2, patch_size=16, learning_rate=1e-3, synthesis_loss="mse", lam=0.5, seed=3,
                    device="cpu", progress_interval_s=0.0)
    settings.update(overrides)
    return TrainingConfig(**settings)


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# ------------------------------------------------------------------ 4. a new run into an earlier run's files
def test_a_new_run_leaves_the_earlier_checkpoint_and_log_alone_until_its_first_checkpoint(tmp_path: Path,
                                                                                         capsys) -> None:
    earlier = train(small_config(tmp_path, epochs=2))
    checkpoint, log = Path(earlier.output), Path(earlier.log_path)
    digests = (file_digest(checkpoint), file_digest(log))

    cancelled = train(small_config(tmp_path, epochs=3, seed=9), should_cancel=lambda: True)
    assert cancelled.cancelled and cancelled.epochs_done == 0
    assert cancelled.output is None and cancelled.checkpoint is None  # the earlier file is not this run's epoch 0
    assert (file_digest(checkpoint), file_digest(log)) == digests  # neither touched (the log restored byte for byte)

    # the command line: says nothing was completed and that the earlier files were left
    argv = ["train", str(T1_2MM), "--output", str(checkpoint), "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--patch-size", "16", "--device", "cpu", "--stop-file", str(tmp_path / "stop")]
    (tmp_path / "stop").write_text("stop")
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "none (no epoch completed)" in err and "left unchanged" in err and "(epoch 0)" not in err, err
    assert (file_digest(checkpoint), file_digest(log)) == digests
    (tmp_path / "stop").unlink()

    # a new run that completes an epoch replaces both: the log holds only the new run
    fresh = train(small_config(tmp_path, epochs=1, seed=9))
    assert file_digest(checkpoint) != digests[0]
    records = read_training_log(fresh.log_path)
    assert [r["event"] for r in records if r["event"] in ("start", "end")] == ["start", "end"]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1]
    assert load_checkpoint(checkpoint).training["epochs_done"] == 1


def test_mrml_log_tables_of_a_new_run_do_not_show_the_earlier_runs_epochs() -> None:
    from SemanticInterpolationLib.mrml.training import trainingLogTables

    earlier = [{"event": "start", "epochs": 2, "first_epoch": 1},
               {"event": "epoch", "epoch": 1, "train_loss": 0.5}, {"event": "epoch", "epoch": 2, "train_loss": 0.4},
               {"event": "end", "status": "finished"}]
    new = [{"event": "start", "epochs": 3, "first_epoch": 1}, {"event": "progress", "epoch": 1, "step": 1,
                                                                "steps": 2, "loss": 0.9}]
    assert trainingLogTables(earlier + new)["epoch"]["epoch"] == []
    resumed = [{"event": "start", "epochs": 3, "first_epoch": 3}]
    assert trainingLogTables(earlier + resumed)["epoch"]["epoch"] == [1.0, 2.0]


# ------------------------------------------------------------------ 14. disk full
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class FullDiskFile:
    """A file object whose writes fail as on a full disk (what torch.save writes through)."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_disk_full_while_saving_a_checkpoint_says_so_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.pt"
    save_checkpoint(target, PairUNet())
    before = file_digest(target)
    import builtins

    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDiskFile(handle) if ".partial" in str(file) and "w" in mode else handle

    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(InputError) as info:
        save_checkpoint(target, PairUNet())
    message = str(info.value)
    assert "no space left" in message and "m.pt" in message and "was kept" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    monkeypatch.setattr(builtins, "open", real_open)
    assert file_digest(target) == before and partials(tmp_path) == []


def test_disk_full_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    argv = ["train", str(T1_2MM), "--output", str(tmp_path / "m.pt"), "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", "2", "--patch-size", "16", "--device", "cpu"]
    assert main(argv) == 0
    before = file_digest(tmp_path / "m.pt")
    capsys.readouterr()
    monkeypatch.setattr(torch, "save", enospc)
    assert main(argv[:4] + ["--epochs", "2", "--resume"] + argv[6:]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    error = [line for line in lines if line.startswith("semantic-interpolation: error")]
    assert len(error) == 1 and "no space left" in error[0] and "m.pt" in error[0] and "was kept" in error[0], lines
    assert file_digest(tmp_path / "m.pt") == before and partials(tmp_path) == []


def test_disk_full_while_writing_the_evaluation_report_or_demo_is_one_line(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    monkeypatch.setattr(Path, "write_text", enospc)  # CSV/markdown report files
    monkeypatch.setattr(Figure, "savefig", enospc)  # plots
    code = main(["evaluate", str(T1_2MM), "--factors", "2", "--methods", "linear", "--output",
                 str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    error = [line for line in err.strip().splitlines() if line.startswith("semantic-interpolation: error")]
    assert len(error) == 1 and "no space left" in error[0], err

    monkeypatch.setattr(sitk, "WriteImage", enospc)
    code = main(["demo", "--input", str(T1_2MM), "--output", str(tmp_path / "demo"), "--factor", "2",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    error = [line for line in err.strip().splitlines() if line.startswith("semantic-interpolation: error")]
    assert code == 1 and "Traceback" not in err and len(error) == 1 and "no space left" in error[0], err


def test_disk_full_anywhere_else_in_a_command_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    """A write outside the atomic writers (e.g. the training log) on a full disk: one line, no traceback."""
    from SemanticInterpolationLib.cli import upsample as upsample_command

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.log.jsonl"))

    monkeypatch.setattr(upsample_command, "run_upsample", full)  # register() binds the module's name
    from SemanticInterpolationLib.cli import app

    code = app.main(["upsample", str(T1_2MM), str(tmp_path / "o.nii.gz"), "-k", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "no space left on device" in err and "m.log.jsonl" in err, err


# ------------------------------------------------------------------ 15. SIGTERM / SIGHUP during a write
CHILD = textwrap.dedent("""
    import signal, sys, time
    # as in a terminal session: a test run under nohup passes an ignored SIGHUP on, which the program keeps ignored
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    import SimpleITK as sitk
    from SemanticInterpolationLib.cli import main

    real_write = sitk.WriteImage

    def slow_write(image, path, *args):
        real_write(image, path, *args)  # the staged file exists now
        print("writing", flush=True)
        time.sleep(60)  # the parent sends the signal here

    sitk.WriteImage = slow_write
    sys.exit(main(sys.argv[1:]))
""")


def start_writer(tmp_path: Path, output: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": LIBRARY_ROOT, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, "upsample", str(T1_2MM), str(output), "-k", "2",
                              "--method", "linear"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=environment)
    line = child.stdout.readline()
    assert line.strip() == "writing", child.stderr.read()
    assert partials(tmp_path), "the write should be staged in a .partial folder now"
    return child


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_during_a_write_leaves_no_partial_folder(tmp_path: Path, signame: str) -> None:
    output = tmp_path / "o.nii.gz"
    child = start_writer(tmp_path, output)
    child.send_signal(getattr(signal, signame))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + getattr(signal, signame), err
    assert f"stopped by {signame}" in err and "Traceback" not in err, err
    assert partials(tmp_path) == [] and not output.exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_killed_writers_partial_folder_is_removed_by_the_next_write(tmp_path: Path) -> None:
    output = tmp_path / "o.nii.gz"
    child = start_writer(tmp_path, output)
    child.kill()  # SIGKILL: no cleanup possible
    child.communicate(timeout=60)
    stale = partials(tmp_path)
    assert stale
    other = tmp_path / "other.nii.gz"  # a different output's staging folder is not touched ...
    alive = tmp_path / f".{other.name}.abcd.partial"
    alive.mkdir()
    (alive / fileio._OWNER_FILE).write_text(f'{{"host": "{__import__("socket").gethostname()}", "pid": {os.getpid()}}}')
    write_image(sitk.ReadImage(str(T1_2MM)), output)  # ... the next write of the same output cleans up
    assert partials(tmp_path) == [alive.name]
    assert output.is_file()


# ------------------------------------------------------------------ messages
def uneven_dicom_series(folder: Path) -> None:
    from test_bad_input_io import write_dicom_series

    files = write_dicom_series(folder, n=6, spacing=2.5)
    # move slice 3 by 10 % of a gap: within what real scanners do; ITK warns (with C++ paths), we say one line
    image = sitk.ReadImage(str(files[3]))
    image.SetMetaData("0020|0032", "-10\\-12\\7.75")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(files[3]))
    writer.Execute(image)


def test_itk_warnings_do_not_leak_onto_stderr(tmp_path: Path, capfd) -> None:
    uneven_dicom_series(tmp_path / "dicom")
    code = main(["upsample", str(tmp_path / "dicom"), str(tmp_path / "o.nrrd"), "-k", "2", "--method", "linear"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "not exactly evenly spaced" in err  # our one line
    assert "WARNING: In" not in err and ".hxx" not in err and ".cxx" not in err, err
    code = main(["upsample", str(tmp_path / "dicom"), str(tmp_path / "v.nrrd"), "-k", "2", "--method", "linear", "-v"])
    assert code == 0 and "Non uniform sampling" in capfd.readouterr().err  # -v shows ITK's own warning


def test_numpy_warnings_go_to_the_log(capfd) -> None:
    import logging

    from SemanticInterpolationLib.cli.library_warnings import routed_warnings

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("SemanticInterpolation")
    handler = Keep(level=logging.DEBUG)
    level, handlers = logger.level, logger.handlers[:]
    logger.handlers[:] = [handler]  # only this one (a CLI test may have left one on a closed stream)
    logger.setLevel(logging.DEBUG)
    try:
        with routed_warnings():
            np.float32(3e38) * np.float32(10)  # overflow: a numpy RuntimeWarning
            np.mean(np.array([], dtype=np.float64))  # mean of empty slice
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    assert "RuntimeWarning" not in capfd.readouterr().err
    assert any("RuntimeWarning" in message for message in records), records


def test_train_does_not_suggest_an_option_it_lacks(tmp_path: Path, capsys) -> None:
    from test_bad_input_io import write_dicom_series

    write_dicom_series(tmp_path / "two")
    files = write_dicom_series(tmp_path / "second")
    for file in files:
        file.rename(tmp_path / "two" / ("b" + file.name))
    code = main(["train", str(tmp_path / "two"), "--output", str(tmp_path / "m.pt"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "2 DICOM series" in err and "own folder" in err, err
    assert "choose one with --dicom-series" not in err


def mrml_scene_or_skip():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed: the MRML checks need it")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' package here has no MRML classes (install slicer-core)")
    return slicer


def test_mrml_output_node_of_another_scene_is_named_so(tmp_path: Path) -> None:
    slicer = mrml_scene_or_skip()
    from mrml_helpers import addVolumeNode, smoothVoxels
    from SemanticInterpolationLib.mrml.logic import SemanticInterpolationLogic

    first, second = slicer.vtkMRMLScene(), slicer.vtkMRMLScene()
    source = addVolumeNode(first, smoothVoxels((4, 16, 16)), np.diag([1.0, 1.0, 3.0, 1.0]), name="T2ax")
    elsewhere = addVolumeNode(second, smoothVoxels((4, 16, 16)), np.diag([1.0, 1.0, 3.0, 1.0]), name="Other")
    assert source.GetID() == elsewhere.GetID()  # IDs repeat across scenes
    checkpoint = save_checkpoint(tmp_path / "p.pt", PairUNet())
    with pytest.raises(InputError, match="'Other' .* is in another scene than the input volume 'T2ax'") as info:
        SemanticInterpolationLogic().upsample(source, 2, checkpoint=str(checkpoint), device="cpu",
                                              outputVolume=elsewhere)
    assert "is the input volume" not in str(info.value)


def test_mrml_nan_errors_name_the_node_and_frame(tmp_path: Path) -> None:
    slicer = mrml_scene_or_skip()
    from mrml_helpers import addVolumeNode, smoothVoxels
    from SemanticInterpolationLib.mrml.logic import SemanticInterpolationLogic

    scene = slicer.vtkMRMLScene()
    voxels = smoothVoxels((4, 16, 16), dtype=np.float32)
    voxels[1, 2, 3] = np.nan
    node = addVolumeNode(scene, voxels, np.diag([1.0, 1.0, 3.0, 1.0]), name="WithNaN")
    checkpoint = save_checkpoint(tmp_path / "p.pt", PairUNet())
    logic = SemanticInterpolationLogic()
    with pytest.raises(InputError, match="'WithNaN' .* contains 1 NaN"):
        logic.upsample(node, 2, checkpoint=str(checkpoint), device="cpu")

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "Cine")
    good = addVolumeNode(scene, smoothVoxels((4, 16, 16), dtype=np.float32), np.diag([1.0, 1.0, 3.0, 1.0]), name="f0")
    sequence.SetDataNodeAtValue(good, "0")
    sequence.SetDataNodeAtValue(node, "1")
    with pytest.raises(InputError, match=r"frame 1 \(index value 1\) of sequence 'Cine' contains 1 NaN"):
        logic.upsampleSequence(sequence, 2, checkpoint=str(checkpoint), device="cpu")
