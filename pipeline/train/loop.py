"""The training loop: one explicit Accelerate loop, top to bottom.

records -> task-balanced sampler -> collator -> model (LoRA or full) -> token-averaged loss ->
accumulate / backward / clip / step -> log, checkpoint, held-out loss -> adapter in the run folder.

The loss is the sum of target-token cross-entropies over a whole optimizer step (all
micro-batches of the accumulation window, all processes) divided by the number of target tokens
in it, so one process with batch 2b and two processes with batch b see the same loss.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline import models
from pipeline.data.build import build
from pipeline.data.collate import Collator, drop_long_targets, measure_targets
from pipeline.data.mixture import MixtureSampler, bucket_keys, groups_from_sources
from pipeline.errors import UvftError
from pipeline.evaluation.evaluator import GenerationEvaluator, headline_entry
from pipeline.evaluation.score import first_per_task, headline
from pipeline.failpoints import failpoint
from pipeline.models import pixels
from pipeline.models.loss import target_tokens, token_losses
from pipeline.models.spec import spec_from_records
from pipeline.recipe import Recipe, changes, dump
from pipeline.records import TASKS
from pipeline.runtime import make_accelerator, model_dtype
from pipeline.train import base_model
from pipeline.train import checkpoint as ckpt
from pipeline.train.optim import make_optimizer, make_scheduler
from pipeline.train.signals import StopRequest, TrainingStopped, ignore_stop_signals, stop_signals_blocked

logger = logging.getLogger(__name__)


class NonFiniteLossError(UvftError):
    """Too many non-finite losses in a row: the run stopped (a checkpoint was saved first)."""


@dataclass
class RunSummary:
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


# --- set-up --------------------------------------------------------------------------------------


# What may change when a run is resumed: how long it goes on (the LR schedule is then laid over
# the new total), how it saves, logs and evaluates, and where the data and caches are. Anything
# else (lr, batch size, data, model, adapter, mixture, seed...) decides the run already trained.
RESUMABLE = (
    "train.steps",
    "train.save_every",
    "train.keep_last",
    "train.log_every",
    "train.val_every",
    "train.trackers",
    "train.wandb_project",
    "train.num_workers",
    "train.pin_memory",
    "train.persistent_workers",
    "train.max_nonfinite",
    "eval.",
    "data.root",
    "data.cache_dir",
    "output_dir",
    "model.attn_implementation",
)


def check_resume_recipe(recipe: Recipe, run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that changes what decides it, listing the changes;
    the run's recipe.yaml is then rewritten by the resumed run, so what it records stays true."""
    import yaml

    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text())
    diffs = [d for d in changes(before, recipe) if not d[0].startswith(RESUMABLE)]
    if diffs:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise UvftError(
            f"cannot resume {run_dir} with a changed recipe: {listed}{more}. These decide the run "
            "already trained; start over with --overwrite or another output_dir. What may change on "
            "resume: train.steps (to extend a run), save/log/eval settings, data.root, data.cache_dir"
        )


def check_sharding(accelerator: Any, resume_from: Path | None) -> None:
    """Say what a sharded launch config really gives, and refuse what is not supported: resuming
    a sharded run (uvft's checkpoints are written by the main process, which under FSDP and
    DeepSpeed holds only its shard of the optimizer state)."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    asked = [
        n
        for n, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
        if os.environ.get(env, "").lower() == "true"
    ]
    if asked and not sharded and accelerator.is_main_process:
        logger.warning(
            "the launch config asks for %s, but Accelerate shards only on accelerators: on %s this run "
            "is plain data parallel over %d processes (each holds the whole model and optimizer)",
            asked[0],
            accelerator.device.type,
            accelerator.num_processes,
        )
    if sharded and resume_from is not None:
        raise UvftError(
            f"cannot resume {resume_from} under {accelerator.distributed_type.value}: resuming a "
            "sharded run is not supported yet (its checkpoints do not hold every process's optimizer "
            "shard); start over with --overwrite, or train with the DDP config "
            "(recipes/accelerate/ddp.yaml), whose runs resume exactly"
        )


def apply_adapter(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    family = models.get(recipe.model.family)
    a = recipe.adapter
    if a.freeze_vision:
        models.freeze_vision(model)
    if a.method == "full":
        return model
    from peft import get_peft_model

    settings = a.model_dump(include={"r", "alpha", "dropout", "modules_to_save"})
    config = models.lora_config(family.LORA_TARGETS, a.preset, **settings)
    # get_peft_model wraps in place: from here on, only the adapter is ever saved
    return get_peft_model(model, config)


# --- loss ----------------------------------------------------------------------------------------


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch on `device`, its uint8 pixels finished there (Collator(defer_pixels=True))."""
    return pixels.finish(
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    )


