"""The fault suite's common pieces (imported as `fault_runs`): the recipe of a short run that saves, prunes,
evaluates and uses DataLoader workers, one uninterrupted reference run, and a way to run
`uvft finetune` as a real process that can be killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16
# UVFT_FAULTS_COMPILE=1 runs the whole suite, its reference run included, with train.compile on
# (tests/faults/test_compile_faults.py runs part of it so under -m slow)
COMPILE = ["train.compile=true"] if os.environ.get("UVFT_FAULTS_COMPILE") == "1" else []


def run_args(shapes_root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    """A 16-step run that passes every hard place: saves every 4 steps keeping one (so each save
    prunes), held-out loss every 4, generation eval every 8 (with best/), 2 DataLoader workers,
    dropout on (so the RNG state matters)."""
    return [
        str(ROOT / "recipes/demo.yaml"),
        f"data.root={shapes_root}",
        f"data.cache_dir={cache}",
        "data.demo=null",
        f"output_dir={out}",
        "model.tiny.base_steps=0",
        f"train.steps={STEPS}",
        "train.batch_size=4",
        "train.num_workers=2",
        "train.trackers=[]",
        "train.log_every=2",
        "train.save_every=4",
        "train.keep_last=1",
        "train.val_every=4",
        "train.val_batches=1",
        "eval.every=8",
        "eval.per_task=2",
        "eval.max_new_tokens=8",
        "eval.metric=mean",
        "adapter.dropout=0.1",
        *COMPILE,
        *extra,
    ]


def finetune_cmd(args: list[str], *more: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "finetune", *args, "--no-progress", *more]


def start(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`uvft finetune` in its own process group, as a batch job runs."""
    return subprocess.Popen(
        finetune_cmd(args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def logged(losses: list[dict]) -> list[dict]:
    """The logged losses without the throughput, which depends on the machine's load."""
    return [{k: v for k, v in e.items() if k != "samples_per_s"} for e in losses]


def outcome(run: Path) -> dict:
    """What a finished run decided: losses, held-out losses, evals, best, adapter and best bytes."""
    summary = json.loads((run / "summary.json").read_text())
    return {
        "losses": logged(summary["losses"]),
        "val": summary["val"],
        "evals": summary["evals"],
        "best": {k: v for k, v in (summary["best"] or {}).items() if k != "path"},
        "steps": summary["steps"],
        "samples": summary["samples"],
        "adapter": (run / "adapter_model.safetensors").read_bytes(),
        "best_adapter": (run / "best" / "adapter_model.safetensors").read_bytes(),
        "best_json": json.loads((run / "best" / "best.json").read_text()),
    }


def wait_for_training(proc: subprocess.Popen, out: Path, after_step: int = 0, timeout: float = 120) -> None:
    """Until the run's recipe.yaml appears (it is written just before the first step), and then,
    with `after_step`, until the checkpoint of that step does."""
    deadline = time.monotonic() + timeout
    marker = out / "checkpoints" / f"step-{after_step:06d}" if after_step else out / "recipe.yaml"
    while not (out / "recipe.yaml").is_file() or not marker.exists():
        assert proc.poll() is None, "the run ended before it was interrupted"
        assert time.monotonic() < deadline, f"{marker} did not appear"
        time.sleep(0.01)


def group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of the group (a trainer and its DataLoader workers) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def assert_clean(out: Path) -> None:
    """One complete checkpoint (keep_last=1) and no .tmp-, .del-, .old- leftovers anywhere."""
    from pipeline.train import checkpoint as ckpt

    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [f"step-{STEPS:06d}"], names
    assert ckpt.verify_checkpoint(out / "checkpoints" / names[0]) is None
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
