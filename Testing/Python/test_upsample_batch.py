"""``semantic-interpolation upsample-batch`` on a small cohort of real MRI files (SimpleITK), one process.

The cohort mixes NIfTI, NRRD, MHA and a DICOM series folder in sub-folders, cut from the real MRI
fixtures; the model is a random-init checkpoint (its values do not matter, only that the batch gives
exactly what ``upsample`` gives file by file).
"""

from __future__ import annotations

import csv
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SemanticInterpolationLib.cli.app import main as cli_main
from SemanticInterpolationLib.cohort.backends import NumpyBackend
from SemanticInterpolationLib.cohort.discovery import discover_inputs
from SemanticInterpolationLib.cohort.naming import plan_tasks
from SemanticInterpolationLib.cohort.runner import run_cohort
from SemanticInterpolationLib.engine.synthesis import ASIEngine

from conftest import OBLIQUE_ANISO, T1_2MM, file_digest

FACTOR = 2


def write_dicom_series(folder: Path, image: sitk.Image) -> None:
    """The slices of ``image`` (3-D, int16) as a DICOM series of one file per slice."""
    folder.mkdir(parents=True)
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    uid = "1.2.826.0.1.3680043.2.1125." + str(uuid.uuid4().int)[:20]
    spacing = image.GetSpacing()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, plane in enumerate(array):
        slice_image = sitk.GetImageFromArray(plane)
        slice_image.SetSpacing(spacing[:2])
        tags = {"0008|0060": "MR", "0010|0010": "Batch^Test", "0010|0020": "B1", "0020|000d": uid + ".1",
                "0020|000e": uid, "0008|0018": f"{uid}.{k + 10}", "0020|0013": str(k + 1),
                "0020|0032": f"0\\0\\{k * spacing[2]:g}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0028|0030": f"{spacing[1]:g}\\{spacing[0]:g}", "0018|0050": f"{spacing[2]:g}"}
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def make_cohort(root: Path) -> dict[str, Path]:
    """Real MRI crops: {relative input path: path}. Sizes differ so that shards have something to balance."""
    oblique = sitk.ReadImage(str(OBLIQUE_ANISO))  # 58x58x24, 4x4x5 mm, oblique
    t1 = sitk.ReadImage(str(T1_2MM))  # 33x41x25, 2 mm
    t1_thick = t1[:32, :32, ::3]
    t1_thick.SetSpacing((2.0, 2.0, 6.0))
    files = {
        "oblique.nii.gz": oblique[:32, :32, :6],
        "sub/t1.nrrd": t1_thick,
        "sub/deeper/oblique_b.mha": oblique[16:48, 8:40, 10:15],
        "wide.nii.gz": oblique[:48, :32, 4:8],
    }
    paths = {}
    for relative, image in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path))
        paths[relative] = path
    series = sitk.Cast(t1[:32, :32, 2:20:4], sitk.sitkInt16)
    series.SetSpacing((2.0, 2.0, 8.0))
    write_dicom_series(root / "series7", series)
    paths["series7"] = root / "series7"
    (root / "notes.txt").write_text("not an input: list files count only when named directly\n")
    return paths


OUTPUT_OF = {"oblique.nii.gz": "oblique_asi_x2.nii.gz", "series7": "series7_asi_x2.nrrd",
             "sub/deeper/oblique_b.mha": "sub/deeper/oblique_b_asi_x2.mha", "sub/t1.nrrd": "sub/t1_asi_x2.nrrd",
             "wide.nii.gz": "wide_asi_x2.nii.gz"}
EXPECTED_OUTPUTS = sorted(OUTPUT_OF.values())


def outputs_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".csv")


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {Path(row["input"]).name: row for row in csv.DictReader(handle)}


@pytest.fixture()
def cohort(tmp_path):
    root = tmp_path / "cohort"
    return root, make_cohort(root)


def batch(*arguments) -> int:
    return cli_main(["upsample-batch", *map(str, arguments)])


