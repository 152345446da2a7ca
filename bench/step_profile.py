"""Where a training step's time goes: uvft's loop and the guides' naive loop (bench/train_step.py),
phase by phase, on the same model, rows and batch size, in one process.

Phases, wall time per step (the CPU runs them one after the other; on CUDA the phases would need
synchronising, so this is a CPU profile):
- data: waiting for the next batch (the collator, in workers for uvft, inline for the naive loop);
- to device: uvft's transfer and pixel finishing (the naive loop has none on CPU);
- forward: the model's forward; loss: what the loss adds outside it (uvft's cross-entropy at label
  positions; the naive loop's loss is computed inside the model's forward);
- backward; optimizer: clip, step, schedule, zero_grad;
- bookkeeping: the rest of the step and of the loop around it (loss meter, logging, progress bar).

    python bench/step_profile.py [--size 50m] [--family paligemma] [--steps 12] [--warmup 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from common import report
from train_step import SIZES, _base, _recipe, guide_setup, run_uvft

from pipeline.demo import shapes
from pipeline.train import loop, signals

PHASES = ("data", "to device", "forward", "loss", "backward", "optimizer", "bookkeeping")


class Clock:
    """Seconds per phase, counted only after the warm-up steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.step, self.spent = warmup, 0, defaultdict(float)
        self.marks: list[float] = []
        self.active = True  # uvft's loop: only inside a step (not the held-out loss at the run's end)

    @property
    def counting(self) -> bool:
        return self.active and self.step >= self.warmup

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.counting:
                self.spent[name] += time.perf_counter() - t0

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            with self.phase(name):
                return fn(*a, **k)

        return timed

    def end_step(self) -> None:
        self.marks.append(time.perf_counter())
        self.step += 1

    def per_step(self) -> dict[str, float]:
        """Milliseconds per step by phase; bookkeeping is what the named phases leave of the total."""
        steps = len(self.marks) - self.warmup
        total = self.marks[-1] - self.marks[self.warmup - 1]
        out = {p: 1000 * self.spent[p] / steps for p in PHASES if p != "bookkeeping"}
        out["bookkeeping"] = 1000 * total / steps - sum(out.values())
        out["total"] = 1000 * total / steps
        return out


def forward_clock(model: torch.nn.Module, clock: Clock) -> None:
    """Time the model's forward with hooks on the outermost module."""
    starts: list[float] = []

    def pre(*_):
        starts.append(time.perf_counter())

    def post(*_):
        started = starts.pop()
        if clock.counting:
            clock.spent["forward"] += time.perf_counter() - started

    model.register_forward_pre_hook(pre)
    model.register_forward_hook(post)


def profile_uvft(recipe, warmup: int) -> dict[str, float]:
    clock = Clock(warmup)
    real_step, real_track, real_dev = loop._step, signals.StopRequest.track, loop._to_device
    real_losses = loop.token_losses

    def track(self, iterator):
        tracked = real_track(self, iterator)

        class Timed:
            def __iter__(self):
                return self

            def __next__(self):
                with clock.phase("data"):
                    return next(tracked)

        return Timed()

    def timed_losses(real_losses):
        def losses(model, batch, *, shift):
            t0 = time.perf_counter()
            forward_before = clock.spent["forward"]
            out = real_losses(model, batch, shift=shift)
            if clock.counting:  # the whole call less the model's forward
                clock.spent["loss"] += time.perf_counter() - t0 - (clock.spent["forward"] - forward_before)
            return out

        return losses

    def step(run, batches):
        if not getattr(run, "_profiled", False):
            run._profiled = True
            forward_clock(run.model, clock)
            acc, opt = run.accelerator, run.optimizer
            acc.backward = clock.wrap("backward", acc.backward)
            acc.clip_grad_norm_ = clock.wrap("optimizer", acc.clip_grad_norm_)
            opt.step = clock.wrap("optimizer", opt.step)
            opt.zero_grad = clock.wrap("optimizer", opt.zero_grad)
            run.scheduler.step = clock.wrap("optimizer", run.scheduler.step)
        clock.active = True
        real_step(run, batches)
        clock.active = False
        clock.end_step()
        if run.state.step == run.recipe.train.steps:  # the wrappers must not reach the checkpoint
            for obj in (run.accelerator, run.optimizer, run.scheduler):
                for name in ("backward", "clip_grad_norm_", "step", "zero_grad"):
                    vars(obj).pop(name, None)

    clock.active = False
    loop._step, signals.StopRequest.track = step, track
    loop._to_device, loop.token_losses = clock.wrap("to device", real_dev), timed_losses(real_losses)
    try:
        loop.train(recipe, progress=False)
    finally:
        loop._step, signals.StopRequest.track = real_step, real_track
        loop._to_device, loop.token_losses = real_dev, real_losses
    return clock.per_step()


def profile_naive(recipe, base_model: str, rows: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    model, opt, sched, loader = guide_setup(recipe, base_model, rows)
    clock = Clock(warmup)
    forward_clock(model, clock)
    batches = iter(loader)
    while True:
        with clock.phase("data"):
            batch = next(batches, None)
        if batch is None:
            break
        loss = model(**batch).loss
        with clock.phase("backward"):
            loss.backward()
        with clock.phase("optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad()
        loss.item()
        clock.end_step()
    return clock.per_step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="50m", choices=list(SIZES))
    ap.add_argument("--family", default="paligemma", choices=["paligemma", "florence2"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        shapes.generate(data, n_train=args.steps * args.batch, n_val=16, image_size=64, progress=False)

        def recipe(name: str):
            size = SIZES[args.size][args.family]
            return _recipe(
                data, Path(tmp) / "cache", Path(tmp) / name, args.family, size, args.steps, args.batch
            )

        run = run_uvft(recipe("rows"))[2]["run"]  # the rows uvft draws, for the naive loop
        rows = [run.loader.dataset[i] for i in run.sampler.global_rows(0, args.steps * args.batch)]
        base = run.recipe.model.id or str(_base(recipe("rows")))
        naive = profile_naive(recipe("naive"), base, rows, args.warmup)
        uvft = profile_uvft(recipe("uvft"), args.warmup)
    out = {"uvft": uvft, "naive": naive}
    table_rows = [[p, naive[p], uvft[p], uvft[p] - naive[p]] for p in [*PHASES, "total"]]
    name = f"{args.family} {args.size}, batch {args.batch}"
    headers = [f"phase ({name}), ms/step", "naive", "uvft", "uvft - naive"]
    report(
        "step_profile",
        headers,
        table_rows,
        f"ratio (naive / uvft step time): {naive['total'] / uvft['total']:.2f}x",
        summary=out,
    )


if __name__ == "__main__":
    main()
