"""A run's state: what the loop works with (`Run`, set up by loop._finetune), what decides what
comes next besides weights, optimizer, scheduler, sampler and RNG (`TrainState`, in every
checkpoint), the per-task sums of token losses (`TaskLossMeter`) and what a run returns
(`RunSummary`, its summary.json)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.data.mixture import MixtureSampler
from pipeline.evaluation.evaluator import GenerationEvaluator
from pipeline.recipe import Recipe, dump
from pipeline.records import TASKS
from pipeline.train import checkpoint as ckpt
from pipeline.train import sharding
from pipeline.train.signals import StopRequest


@dataclass(kw_only=True)
class Run:
    """What the loop works with, set up by loop._finetune: built with keywords (too many fields,
    several of one type, to pass in order)."""

    recipe: Recipe
    accelerator: Any
    stop: StopRequest
    model: Any
    processor: Any
    optimizer: Any
    scheduler: Any
    sampler: MixtureSampler
    loader: Any
    val_loader: Any
    val_counted: int | None  # how many of the held-out loader's records count (None: all)
    evaluator: GenerationEvaluator | None
    state: TrainState
    meter: TaskLossMeter
    shift: bool
    resumed: bool
    compiled_losses: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None  # train.compile's token_losses
    start_step: int = 0
    saved_at: int | None = None  # the step of this process's latest save
    # "forward" until the optimizer steps (nothing of the step applied yet; the RNG as the step
    # began is `rng_before`), "update" while it steps, "done" once the step counts
    phase: str = "done"
    rng_before: dict[str, Any] | None = None
    started: float = 0.0  # when the steps of this process began, and the samples counted then
    samples_at_start: int = 0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def save(self, step: int, rng: dict[str, Any] | None = None) -> Path:
        """A checkpoint after `step` (pipeline.train.checkpoint), with the sampler's position and the
        loss-logging window in progress; `rng`: the RNG state to save instead of the current one."""
        cfg = self.recipe.train
        state = {
            **self.state.state_dict(),
            "sampler": self.sampler.state_dict(),
            "window": self.meter.state(self.accelerator),
            "processes": self.accelerator.num_processes,  # resume may change it, not the global batch
        }
        path = ckpt.save_checkpoint(
            self.recipe.run_dir,
            step,
            accelerator=self.accelerator,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state,
            keep_last=cfg.keep_last,
            recipe=dump(self.recipe),
            rng=rng,
            sharded=sharding.wanted(self.recipe),
        )
        self.saved_at = step
        return path


@dataclass
class TrainState:
    """Everything besides weights, optimizer, scheduler, sampler and RNG that decides what comes
    next and what the summary says: saved in every checkpoint's state.json."""

    step: int = 0
    samples: int = 0
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    losses: list[dict[str, Any]] = field(default_factory=list)  # one per logged step
    val: list[dict[str, Any]] = field(default_factory=list)  # held-out per-task loss over steps
    evals: list[dict[str, Any]] = field(default_factory=list)  # in-training headline metrics
    best: dict[str, Any] | None = None  # {"step", "metric", "value", "path"} of <run>/best

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name in self.__dataclass_fields__:
            if name in saved:
                setattr(self, name, saved[name])


class TaskLossMeter:
    """Sums of target-token losses and token counts per task (float64, on the device): the
    training loss over a logging window and the held-out loss both read it."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(TASKS), dtype=torch.float64, device=device)
        self.counts = torch.zeros_like(self.sums)

    def add(self, tasks: list[str], loss_sum: torch.Tensor, n_tok: torch.Tensor) -> None:
        # one index_add per batch, on the device: no per-example loop, no host sync
        idx = torch.tensor([TASKS.index(t) for t in tasks], device=self.sums.device)
        self.sums.index_add_(0, idx, loss_sum.detach().double())
        self.counts.index_add_(0, idx, n_tok.double())

    def means(self, accelerator: Any) -> dict[str, float]:
        """Per task and "all", summed over processes; the meter starts again from zero."""
        sums = torch.cat([self.sums, self.sums.sum().view(1)])
        counts = torch.cat([self.counts, self.counts.sum().view(1)])
        sums, counts = accelerator.reduce(sums, "sum"), accelerator.reduce(counts, "sum")
        self.sums.zero_(), self.counts.zero_()
        names, means, seen = [*TASKS, "all"], (sums / counts).tolist(), (counts > 0).tolist()
        return {name: mean for name, mean, s in zip(names, means, seen, strict=True) if s}

    def state(self, accelerator: Any) -> list[list[float]]:
        """The window in progress summed over processes (a checkpoint's `window`)."""
        return accelerator.reduce(torch.stack([self.sums, self.counts]), "sum").tolist()

    def load(self, saved: list[list[float]] | None, *, main: bool) -> None:
        if saved is not None and main:  # the main process holds the window's saved sums
            # positions follow TASKS, which only ever grows at its end: a checkpoint written when
            # it had fewer tasks fills the first positions
            n = len(saved[0])
            self.sums[:n] += torch.tensor(saved[0], dtype=torch.float64, device=self.sums.device)
            self.counts[:n] += torch.tensor(saved[1], dtype=torch.float64, device=self.sums.device)


@dataclass
class RunSummary:
    """What a run returns and writes as its summary.json."""

    run_dir: str
    steps: int
    seconds: float
    samples: int
    samples_per_s: float
    trainable_params: int
    total_params: int
    dropped_long_targets: int
    nonfinite_skipped: int
    losses: list[dict[str, Any]] = field(default_factory=list)  # one per logged step
    val: list[dict[str, Any]] = field(default_factory=list)  # held-out per-task loss over steps
    base_model: str = ""
    evals: list[dict[str, Any]] = field(default_factory=list)  # in-training headline metrics over steps
    best: dict[str, Any] | None = None  # {"step", "metric", "value", "path"} of <run>/best
    mixture: dict[str, Any] | None = None  # {"planned": {source: share}, "draws": {source: count}}
