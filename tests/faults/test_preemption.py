"""Preemption the way clusters do it: a real `uvft finetune` process with DataLoader workers gets
SIGTERM (Slurm, Kubernetes, spot) or SIGINT (Ctrl-C) at a random moment of training (mid-step,
mid-save, mid-evaluation alike), finishes the step, saves a checkpoint, exits with 128 + the signal
and a message, and `--resume auto` ends exactly where an uninterrupted run ends (losses, held-out
losses, evaluations, adapter and best/ bytes). Two trials by default, eight more under -m slow."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from fault_runs import assert_clean, outcome, run_args, start, wait_for_training

from pipeline.recipe import load_recipe
from pipeline.train import loop


def _trial(shapes_root: Path, cache: Path, out: Path, signum: int, delay: float, after: int = 0) -> None:
    """The signal `delay` seconds after training starts (after=0) or after the checkpoint of step
    `after` appears (4, 8, 12: steps 5-8 with the evaluation at 8, 9-12, 13-16 and the end)."""
    args = run_args(shapes_root, cache, out)
    proc = start(args)  # its own process group: the signal reaches the trainer and its workers alike
    wait_for_training(proc, out, after_step=after)
    time.sleep(delay)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert "Traceback" not in err
    if proc.returncode == 0:  # the signal came during the final evaluation: the run finished
        assert f"{name} came during the final evaluation: the run finished instead of stopping" in err
    else:
        assert proc.returncode == 128 + signum, err[-2000:]
        assert f"{name}: stopped " in err, err[-2000:]  # after step N, or before step 1 during set-up
    loop.train(load_recipe(args[0], args[1:]), resume="auto", progress=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_training_process_saves_and_resumes_exactly(
    shapes_root, cache, reference, tmp_path, signum
):
    _trial(shapes_root, cache, tmp_path / "run", signum, random.Random(signum).uniform(0.3, 1.5))
    assert outcome(tmp_path / "run") == reference
    assert_clean(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_signal_at_a_random_moment_saves_and_resumes_exactly(shapes_root, cache, reference, tmp_path, seed):
    rng = random.Random(1000 + seed)
    signum = (signal.SIGTERM, signal.SIGINT)[seed % 2]
    after = (0, 4, 8, 12)[seed % 4]
    _trial(shapes_root, cache, tmp_path / "run", signum, rng.uniform(0.0, 0.4), after=after)
    assert outcome(tmp_path / "run") == reference
    assert_clean(tmp_path / "run")