def test_batch_equals_upsample_file_by_file_and_keeps_the_tree(tmp_path, cohort, random_checkpoint, capsys):
    root, inputs = cohort
    out = tmp_path / "out"
    code = batch(root, "--output-dir", out, "--factor", FACTOR, "--checkpoint", random_checkpoint, "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    assert outputs_of(out) == EXPECTED_OUTPUTS

    # each output is bit for bit what the single-file command writes
    reference = tmp_path / "reference"
    reference.mkdir()
    for relative, source in inputs.items():
        expected = OUTPUT_OF[relative]
        single = reference / Path(expected).name
        assert cli_main(["upsample", str(source), str(single), "--factor", str(FACTOR), "--checkpoint",
                         str(random_checkpoint), "--device", "cpu", "-q"]) == 0
        assert file_digest(out / expected) == file_digest(single), expected
    dicom = sitk.ReadImage(str(out / "series7_asi_x2.nrrd"))
    assert dicom.GetSize() == (32, 32, 9) and dicom.GetSpacing()[2] == pytest.approx(4.0)

    rows = read_rows(out / "upsample-batch-summary.csv")
    assert sorted(rows) == ["oblique.nii.gz", "oblique_b.mha", "series7", "t1.nrrd", "wide.nii.gz"]
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(float(row["seconds"]) > 0 and Path(row["output"]).is_file() for row in rows.values())
    assert list(csv.reader(open(out / "upsample-batch-summary.csv")))[0] == ["input", "output", "status", "seconds",
                                                                             "message"]


def test_rerun_skips_finished_outputs_and_redoes_incomplete_ones(tmp_path, cohort, random_checkpoint, capsys):
    root, _ = cohort
    out = tmp_path / "out"
    common = [root, "--output-dir", out, "--factor", FACTOR, "--checkpoint", random_checkpoint, "--device", "cpu"]
    assert batch(*common) == 0
    digests = {name: file_digest(out / name) for name in EXPECTED_OUTPUTS}

    assert batch(*common) == 0
    assert {row["status"] for row in read_rows(out / "upsample-batch-summary.csv").values()} == {"skipped"}

    # an interrupted run: one output missing, one cut short (not written by us), a staging folder left behind
    (out / "sub/t1_asi_x2.nrrd").unlink()
    truncated = out / "oblique_asi_x2.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    stale = out / "sub/.t1_asi_x2.nrrd.abc123.partial"  # what a process killed while writing leaves
    stale.mkdir()
    (stale / "t1_asi_x2.nrrd").write_bytes(b"half")
    capsys.readouterr()
    assert batch(*common) == 0
    err = capsys.readouterr().err
    rows = read_rows(out / "upsample-batch-summary.csv")
    assert rows["t1.nrrd"]["status"] == rows["oblique.nii.gz"]["status"] == "done"
    assert rows["wide.nii.gz"]["status"] == rows["oblique_b.mha"]["status"] == "skipped"
    assert "is incomplete" in err and "oblique_asi_x2.nii.gz" in err
    assert {name: file_digest(out / name) for name in EXPECTED_OUTPUTS} == digests
    assert not stale.exists()

    assert batch(*common, "--overwrite") == 0
    assert {row["status"] for row in read_rows(out / "upsample-batch-summary.csv").values()} == {"done"}


def test_a_failing_file_is_recorded_and_the_batch_goes_on(tmp_path, cohort, random_checkpoint, capsys):
    root, _ = cohort
    (root / "sub" / "broken.nii").write_bytes(b"this is not a NIfTI file")
    rgb = sitk.Compose([sitk.ReadImage(str(T1_2MM))[:16, :16, :4]] * 3)
    sitk.WriteImage(rgb, str(root / "colour.nrrd"))
    out = tmp_path / "out"
    code = batch(root, "--output-dir", out, "--factor", FACTOR, "--checkpoint", random_checkpoint, "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 1, err
    assert outputs_of(out) == EXPECTED_OUTPUTS
    rows = read_rows(out / "upsample-batch-summary.csv")
    assert rows["broken.nii"]["status"] == rows["colour.nrrd"]["status"] == "failed"
    assert "cannot read" in rows["broken.nii"]["message"]
    assert "components per voxel" in rows["colour.nrrd"]["message"]
    assert sum(row["status"] == "done" for row in rows.values()) == 5
    assert "failed: " in err and "broken.nii" in err


def test_list_files_name_inputs_relative_to_the_list(tmp_path, cohort, random_checkpoint):
    root, inputs = cohort
    listing = root.parent / "cohort.txt"
    listing.write_text("# two scans\ncohort/sub/t1.nrrd\n\n" + str(inputs["wide.nii.gz"]) + "\n")
    table = root.parent / "cohort.csv"
    table.write_text("subject,input\ns1,cohort/series7\n")
    out = tmp_path / "out"
    assert batch(listing, table, "--output-dir", out, "--factor", FACTOR, "--checkpoint", random_checkpoint,
                 "--device", "cpu", "--suffix", "_up", "--format", "nrrd") == 0
    assert outputs_of(out) == ["cohort/series7_up.nrrd", "cohort/sub/t1_up.nrrd", "cohort/wide_up.nrrd"]


@pytest.mark.parametrize("case", ["missing-in-list", "output-inside-input", "same-output-name", "no-volumes",
                                  "bad-shard", "bad-format", "missing-checkpoint"])
def test_bad_arguments_exit_2_with_a_named_problem(tmp_path, cohort, random_checkpoint, capsys, case):
    root, inputs = cohort
    out = tmp_path / "out"
    arguments = [root, "--output-dir", out]
    expected = ""
    if case == "missing-in-list":
        listing = tmp_path / "list.txt"
        listing.write_text(f"{inputs['wide.nii.gz']}\nscans/gone.nii.gz\n")
        arguments, expected = [listing, "--output-dir", out], "names 'scans/gone.nii.gz' (line 2), which does not exist"
    elif case == "output-inside-input":
        arguments, expected = [root, "--output-dir", root / "sub" / "results"], "lies inside the input folder"
    elif case == "same-output-name":
        sitk.WriteImage(sitk.ReadImage(str(inputs["wide.nii.gz"])), str(root / "wide.nrrd"))
        arguments += ["--format", "nrrd"]
        expected = "would both be written to"
    elif case == "no-volumes":
        empty = tmp_path / "empty"
        empty.mkdir()
        arguments, expected = [empty, "--output-dir", out], "no volume files found"
    elif case == "bad-shard":
        arguments += ["--shard", "2/2"]
        expected = "0 <= I < N"
    elif case == "bad-format":
        arguments += ["--format", "png"]
        expected = "unknown output format"
    elif case == "missing-checkpoint":
        arguments, expected = [*arguments, "--checkpoint", tmp_path / "none.pt"], "does not exist"
    if case != "missing-checkpoint":
        arguments += ["--checkpoint", random_checkpoint]
    code = batch(*arguments, "--factor", FACTOR, "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not outputs_of(out)
    assert not (root / "sub" / "results").exists()


def test_reading_and_writing_overlap_the_network_with_bounded_memory(tmp_path, random_model):
    """The threaded runner with the real engine on .npy volumes: reads and writes run off the calling thread,
    at most queue depth volumes wait on either side, and the results equal the engine's own."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "npy"
    folder.mkdir()
    volumes = {}
    for n in range(7):
        volumes[f"v{n}.npy"] = rng.random((4, 16, 16)).astype(np.float32) * 100
        np.save(folder / f"v{n}.npy", volumes[f"v{n}.npy"])
    items, _ = discover_inputs([folder], extensions=(".npy",), dicom=False, lists=False)
    tasks = plan_tasks(items, tmp_path / "out", "_x2", extensions=(".npy",))
    engine = ASIEngine(random_model, "cpu", batch_size=2)

    class Watched(NumpyBackend):
        def __init__(self):
            super().__init__(engine, 2)
            self.lock = threading.Lock()
            self.alive, self.most = 0, 0
            self.threads: dict[str, set[str]] = {"read": set(), "process": set(), "write": set()}

        def read(self, task):
            self.threads["read"].add(threading.current_thread().name)
            with self.lock:
                self.alive += 1
                self.most = max(self.most, self.alive)
            return super().read(task)

        def process(self, task, volume, progress):
            self.threads["process"].add(threading.current_thread().name)
            return super().process(task, volume, progress)

        def write(self, task, result):
            self.threads["write"].add(threading.current_thread().name)
            return super().write(task, result)

        def release(self, task):
            with self.lock:
                self.alive -= 1

    backend = Watched()
    rows = run_cohort(tasks, backend, queue_depth=1, log=lambda message: None)
    assert [row.status for row in rows] == ["done"] * 7
    main = threading.current_thread().name
    assert backend.threads["process"] == {main}
    assert main not in backend.threads["read"] and main not in backend.threads["write"]
    # queue depth 1: one waiting to be processed + one being processed + one waiting + one being written,
    # and the reader holding the next one it read
    assert backend.most <= 5
    for name, volume in volumes.items():
        with torch.inference_mode():
            expected = engine.upsample(volume, 2, axis=0)
        np.testing.assert_array_equal(np.load(tmp_path / "out" / name.replace(".npy", "_x2.npy")), expected)


def test_slicer_batch_script_shares_the_cohort_checks(tmp_path, cohort, random_checkpoint):
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    from SemanticInterpolationLib.mrml import batch as mrml_batch

    root, _ = cohort
    messages: list[str] = []
    inside = ["--input", str(root), "--output", str(root / "sub" / "out"), "--factor", "2", "--checkpoint",
              str(random_checkpoint), "--device", "cpu", "--recursive"]
    assert mrml_batch.main(inside, log=messages.append) == mrml_batch.EXIT_USAGE
    assert "lies inside the input folder" in messages[-1]
    out = tmp_path / "slicer-out"
    summary = tmp_path / "slicer-summary.csv"
    code = mrml_batch.main(["--input", str(root / "sub"), "--output", str(out), "--factor", "2", "--checkpoint",
                            str(random_checkpoint), "--device", "cpu", "--recursive", "--summary", str(summary)],
                           log=messages.append)
    assert code == mrml_batch.EXIT_OK, messages
    assert outputs_of(out) == ["deeper/oblique_b_asi_x2.mha", "t1_asi_x2.nrrd"]  # the sub-folder is kept
    rows = read_rows(summary)
    assert sorted(rows) == ["oblique_b.mha", "t1.nrrd"] and {r["status"] for r in rows.values()} == {"done"}
