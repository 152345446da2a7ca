"""Several processes (gloo, CPU): one of them killed, and DeepSpeed's refusal to resume.

- One process killed: the other must not wait forever in a collective. It stops within a bounded
  time with a message that says what happened and where the latest checkpoint is.
- Sharded runs (train.sharding=fsdp2, and `recipes/accelerate/fsdp.yaml`) resume: test_sharding.py.
  DeepSpeed's ZeRO partitions are not in uvft's checkpoints: resuming under it is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fault_runs import ROOT

from pipeline.errors import UvftError
from pipeline.failpoints import ENV
from pipeline.train import setup


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


def test_resume_under_deepspeed_is_refused(tmp_path):
    from accelerate.utils import DistributedType

    acc = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, is_main_process=True, num_processes=8)
    setup.check_sharding(acc, None)  # a fresh DeepSpeed run goes ahead
    with pytest.raises(UvftError, match=r"cannot resume .* under DeepSpeed: .* train.sharding=fsdp2"):
        setup.check_sharding(acc, tmp_path / "checkpoints" / "step-000005")
    # FSDP launch configs get uvft's own sharding (train.sharding=fsdp2), which resumes
    acc.distributed_type = DistributedType.FSDP
    setup.check_sharding(acc, tmp_path / "checkpoints" / "step-000005")
