"""The training loop: one explicit Accelerate loop, top to bottom.

records -> task-balanced sampler -> collator -> model (LoRA or full) -> token-averaged loss ->
accumulate / backward / clip / step -> log, checkpoint, held-out loss -> adapter in the run folder.

The loss is the sum of target-token cross-entropies over a whole optimizer step (all
micro-batches of the accumulation window, all processes) divided by the number of target tokens
in it, so one process with batch 2b and two processes with batch b see the same loss.

Read top to bottom: `train` -> `_finetune` (set-up, through pipeline.train.setup; the run's state
is pipeline.train.state) -> `_loop` -> `_step` -> `_evaluate` -> `_finish`, then what they use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline import folders, models, runfolder
from pipeline.data.build import build
from pipeline.data.mixture import MixtureMismatch
from pipeline.errors import UvftError
from pipeline.evaluation.evaluator import GenerationEvaluator, headline_entry
from pipeline.evaluation.score import headline
from pipeline.failpoints import failpoint
from pipeline.models import pixels, vqvae
from pipeline.models.loss import target_tokens, token_losses
from pipeline.models.spec import spec_from_records
from pipeline.recipe import Recipe, dump
from pipeline.records import TASKS
from pipeline.runtime import make_accelerator
from pipeline.train import base_model, setup, sharding
from pipeline.train import checkpoint as ckpt
from pipeline.train.optim import make_optimizer, make_scheduler
from pipeline.train.signals import StopRequest, TrainingStopped
from pipeline.train.state import Run, RunSummary, TaskLossMeter, TrainState

logger = logging.getLogger(__name__)


class NonFiniteLossError(UvftError):
    """Too many non-finite losses in a row: the run stopped (a checkpoint was saved first)."""


class PeerLostError(UvftError):
    """Another process of a multi-process run died: this one stops instead of waiting forever."""


def train(
    recipe: Recipe,
    *,
    resume: str | None = None,
    progress: bool = True,
    accelerator: Any | None = None,
    cpu: bool = False,
    overwrite: bool = False,
    locked: bool = False,
) -> RunSummary:
    """Train a recipe (see the module doc). SIGTERM and Ctrl-C, from set-up on, stop the run at
    the next step boundary with a checkpoint (pipeline.train.signals). The run folder is locked
    throughout (by the first process of a launch; `locked`: the caller holds it): a second
    `uvft finetune` of the same output_dir is refused, naming the process that trains it."""
    lock = folders.locked(recipe.run_dir, "uvft finetune") if _rank_zero() and not locked else None
    with lock or contextlib.nullcontext(), StopRequest() as stop, setup.deterministic_when_compiled(recipe):
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


def _finetune(
    recipe: Recipe,
    resume: str | None,
    progress: bool,
    accelerator: Any | None,
    cpu: bool,
    overwrite: bool,
    stop: StopRequest,
) -> RunSummary:
    """Policy and set-up (pipeline.train.setup): run folder, accelerator, records, base model,
    adapter, data, optimizer, resume; then the loop and the run's end."""
    recipe = sharding.from_launch(recipe)  # an FSDP launch config asks for train.sharding
    cfg, run_dir = recipe.train, recipe.run_dir
    resume_from = setup.run_folder_policy(recipe, resume, overwrite)
    accelerator = accelerator or make_accelerator(recipe, cpu=cpu)
    if cfg.compile:  # a machine that cannot compile is told before records, base and model load
        setup.check_compiler(accelerator.device)
    with accelerator.main_process_first():  # records are built once, on the main process first
        built = build(recipe, progress=progress and accelerator.is_main_process)
        records = built.load()
    mask_vae = built.stats.mask_vae.get("path")  # the codec of masks written as codes (PaliGemma)
    setup.check_splits(recipe, records)
    base = base_model_path(recipe, records, progress=progress, accelerator=accelerator)
    model, processor, trainable, total = setup.build_model(recipe, base, accelerator)
    train_ds, dropped, sampler, loader, val_loader, val_counted = setup.build_data(
        recipe, records, processor, accelerator
    )
    recipe = setup.with_epochs(recipe, len(train_ds), accelerator.num_processes)
    cfg = recipe.train
    if accelerator.is_main_process:
        params, val_size = (trainable, total), len(records[cfg.val_split])
        logger.info(setup.banner(recipe, train_ds, val_size, params, accelerator.num_processes))
    evaluator = (
        GenerationEvaluator(
            recipe, records[cfg.val_split], processor, accelerator, vqvae.load(mask_vae) if mask_vae else None
        )
        if recipe.eval.every
        else None
    )
    # Accelerate wraps the model (DDP) and the optimizer; under train.sharding uvft shards the
    # model itself (pipeline.train.sharding) and the optimizer is made on the shards. Not prepared:
    # the loader (the sampler already gives each process its slice of the global sequence) and
    # the scheduler (Accelerate would step it once per process; our steps are global steps).
    if sharding.wanted(recipe) and accelerator.num_processes > 1:
        model = sharding.shard(model, accelerator)
        optimizer = make_optimizer(model, cfg)
    else:
        optimizer = make_optimizer(model, cfg)
        model, optimizer = accelerator.prepare(model, optimizer)
    run = Run(
        recipe=recipe,
        accelerator=accelerator,
        stop=stop,
        model=model,
        processor=processor,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg),
        sampler=sampler,
        loader=loader,
        val_loader=val_loader,
        val_counted=val_counted,
        evaluator=evaluator,
        state=TrainState(),
        meter=TaskLossMeter(accelerator.device),
        shift=models.get(recipe.model.family).DECODER_ONLY,
        resumed=False,
        compiled_losses=setup.compiled_losses(recipe, accelerator),
    )
    _resume(run, resume_from)
    if run.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(dump(recipe))
    if cfg.trackers:
        # the project name is the W&B project (train.wandb_project) and TensorBoard's run folder
        project = cfg.wandb_project if "wandb" in cfg.trackers and cfg.wandb_project else recipe.name
        accelerator.init_trackers(project, config=_flat(recipe.model_dump(mode="json")))
    if run.state.step == 0:
        _record_val(run, 0)
    run.started, run.samples_at_start = time.perf_counter(), run.state.samples
    _loop(run, progress=progress)
    _finish(run)
    if run.main:
        logger.info("task mixture, planned vs realised:\n%s", sampler.share_table())
    # a local base by its absolute path: the run's files resolve from any folder, not only this one
    recorded = runfolder.recorded_base(base)
    summary = _summary(run, base=recorded, trainable=trainable, total=total, dropped=dropped)
    # a sharded model's weights, gathered onto the main process
    weights = sharding.consolidated(model, accelerator, frozen=recipe.adapter.method == "full")
    if run.main:
        spec = spec_from_records(recipe.model.family, recorded, recipe.adapter.method, train_ds)
        unwrapped = accelerator.unwrap_model(model)
        ckpt.save_final(
            unwrapped, processor, recipe, run_dir, summary.__dict__, spec, mask_vae=mask_vae, weights=weights
        )
    accelerator.wait_for_everyone()
    if cfg.trackers:
        accelerator.end_training()
    return summary


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
            if step == run.start_step + 1 and run.main and sharding.active(run.model):
                logger.info("train.sharding=fsdp2: %s", sharding.held(run.model, run.optimizer))
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
                tasks = " ".join(f"{short_task(t)} {v:.2f}" for t, v in per_task.items())
                bar.set_postfix_str(f"loss {entry['loss']:.3f} | {tasks} | {rate:.1f} samples/s")
            if due(step, cfg.val_every, cfg.steps):
                _record_val(run, step)
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
    losses = run.compiled_losses or token_losses  # train.compile: the same function, compiled
    for i, batch in enumerate(window):
        sharding.sync_gradients(run.model, i == len(window) - 1)  # sharded: reduce once per window
        with acc.accumulate(run.model), acc.autocast():
            loss_sum, n_tok = losses(run.model, batch, shift=run.shift)
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
    with sharding.gathered(run.model):  # sharded: the whole weights on every process meanwhile
        metrics = run.evaluator.run(run.model, step)
    improved = False
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
    # a sharded model's weights are gathered by all processes together: they all learn the decision
    if sharding.active(run.model) and ckpt.any_process(run.accelerator, improved):
        weights = sharding.consolidated(
            run.model, run.accelerator, frozen=run.recipe.adapter.method == "full"
        )
    else:
        weights = None
    if run.main and improved:
        unwrapped = run.accelerator.unwrap_model(run.model)
        path = ckpt.save_best(
            unwrapped, run.processor, run.evaluator.gen, run.recipe, step, value, metrics, weights=weights
        )
        run.state.best = {"step": step, "metric": run.recipe.eval.metric, "value": value, "path": str(path)}
    run.accelerator.wait_for_everyone()


