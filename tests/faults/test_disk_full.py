"""A full disk in every writer: each command stops with one line, replaces nothing it had written
before, and leaves nothing half-written behind.

The disk fills for real as far as the process can tell: it runs under a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored), so the first write past the limit fails with EFBIG ("File too
large") wherever it happens: in Arrow, safetensors, PNG, JSON or a checkpoint."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fault_runs import ROOT, run_args

UVFT = [sys.executable, "-m", "pipeline.cli"]


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _uvft_on_a_full_disk(args: list[str], limit: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*UVFT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limited(limit),
    )


def _one_line(proc: subprocess.CompletedProcess, writing: Path | None = None) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: File too large"), proc.stderr
    if writing is not None:
        assert f"while writing {writing}: nothing was replaced" in last, last


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")] == []


@pytest.fixture(scope="module")
def evaluated(straight: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fault suite's finished run, with an evaluation of 2 records per task."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(straight, run)
    args = ["eval", *_recipe_args(run), "--limit", "2", "--no-progress"]
    done = subprocess.run([*UVFT, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run


def _recipe_args(run: Path) -> list[str]:
    return [str(run / "recipe.yaml"), f"output_dir={run}"]


def test_demo_data(tmp_path):
    out = tmp_path / "shapes"
    proc = _uvft_on_a_full_disk(["data", "demo", "--out", str(out), "--n-train", "40"], limit=4096)
    _one_line(proc, out)
    assert not out.exists()
    _no_leftovers(out)


def test_build(shapes_root, tmp_path):
    cache = tmp_path / "cache"
    args = run_args(shapes_root, cache, tmp_path / "run")[:4]
    proc = _uvft_on_a_full_disk(["build", *args, "--no-progress"], limit=2048)
    _one_line(proc)
    records = cache / "records"
    assert [p.name for p in records.iterdir()] == []  # no cache that looks complete, no tmp, no lock


def test_eval(evaluated):
    out = evaluated / "eval" / "val"
    before = _tree(out)
    proc = _uvft_on_a_full_disk(
        ["eval", *_recipe_args(evaluated), "--limit", "3", "--no-progress"], limit=8192
    )
    _one_line(proc, out)
    assert _tree(out) == before  # the earlier evaluation, whole: metrics beside their own report
    assert json.loads((out / "metrics.json").read_text())["sample"]["limit"] == 2
    _no_leftovers(out)


def test_export(evaluated, tmp_path):
    out = tmp_path / "merged"
    proc = _uvft_on_a_full_disk(["export", str(evaluated), "--merged", str(out)], limit=65536)
    _one_line(proc, out)
    assert not out.exists()
    _no_leftovers(out)


def test_push_staging(evaluated):
    args = ["push", str(evaluated), "--repo-id", "me/demo", "--merged", "--allow-limited", "--dry-run"]
    staged = evaluated / "push" / "me--demo"
    proc = _uvft_on_a_full_disk(args, limit=65536)
    _one_line(proc, staged)
    assert not staged.exists()
    _no_leftovers(staged)


def test_finetune_checkpoint(shapes_root, cache, tmp_path):
    """A checkpoint cut short by the disk: one line, and the run resumes once there is space."""
    out = tmp_path / "run"
    args = run_args(shapes_root, cache, out)
    proc = _uvft_on_a_full_disk(["finetune", *args, "--no-progress"], limit=65536)
    _one_line(proc)
    done = subprocess.run(
        [*UVFT, "finetune", *args, "--resume", "auto", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
