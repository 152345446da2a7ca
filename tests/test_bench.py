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
