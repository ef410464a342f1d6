"""The GPU check (bench/device_check.sh) in its CPU smoke mode, without SimpleITK as on the GPU machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "device_check.sh"


def test_smoke_run_without_simpleitk_measures_every_section(tmp_path):
    blocker = tmp_path / "block"  # the GPU machine has no SimpleITK: the check must not need it
    blocker.mkdir()
    (blocker / "SimpleITK.py").write_text("raise ImportError('SimpleITK is blocked in this test')\n")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, PYTHONPATH=str(blocker), OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(SCRIPT), "--smoke", "--device", "cpu", "--networks", "default", "pair-unet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "device-check.json").read_text())
    assert (out / "device-check.log").read_text() == done.stdout
    assert result["smoke"] and not result["simpleitk"]
    sections = result["sections"]
    errors = [r for records in sections.values() for r in records if "error" in r]
    assert not errors, errors
    assert result["peaks_tflops"]["bf16"] > 0 and result["peaks_tflops"]["fp32"] > 0

    synthesis = [r for r in sections["synthesis"] if "slices_per_second" in r]
    networks = {r["network"] for r in synthesis}
    assert len(networks) == 2 and any(n.startswith("default (profile-routed") for n in networks)
    assert {(r["dtype"], r["layout"]) for r in synthesis} == {(d, l) for d in ("fp32", "bf16")
                                                              for l in ("contiguous", "channels_last")}
    assert all(r["slices_per_second"] > 0 and r["gflop_per_slice"] > 0 and r["tflops"] > 0 for r in synthesis)
    assert any("cuda-graph" in r["label"] and r["skipped"] == "needs a CUDA device" for r in sections["synthesis"])
    assert sections["memory"][0]["skipped"].startswith("GPU memory is measured on CUDA only")
    # the bundled default network takes a B-spline anchor, which needs SimpleITK: named, not crashed
    assert any("needs SimpleITK" in r.get("skipped", "") for r in sections["engine"])
    assert [r["synthesized_per_second"] > 0 for r in sections["engine"] if "seconds" in r] == [True]
    training = [r for r in sections["training"] if "triplets_per_second" in r]
    assert len(training) >= 2 and all(r["trainer_over_bare"] > 0 for r in training)
    batch = sections["batch"]
    assert [r["threaded"] for r in batch] == [True, False] and all(r["done"] == r["volumes"] == 3 for r in batch)
    assert "not asked for" in sections["compile"][0]["skipped"]
    assert "device check finished" in done.stdout and "slices/s" in done.stdout


def test_a_failing_measurement_is_reported_and_the_check_goes_on(capsys):
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "bench" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.Report()

    def broken():
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    assert module.guarded(report, "synthesis", "x bf16 cuda-graph", broken) is None
    assert module.guarded(report, "synthesis", "x fp32 eager", lambda: {"slices_per_second": 5.0})["label"] == \
        "x fp32 eager"
    assert report.sections["synthesis"][0]["error"].startswith("RuntimeError: CUDA error")
    assert "x bf16 cuda-graph: FAILED (RuntimeError" in capsys.readouterr().out
    assert module.guarded_section(report, "memory", lambda: 1 / 0) is None
    assert report.sections["memory"][0]["error"].startswith("ZeroDivisionError")
