"""Two processes (gloo, CPU) with batch b give the loss curve of one process with batch 2b, and
their parameters stay identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo import shapes
from pipeline.recipe import load_recipe
from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path):
    data = tmp_path / "shapes"
    shapes.generate(data, n_train=24, n_val=8, seed=4, progress=False)
    common = [
        f"data.root={data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.demo=null",
        "model.tiny.base_steps=0",
        "train.steps=4",
        "train.num_workers=0",
        "train.trackers=[]",
        "train.log_every=1",
        "train.save_every=100",
        "train.val_batches=1",
        "train.lr=3e-3",
        "adapter.dropout=0.0",
    ]
    one = loop.train(
        load_recipe(
            ROOT / "recipes/demo.yaml", [*common, f"output_dir={tmp_path / 'one'}", "train.batch_size=4"]
        ),
        progress=False,
        cpu=True,
    )
    out = tmp_path / "two"
    out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "29517",
        str(Path(__file__).with_name("ddp_worker.py")),
        str(ROOT / "recipes/demo.yaml"), str(out),
        *common, f"output_dir={out / 'run'}", "train.batch_size=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the logged loss is the global one
    assert ranks[0]["losses"] == pytest.approx([e["loss"] for e in one.losses], rel=1e-4)
