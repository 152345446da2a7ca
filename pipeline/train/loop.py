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
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline import models
from pipeline.data.build import build
from pipeline.data.collate import Collator, drop_long_targets
from pipeline.data.mixture import MixtureSampler, groups_from_sources
from pipeline.errors import UvftError
from pipeline.evaluation.predict import eval_generation_config, predict
from pipeline.evaluation.score import HEADLINE, first_per_task, headline, score_tasks
from pipeline.failpoints import failpoint
from pipeline.models.generation import generation_config
from pipeline.models.loss import target_tokens, token_losses
from pipeline.models.spec import ModelSpec, spec_from_records
from pipeline.recipe import Recipe, changes, dump
from pipeline.records import TASKS
from pipeline.runtime import make_accelerator, model_dtype
from pipeline.train import checkpoint as ckpt
from pipeline.train.base_model import base_model_path
from pipeline.train.optim import make_optimizer, make_scheduler
from pipeline.train.signals import StopRequest, TrainingStopped, ignore_stop_signals

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
    "train.steps", "train.save_every", "train.keep_last", "train.log_every", "train.val_every",
    "train.trackers", "train.wandb_project", "train.num_workers", "train.pin_memory",
    "train.persistent_workers", "train.max_nonfinite", "eval.", "data.root", "data.cache_dir",
    "output_dir", "model.attn_implementation",
)  # fmt: skip


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
    import os

    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    asked = [n for n, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(env, "").lower() == "true"]  # fmt: skip
    if asked and not sharded and accelerator.is_main_process:
        logger.warning(
            "the launch config asks for %s, but Accelerate shards only on accelerators: on %s this run "
            "is plain data parallel over %d processes (each holds the whole model and optimizer)",
            asked[0], accelerator.device.type, accelerator.num_processes,
        )  # fmt: skip
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
        family.freeze_vision(model)
    if a.method == "full":
        return model
    from peft import get_peft_model

    config = family.lora_config(
        a.preset, r=a.r, alpha=a.alpha, dropout=a.dropout, modules_to_save=a.modules_to_save
    )
    # get_peft_model wraps in place: from here on, only the adapter is ever saved
    return get_peft_model(model, config)


class Evaluator:
    """Generation-based evaluation during training (recipe `eval`): every process generates for its
    share of a fixed validation subset, the main process scores the gathered rows, logs the headline
    metrics, and keeps the adapter in <run>/best when `eval.metric` improved."""

    def __init__(self, recipe: Recipe, split_ds: Any, processor: Any, accelerator: Any) -> None:
        self.recipe, self.processor, self.accelerator = recipe, processor, accelerator
        rows = list(split_ds.select(first_per_task(split_ds["task"], recipe.eval.per_task)))
        self.lookup = {f"{r['source']}/{r['id']}": r for r in rows}
        self.rows = rows[accelerator.process_index :: accelerator.num_processes]
        self.gen = None

    def __call__(self, model: torch.nn.Module, step: int, state: dict[str, Any]) -> None:
        from accelerate.utils import gather_object

        acc, cfg = self.accelerator, self.recipe.eval
        unwrapped = acc.unwrap_model(model)
        if self.gen is None:
            self.gen = eval_generation_config(unwrapped, self.recipe)
        started = time.perf_counter()
        rows = predict(
            unwrapped, self.processor, self.recipe.model.family, self.rows, cfg,
            generation_config=self.gen, progress=False,
        )  # fmt: skip
        failpoint("eval.generate")
        model.train()
        rows = gather_object(rows) if acc.num_processes > 1 else rows
        if acc.is_main_process:
            metrics = score_tasks(rows, self.lookup)
            value = headline(metrics, cfg.metric)
            entry: dict[str, Any] = {"step": step}
            for task, (key, _) in HEADLINE.items():
                if task in metrics and metrics[task].get(key) is not None:
                    entry[f"{task}/{key}"] = metrics[task][key]
            if "closed_set" in metrics.get("classification", {}):
                entry["classification/closed_set_accuracy"] = metrics["classification"]["closed_set"][
                    "accuracy"
                ]
            entry["mean"] = headline(metrics, "mean")
            state["evals"].append(entry)
            _log(acc, {f"eval/{k}": v for k, v in entry.items() if k != "step"}, step)
            best = state["best"]
            improved = best is None or value > best["value"]
            note = (
                "new best: saved to best/" if improved else f"best {best['value']:.4f} at step {best['step']}"
            )
            logger.info(
                "step %d: eval %s = %.4f (%s; %.1f s)", step, cfg.metric, value, note,
                time.perf_counter() - started,
            )  # fmt: skip
            if improved:
                path = _save_best(unwrapped, self.processor, self.gen, self.recipe, step, value, metrics)
                state["best"] = {"step": step, "metric": cfg.metric, "value": value, "path": str(path)}
        # evals and best live on the main process: it alone writes state.json and summary.json
        acc.wait_for_everyone()