# --- the loop ------------------------------------------------------------------------------------


def train(
    recipe: Recipe,
    *,
    resume: str | None = None,
    progress: bool = True,
    accelerator: Any | None = None,
    cpu: bool = False,
    overwrite: bool = False,
) -> RunSummary:
    """Train a recipe (see the module doc). SIGTERM and Ctrl-C, from set-up on, stop the run at
    the next step boundary with a checkpoint (pipeline.train.signals)."""
    with StopRequest() as stop:
        try:
            summary = _finetune(recipe, resume, progress, accelerator, cpu, overwrite, stop)
            if stop.requested:
                name = signal.Signals(stop.signum or signal.SIGTERM).name
                logger.warning(
                    "%s came during the final evaluation: the run finished instead of stopping", name
                )
            return summary
        except RuntimeError as e:
            if not peer_lost(e):
                raise
            import torch.distributed as dist

            rank, world = dist.get_rank(), dist.get_world_size()
            latest = ckpt.checkpoint_dirs(recipe.run_dir)
            where = f"the latest checkpoint is {latest[-1]}" if latest else "no checkpoint was saved yet"
            first = str(e).strip().splitlines()[0][:300]
            raise PeerLostError(
                f"process {rank} of {world} lost contact with another training process, which "
                f"probably died (out of memory, killed or preempted: see its log). {where}; relaunch "
                f"with --resume auto. ({first})"
            ) from None


class PeerLostError(UvftError):
    """Another process of a multi-process run died: this one stops instead of waiting forever."""


def peer_lost(e: BaseException) -> bool:
    """Whether a RuntimeError from a collective means another process is gone (gloo: the peer
    reset or closed the connection; NCCL: a DistBackendError or a watchdog timeout)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return any(s in text for s in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))


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
        names = [*TASKS, "all"]
        return {names[i]: float(sums[i] / counts[i]) for i in range(len(names)) if counts[i] > 0}

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


def due(step: int, every: int | None, total: int) -> bool:
    """Whether periodic work (held-out loss, evaluation, a checkpoint) runs after `step`; the last
    step has its own, in the run's end."""
    return bool(every) and step % every == 0 and step != total


@torch.no_grad()
def held_out_loss(model, loader, accelerator, *, shift: bool) -> dict[str, float]:
    """Token-averaged loss per task (and overall) on the fixed held-out subset."""
    model.eval()
    meter = TaskLossMeter(accelerator.device)
    for batch in loader:
        batch = _to_device(batch, accelerator.device)
        with accelerator.autocast():
            loss_sum, n_tok = token_losses(model, batch, shift=shift)
        meter.add(batch["task"], loss_sum, n_tok)
    model.train()
    return meter.means(accelerator)


