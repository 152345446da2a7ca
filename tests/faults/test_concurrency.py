"""Two uvft processes on one folder, as on a shared cluster: a second finetune of a run in
progress is refused (naming the first, which trains on untouched), a lock left by a killed run is
taken over, and concurrent builds of one cache all succeed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fault_runs import ROOT, assert_clean, finetune_cmd, outcome, run_args, start, wait_for_training


def test_a_second_finetune_of_a_run_in_progress_is_refused(shapes_root, cache, reference, tmp_path):
    out = tmp_path / "run"
    args = run_args(shapes_root, cache, out)
    first = start(args)
    wait_for_training(first, out)
    second = subprocess.run(
        finetune_cmd(args, "--resume", "auto"), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: {out} is being written by `uvft finetune` (pid {first.pid} on ")
    assert second.stderr.endswith("wait for it to finish, or write somewhere else\n")
    assert first.wait(timeout=300) == 0, first.stderr.read()  # type: ignore[union-attr]
    assert outcome(out) == reference  # the refused one touched nothing
    assert_clean(out)
    assert not (out.parent / f".{out.name}.lock").exists()


def test_a_killed_runs_lock_is_taken_over_and_the_run_resumes(shapes_root, cache, reference, tmp_path):
    out = tmp_path / "run"
    args = run_args(shapes_root, cache, out)
    first = start(args)
    wait_for_training(first, out, after_step=4)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (out.parent / f".{out.name}.lock").is_file()  # kill -9 left it, naming the dead process
    resumed = subprocess.run(
        finetune_cmd(args, "--resume", "auto"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock left by `uvft finetune` (pid {first.pid} on " in resumed.stderr
    assert outcome(out) == reference


BUILD = [sys.executable, "-m", "pipeline.cli", "build", "--force", "--no-progress"]


def test_concurrent_forced_builds_of_one_cache_all_succeed(shapes_root, tmp_path):
    cache = tmp_path / "cache"
    args = run_args(shapes_root, cache, tmp_path / "run")[:4]  # the recipe and its data overrides
    procs = [
        subprocess.Popen([*BUILD, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    records = cache / "records"
    built = [p for p in records.iterdir() if not p.name.startswith(".")]
    assert len(built) == 1 and (built[0] / "stats.json").is_file()
    assert [p.name for p in records.iterdir() if p.name.startswith(".")] == []  # no tmp, old or lock