def _save_best(
    model, processor, gen, recipe: Recipe, step: int, value: float, metrics: dict[str, Any]
) -> Path:
    """<run>/best: adapter (or full model), processor, generation config and best.json, written
    next to it and swapped in whole, so a crash never leaves a half-written best."""
    final, tmp = recipe.run_dir / "best", recipe.run_dir / ".tmp-best"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_model(model, processor, gen, tmp)
    info = {"step": step, "metric": recipe.eval.metric, "value": value, "metrics": metrics}
    (tmp / "best.json").write_text(json.dumps(info, indent=2))
    ckpt.swap_in(tmp, final)
    return final


def _save_model(model, processor, gen, out: Path) -> None:
    """What generation needs from a run: weights (safetensors), processor, pinned generation config."""
    try:
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        gen.save_pretrained(out)
    except (OSError, RuntimeError) as e:
        raise UvftError(f"cannot save the model in {out}: {ckpt.write_failure(e, out)}") from None
    # peft writes its empty card template ("[More Information Needed]"); the card is uvft push's job
    card = out / "README.md"
    if card.is_file() and "More Information Needed" in card.read_text(encoding="utf-8"):
        card.unlink()


# --- loss ----------------------------------------------------------------------------------------


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


@torch.no_grad()
def held_out_loss(model, loader, accelerator, *, shift: bool) -> dict[str, float]:
    """Token-averaged loss per task (and overall) on the fixed held-out subset."""
    model.eval()
    sums = torch.zeros(len(TASKS) + 1, dtype=torch.float64, device=accelerator.device)
    counts = torch.zeros_like(sums)
    for batch in loader:
        batch = _to_device(batch, accelerator.device)
        with accelerator.autocast():
            loss_sum, n_tok = token_losses(model, batch, shift=shift)
        for task, ls, n in zip(batch["task"], loss_sum, n_tok, strict=True):
            sums[TASKS.index(task)] += ls.double()
            counts[TASKS.index(task)] += n
    sums[-1], counts[-1] = sums[:-1].sum(), counts[:-1].sum()
    sums, counts = accelerator.reduce(sums, "sum"), accelerator.reduce(counts, "sum")
    model.train()
    names = [*TASKS, "all"]
    return {names[i]: float(sums[i] / counts[i]) for i in range(len(names)) if counts[i] > 0}


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
            summary = _train(
                recipe, resume=resume, progress=progress, accelerator=accelerator, cpu=cpu,
                overwrite=overwrite, stop=stop,
            )  # fmt: skip
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


