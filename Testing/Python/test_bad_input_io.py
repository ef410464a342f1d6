"""Bad input and hostile conditions in the image I/O layer: full disks, companion files, damaged
headers, DICOM gaps, NIfTI quirks, and the checkpoint/training messages (Docs/BadInput.md).

Every format is exercised with real files written by SimpleITK.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import T1_2MM, file_digest
from SemanticInterpolationLib.cli import main
from SemanticInterpolationLib.errors import CheckpointError, InputError
from SemanticInterpolationLib.volumes import imageio
from SemanticInterpolationLib.volumes.imageio import check_output_path, read_image, write_image


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semantic-interpolation: error: "), err
    return lines[0]


def volume(shape=(6, 10, 12), seed=0, dtype=np.float32) -> sitk.Image:
    array = np.random.default_rng(seed).random(shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# ------------------------------------------------------------------ 1. full disk while writing NIfTI
def truncating_writer(real_write, keep_fraction=0.5):
    """SimpleITK.WriteImage as on a full disk: NIfTI's writer reports nothing, the file is cut short."""

    def write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        files = [Path(path)]
        if str(path).endswith(".hdr"):
            files = [Path(str(path)[:-4] + ".img")]
        for file in files:
            data = file.read_bytes()
            file.write_bytes(data[: int(len(data) * keep_fraction)])

    return write


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".hdr"])
def test_truncated_write_is_detected_and_the_old_output_kept(tmp_path: Path, monkeypatch, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    write_image(volume(seed=1), target)
    before = file_digest(target)
    monkeypatch.setattr(sitk, "WriteImage", truncating_writer(sitk.WriteImage))
    with pytest.raises(InputError, match="incomplete|truncated") as info:
        write_image(volume(seed=2), target)
    assert "no space left" not in str(info.value)  # the disk is not full here: do not claim it is
    assert file_digest(target) == before
    assert leftovers(tmp_path) == []


def test_truncated_write_on_a_full_disk_says_no_space_left(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.nii.gz"
    write_image(volume(seed=1), target)
    before = file_digest(target)
    monkeypatch.setattr(sitk, "WriteImage", truncating_writer(sitk.WriteImage))
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=0))
    with pytest.raises(InputError, match="no space left") as info:
        write_image(volume(seed=2), target)
    assert "\n" not in str(info.value) and "kept" in str(info.value)
    assert file_digest(target) == before


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs (needs root and mount); skipped where mounting is not possible."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_full_tmpfs_write_fails_cleanly(tiny_disk: Path, tmp_path: Path, capsys, suffix: str) -> None:
    target = tiny_disk / f"out{suffix}"
    write_image(volume((4, 8, 8), seed=1), target)  # a small good output
    before = file_digest(target)
    big = volume((50, 40, 40), seed=3)  # 320 KB of noise: does not fit
    with pytest.raises(InputError, match="no space left"):
        write_image(big, target)
    assert file_digest(target) == before
    assert leftovers(tiny_disk) == []
    # the same through the command line: exit 1, one line, the old output intact
    source = tmp_path / "big.nrrd"
    sitk.WriteImage(big, str(source))
    code, err = run_cli(capsys, "upsample", source, target, "-k", 2, "--method", "linear")
    last = err.strip().splitlines()[-1]  # after the run's log line
    assert code == 1 and last.startswith("semantic-interpolation: error: ") and "no space left" in last, err
    assert file_digest(target) == before
    assert leftovers(tiny_disk) == []


# ------------------------------------------------------------------ 3. companion files of the input
def test_output_may_not_be_a_companion_file_of_the_input(tmp_path: Path, capsys) -> None:
    image = volume()
    sitk.WriteImage(image, str(tmp_path / "pair.hdr"))  # writes pair.hdr + pair.img
    # an .mhd whose data file is named like another output's data file
    sitk.WriteImage(image, str(tmp_path / "y.mhd"), True)  # y.mhd + y.zraw
    (tmp_path / "y.mhd").rename(tmp_path / "data.mhd")  # data.mhd still reads y.zraw
    sitk.WriteImage(image, str(tmp_path / "n.nhdr"), True)  # n.nhdr + n.raw.gz
    (tmp_path / "n.nhdr").rename(tmp_path / "header.nhdr")
    digests = {p.name: file_digest(p) for p in tmp_path.iterdir()}
    cases = [
        (tmp_path / "pair.hdr", tmp_path / "pair.img"),
        (tmp_path / "pair.img", tmp_path / "pair.hdr"),
        (tmp_path / "data.mhd", tmp_path / "y.mhd"),
        (tmp_path / "header.nhdr", tmp_path / "n.nhdr"),
    ]
    for source, output in cases:
        with pytest.raises(InputError, match="input"):
            check_output_path(output, source)
        code, err = run_cli(capsys, "upsample", source, output, "-k", 2, "--method", "linear")
        assert code == 1 and "input" in one_line_error(err), (source, output, err)
    assert {p.name: file_digest(p) for p in tmp_path.iterdir()} == digests
    # unrelated names stay allowed
    check_output_path(tmp_path / "other.mhd", tmp_path / "pair.hdr")