@dataclass
class Run:
    """What the loop works with, set up by `_finetune`."""

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
    evaluator: GenerationEvaluator | None
    state: TrainState
    meter: TaskLossMeter
    shift: bool
    resumed: bool
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
        cfg = self.recipe.train
        state = {
            **self.state.state_dict(),
            "sampler": self.sampler.state_dict(),
            "window": self.meter.state(self.accelerator),
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
            rng=rng,
        )
        self.saved_at = step
        return path

    def record_val(self, step: int) -> None:
        self.state.val.append(
            {"step": step, **held_out_loss(self.model, self.val_loader, self.accelerator, shift=self.shift)}
        )
        _log(self.accelerator, {f"val/{k}": v for k, v in self.state.val[-1].items() if k != "step"}, step)


def _run_folder_policy(recipe: Recipe, resume: str | None, overwrite: bool) -> None:
    """A folder with checkpoints is resumed (with an unchanged recipe) or explicitly overwritten."""
    existing = ckpt.checkpoint_dirs(recipe.run_dir)
    if existing and resume is not None:
        check_resume_recipe(recipe, recipe.run_dir)
    if existing and resume is None:
        if not overwrite:
            raise UvftError(
                f"{recipe.run_dir} already has checkpoints (latest {existing[-1].name}): pass --resume auto "
                "to continue that run, --overwrite to start over, or set output_dir"
            )
        shutil.rmtree(recipe.run_dir / "checkpoints", ignore_errors=True)  # never resume into stale ones


def build_model(recipe: Recipe, base_model: str, accelerator: Any):
    """The base model with the recipe's adapter: (model, processor, trainable, total parameters)."""
    from accelerate.utils import set_seed

    family = models.get(recipe.model.family)
    set_seed(recipe.train.seed)  # the same initial adapter weights on every process
    model, processor = family.load(
        base_model,
        dtype=model_dtype(recipe),
        attn_implementation=recipe.model.attn_implementation,
        revision=recipe.model.revision,
    )
    model = apply_adapter(model, recipe)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = models.count_parameters(model)
    if accelerator.is_main_process:
        logger.info(
            "parameters: %s trainable / %s total (%.2f%%)",
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / total,
        )
    return model, processor, trainable, total


def _prompt_chars(ds: Any) -> Any:
    """Each record's prompt length in characters, counted in Arrow (a Python list of a COCO-sized
    prompt column costs seconds of start-up)."""
    import pyarrow.compute as pc

    return pc.utf8_length(ds.with_format("arrow")["prompt"]).to_numpy()


class StopSafeLoader(DataLoader):
    """A DataLoader whose workers are forked with SIGINT/SIGTERM blocked, so that one that comes
    before their worker_init_fn ignores it cannot kill them (see signals.py). A signal to the main
    process meanwhile waits until the workers are started, then reaches the StopRequest as usual."""

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        with stop_signals_blocked():
            return super()._get_iterator()


def build_data(recipe: Recipe, records: Any, processor: Any, accelerator: Any):
    """Over-long targets dropped (and counted), the task-balanced sampler, the training and the
    held-out loaders: (train_ds, dropped, sampler, loader, val_loader)."""
    cfg, family = recipe.train, recipe.model.family
    train_ds = records[recipe.data.train_split]
    lengths = measure_targets(train_ds, processor, family)  # tokenized once, for both uses
    train_ds, dropped = drop_long_targets(train_ds, processor, family, cfg.max_target_tokens, lengths=lengths)
    if dropped:
        lengths = lengths[lengths <= cfg.max_target_tokens]
    val_ds, _ = drop_long_targets(records[cfg.val_split], processor, family, cfg.max_target_tokens)
    if dropped and accelerator.is_main_process:
        logger.warning(
            "dropped %d training records whose target exceeds train.max_target_tokens=%s",
            dropped,
            cfg.max_target_tokens,
        )
    sampler = MixtureSampler(
        groups_from_sources(train_ds["source"]),
        strategy=recipe.mixture.strategy,
        temperature=recipe.mixture.temperature,
        weights=recipe.mixture.weights,
        batch_size=cfg.batch_size,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=cfg.seed,
        lengths=bucket_keys(lengths, _prompt_chars(train_ds)) if recipe.mixture.bucket_batches else None,
        bucket_batches=recipe.mixture.bucket_batches,
    )
    loader_kwargs = dict(
        batch_size=cfg.batch_size,
        collate_fn=Collator(processor, family, max_target_tokens=cfg.max_target_tokens, defer_pixels=True),
        num_workers=cfg.num_workers,
        pin_memory=accelerator.device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        worker_init_fn=ignore_stop_signals if cfg.num_workers > 0 else None,
    )
    # the held-out subset follows the global batch: N processes of batch b score what one of N*b does
    # (shared among the tasks the held-out split has)
    n_tasks = max(1, len(set(val_ds["task"])))
    per_task = max(1, cfg.val_batches * cfg.batch_size * accelerator.num_processes // n_tasks)
    subset = first_per_task(val_ds["task"], per_task)[accelerator.process_index :: accelerator.num_processes]
    val_kwargs = {**loader_kwargs, "persistent_workers": False}
    val_loader = StopSafeLoader(
        val_ds.select(subset), shuffle=False, generator=_generator(cfg.seed), **val_kwargs
    )
    loader = StopSafeLoader(
        train_ds, sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed), **loader_kwargs
    )
    return train_ds, dropped, sampler, loader, val_loader