def _finish(run: Run) -> None:
    """The run's end: held-out loss, the last evaluation and checkpoint. A finished run resumed
    again (`make finetune` twice) has them already: recording them again would repeat them."""
    state = run.state
    if run.resumed and state.val and state.val[-1]["step"] == state.step:
        return
    if ckpt.any_process(run.accelerator, run.stop.requested):
        _stop(run)  # a signal during the last step: stop as after any step; the resumed run does the rest
    _record_val(run, state.step)
    if run.evaluator:  # the periodic evaluations skip the last step: this one covers it
        _evaluate(run, state.step)
    run.save(state.step)


def _summary(run: Run, *, base: str, trainable: int, total: int, dropped: int) -> RunSummary:
    """What the run returns (and writes as summary.json): its state, timing and set-up counts."""
    seconds = time.perf_counter() - run.started
    s = run.state
    return RunSummary(
        run_dir=str(run.recipe.run_dir),
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
        mixture={"planned": run.sampler.planned_shares(), "draws": run.sampler.consumed_counts()},
    )


def base_model_path(recipe: Recipe, records: Any, *, progress: bool, accelerator: Any) -> str:
    """The model a run starts from (pipeline.train.base_model decides it). The tiny model's base
    stages that are not cached yet are trained here first, in order."""
    base = base_model.plan(recipe, records, accelerator)
    for i, stage in enumerate(base.stages, 1):
        if base_model.stage_trained(stage):
            continue
        if accelerator.is_main_process:  # said once per launch, not once per process
            logger.info(
                "base stage%s: full training of the tiny model for %d steps on %s (cached in %s)",
                f" {i} of {len(base.stages)}" if len(base.stages) > 1 else "",
                stage.train.steps,
                ", ".join(s.name for s in stage.data.sources),
                stage.output_dir,
            )
        # resume="auto": an interrupted base stage continues where it stopped. Another run that
        # needs the same base stage waits for this one, then finds it trained.
        lock = folders.locked(Path(stage.output_dir), "uvft finetune (base stage)", wait=True)
        with lock if _rank_zero() else contextlib.nullcontext():
            if not base_model.stage_trained(stage):
                train(stage, resume="auto", progress=progress, accelerator=accelerator, locked=True)
    return base.path


