"""The `semantic-interpolation upsample` command: real files, every method, every bad input."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import OBLIQUE_ANISO, T1_2MM, file_digest
from SemanticInterpolationLib import ASIAutoencoder, AutoencoderConfig
from SemanticInterpolationLib.models.checkpoint import CHECKPOINT_FORMAT
from SemanticInterpolationLib.cli import main


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder holding a copy of the real oblique anisotropic MRI as input.nii.gz."""
    shutil.copy(OBLIQUE_ANISO, tmp_path / "input.nii.gz")
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_all_four_methods_write_files_on_identical_grids(work: Path, random_checkpoint: Path, capsys) -> None:
    grids = {}
    for method in ("asi", "linear", "bspline", "lanczos"):
        out = work / f"out_{method}.nrrd"
        extra = ["--checkpoint", random_checkpoint] if method == "asi" else []
        code, err = run_cli(capsys, "upsample", work / "input.nii.gz", out, "--factor", 4, "--method", method, *extra)
        assert code == 0, err
        image = sitk.ReadImage(str(out))
        grids[method] = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                         image.GetPixelIDTypeAsString())
    assert len(set(grids.values())) == 1, grids
    source = sitk.ReadImage(str(work / "input.nii.gz"))
    size, spacing, origin, direction, pixel = grids["asi"]
    assert size == (58, 58, 93)
    assert spacing == pytest.approx((4.0, 4.0, 1.25))
    assert origin == pytest.approx(source.GetOrigin()) and direction == pytest.approx(source.GetDirection())
    assert pixel == "16-bit signed integer"


def test_reconstruct_and_float_output_options(work: Path, random_checkpoint: Path, capsys) -> None:
    out = work / "recon.nii.gz"
    code, err = run_cli(capsys, "upsample", work / "input.nii.gz", out, "-k", 2, "--checkpoint", random_checkpoint,
                        "--reconstruct-acquired", "--output-type", "float32", "--axis", "2", "--batch-size", 5,
                        "--device", "cpu", "--synthesis", "residual")
    assert code == 0, err
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "input.nii.gz")))
    assert result.dtype == np.float32
    assert not np.array_equal(result[::2], source.astype(np.float32)), "acquired slices were reconstructed"
    assert "residual synthesis" in err and "device cpu" in err and "batch size 5" in err, "the log says which device and settings were used"