def _generator(seed: int) -> torch.Generator:
    # Loaders get their own generators: starting an iterator draws a seed, and drawing it from the
    # global RNG would shift dropout after a resume.
    return torch.Generator().manual_seed(seed)


def _finetune(
    recipe: Recipe,
    resume: str | None,
    progress: bool,
    accelerator: Any | None,
    cpu: bool,
    overwrite: bool,
    stop: StopRequest,
) -> RunSummary:
    """Policy and set-up: run folder, accelerator, records, base model, adapter, data, optimizer,
    resume; then the loop and the run's end."""
    cfg, run_dir = recipe.train, recipe.run_dir
    _run_folder_policy(recipe, resume, overwrite)
    accelerator = accelerator or make_accelerator(recipe, cpu=cpu)
    with accelerator.main_process_first():  # records are built once, on the main process first
        records = build(recipe, progress=progress and accelerator.is_main_process).load()
    if cfg.val_split not in records:
        raise UvftError(f"train.val_split {cfg.val_split!r} is not a split of the records: {sorted(records)}")
    base = base_model_path(recipe, records, progress=progress, accelerator=accelerator)
    model, processor, trainable, total = build_model(recipe, base, accelerator)
    train_ds, dropped, sampler, loader, val_loader = build_data(recipe, records, processor, accelerator)
    evaluator = (
        GenerationEvaluator(recipe, records[cfg.val_split], processor, accelerator)
        if recipe.eval.every
        else None
    )
    # Accelerate wraps the model (DDP) and the optimizer. Not prepared: the loader (the sampler
    # already gives each process its slice of the global sequence) and the scheduler (Accelerate
    # would step it once per process; our steps are global steps).
    optimizer = make_optimizer(model, cfg, cuda=accelerator.device.type == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = make_scheduler(optimizer, cfg)
    shift = models.get(recipe.model.family).DECODER_ONLY
    meter = TaskLossMeter(accelerator.device)
    run = Run(
        recipe,
        accelerator,
        stop,
        model,
        processor,
        optimizer,
        scheduler,
        sampler,
        loader,
        val_loader,
        evaluator,
        TrainState(),
        meter,
        shift,
        resumed=False,
    )
    _resume(run, ckpt.resolve_resume(resume, run_dir))
    if run.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(dump(recipe))
    if cfg.trackers:
        # the project name is the W&B project (train.wandb_project) and TensorBoard's run folder
        project = cfg.wandb_project if "wandb" in cfg.trackers and cfg.wandb_project else recipe.name
        accelerator.init_trackers(project, config=_flat(recipe.model_dump(mode="json")))
    if run.state.step == 0:
        run.record_val(0)
    run.started, run.samples_at_start = time.perf_counter(), run.state.samples
    _loop(run, progress=progress)
    _finish(run)
    if run.main:
        logger.info("task mixture, planned vs realised:\n%s", sampler.share_table())
    seconds = time.perf_counter() - run.started
    s = run.state
    summary = RunSummary(
        run_dir=str(run_dir),
        steps=s.step,
        seconds=round(seconds, 2),
        samples=s.samples,
        samples_per_s=round((s.samples - run.samples_at_start) / max(seconds, 1e-9), 2),
        trainable_params=trainable,
        total_params=total,
        dropped_long_targets=dropped,
        nonfinite_skipped=s.nonfinite_total,
        losses=s.losses,
        val=s.val,
        base_model=base,
        evals=s.evals,
        best=s.best,
        mixture={"planned": sampler.planned_shares(), "draws": sampler.consumed_counts()},
    )
    if run.main:
        spec = spec_from_records(recipe.model.family, base, recipe.adapter.method, train_ds)
        ckpt.save_final(accelerator.unwrap_model(model), processor, recipe, run_dir, summary.__dict__, spec)
    accelerator.wait_for_everyone()
    if cfg.trackers:
        accelerator.end_training()
    return summary


def base_model_path(recipe: Recipe, records: Any, *, progress: bool, accelerator: Any) -> str:
    """The model a run starts from (pipeline.train.base_model decides it). The tiny model's base
    stage, when it is not cached yet, is trained here first."""
    base = base_model.plan(recipe, records, accelerator)
    if base.stage is not None and not base.trained:
        logger.info(
            "base stage: full training of the tiny model for %d steps (cached in %s)",
            base.stage.train.steps,
            base.stage.output_dir,
        )
        # resume="auto": an interrupted base stage continues where it stopped
        train(base.stage, resume="auto", progress=progress, accelerator=accelerator)
    return base.path


def _resume(run: Run, path: Path | None) -> None:
    check_sharding(run.accelerator, path)
    if path is None:
        return
    saved = ckpt.load_checkpoint(
        path, accelerator=run.accelerator, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler
    )
    run.sampler.load_state_dict(saved.pop("sampler"))
    run.meter.load(saved.pop("window", None), main=run.main)  # the loss-logging window in progress
    run.state.load_state_dict(saved)
    run.resumed, run.start_step = True, run.state.step
    if run.main:
        ckpt.recover_swap(run.recipe.run_dir / "best")  # a kill while best/ was being replaced
        logger.info("resumed from %s at step %d", path, run.state.step)


def _loop(run: Run, *, progress: bool) -> None:
    """Steps until train.steps: each one token-averaged over the global batch, then what is due
    after it (log, held-out loss, evaluation, checkpoint). A signal stops it at a step boundary."""
    cfg, acc, state = run.recipe.train, run.accelerator, run.state
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        desc="train",
        disable=not (progress and run.main),
        dynamic_ncols=True,
    )
    batches = run.stop.track(iter(run.loader))
    run.model.train()
    try:
        while state.step < cfg.steps:
            # a signal any process received (SIGTERM reaches them all): stop here, between steps
            if ckpt.any_process(acc, run.stop.requested):
                _stop(run)
            _step(run, batches)
            bar.update(1)
            step = state.step
            if state.nonfinite_in_row >= cfg.max_nonfinite:
                path = run.save(step)
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_row} non-finite losses in a row at step {step} "
                    f"(train.max_nonfinite={cfg.max_nonfinite}); checkpoint saved in {path}. "
                    "Lower train.lr, enable train.max_grad_norm, or check the data."
                )
            if step % cfg.log_every == 0 or step == cfg.steps:
                means = run.meter.means(acc)
                per_task = {t: v for t, v in means.items() if t != "all"}
                rate = (state.samples - run.samples_at_start) / max(time.perf_counter() - run.started, 1e-9)
                entry = {
                    "step": step,
                    "loss": means.get("all", float("nan")),
                    **{f"loss/{t}": v for t, v in per_task.items()},
                    "lr": run.scheduler.get_last_lr()[0],
                    "samples_per_s": rate,
                }
                state.losses.append(entry)
                _log(acc, {k: v for k, v in entry.items() if k != "step"}, step)
                tasks = " ".join(f"{t[:4]} {v:.2f}" for t, v in per_task.items())
                bar.set_postfix_str(f"loss {entry['loss']:.3f} | {tasks} | {rate:.1f} samples/s")
            if due(step, cfg.val_every, cfg.steps):
                run.record_val(step)
            if run.evaluator and due(step, run.recipe.eval.every, cfg.steps):
                _evaluate(run, step)
            if due(step, cfg.save_every, cfg.steps):
                run.save(step)
    except KeyboardInterrupt:  # a second Ctrl-C, or one raised from inside a step
        bar.close()
        if run.phase == "update":  # the optimizer was mid-step: no consistent state to save
            if run.main:
                logger.warning(
                    "interrupted during the update of step %d: no checkpoint saved", state.step + 1
                )
            raise
        if run.main:
            logger.warning("interrupted at step %d: saving a checkpoint before exiting", state.step)
        # mid-forward, the RNG has drawn this step's dropout masks: save it as the step began
        run.save(state.step, rng=run.rng_before if run.phase == "forward" else None)
        raise
    bar.close()


