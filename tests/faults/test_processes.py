"""Several processes (gloo, CPU): one of them killed, and the FSDP launch config on CPU.

- One process killed: the other must not wait forever in a collective. It stops within a bounded
  time with a message that says what happened and where the latest checkpoint is.
- `recipes/accelerate/fsdp.yaml` on 2 CPU processes: Accelerate shards only on accelerators, so
  on CPU the run is plain data parallel, and uvft says so. Its losses equal one process with the
  same global batch, and a kill -9 then `--resume auto` ends exactly where an uninterrupted launch
  ends. (Real FSDP and DeepSpeed, on GPUs, refuse to resume: test_resume_under_sharding_is_refused.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fault_runs import ROOT, logged

from pipeline.errors import UvftError
from pipeline.failpoints import ENV
from pipeline.recipe import load_recipe
from pipeline.train import loop, setup


def _common(shapes_root: Path, cache: Path) -> list[str]:
    return [
        f"data.root={shapes_root}",
        f"data.cache_dir={cache}",
        "data.demo=null",
        "model.tiny.base_steps=0",
        "train.steps=10",
        "train.num_workers=0",
        "train.trackers=[]",
        "train.log_every=1",
        "train.save_every=5",
        "train.val_batches=1",
        "train.lr=3e-3",
        "adapter.dropout=0.0",
        "eval.every=0",
    ]


def _launch(config: list[str], args: list[str], *, port: int, env: dict[str, str] | None = None, more=()):
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *config, "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port), "-m", "pipeline.cli", "finetune",
        str(ROOT / "recipes/demo.yaml"), *args, "--no-progress", *more,
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return proc, time.monotonic() - started


def test_one_process_killed_the_other_stops_with_a_message(shapes_root, tmp_path):
    out = tmp_path / "run"
    args = [*_common(shapes_root, tmp_path / "cache"), f"output_dir={out}", "train.batch_size=2"]
    # rank 1 dies at its 7th micro-batch (step 7), after the checkpoint of step 5
    proc, seconds = _launch(["--multi_gpu"], args, port=29531, env={ENV: "step.forward:7@1"})
    assert proc.returncode != 0
    assert seconds < 120, f"the surviving process took {seconds:.0f} s to stop"
    err = proc.stderr
    assert "process 0 of 2 lost contact with another training process" in err, err[-3000:]
    assert f"the latest checkpoint is {out / 'checkpoints' / 'step-000005'}" in err
    assert "relaunch with --resume auto" in err
    assert "[rank0]: Traceback" not in err  # one message from the survivor, not a gloo traceback


@pytest.mark.slow
def test_fsdp_config_on_cpu_is_data_parallel_matches_one_process_and_resumes_exactly(shapes_root, tmp_path):
    cache = tmp_path / "cache"
    one = loop.train(
        load_recipe(
            ROOT / "recipes/demo.yaml",
            [*_common(shapes_root, cache), f"output_dir={tmp_path / 'one'}", "train.batch_size=4"],
        ),
        progress=False,
        cpu=True,
    )
    fsdp = ["--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml")]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = [*_common(shapes_root, cache), "train.batch_size=2"]

    proc, _ = _launch(fsdp, [*common, f"output_dir={straight}"], port=29533)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Accelerate shards only on accelerators: on cpu this run is plain data parallel" in proc.stderr
    summary = json.loads((straight / "summary.json").read_text())
    # the same global batch: the same losses and held-out losses as one process of batch 4
    assert [e["loss"] for e in summary["losses"]] == pytest.approx([e["loss"] for e in one.losses], rel=1e-5)
    assert [v["all"] for v in summary["val"]] == pytest.approx([v["all"] for v in one.val], rel=1e-5)

    # both processes killed at step 8 (after the checkpoint of step 5), then resumed
    proc, _ = _launch(fsdp, [*common, f"output_dir={killed}"], port=29535, env={ENV: "step.forward:8"})
    assert proc.returncode != 0
    proc, _ = _launch(fsdp, [*common, f"output_dir={killed}"], port=29537, more=["--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "step-000005 at step 5" in proc.stderr
    resumed = json.loads((killed / "summary.json").read_text())
    assert logged(resumed["losses"]) == logged(summary["losses"])
    assert resumed["val"] == summary["val"]
    assert (killed / "adapter_model.safetensors").read_bytes() == (
        straight / "adapter_model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_resume_under_sharding_is_refused(kind, tmp_path):
    from accelerate.utils import DistributedType

    acc = SimpleNamespace(distributed_type=DistributedType[kind], is_main_process=True, num_processes=8)
    setup.check_sharding(acc, None)  # a fresh sharded run goes ahead
    with pytest.raises(UvftError, match="resuming a sharded run is not supported yet"):
        setup.check_sharding(acc, tmp_path / "checkpoints" / "step-000005")