def test_dicom_series_folder_input(tmp_path: Path, capsys) -> None:
    volume = sitk.ReadImage(str(T1_2MM))[:, :, :6]
    volume.SetSpacing((0.9, 0.9, 5.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        slice_image = volume[:, :, k]
        for tag, value in {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0013": str(k + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0028|0030": "0.9\\0.9", "0018|0050": "5.0",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    out = tmp_path / "from_dicom.nii.gz"
    code, err = run_cli(capsys, "upsample", folder, out, "--factor", 2, "--method", "linear")
    assert code == 0, err
    result = sitk.ReadImage(str(out))
    assert result.GetSize() == (33, 41, 11)
    assert result.GetSpacing()[2] == pytest.approx(2.5, abs=1e-3)


def test_help_is_complete(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["upsample", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--factor", "--method", "--checkpoint", "--axis", "--device", "--batch-size",
                   "--reconstruct-acquired", "--output-type", "0 = i/x"):
        assert option in text


def test_asi_without_checkpoint_says_a_checkpoint_is_needed(work: Path, capsys, monkeypatch) -> None:
    import SemanticInterpolationLib.models.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "find_default_checkpoint", lambda: None)
    code, err = run_cli(capsys, "upsample", work / "input.nii.gz", work / "out.nii.gz", "--factor", 2)
    assert code == 1
    assert "needs a checkpoint" in err and "--checkpoint" in err
    assert not (work / "out.nii.gz").exists()


def _bad_checkpoints(folder: Path) -> dict[str, Path]:
    other = folder / "other_architecture.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "architecture": AutoencoderConfig().to_dict(),
                "state_dict": ASIAutoencoder(AutoencoderConfig.spie()).state_dict(), "metadata": {}}, other)
    corrupt = folder / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    crafted = folder / "crafted.pt"
    crafted.write_bytes(pickle.dumps(_Exploit(folder / "exploit-ran")))
    return {"another architecture": other, "corrupt": corrupt, "refused": crafted}


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_inputs_fail_with_one_clear_line_and_leave_no_output(work: Path, tmp_path: Path, capsys) -> None:
    source = work / "input.nii.gz"
    text_file = work / "notes.txt"
    text_file.write_text("not an image")
    flat = work / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkInt16), str(flat))
    one_slice = work / "one_slice.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, 1, sitk.sitkInt16), str(one_slice))
    rgb = work / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), str(rgb))
    four_d = work / "four_d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.Image(8, 8, 4, sitk.sitkFloat32)] * 3), str(four_d))
    nan = work / "nan.mha"
    nan_image = sitk.GetImageFromArray(np.full((4, 8, 8), np.nan, np.float32))
    sitk.WriteImage(nan_image, str(nan))
    checkpoints = _bad_checkpoints(work)
    out = work / "out.nii.gz"
    cases = [
        (["upsample", text_file, out, "-k", 2, "--method", "linear"], "cannot read"),
        (["upsample", work / "missing.nii.gz", out, "-k", 2, "--method", "linear"], "does not exist"),
        (["upsample", flat, out, "-k", 2, "--method", "linear"], "2-D"),
        (["upsample", one_slice, out, "-k", 2, "--method", "linear", "--axis", "2"], "at least 2 slices"),
        (["upsample", rgb, out, "-k", 2, "--method", "linear"], "vector or RGB"),
        (["upsample", four_d, out, "-k", 2, "--method", "linear"], "4-D"),
        (["upsample", nan, out, "-k", 2, "--method", "linear"], "NaN"),
        (["upsample", source, out, "-k", 1, "--method", "linear"], "at least 2"),
        (["upsample", source, out, "-k", 33, "--method", "linear"], "unreasonably large"),
        (["upsample", source, work / "no_such_dir" / "o.nii.gz", "-k", 2, "--method", "linear"], "does not exist"),
        (["upsample", source, work, "-k", 2, "--method", "linear"], "is a folder"),
        (["upsample", source, work / "out.xyz", "-k", 2, "--method", "linear"], "unknown image file type"),
        (["upsample", source, source, "-k", 2, "--method", "linear"], "is the input"),
        (["upsample", source, out, "-k", 2, "--device", "cpu", "--checkpoint", checkpoints["another architecture"]],
         "another architecture"),
        (["upsample", source, out, "-k", 2, "--device", "cpu", "--checkpoint", checkpoints["corrupt"]], "corrupt"),
        (["upsample", source, out, "-k", 2, "--device", "cpu", "--checkpoint", checkpoints["refused"]], "refused"),
        (["upsample", source, out, "-k", 2, "--method", "linear", "--reconstruct-acquired"], "asi only"),
        (["upsample", source, out, "-k", 2, "--method", "bspline", "--synthesis", "residual"], "asi only"),
    ]
    digest = file_digest(source)
    before = sorted(p.name for p in work.iterdir())
    for args, message in cases:
        code, err = run_cli(capsys, *args)
        assert code == 1, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("semantic-interpolation: error: "), err
        assert message in lines[0], (message, lines[0])
    assert file_digest(source) == digest, "the input file is untouched"
    assert sorted(p.name for p in work.iterdir()) == before, "no output or partial file is left behind"
    assert not (work / "exploit-ran").exists(), "the crafted checkpoint did not run"


def test_cancel_during_upsampling_leaves_no_output(work: Path, monkeypatch, capsys) -> None:
    import SemanticInterpolationLib.cli.upsample as cli_upsample

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_upsample, "upsample_image", interrupted)
    code, err = run_cli(capsys, "upsample", work / "input.nii.gz", work / "out.nii.gz", "-k", 2, "--method", "linear")
    assert code == 130 and "interrupted" in err and "not completed" in err
    assert not (work / "out.nii.gz").exists()


def test_console_script_runs_as_a_separate_process(work: Path) -> None:
    out = work / "out.mha"
    completed = subprocess.run(
        [sys.executable, "-m", "SemanticInterpolationLib.cli", "upsample", str(work / "input.nii.gz"), str(out),
         "--factor", "2", "--method", "bspline"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert sitk.ReadImage(str(out)).GetSize() == (58, 58, 47)
    bad = subprocess.run([sys.executable, "-m", "SemanticInterpolationLib.cli", "upsample", str(work / "input.nii.gz"),
                          str(out), "--factor", "0", "--method", "linear"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


def test_main_leaves_the_library_logger_as_it_found_it(tmp_path, capsys):
    """main() from Python (a notebook, a test) sets up its stderr handler for the run only."""
    import logging

    from SemanticInterpolationLib.cli.app import main

    logger = logging.getLogger("SemanticInterpolation")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert main(["upsample", str(tmp_path / "missing.nii.gz"), str(tmp_path / "out.nii.gz"), "-k", "2",
                 "--method", "linear"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert (list(logger.handlers), logger.level, logger.propagate) == before