def short_task(task: str) -> str:
    """A task's name in the progress bar: its last word's first 4 letters after the other words'
    initials ("detection" -> "dete", "region_to_category" -> "rtcate"), so the region tasks stay
    apart where a 4-letter prefix made them all "regi"."""
    *head, last = task.split("_")
    return "".join(w[0] for w in head) + last[:4]


def _rank_zero() -> bool:
    """The process that holds a run's lock: the first of a launch (known before Accelerate is)."""
    return int(os.environ.get("RANK", "0")) == 0


def _resume(run: Run, path: Path | None) -> None:
    """Restore the run from the checkpoint `path` (None: a fresh run), after refusing what cannot resume."""
    setup.check_sharding(run.accelerator, path, eval_every=run.recipe.eval.every)
    if path is None:
        return
    saved = ckpt.load_checkpoint(
        path, accelerator=run.accelerator, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler
    )
    try:
        run.sampler.load_state_dict(saved.pop("sampler"))
    except MixtureMismatch as e:
        changed = e.data_changes()
        if changed is None:
            raise UvftError(f"cannot resume from {path}: {e}") from None
        raise UvftError(
            f"cannot resume from {path}: the training data changed since this checkpoint ({changed}), "
            "so the run cannot continue the batches it was drawing; restore the data it trained on, "
            "or start over with --overwrite or another output_dir"
        ) from None
    run.meter.load(saved.pop("window", None), main=run.main)  # the loss-logging window in progress
    run.state.load_state_dict(saved)
    run.resumed, run.start_step = True, run.state.step
    if run.main:
        ckpt.recover_swap(run.recipe.run_dir / "best")  # a kill while best/ was being replaced
        logger.info("resumed from %s at step %d", path, run.state.step)


def _record_val(run: Run, step: int) -> None:
    """The held-out loss after `step`, kept in the run's state and logged."""
    run.state.val.append(
        {
            "step": step,
            **held_out_loss(
                run.model, run.val_loader, run.accelerator, shift=run.shift, counted=run.val_counted
            ),
        }
    )
    _log(run.accelerator, {f"val/{k}": v for k, v in run.state.val[-1].items() if k != "step"}, step)


@torch.no_grad()
def held_out_loss(model, loader, accelerator, *, shift: bool, counted: int | None = None) -> dict[str, float]:
    """Token-averaged loss per task (and overall) on the fixed held-out subset; `counted`: only
    the loader's first records count (a sharded run pads every process's share to one length,
    so that all run the same forward passes together)."""
    model.eval()
    meter = TaskLossMeter(accelerator.device)
    seen = 0
    for batch in loader:
        batch = _to_device(batch, accelerator.device)
        with accelerator.autocast():
            loss_sum, n_tok = token_losses(model, batch, shift=shift)
        keep = len(batch["task"]) if counted is None else max(0, min(len(batch["task"]), counted - seen))
        seen += len(batch["task"])
        if keep:
            meter.add(batch["task"][:keep], loss_sum[:keep], n_tok[:keep])
    model.train()
    return meter.means(accelerator)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch on `device`, its uint8 pixels finished there (Collator(defer_pixels=True))."""
    return pixels.finish(
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    )


def due(step: int, every: int | None, total: int) -> bool:
    """Whether periodic work (held-out loss, evaluation, a checkpoint) runs after `step`; the last
    step has its own, in the run's end."""
    return bool(every) and step % every == 0 and step != total


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