def _step(run: Run, batches) -> None:
    """One optimizer step over train.grad_accum micro-batches; a non-finite loss on any process
    skips it on all."""
    cfg, acc, state = run.recipe.train, run.accelerator, run.state
    run.rng_before, run.phase = ckpt.rng_state(), "forward"
    window = [next(batches) for _ in range(cfg.grad_accum)]
    local_tokens = sum(target_tokens(b, run.shift) for b in window)  # counted on the host's labels
    window = [_to_device(b, acc.device) for b in window]
    global_tokens = local_tokens
    if acc.num_processes > 1:
        global_tokens = acc.reduce(torch.tensor(local_tokens, device=acc.device), "sum").item()
    finite = torch.ones((), dtype=torch.bool, device=acc.device)  # read once, after the window
    for batch in window:
        with acc.accumulate(run.model), acc.autocast():
            loss_sum, n_tok = token_losses(run.model, batch, shift=run.shift)
            # Accelerate divides by grad_accum and DDP averages over processes: undo both so the
            # gradient is that of (sum of token losses) / (tokens in the global batch).
            loss = loss_sum.sum() * acc.num_processes * cfg.grad_accum / max(global_tokens, 1)
            finite &= torch.isfinite(loss.detach())
            acc.backward(loss)
            failpoint("step.forward")
        run.meter.add(batch["task"], loss_sum, n_tok)
    finite = not ckpt.any_process(acc, not bool(finite))  # one decision for all replicas
    run.phase = "update"
    if finite:
        if cfg.max_grad_norm is not None:
            acc.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
        run.optimizer.step()
        if not acc.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule
            run.scheduler.step()
        failpoint("step.update")
        state.nonfinite_in_row = 0
    else:
        state.nonfinite_total += 1
        state.nonfinite_in_row += 1
        run.meter.sums.zero_(), run.meter.counts.zero_()
        if run.main:
            logger.warning(
                "step %d: non-finite loss, step skipped (%d in a row)", state.step + 1, state.nonfinite_in_row
            )
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    # the sampler's saved position counts finished steps, whatever the loader prefetched
    run.sampler.advance(cfg.grad_accum)
    state.samples += cfg.batch_size * cfg.grad_accum * acc.num_processes
    run.phase = "done"


