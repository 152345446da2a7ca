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


def test_region_probe_reads_the_cells_under_a_box():
    from region_probe import cells_under

    assert cells_under((0, 0, 8, 8), (64, 64), 8) == [0]  # a box ending on a cell edge stays in its cell
    assert cells_under((7, 0, 9, 8), (64, 64), 8) == [0, 1]
    assert cells_under((60, 60, 64, 64), (64, 64), 8) == [63]
    assert cells_under((16, 24, 40, 33), (64, 64), 8) == [26, 27, 28, 34, 35, 36]
    assert cells_under((0, 0, 32, 16), (128, 64), 8) == [0, 1, 8, 9]  # x and y scale apart


def test_region_probe_reads_each_scenes_shapes(tmp_path):
    from region_probe import scene_regions

    from pipeline.demo import shapes
    from pipeline.demo.draw import COLORS, SHAPES

    shapes.generate(
        tmp_path, n_train=4, n_val=2, seed=3, progress=False, extra_tasks=["refer", "ocr", "regions"]
    )
    instances = json.loads((tmp_path / "refer" / "instances.json").read_text())
    for split, n in (("train", 4), ("val", 2)):
        scenes = scene_regions(tmp_path, split, limit=10)
        assert len(scenes) == n
        for scene in scenes:
            assert Path(scene["image"]).is_file() and scene["size"] == (64, 64)
            assert 2 <= len(scene["shapes"]) <= 3
            for s in scene["shapes"]:
                assert s["colour"] in COLORS and s["kind"] in SHAPES
                x1, y1, x2, y2 = s["box"]
                assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    shown = sum(len(s["shapes"]) for split in ("train", "val") for s in scene_regions(tmp_path, split, 10))
    assert shown == len(instances["annotations"])  # every shape of every scene
