"""Preemption the way clusters do it: a real `uvft finetune` process with DataLoader workers gets
SIGTERM (Slurm, Kubernetes, spot) or SIGINT (Ctrl-C) at a random moment of training, saves a
checkpoint, exits with 128 + the signal and a message, and `--resume auto` ends exactly where an
uninterrupted run ends (losses, held-out losses, adapter bytes)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[2]


def _args(shapes_root: Path, cache: Path, out: Path) -> list[str]:
    return [
        str(ROOT / "recipes/demo.yaml"),
        f"data.root={shapes_root}",
        f"data.cache_dir={cache}",
        "data.demo=null",
        f"output_dir={out}",
        "model.tiny.base_steps=0",
        "train.steps=40",
        "train.batch_size=4",
        "train.num_workers=2",
        "train.trackers=[]",
        "train.log_every=5",
        "train.save_every=1000",
        "train.val_batches=1",
        "adapter.dropout=0.1",
    ]


def _logged(summary: dict) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "samples_per_s"} for e in summary["losses"]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_training_process_saves_and_resumes_exactly(shapes_root, tmp_path, signum):
    cache = tmp_path / "cache"
    from pipeline.recipe import load_recipe

    args = _args(shapes_root, cache, tmp_path / "straight")
    straight = loop.train(load_recipe(args[0], args[1:]), progress=False)

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "pipeline.cli", "finetune", *_args(shapes_root, cache, out), "--no-progress"]
    # its own process group, as a batch job's: the signal goes to the trainer and its workers alike
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "recipe.yaml").is_file():  # written just before the first step
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    time.sleep(random.Random(signum).uniform(0.3, 1.5))
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    name = signal.Signals(signum).name
    assert f"{name}: stopped " in err, err[-2000:]  # after step N, or before step 1 during set-up
    assert "Traceback" not in err

    resume = [*cmd, "--resume", "auto"]
    done = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / "summary.json").read_text())
    assert _logged(resumed) == _logged({"losses": straight.losses})
    assert resumed["val"] == straight.val
    assert (out / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "straight" / "adapter_model.safetensors"
    ).read_bytes()