def _evaluate(run: Run, step: int) -> None:
    """Generation-based evaluation; the main process logs it and keeps best/ when eval.metric
    improved (evals and best live on the main process: it alone writes state.json)."""
    started = time.perf_counter()
    metrics = run.evaluator.run(run.model, step)
    if run.main:
        cfg = run.recipe.eval
        value = headline(metrics, cfg.metric)
        entry = {"step": step, **headline_entry(metrics)}
        run.state.evals.append(entry)
        _log(run.accelerator, {f"eval/{k}": v for k, v in entry.items() if k != "step"}, step)
        best = run.state.best
        improved = best is None or value > best["value"]
        note = "new best: saved to best/" if improved else f"best {best['value']:.4f} at step {best['step']}"
        logger.info(
            "step %d: eval %s = %.4f (%s; %.1f s)",
            step,
            cfg.metric,
            value,
            note,
            time.perf_counter() - started,
        )
        if improved:
            unwrapped = run.accelerator.unwrap_model(run.model)
            path = ckpt.save_best(
                unwrapped, run.processor, run.evaluator.gen, run.recipe, step, value, metrics
            )
            run.state.best = {"step": step, "metric": cfg.metric, "value": value, "path": str(path)}
    run.accelerator.wait_for_everyone()


def _finish(run: Run) -> None:
    """The run's end: held-out loss, the last evaluation and checkpoint. A finished run resumed
    again (`make finetune` twice) has them already: recording them again would repeat them."""
    state = run.state
    if run.resumed and state.val and state.val[-1]["step"] == state.step:
        return
    if ckpt.any_process(run.accelerator, run.stop.requested):
        _stop(run)  # a signal during the last step: stop as after any step; the resumed run does the rest
    run.record_val(state.step)
    if run.evaluator:  # the periodic evaluations skip the last step: this one covers it
        _evaluate(run, state.step)
    run.save(state.step)


