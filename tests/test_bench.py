"""The benchmarks keep working: `make bench`'s every benchmark at a size that takes seconds
(`bench/run_all.py --smoke`, under `-m slow`), so one that breaks fails CI the day it breaks; and
build_scale's comparison of records across a grown schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from build_scale import _same_values  # noqa: E402
from run_all import BENCHMARKS, SMOKE  # noqa: E402


@pytest.mark.slow
def test_every_benchmark_runs_at_smoke_size(tmp_path):
    env = {**os.environ, "UVFT_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/run_all.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert [r[0] for r in rows] == list(BENCHMARKS)
    assert not [r for r in rows if r[1].startswith("FAILED")]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted([*BENCHMARKS, "summary"])


def test_every_benchmark_has_a_smoke_size():
    assert set(SMOKE) == set(BENCHMARKS)


def _objects(rows: list[list[dict]]) -> pa.Array:
    return pa.array(rows)


def test_records_compare_on_what_the_baseline_wrote():
    old = _objects([[{"bbox": [1.0, 2.0, 3.0, 4.0], "category": "dog"}], []])
    grown = _objects([[{"bbox": [1.0, 2.0, 3.0, 4.0], "category": "dog", "area": 4.0}], []])
    assert _same_values(old, grown)  # a field added since: equal on the baseline's fields
    moved = _objects([[{"bbox": [1.0, 2.0, 3.0, 5.0], "category": "dog", "area": 4.0}], []])
    assert not _same_values(old, moved)
    renamed = _objects([[{"bbox": [1.0, 2.0, 3.0, 4.0], "category": "cat", "area": 4.0}], []])
    assert not _same_values(old, renamed)
    shifted = _objects([[], [{"bbox": [1.0, 2.0, 3.0, 4.0], "category": "dog", "area": 4.0}]])
    assert not _same_values(old, shifted)  # same values, other rows
    assert not _same_values(pa.array(["a", "b"]), pa.array(["a", "c"]))
    assert _same_values(pa.chunked_array([pa.array(["a"]), pa.array(["b"])]), pa.array(["a", "b"]))


@pytest.mark.slow
def test_the_gpu_benchmark_runs_its_code_on_the_cpu(tmp_path):
    """bench/gpu.py --cpu-check: both parts (the step, the whole loop eager and compiled) at one block
    per stack on the CPU, so the script is known to run before a GPU is lent to time it."""
    args = ["--cpu-check", "--families", "florence2", "--batch", "1", "--steps", "1", "--warmup", "1"]
    args += ["--loop-steps", "3", "--loop-warmup", "1", "--workers", "0"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu.py"), *args],
        cwd=ROOT,
        env={**os.environ, "UVFT_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_cpu_check.json").read_text())["summary"]
    expected = ["step/florence2/baseline", "step/florence2/uvft"]
    expected += ["loop/florence2/eager", "loop/florence2/train.compile"]
    assert list(summary) == expected
    assert all(v["mfu"] > 0 and v["s_per_step"] > 0 for v in summary.values())