# ------------------------------------------------------------------ 5. DICOM series with a gap
def write_dicom_series(folder: Path, n: int = 6, spacing: float = 2.5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    array = (np.random.default_rng(5).random((n, 16, 16)) * 1000).astype(np.int16)
    series_uid = "1.2.826.0.1.3680043.2.1125." + str(uuid.uuid4().int)[:20]
    files = []
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        image = sitk.GetImageFromArray(array[k])
        image.SetSpacing((0.8, 0.8))
        tags = {
            "0008|0060": "MR", "0010|0010": "Test^Gap", "0010|0020": "GAP1",
            "0020|000d": series_uid + ".1", "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 10}", "0020|0013": str(k + 1),
            "0020|0032": f"-10\\-12\\{k * spacing:g}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.8", "0018|0050": f"{spacing:g}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        path = folder / f"slice{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


def test_even_dicom_series_reads(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "even")
    image = read_image(tmp_path / "even")
    assert image.GetSize() == (16, 16, 6)
    assert image.GetSpacing()[2] == pytest.approx(2.5)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path, capsys) -> None:
    files = write_dicom_series(tmp_path / "gap")
    files[3].unlink()
    with pytest.raises(InputError, match="not evenly spaced") as info:
        read_image(tmp_path / "gap")
    message = str(info.value)
    assert "slice002.dcm" in message and "slice004.dcm" in message and "5 mm" in message and "\n" not in message
    code, err = run_cli(capsys, "upsample", tmp_path / "gap", tmp_path / "o.nii.gz", "-k", 2, "--method", "linear")
    assert code == 1 and "not evenly spaced" in one_line_error(err)
    assert not (tmp_path / "o.nii.gz").exists()


def test_dicom_series_with_a_truncated_slice_is_refused(tmp_path: Path) -> None:
    files = write_dicom_series(tmp_path / "cut")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="slice002.dcm|not evenly spaced"):
        read_image(tmp_path / "cut")


# ------------------------------------------------------------------ 6. truncated NIfTI input
def test_truncated_nifti_inputs_are_refused(tmp_path: Path, capsys) -> None:
    data = T1_2MM.read_bytes()
    cut_nii = tmp_path / "cut.nii"
    cut_nii.write_bytes(data[:-2000])
    short_gz = tmp_path / "short.nii.gz"  # a valid gzip stream holding too little
    short_gz.write_bytes(gzip.compress(data[:-2000]))
    cut_gz = tmp_path / "cutstream.nii.gz"  # the gzip stream itself cut short
    whole = gzip.compress(data)
    cut_gz.write_bytes(whole[: len(whole) * 3 // 4])
    for path in (cut_nii, short_gz, cut_gz):
        with pytest.raises(InputError, match="truncated|damaged") as info:
            read_image(path)
        assert "\n" not in str(info.value)
    code, err = run_cli(capsys, "upsample", cut_nii, tmp_path / "o.nii", "-k", 2, "--method", "linear")
    assert code == 1 and "truncated" in one_line_error(err)
    assert not (tmp_path / "o.nii").exists()
    # the intact file still reads
    assert read_image(T1_2MM).GetSize() == sitk.ReadImage(str(T1_2MM)).GetSize()


# ------------------------------------------------------------------ 7. non-orthogonal directions
def test_non_orthogonal_direction_is_refused_for_nifti_and_kept_in_nrrd(tmp_path: Path, capsys) -> None:
    image = volume()
    image.SetDirection((1, 0.3, 0, 0, 0.9539392014169457, 0, 0, 0, 1))  # unit columns, 17 degrees shear
    for suffix in (".nii", ".nii.gz"):
        with pytest.raises(InputError, match="nrrd"):
            write_image(image, tmp_path / f"o{suffix}")
        assert not (tmp_path / f"o{suffix}").exists()
    write_image(image, tmp_path / "o.nrrd")
    np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "o.nrrd")).GetDirection(), image.GetDirection(), atol=1e-6)
    # through the command line: refused before the work, nothing written
    code, err = run_cli(capsys, "upsample", tmp_path / "o.nrrd", tmp_path / "up.nii.gz", "-k", 2, "--method", "linear")
    assert code == 1 and ".nrrd" in one_line_error(err)
    assert not (tmp_path / "up.nii.gz").exists()


