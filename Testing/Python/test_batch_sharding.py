"""Shards of a batch: ``--shard I/N`` and two gloo processes under torchrun on the CPU.

Each run's outputs must be bit for bit those of a single-process run, and a rerun after a killed
process must redo exactly what that process left undone.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from SemanticInterpolationLib.cli.app import main as cli_main
from SemanticInterpolationLib.cohort.discovery import discover_inputs
from SemanticInterpolationLib.cohort.naming import plan_tasks
from SemanticInterpolationLib.cohort.sharding import assign_shards, parse_shard, select_shard
from SemanticInterpolationLib.errors import InputError

from conftest import file_digest
from test_upsample_batch import EXPECTED_OUTPUTS, make_cohort, outputs_of

LIBRARY_ROOT = Path(__file__).resolve().parents[2] / "SemanticInterpolation"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_shards_are_deterministic_balanced_and_cover_every_input_once():
    sizes = [50, 10, 40, 30, 30, 20, 5, 60, 1]
    shards = assign_shards(sizes, 3)
    assert shards == assign_shards(list(sizes), 3)
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(sizes)
    # greedy largest first, each to the lightest shard (ties: the lowest): 60 -> 0, 50 -> 1, 40 -> 2,
    # 30 -> 2 (70), 30 -> 1 (80), 20 -> 0 (80), 10 -> 2 (80), 5 -> 0 (85), 1 -> 1 (81)
    assert shards == [[5, 6, 7], [0, 4, 8], [1, 2, 3]]
    assert assign_shards(sizes[:2], 4) == [[0], [1], [], []]  # more shards than inputs: some stay empty
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "a/2", "1", "0/0"):
        with pytest.raises(InputError):
            parse_shard(bad)


def _cohort(tmp_path):
    root = tmp_path / "cohort"
    make_cohort(root)
    items, _ = discover_inputs([root])
    return root, items


def test_shard_option_splits_the_cohort_and_the_union_equals_one_run(tmp_path, random_checkpoint, capsys):
    root, _ = _cohort(tmp_path)
    common = ["--factor", "2", "--checkpoint", str(random_checkpoint), "--device", "cpu", "-q"]
    assert cli_main(["upsample-batch", str(root), "--output-dir", str(tmp_path / "single"), *common]) == 0
    sharded = tmp_path / "sharded"
    for index in range(2):
        assert cli_main(["upsample-batch", str(root), "--output-dir", str(sharded), "--shard", f"{index}/2",
                         *common]) == 0
    assert outputs_of(sharded) == EXPECTED_OUTPUTS
    for name in EXPECTED_OUTPUTS:
        assert file_digest(sharded / name) == file_digest(tmp_path / "single" / name), name
    parts = [read_rows(sharded / f"upsample-batch-summary.shard-{i}-of-2.csv") for i in range(2)]
    assert all(parts) and sorted(r["input"] for p in parts for r in p) == sorted(
        r["input"] for r in read_rows(tmp_path / "single" / "upsample-batch-summary.csv"))
    assert not set(r["input"] for r in parts[0]) & set(r["input"] for r in parts[1])


def _torchrun(processes: int, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "SemanticInterpolationLib.cli", "upsample-batch", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="this torch build has no gloo backend")
def test_two_gloo_processes_equal_one_and_a_killed_rank_is_redone(tmp_path, random_checkpoint):
    root, items = _cohort(tmp_path)
    common = ["--factor", "2", "--checkpoint", str(random_checkpoint), "--device", "cpu"]
    assert cli_main(["upsample-batch", str(root), "--output-dir", str(tmp_path / "single"), *common, "-q"]) == 0

    out = tmp_path / "ddp"
    run = _torchrun(2, str(root), "--output-dir", str(out), *common)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert outputs_of(out) == EXPECTED_OUTPUTS
    for name in EXPECTED_OUTPUTS:
        assert file_digest(out / name) == file_digest(tmp_path / "single" / name), name
    assert "rank 0/2" in run.stderr and "rank 1/2" in run.stderr
    rows = read_rows(out / "upsample-batch-summary.csv")  # one merged summary, written by rank 0
    assert len(rows) == len(items) and {r["status"] for r in rows} == {"done"}
    assert sorted(p.name for p in out.glob("*.csv")) == ["upsample-batch-summary.csv"]

    # rank 1 was killed: its last output never appeared, one it wrote was cut short by something else, and
    # its staging folder is left; rank 0 had finished
    tasks = plan_tasks(items, out, "_asi_x2")
    rank1 = select_shard(tasks, 1, 2)
    assert len(rank1) >= 2
    missing, cut = rank1[-1].output, rank1[0].output
    missing.unlink()
    (missing.parent / f".{missing.name}.k1ll3d.partial").mkdir()
    cut.write_bytes(cut.read_bytes()[:200])
    run = _torchrun(2, str(root), "--output-dir", str(out), *common)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = {r["output"]: r["status"] for r in read_rows(out / "upsample-batch-summary.csv")}
    assert {path for path, s in status.items() if s == "done"} == {str(missing), str(cut)}
    assert all(s == "skipped" for path, s in status.items() if path not in (str(missing), str(cut)))
    for name in EXPECTED_OUTPUTS:
        assert file_digest(out / name) == file_digest(tmp_path / "single" / name), name
    assert not list(out.rglob("*.partial"))


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="this torch build has no gloo backend")
def test_more_processes_than_files_leave_the_extra_ones_idle(tmp_path, random_checkpoint):
    root, items = _cohort(tmp_path)
    listing = tmp_path / "one.txt"
    listing.write_text(str(items[0].source) + "\n")
    out = tmp_path / "out"
    run = _torchrun(2, str(listing), "--output-dir", str(out), "--factor", "2", "--checkpoint",
                    str(random_checkpoint), "--device", "cpu")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 processes for 1 input(s): 1 process(es) have no input and stay idle" in run.stderr
    assert "no input to do" in run.stderr
    assert len(read_rows(out / "upsample-batch-summary.csv")) == 1

    # a bad argument stops every process with exit code 2, none waits for the others
    bad = _torchrun(2, str(tmp_path / "missing"), "--output-dir", str(out), "--factor", "2", "--device", "cpu",
                    "--checkpoint", str(random_checkpoint))
    assert bad.returncode != 0 and "does not exist" in bad.stderr
