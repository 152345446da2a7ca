"""kill -9 (the OOM killer, a lost node, `kill -9`) at the hardest places of a run: mid-step,
mid-update, mid-save, mid-prune, mid-evaluation, while best/ is replaced, and at random moments.
`--resume auto` then continues from the last complete checkpoint, and the run ends exactly as an
uninterrupted one: the same logged and held-out losses, evaluations, best step, adapter bytes and
best/ bytes; nothing half-written is left behind, and the killed trainer's DataLoader workers exit
on their own.

The deterministic places run by default; `-m slow` adds 12 seeded trials at random places and
random moments (the seed of each is in its test id)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_runs import ROOT, STEPS, assert_clean, group_gone, outcome, run_args, start, wait_for_training

from pipeline.failpoints import ENV, POINTS, parse
from pipeline.recipe import load_recipe
from pipeline.train import checkpoint as ckpt
from pipeline.train import loop

# how many times each failpoint is passed in the 16-step run (saves at 4, 8, 12, 16 keep one:
# three prunes; evals at 8 and 16)
PASSES = {"step.forward": STEPS, "step.update": STEPS, "checkpoint.write": 4, "checkpoint.prune": 3,
          "eval.generate": 2}  # fmt: skip


def _kill_and_resume(shapes_root, cache, out: Path, *, failpoint: str | None = None, after=(0, 0.0)):
    """kill -9 at `failpoint`, or (`after` = (step, seconds)) the whole job, trainer and workers,
    some seconds after the checkpoint of `step` appears (0: after training starts)."""
    args = run_args(shapes_root, cache, out)
    proc = start(args, env={ENV: failpoint} if failpoint else None)
    if failpoint is None:
        wait_for_training(proc, out, after_step=after[0])
        time.sleep(after[1])
        assert proc.poll() is None, "the run ended before the kill"
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"{failpoint or 'the kill'} was not reached:\n{err[-3000:]}"
    loop.train(load_recipe(args[0], args[1:]), resume="auto", progress=False)
    # a killed trainer's workers notice their parent is gone and exit by themselves
    assert group_gone(proc.pid, timeout=30), "DataLoader workers outlived the killed trainer"
    return proc.returncode


# one of each kind of place; the slow suite adds random ones
FAILPOINTS = [
    "step.forward:7",
    "step.update:10",
    "checkpoint.write:2",
    "checkpoint.prune:1",
    "eval.generate:1",
]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_kill_9_at_a_failpoint_then_resume_equals_never_stopping(
    shapes_root, cache, reference, tmp_path, failpoint
):
    out = tmp_path / "run"
    _kill_and_resume(shapes_root, cache, out, failpoint=failpoint)
    assert outcome(out) == reference
    assert_clean(out)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_kill_9_at_a_random_place_then_resume_equals_never_stopping(
    shapes_root, cache, reference, tmp_path, seed
):
    rng = random.Random(seed)
    out = tmp_path / "run"
    if seed % 3 == 2:  # every third trial: the whole process group at a random moment
        _kill_and_resume(shapes_root, cache, out, after=(rng.choice((0, 4, 8, 12)), rng.uniform(0.0, 0.4)))
    else:
        name = rng.choice(sorted(PASSES))
        _kill_and_resume(shapes_root, cache, out, failpoint=f"{name}:{rng.randint(1, PASSES[name])}")
    assert outcome(out) == reference
    assert_clean(out)


def test_failpoint_spec_is_checked():
    assert parse("checkpoint.write:2,eval.generate") == {"checkpoint.write": 2, "eval.generate": 1}
    assert parse("step.forward:3@1", rank=0) == {}
    assert parse("step.forward:3@1", rank=1) == {"step.forward": 3}
    with pytest.raises(ValueError, match=r"unknown failpoint 'checkpoint\.wirte'"):
        parse("checkpoint.wirte:1")
    assert set(PASSES) <= set(POINTS)


def test_kill_9_while_best_is_replaced_then_resume_restores_it(tmp_path):
    """best/ is replaced by two renames; a kill between them leaves only `.old-best`, which the
    resumed run puts back (and later evaluations replace as usual)."""
    final, new = tmp_path / "best", tmp_path / ".tmp-best"
    final.mkdir()
    (final / "adapter").write_text("old")
    new.mkdir()
    (new / "adapter").write_text("new")
    code = (
        "import sys; from pathlib import Path; from pipeline.train.checkpoint import swap_in; "
        "swap_in(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(new), str(final)], cwd=ROOT,
                          env={**os.environ, ENV: "best.swap"})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists() and (tmp_path / ".old-best" / "adapter").read_text() == "old"
    ckpt.recover_swap(final)
    assert (final / "adapter").read_text() == "old"
    ckpt.swap_in(new, final)
    assert (final / "adapter").read_text() == "new" and not (tmp_path / ".old-best").exists()