def _train(
    recipe: Recipe,
    *,
    resume: str | None,
    progress: bool,
    accelerator: Any | None,
    cpu: bool,
    overwrite: bool,
    stop: StopRequest,
) -> RunSummary:
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    cfg = recipe.train
    run_dir = recipe.run_dir
    existing = ckpt.checkpoint_dirs(run_dir)
    if existing and resume is not None:
        check_resume_recipe(recipe, run_dir)
    if existing and resume is None:
        if not overwrite:
            raise UvftError(
                f"{run_dir} already has checkpoints (latest {existing[-1].name}): pass --resume auto to "
                "continue that run, --overwrite to start over, or set output_dir"
            )
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # never resume into stale ones
    accelerator = accelerator or make_accelerator(recipe, cpu=cpu)
    main = accelerator.is_main_process
    family = models.get(recipe.model.family)
    shift = family.DECODER_ONLY

    # 1. records (built once, on the main process first) and the model
    with accelerator.main_process_first():
        records = build(recipe, progress=progress and main).load()
    if cfg.val_split not in records:
        raise UvftError(f"train.val_split {cfg.val_split!r} is not a split of the records: {sorted(records)}")
    base = base_model_path(recipe, records, progress=progress, accelerator=accelerator, trainer=train)
    set_seed(cfg.seed)  # the same initial adapter weights on every process
    model, processor = family.load(
        base,
        dtype=model_dtype(recipe),
        attn_implementation=recipe.model.attn_implementation,
        revision=recipe.model.revision,
    )
    model = apply_adapter(model, recipe)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = family.count_parameters(model)
    if main:
        logger.info(
            "parameters: %s trainable / %s total (%.2f%%)",
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / total,
        )

    # 2. data: over-long targets dropped (and counted), a task-balanced sampler, the collator
    train_ds, dropped = drop_long_targets(
        records[recipe.data.train_split], processor, recipe.model.family, cfg.max_target_tokens
    )
    val_ds, _ = drop_long_targets(
        records[cfg.val_split], processor, recipe.model.family, cfg.max_target_tokens
    )
    if dropped and main:
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
    )
    collator = Collator(processor, recipe.model.family, max_target_tokens=cfg.max_target_tokens)
    cuda = accelerator.device.type == "cuda"
    loader_kwargs = dict(
        batch_size=cfg.batch_size,
        collate_fn=collator,
        num_workers=cfg.num_workers,
        pin_memory=cuda if cfg.pin_memory is None else cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        worker_init_fn=ignore_stop_signals if cfg.num_workers > 0 else None,
    )
    # the held-out subset follows the global batch: N processes of batch b score what one of N*b does
    per_task = max(1, cfg.val_batches * cfg.batch_size * accelerator.num_processes // len(TASKS))
    subset = first_per_task(val_ds["task"], per_task)[accelerator.process_index :: accelerator.num_processes]
    # Loaders get their own generators: starting an iterator draws a seed, and drawing it from the
    # global RNG would shift dropout after a resume.
    val_loader = DataLoader(
        val_ds.select(subset),
        shuffle=False,
        generator=torch.Generator().manual_seed(cfg.seed),
        **{**loader_kwargs, "persistent_workers": False},
    )

    # the in-training evaluation: generation on a fixed subset, each process its share
    evaluator = (
        Evaluator(recipe, records[cfg.val_split], processor, accelerator) if recipe.eval.every else None
    )

    # 3. optimizer, schedule; Accelerate wraps the model (DDP) and the optimizer. Not prepared: the
    # loader (the sampler already gives each process its slice of the global sequence) and the
    # scheduler (Accelerate would step it once per process; our steps are global steps).
    optimizer = make_optimizer(model, cfg, cuda=cuda)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = make_scheduler(optimizer, cfg)

    state: dict[str, Any] = {
        "nonfinite_total": 0,
        "nonfinite_in_row": 0,
        "samples": 0,
        "losses": [],
        "val": [],
        "evals": [],
        "best": None,
    }
    step, saved_window = 0, None
    resume_from = ckpt.resolve_resume(resume, run_dir)
    check_sharding(accelerator, resume_from)
    if resume_from is not None:
        loaded = ckpt.load_checkpoint(
            resume_from, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler
        )
        step = loaded.pop("step")
        loaded.pop("format", None)
        sampler.load_state_dict(loaded.pop("sampler"))
        saved_window = loaded.pop("window", None)  # the loss-logging window in progress
        state.update(loaded)
        if main:
            ckpt.recover_swap(run_dir / "best")  # a kill while best/ was being replaced
            logger.info("resumed from %s at step %d", resume_from, step)
    loader = DataLoader(
        train_ds, sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed), **loader_kwargs
    )

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(dump(recipe))
    if cfg.trackers:
        # the project name is the W&B project (train.wandb_project) and TensorBoard's run folder
        project = cfg.wandb_project if "wandb" in cfg.trackers and cfg.wandb_project else recipe.name
        accelerator.init_trackers(project, config=_flat(recipe.model_dump(mode="json")))
    if step == 0:
        state["val"].append({"step": 0, **held_out_loss(model, val_loader, accelerator, shift=shift)})
        _log(accelerator, {f"val/{k}": v for k, v in state["val"][-1].items() if k != "step"}, 0)

    def save(at: int, rng: dict[str, Any] | None = None) -> Path:
        # the partial logging window, summed over processes (the main process restores it)
        window = accelerator.reduce(torch.stack([window_sums, window_counts]), "sum").tolist()
        return ckpt.save_checkpoint(
            run_dir, at, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
            state={**state, "sampler": sampler.state_dict(), "window": window}, keep_last=cfg.keep_last,
            rng=rng,
        )  # fmt: skip

    # 4. the loop
    model.train()
    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", disable=not (progress and main), dynamic_ncols=True
    )
    window_sums = torch.zeros(len(TASKS), dtype=torch.float64, device=accelerator.device)
    window_counts = torch.zeros_like(window_sums)
    if saved_window is not None and main:
        window_sums += torch.tensor(saved_window[0], dtype=torch.float64, device=accelerator.device)
        window_counts += torch.tensor(saved_window[1], dtype=torch.float64, device=accelerator.device)
    started, samples_at_start = time.perf_counter(), state["samples"]
    batches = stop.track(iter(loader))
    # phase: "forward" until the optimizer steps (nothing of the step is applied yet, and the RNG
    # as the step began is `rng_before`), "update" while it steps, "done" once the step counts
    phase, rng_before = "done", None
    saved_at, start_step = None, step
    try:
        while step < cfg.steps:
            # a signal any process received (SIGTERM reaches them all), during set-up or the last
            # step: stop here, at a step boundary
            if ckpt.any_process(accelerator, stop.requested):
                _stop(stop, step, start_step, cfg.steps, saved_at, save, run_dir)
            rng_before, phase = ckpt.rng_state(), "forward"
            window = [_to_device(next(batches), accelerator.device) for _ in range(cfg.grad_accum)]
            local_tokens = sum(target_tokens(b, shift) for b in window)
            global_tokens = accelerator.reduce(
                torch.tensor(local_tokens, device=accelerator.device), "sum"
            ).item()
            finite = True
            for batch in window:
                with accelerator.accumulate(model), accelerator.autocast():
                    loss_sum, n_tok = token_losses(model, batch, shift=shift)
                    # Accelerate divides by grad_accum and DDP averages over processes: undo both so
                    # the gradient is that of (sum of token losses) / (tokens in the global batch).
                    loss = loss_sum.sum() * accelerator.num_processes * cfg.grad_accum / max(global_tokens, 1)
                    finite &= bool(torch.isfinite(loss).item())
                    accelerator.backward(loss)
                    failpoint("step.forward")
                for task, ls, n in zip(batch["task"], loss_sum.detach(), n_tok, strict=True):
                    window_sums[TASKS.index(task)] += ls.double()
                    window_counts[TASKS.index(task)] += n
            finite = not ckpt.any_process(accelerator, not finite)  # one decision for all replicas
            phase = "update"
            if finite:
                if cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule
                    scheduler.step()
                failpoint("step.update")
                state["nonfinite_in_row"] = 0
            else:
                state["nonfinite_total"] += 1
                state["nonfinite_in_row"] += 1
                window_sums.zero_(), window_counts.zero_()
                if main:
                    logger.warning(
                        "step %d: non-finite loss, step skipped (%d in a row)",
                        step + 1,
                        state["nonfinite_in_row"],
                    )
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # the sampler's saved position counts finished steps, whatever the loader prefetched
            sampler.advance(cfg.grad_accum)
            state["samples"] += cfg.batch_size * cfg.grad_accum * accelerator.num_processes
            phase = "done"
            bar.update(1)

            if state["nonfinite_in_row"] >= cfg.max_nonfinite:
                path = save(step)
                raise NonFiniteLossError(
                    f"{state['nonfinite_in_row']} non-finite losses in a row at step {step} "
                    f"(train.max_nonfinite={cfg.max_nonfinite}); checkpoint saved in {path}. "
                    "Lower train.lr, enable train.max_grad_norm, or check the data."
                )
            if step % cfg.log_every == 0 or step == cfg.steps:
                sums = accelerator.reduce(window_sums.clone(), "sum")
                counts = accelerator.reduce(window_counts.clone(), "sum")
                window_sums.zero_(), window_counts.zero_()
                per_task = {t: float(sums[i] / counts[i]) for i, t in enumerate(TASKS) if counts[i] > 0}
                total_loss = float(sums.sum() / counts.sum()) if counts.sum() > 0 else float("nan")
                rate = (state["samples"] - samples_at_start) / max(time.perf_counter() - started, 1e-9)
                entry = {"step": step, "loss": total_loss, **{f"loss/{t}": v for t, v in per_task.items()},
                         "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}  # fmt: skip
                state["losses"].append(entry)
                _log(accelerator, {k: v for k, v in entry.items() if k != "step"}, step)
                bar.set_postfix_str(
                    f"loss {total_loss:.3f} | " + " ".join(f"{t[:4]} {v:.2f}" for t, v in per_task.items())
                    + f" | {rate:.1f} samples/s"
                )  # fmt: skip
            if cfg.val_every and step % cfg.val_every == 0 and step != cfg.steps:
                state["val"].append(
                    {"step": step, **held_out_loss(model, val_loader, accelerator, shift=shift)}
                )
                _log(accelerator, {f"val/{k}": v for k, v in state["val"][-1].items() if k != "step"}, step)
            if evaluator and step % recipe.eval.every == 0 and step != cfg.steps:
                evaluator(model, step, state)
            if step % cfg.save_every == 0 and step != cfg.steps:
                save(step)
                saved_at = step
    except KeyboardInterrupt:  # a second Ctrl-C, or one raised from inside a step
        bar.close()
        if phase == "update":  # the optimizer was mid-step: no consistent state to save
            if main:
                logger.warning("interrupted during the update of step %d: no checkpoint saved", step + 1)
            raise
        if main:
            logger.warning("interrupted at step %d: saving a checkpoint before exiting", step)
        # mid-forward, the RNG has drawn this step's dropout masks: save it as the step began
        save(step, rng=rng_before if phase == "forward" else None)
        raise
    bar.close()

    # 5. the end: held-out loss, checkpoint, and the artefacts a user takes away. A finished run
    # resumed again (`make finetune` twice) has them already: recording them again would repeat them.
    finished_before = resume_from is not None and bool(state["val"]) and state["val"][-1]["step"] == step
    if not finished_before and ckpt.any_process(accelerator, stop.requested):
        # a signal during the last step: stop as after any step; the resumed run does the rest
        _stop(stop, step, start_step, cfg.steps, saved_at, save, run_dir)
    if not finished_before:
        state["val"].append({"step": step, **held_out_loss(model, val_loader, accelerator, shift=shift)})
        _log(accelerator, {f"val/{k}": v for k, v in state["val"][-1].items() if k != "step"}, step)
        if evaluator:  # the periodic evaluations skip the last step: this one covers it
            evaluator(model, step, state)
        save(step)
    if main:
        logger.info("task mixture, planned vs realised:\n%s", sampler.share_table())
    seconds = time.perf_counter() - started
    summary = RunSummary(
        run_dir=str(run_dir),
        steps=step,
        seconds=round(seconds, 2),
        samples=state["samples"],
        samples_per_s=round((state["samples"] - samples_at_start) / max(seconds, 1e-9), 2),
        trainable_params=trainable,
        total_params=total,
        dropped_long_targets=dropped,
        nonfinite_skipped=state["nonfinite_total"],
        losses=state["losses"],
        val=state["val"],
        base_model=base,
        evals=state["evals"],
        best=state["best"],
        mixture={"planned": sampler.planned_shares(), "draws": sampler.consumed_counts()},
    )
    if main:
        spec = spec_from_records(recipe.model.family, base, recipe.adapter.method, train_ds)
        _save_final(accelerator.unwrap_model(model), processor, recipe, run_dir, summary, spec)
    accelerator.wait_for_everyone()
    if cfg.trackers:
        accelerator.end_training()
    return summary


def _stop(stop: StopRequest, step: int, start_step: int, steps: int, saved_at, save, run_dir: Path):
    """Raise TrainingStopped at a step boundary, after saving the step unless it is saved already."""
    signum = int(stop.signum or signal.SIGTERM)
    name = signal.Signals(signum).name
    if step == start_step:  # nothing trained by this process yet
        latest = ckpt.checkpoint_dirs(run_dir)
        where = f"the latest checkpoint is {latest[-1]}" if latest else "nothing to save"
        raise TrainingStopped(f"{name}: stopped before step {step + 1} of {steps}; {where}.", signum=signum)
    path = ckpt.checkpoint_dirs(run_dir)[-1] if saved_at == step else save(step)
    raise TrainingStopped(
        f"{name}: stopped after step {step} of {steps}; checkpoint saved in {path}. "
        "Continue with --resume auto.",
        signum=signum,
    )


def _save_final(
    model, processor, recipe: Recipe, run_dir: Path, summary: RunSummary, spec: ModelSpec
) -> None:
    """Adapter (or full model) + processor + pinned generation config + uvft.json (what inference
    needs: pipeline.models.spec) + resolved recipe + summary."""
    out = run_dir / "model" if recipe.adapter.method == "full" else run_dir
    _save_model(
        model, processor, generation_config(model, max_new_tokens=recipe.train.max_target_tokens or 256), out
    )
    spec.save(out)
    (run_dir / "recipe.yaml").write_text(dump(recipe))
    (run_dir / "summary.json").write_text(json.dumps(summary.__dict__, indent=2))
    logger.info("saved %s to %s", "model" if recipe.adapter.method == "full" else "adapter", out)


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
