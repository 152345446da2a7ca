"""Sharded training (train.sharding=fsdp2) on 2 CPU processes (gloo): what it holds, that it trains
as one process does, and that it resumes exactly after the interruptions clusters deal out (kill -9
of one rank mid-step and mid-save, SIGTERM to the launch), also with another number of processes;
and launches of two "machines" on one host.

Losses are compared with one process of the same global batch to 1e-6 relative, not bitwise: the
sharded gradient is the sum of two processes' halves (a reduce-scatter), one process sums the same
terms in another order. A run resumed with the same number of processes is compared bitwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_runs import ROOT, logged
from safetensors.torch import load_file

from pipeline.failpoints import ENV
from pipeline.recipe import load_recipe
from pipeline.train import loop


def _common(shapes_root: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"data.root={shapes_root}",
        f"data.cache_dir={cache}",
        "data.demo=null",
        "model.tiny.base_steps=0",
        "train.steps=8",
        "train.num_workers=0",
        "train.trackers=[]",
        "train.log_every=1",
        "train.save_every=3",
        "train.keep_last=3",
        "train.val_every=3",
        "train.val_batches=1",
        "train.lr=3e-3",
        "eval.every=0",
        *extra,
    ]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cmd(n: int, args: list[str], *, port: int, machines: tuple[int, int] | None = None) -> list[str]:
    where = ["--num_machines", "1"]
    if machines is not None:  # (machine count, this machine's rank): one process per "machine"
        count, rank = machines
        where = ["--num_machines", str(count), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
    return [
        sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if n > 1 else []),
        "--num_processes", str(n), *where, "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port), "-m", "pipeline.cli", "finetune", str(ROOT / "recipes/demo.yaml"),
        *args, "--no-progress",
    ]  # fmt: skip


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(extra or {})}


def launch(n: int, args: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = _launch_cmd(n, args, port=_port())
    return subprocess.run(cmd, env=_env(env), capture_output=True, text=True, timeout=300, cwd=ROOT)


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def losses(run: Path) -> tuple[list[float], list[float]]:
    s = summary(run)
    return [e["loss"] for e in s["losses"]], [v["all"] for v in s["val"]]


def one_process(args: list[str], out: Path):
    return loop.train(load_recipe(ROOT / "recipes/demo.yaml", [*args, f"output_dir={out}"]), progress=False)


def against_one_process(common: list[str], tmp_path: Path, *, batch: int) -> tuple[Any, Path, str]:
    """One process of batch 2 x `batch` in this one, and a launch of 2 sharded processes of `batch`:
    (one's summary, the launch's run folder, its stderr)."""
    one = one_process([*common, f"train.batch_size={2 * batch}"], tmp_path / "one")
    out = tmp_path / "two"
    proc = launch(2, [*common, f"train.batch_size={batch}", "train.sharding=fsdp2", f"output_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return one, out, proc.stderr


def _held(stderr: str) -> tuple[int, int, int, int]:
    m = re.search(
        r"holds ([\d,]+) of ([\d,]+) parameter bytes and ([\d,]+) of ([\d,]+) optimizer-state bytes", stderr
    )
    assert m, stderr[-3000:]
    held_p, all_p, held_o, all_o = (int(g.replace(",", "")) for g in m.groups())
    return held_p, all_p, held_o, all_o


def test_two_sharded_processes_hold_half_and_train_as_one_process(shapes_root, cache, tmp_path):
    common = _common(shapes_root, cache, "adapter.dropout=0.0", "train.steps=4")
    one, out, err = against_one_process(common, tmp_path, batch=2)
    # every block and the model sharded: the main process holds half of every parameter and of the
    # optimizer state (AdamW's step counters, one scalar per tensor, are whole on each)
    assert "train.sharding=fsdp2: 4 blocks and the model sharded over 2 processes" in err
    held_p, all_p, held_o, all_o = _held(err)
    print(f"parameters {held_p:,} of {all_p:,} bytes; optimizer state {held_o:,} of {all_o:,} bytes")
    # (a tensor of an odd number of rows gives the first process the extra row)
    assert 0.5 <= held_p / all_p < 0.501 and 0.5 <= held_o / all_o < 0.501
    assert sum(1 for line in err.splitlines() if "optimizer-state" in line) == 1  # said once
    # the same global batch: the losses and held-out losses of one process of batch 4
    got_loss, got_val = losses(out)
    assert got_loss == pytest.approx([e["loss"] for e in one.losses], rel=1e-6)
    assert got_val == pytest.approx([v["all"] for v in one.val], rel=1e-6)
    # a sharded checkpoint: one shard per process, the rest as always, listed in the manifest
    ckpt = out / "checkpoints" / "step-000003"
    files = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {"sharded/__0_0.distcp", "sharded/__1_0.distcp", "sharded/.metadata", "rng-1.pt"} <= set(files)
    assert not (ckpt / "weights").exists() and not (ckpt / "optimizer.pt").exists()
    # the final adapter, gathered: the ordinary peft folder, the same weights as one process's
    mine = load_file(out / "adapter_model.safetensors")
    theirs = load_file(Path(one.run_dir) / "adapter_model.safetensors")
    assert sorted(mine) == sorted(theirs)
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_under_sharding_equals_one_process(shapes_root, cache, tmp_path):
    """2 micro-batches per step, gradients reduced once per window (set_requires_gradient_sync): the
    losses of one process with the same micro-batches (2 processes x 1 = 1 process x 2)."""
    common = _common(shapes_root, cache, "adapter.dropout=0.0", "train.steps=4", "train.grad_accum=2")
    one, out, _ = against_one_process(common, tmp_path, batch=1)
    got_loss, got_val = losses(out)
    assert got_loss == pytest.approx([e["loss"] for e in one.losses], rel=1e-6)
    assert got_val == pytest.approx([v["all"] for v in one.val], rel=1e-6)


@pytest.fixture(scope="module")
def straight(shapes_root, cache, tmp_path_factory) -> Path:
    """An uninterrupted 2-process sharded run, dropout on: what every interrupted one must equal."""
    out = tmp_path_factory.mktemp("sharded") / "straight"
    common = _common(shapes_root, cache, "adapter.dropout=0.1", "train.batch_size=2", "train.sharding=fsdp2")
    proc = launch(2, [*common, f"output_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _same_run(run: Path, reference: Path) -> None:
    assert logged(summary(run)["losses"]) == logged(summary(reference)["losses"])
    assert summary(run)["val"] == summary(reference)["val"]
    assert (run / "adapter_model.safetensors").read_bytes() == (
        reference / "adapter_model.safetensors"
    ).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    "failpoint, resumed_at",
    [
        ("step.forward:5@1", 3),  # rank 1 killed in the 5th step, after the checkpoint of step 3
        ("checkpoint.write:2@1", 3),  # rank 1 killed while writing its shard of step 6
    ],
)
def test_kill_9_of_one_rank_then_resume_equals_the_run_that_never_stopped(
    shapes_root, cache, tmp_path, straight, failpoint, resumed_at
):
    common = _common(shapes_root, cache, "adapter.dropout=0.1", "train.batch_size=2", "train.sharding=fsdp2")
    out = tmp_path / "run"
    proc = launch(2, [*common, f"output_dir={out}"], env={ENV: failpoint})
    assert proc.returncode != 0
    assert "process 0 of 2 lost contact with another training process" in proc.stderr, proc.stderr[-3000:]
    proc = launch(2, [*common, f"output_dir={out}", "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"step-{resumed_at:06d} at step {resumed_at}" in proc.stderr
    _same_run(out, straight)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, group",
    [
        (signal.SIGTERM, False),  # to the launcher, which passes it on to every process
        (signal.SIGINT, True),  # Ctrl-C in the terminal: to the launcher and every process at once
    ],
)
def test_a_signal_to_the_launch_saves_and_resume_equals_the_run_that_never_stopped(
    shapes_root, cache, tmp_path, straight, signum, group
):
    common = _common(shapes_root, cache, "adapter.dropout=0.1", "train.batch_size=2", "train.sharding=fsdp2")
    out = tmp_path / "run"
    cmd = _launch_cmd(2, [*common, f"output_dir={out}"], port=_port())
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-000003").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)  # the signal comes when it comes: here, during step 4
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode != 0
    assert f"{name}: stopped after step" in err, err[-3000:]
    stopped = int(re.search(rf"{name}: stopped after step (\d+)", err).group(1))
    assert 3 <= stopped < 8
    done = launch(2, [*common, f"output_dir={out}", "--resume", "auto"])
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"at step {stopped}" in done.stderr
    _same_run(out, straight)


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_with_another_number_of_processes_gives_the_same_losses(
    shapes_root, cache, tmp_path, before, after
):
    """The global batch stays 4 (2 x 2 or 1 x 4); dropout off: with it, each process draws its own
    masks, and a process count change draws other ones (the RNG of rank r continues on rank r)."""
    common = _common(shapes_root, cache, "adapter.dropout=0.0", "train.sharding=fsdp2")
    batch = {1: "train.batch_size=4", 2: "train.batch_size=2"}
    reference = tmp_path / "reference"
    proc = launch(before, [*common, batch[before], f"output_dir={reference}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(reference / "checkpoints" / "step-000003", out / "checkpoints" / "step-000003")
    proc = launch(after, [*common, batch[after], f"output_dir={out}", "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step-000003 at step 3" in proc.stderr
    got, want = summary(out), summary(reference)
    assert [e["loss"] for e in got["losses"]] == pytest.approx([e["loss"] for e in want["losses"]], rel=1e-6)
    assert [v["all"] for v in got["val"]] == pytest.approx([v["all"] for v in want["val"]], rel=1e-6)
    mine = load_file(out / "adapter_model.safetensors")
    theirs = load_file(reference / "adapter_model.safetensors")
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_sharded_full_fine_tune_with_evaluation_equals_one_process(shapes_root, cache, tmp_path):
    """Florence-2, every weight trained (the vision tower too, activations checkpointed), generation
    every 3 steps (the weights gathered for it) and best/ kept: the consolidated model is one
    process's, tied embeddings saved once."""
    common = _common(
        shapes_root,
        cache,
        "model.family=florence2",
        "adapter.method=full",
        "adapter.freeze_vision=false",  # the vision blocks sharded and trained too
        "train.gradient_checkpointing=true",
        "adapter.dropout=0.0",
        "eval.every=3",
        "eval.per_task=3",
        "eval.max_new_tokens=8",
    )
    one, out, err = against_one_process(common, tmp_path, batch=2)
    # 2 encoder, 2 decoder and 2 vision blocks (DaViT's), then the model
    assert "train.sharding=fsdp2: 6 blocks and the model sharded over 2 processes" in err
    held_p, all_p, _, _ = _held(err)
    assert 0.5 <= held_p / all_p < 0.501
    got = summary(out)
    assert [e["loss"] for e in got["losses"]] == pytest.approx([e["loss"] for e in one.losses], rel=1e-6)
    assert len(got["evals"]) == len(one.evals) == 3  # steps 3, 6 and the last, 8
    for mine, theirs in zip(got["evals"], one.evals, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-6)
    assert got["best"]["step"] == one.best["step"]
    for folder in ("model", "best"):
        mine = load_file(out / folder / "model.safetensors")
        theirs = load_file(Path(one.run_dir) / folder / "model.safetensors")
        assert sorted(mine) == sorted(theirs)
        for k in theirs:
            torch.testing.assert_close(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


FAKE_SRUN = """#!/bin/bash
# Slurm's srun for a 2-node job on one host: the task once per "node", SLURM_NODEID 0 and 1; a
# SIGTERM is passed on to the tasks, as srun does
while [[ "$1" == --* ]]; do shift; done
SLURM_NODEID=0 "$@" & first=$!
SLURM_NODEID=1 "$@" & second=$!
trap 'kill -TERM $first $second 2>/dev/null' TERM
status=0
for pid in $first $second; do
  while true; do
    wait $pid; rc=$?
    kill -0 $pid 2>/dev/null || break  # (a wait that a trapped signal cut short: wait again)
  done
  [ $rc -gt $status ] && status=$rc
done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1
[ "$1" = "requeue" ] && echo "requeue $2" >> "$(dirname "$0")/scontrol.log"
exit 0
"""


def _slurm(tmp_path: Path, config: str) -> tuple[Path, dict[str, str]]:
    """A bin folder with the fake srun and scontrol, and the environment of a 2-node job (one
    process per node) running recipes/slurm/finetune.sbatch with `config`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = _env(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_GPUS_ON_NODE": "1",
            "SLURM_JOB_NODELIST": "node[1-2]",
            "SLURM_JOB_ID": "7",
            "UVFT_PYTHON": sys.executable,
            "UVFT_LAUNCH_CONFIG": str(ROOT / "recipes/accelerate" / config),
            "UVFT_PORT": str(_port()),
            "UVFT_LAUNCH_ARGS": "--mixed_precision no --dynamo_backend no",
        }
    )
    return bin_dir, env


def _sbatch(args: list[str]) -> list[str]:
    return [
        "bash",
        str(ROOT / "recipes/slurm/finetune.sbatch"),
        str(ROOT / "recipes/demo.yaml"),
        *args,
        "--no-progress",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("config, sharding", [("multinode.yaml", "null"), ("fsdp.yaml", "fsdp2")])
def test_a_two_node_slurm_job_on_one_host_trains_as_one_machine(
    shapes_root, cache, tmp_path, config, sharding
):
    """recipes/slurm/finetune.sbatch run as a 2-node job (srun and scontrol played on one host: one
    `accelerate launch` per node, machine ranks 0 and 1, one process each, rendezvous at
    127.0.0.1), with the DDP and the FSDP launch configs: the losses of the same 2 processes
    launched on one machine."""
    common = _common(shapes_root, cache, "adapter.dropout=0.0", "train.batch_size=2")
    one_node = tmp_path / "one_node"
    proc = launch(2, [*common, f"train.sharding={sharding}", f"output_dir={one_node}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "two_nodes"
    _, env = _slurm(tmp_path, config)
    job = subprocess.run(
        _sbatch([*common, f"output_dir={out}"]),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr[-4000:]
    if sharding == "fsdp2":  # the FSDP config asks for it
        assert "the launch config asks for FSDP: train.sharding=fsdp2" in job.stderr
        assert (out / "checkpoints" / "step-000006" / "sharded").is_dir()
    got, want = summary(out), summary(one_node)
    assert [e["loss"] for e in got["losses"]] == pytest.approx([e["loss"] for e in want["losses"]], rel=1e-6)
    assert [v["all"] for v in got["val"]] == pytest.approx([v["all"] for v in want["val"]], rel=1e-6)


@pytest.mark.slow
def test_a_slurm_sigterm_stops_the_job_with_a_checkpoint_and_the_requeued_job_finishes_it(
    shapes_root, cache, tmp_path
):
    """The time limit's `--signal=B:TERM` reaches the batch script: it passes SIGTERM on to every
    training process (through srun), waits for their checkpoint, and requeues the job; the requeued
    job (the same script again) resumes and ends where a job that never stopped ends."""
    common = _common(shapes_root, cache, "adapter.dropout=0.1", "train.batch_size=2", "train.sharding=fsdp2")
    one_node = tmp_path / "one_node"
    proc = launch(2, [*common, f"output_dir={one_node}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    bin_dir, env = _slurm(tmp_path, "fsdp.yaml")
    out = tmp_path / "job"
    job = subprocess.Popen(
        _sbatch([*common, f"output_dir={out}"]),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-000003").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # to the batch shell alone, as --signal=B:TERM sends it
    stdout, stderr = job.communicate(timeout=180)
    assert job.returncode == 0, stderr[-4000:]
    assert "uvft: stopped on SIGTERM" in stdout and "requeueing job 7" in stdout, stdout + stderr[-3000:]
    assert (bin_dir / "scontrol.log").read_text() == "requeue 7\n"
    stopped = int(re.search(r"SIGTERM: stopped after step (\d+)", stderr).group(1))
    assert 3 <= stopped < 8 and (out / "checkpoints" / f"step-{stopped:06d}").is_dir()

    requeued = subprocess.run(_sbatch([*common, f"output_dir={out}"]), env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert requeued.returncode == 0, requeued.stderr[-4000:]
    assert f"at step {stopped}" in requeued.stderr
    _same_run(out, one_node)  # the same 2 processes, one stop and one resume: bitwise