# ------------------------------------------------------------------ 8. x.nii.gz next to x.nii
def test_the_file_asked_for_is_the_file_read(tmp_path: Path) -> None:
    one = sitk.GetImageFromArray(np.full((3, 4, 5), 1, np.float32))
    two = sitk.GetImageFromArray(np.full((3, 4, 5), 2, np.float32))
    sitk.WriteImage(one, str(tmp_path / "x.nii.gz"))
    sitk.WriteImage(two, str(tmp_path / "x.nii"))
    assert sitk.GetArrayFromImage(read_image(tmp_path / "x.nii.gz")).mean() == 1
    assert sitk.GetArrayFromImage(read_image(tmp_path / "x.nii")).mean() == 2
    sitk.WriteImage(one, str(tmp_path / "y.hdr"))
    sitk.WriteImage(two, str(tmp_path / "y.nii"))
    assert sitk.GetArrayFromImage(read_image(tmp_path / "y.hdr")).mean() == 1
    assert sitk.GetArrayFromImage(read_image(tmp_path / "y.nii")).mean() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii", "x.nii.gz", "y.hdr", "y.img", "y.nii"]


# ------------------------------------------------------------------ 9. NaN/Inf in float NIfTI
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".hdr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_float_nifti_is_reported(tmp_path: Path, capsys, suffix: str, dtype) -> None:
    array = np.ones((4, 8, 8), dtype)
    array[1, 2, 3] = np.nan
    array[2, 3, 4] = np.inf
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="2 NaN or infinite"):
        read_image(path)
    code, err = run_cli(capsys, "upsample", path, tmp_path / "o.nrrd", "-k", 2, "--method", "linear")
    assert code == 1 and "NaN" in one_line_error(err)


def test_finite_float_nifti_reads(tmp_path: Path) -> None:
    path = tmp_path / "fine.nii.gz"
    sitk.WriteImage(volume(), str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(volume()))


# ------------------------------------------------------------------ 17. upper-case endings
def test_upper_case_nifti_output_is_written(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(volume(), str(source))
    for name in ("o.NII.GZ", "o.NII"):
        code, err = run_cli(capsys, "upsample", source, tmp_path / name, "-k", 2, "--method", "linear")
        assert code == 0, err
        assert sitk.ReadImage(str(tmp_path / name)).GetSize() == (12, 10, 11)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["o.MHA", "o.MHD", "o.HDR", "o.IMG", "o.NHDR", "o.Nii", "o.nii.Gz"])
def test_upper_case_endings_itk_cannot_write_are_refused_early(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="lower-case"):
        check_output_path(tmp_path / name)


# ------------------------------------------------------------------ messages
def test_a_non_checkpoint_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    from SemanticInterpolationLib.models.checkpoint import load_checkpoint

    text = tmp_path / "notes.pt"
    text.write_text("hello, this is not a model\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, what in ((T1_2MM, "NIfTI"), (text, "text"), (empty, "empty")):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert what in message and "pickled" not in message and "\n" not in message, message


def test_load_checkpoint_without_a_path() -> None:
    from SemanticInterpolationLib.models.checkpoint import load_checkpoint

    for value in ("", "  "):
        with pytest.raises(CheckpointError, match="no checkpoint path given") as info:
            load_checkpoint(value)
        assert "'.'" not in str(info.value)


def test_default_checkpoint_variable_naming_a_missing_file(tmp_path: Path, monkeypatch) -> None:
    from SemanticInterpolationLib.models.checkpoint import DEFAULT_CHECKPOINT_ENV, resolve_checkpoint

    missing = tmp_path / "nowhere.pt"
    monkeypatch.setenv(DEFAULT_CHECKPOINT_ENV, str(missing))
    with pytest.raises(CheckpointError, match=DEFAULT_CHECKPOINT_ENV) as info:
        resolve_checkpoint(None)
    assert str(missing) in str(info.value)


def test_tiny_slices_do_not_suggest_a_patch_size_of_zero() -> None:
    from SemanticInterpolationLib.training.data import TrainingVolume

    tiny = TrainingVolume.from_array(np.random.default_rng(0).random((5, 3, 3)), (1.0, 1.0, 1.0), axis=2)
    with pytest.raises(InputError) as info:
        tiny.check_usable(patch_size=16)
    message = str(info.value)
    assert "at most 0" not in message and "3x3" in message and "16" in message