def _stop(run: Run) -> None:
    """Raise TrainingStopped at a step boundary, after saving the step unless it is saved already."""
    step, steps = run.state.step, run.recipe.train.steps
    signum = int(run.stop.signum or signal.SIGTERM)
    name = signal.Signals(signum).name
    if step == run.start_step:  # nothing trained by this process yet
        latest = ckpt.checkpoint_dirs(run.recipe.run_dir)
        where = f"the latest checkpoint is {latest[-1]}" if latest else "nothing to save"
        raise TrainingStopped(f"{name}: stopped before step {step + 1} of {steps}; {where}.", signum=signum)
    path = ckpt.checkpoint_dirs(run.recipe.run_dir)[-1] if run.saved_at == step else run.save(step)
    raise TrainingStopped(
        f"{name}: stopped after step {step} of {steps}; checkpoint saved in {path}. "
        "Continue with --resume auto.",
        signum=signum,
    )


def _log(accelerator: Any, values: dict[str, float], step: int) -> None:
    if accelerator.trackers:
        accelerator.log({k: v for k, v in values.items() if math.isfinite(v)}, step=step)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Trackers take flat scalars: nested keys joined with '.', lists as strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = "null" if v is None else v
        else:
            out[key] = json.dumps(v)
    return out


def print_summary(summary: RunSummary) -> None:
    """The end-of-run table: per-task held-out loss at the start and the end, and throughput."""
    from rich.console import Console
    from rich.table import Table

    first, last = summary.val[0], summary.val[-1]
    table = Table(title=f"held-out loss per task ({summary.run_dir})")
    for col in ("task", f"step {first['step']}", f"step {last['step']}", "change"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task in [*TASKS, "all"]:
        if task in first and task in last:
            table.add_row(task, f"{first[task]:.3f}", f"{last[task]:.3f}", f"{last[task] - first[task]:+.3f}")
    console = Console(width=max(Console().width, 100))
    console.print(table)
    console.print(
        f"{summary.steps} steps, {summary.samples} samples in {summary.seconds:.0f} s "
        f"({summary.samples_per_s:.1f} samples/s); trainable {summary.trainable_params:,} of "
        f"{summary.total_params:,} parameters; non-finite steps skipped: {summary.nonfinite_skipped}; "
        f"over-long targets dropped: {summary.dropped_long_targets}"
    )
