"""SIGTERM and Ctrl-C inside the process: in the middle of a step, inside a forward pass, during
set-up. (tests/faults/test_preemption.py sends them to a real `uvft finetune` process.)"""

from __future__ import annotations

import os
import signal

import pytest
from loop_runs import interrupt_after_forward, losses, recipe_for

from pipeline.train import checkpoint as ckpt
from pipeline.train import loop, setup
from pipeline.train.signals import TrainingStopped


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_step_finishes_the_step_saves_and_resumes_exactly(
    shapes_root, cache, tmp_path, monkeypatch, signum
):
    # dropout on, and a logging window (log_every=4) in progress when the signal comes at step 3
    overrides = ("adapter.dropout=0.1", "train.save_every=100", "train.log_every=4")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    before = signal.getsignal(signum)  # SIG_IGN for SIGINT in a background job, as CI may run
    real = interrupt_after_forward(monkeypatch, 3, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(
        TrainingStopped, match=r"stopped after step 3 of 6; checkpoint saved in .*step-000003"
    ) as e:
        loop.train(recipe, progress=False)
    assert e.value.exit_code == 128 + signum
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    assert signal.getsignal(signum) == before  # the handler the process had is back
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)

    def logged(summary):  # samples/s is wall-clock: everything else must be equal
        return [{k: v for k, v in e.items() if k != "samples_per_s"} for e in summary.losses]

    assert [e["step"] for e in resumed.losses] == [4, 6]
    assert logged(resumed) == logged(straight)  # the window of steps 1-4 spans the stop
    assert resumed.val == straight.val
    a, b = (p / "adapter_model.safetensors" for p in (tmp_path / "a", tmp_path / "b"))
    assert a.read_bytes() == b.read_bytes()


def test_a_signal_in_the_last_step_stops_before_the_final_evaluation(
    shapes_root, cache, tmp_path, monkeypatch
):
    """The last step is a step like the others: a signal in it saves and stops (exit 143), and the
    resumed run does the final held-out loss and artefacts, equal to a run that never stopped."""
    overrides = ("adapter.dropout=0.1", "train.save_every=100", "train.log_every=2")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    real = interrupt_after_forward(monkeypatch, 6, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(
        TrainingStopped, match=r"stopped after step 6 of 6; checkpoint saved in .*step-000006"
    ):
        loop.train(recipe, progress=False)
    assert not (tmp_path / "b" / "summary.json").exists()  # the final stage did not run
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert losses(resumed) == losses(straight)
    assert resumed.val == straight.val
    a, b = (p / "adapter_model.safetensors" for p in (tmp_path / "a", tmp_path / "b"))
    assert a.read_bytes() == b.read_bytes()


def test_ctrl_c_raised_mid_forward_saves_the_rng_the_step_began_with(
    shapes_root, cache, tmp_path, monkeypatch
):
    overrides = ("adapter.dropout=0.1", "train.save_every=100")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)

    def ctrl_c():
        raise KeyboardInterrupt

    real = interrupt_after_forward(monkeypatch, 4, ctrl_c)  # step 4's dropout masks are drawn
    with pytest.raises(KeyboardInterrupt):
        loop.train(recipe, progress=False)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert losses(resumed) == losses(straight)
    assert resumed.val[-1] == straight.val[-1]


def test_a_signal_during_set_up_stops_before_the_first_step(shapes_root, cache, tmp_path, monkeypatch):
    real = loop.held_out_loss

    def held_out_then_sigterm(*args, **kwargs):  # the held-out loss at step 0 runs before the loop
        out = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "held_out_loss", held_out_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match=r"^SIGTERM: stopped before step 1 of 6; nothing to save\.$"):
        loop.train(recipe_for(shapes_root, cache, tmp_path / "run"), progress=False)
    assert ckpt.checkpoint_dirs(tmp_path / "run") == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are gone with the run


def test_leaving_a_run_closes_its_loader_workers():
    """Workers ignore SIGTERM, so multiprocessing's exit-time terminate() cannot end them and its
    join would wait forever (a signal that cut the iterator's own shutdown short left the process
    hanging at exit): the run's StopRequest closes them while its handlers still stand."""
    import torch
    from torch.utils.data import DataLoader

    from pipeline.train.signals import StopRequest, ignore_stop_signals

    loader = DataLoader(
        list(range(64)), batch_size=4, num_workers=2, persistent_workers=True,
        worker_init_fn=ignore_stop_signals,
    )  # fmt: skip
    with StopRequest() as stop:
        batches = stop.track(iter(loader))
        assert torch.equal(next(batches), torch.tensor([0, 1, 2, 3]))
        workers = list(batches._workers)
        assert all(w.is_alive() for w in workers)
    assert not any(w.is_alive() for w in workers)


def _sigterm_before_ignoring(worker_id: int) -> None:
    """A worker_init_fn for a SIGTERM that reaches a worker in its first moments, before it ignores
    the stop signals (as a process-group SIGTERM right at a loader's start does)."""
    from pipeline.train.signals import ignore_stop_signals

    os.kill(os.getpid(), signal.SIGTERM)
    ignore_stop_signals(worker_id)


@pytest.mark.parametrize("safe", [True, False])
def test_a_sigterm_before_a_worker_ignores_it_does_not_kill_the_worker(safe):
    """torch runs a worker under its own SIGTERM handler (which dies of it) until worker_init_fn;
    StopSafeLoader forks its workers with the signal blocked, so one that came meanwhile is
    dropped. A plain DataLoader's worker dies of it and fails the batch (CI met this race)."""
    from torch.utils.data import DataLoader

    cls = setup.StopSafeLoader if safe else DataLoader
    loader = cls(list(range(16)), batch_size=4, num_workers=2, worker_init_fn=_sigterm_before_ignoring)
    if safe:
        assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    else:
        died = r"DataLoader worker \(pid.*(killed by signal: Terminated|exited unexpectedly)"
        with pytest.raises(RuntimeError, match=died):
            list(loader)


def test_a_signal_while_workers_start_reaches_the_run_once_they_have():
    """The block holds a signal for the thread that forks the workers (and so for them); sent to
    that thread, it waits, then reaches the StopRequest. (One sent to the process may go to any
    other thread meanwhile and reach the StopRequest at once, which is as good.)"""
    import threading

    from pipeline.train.signals import StopRequest, stop_signals_blocked

    with StopRequest() as stop:
        with stop_signals_blocked():
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            assert not stop.requested  # held pending while workers are forked
            assert signal.SIGTERM in signal.sigpending()
        assert stop.signum == signal.SIGTERM
