"""A run's set-up: the checks on its folder and recipe before anything heavy starts (resume,
overwrite, sharding), the model with its adapter, and the data (over-long targets dropped, the
task-balanced sampler, the training and held-out loaders). loop._finetune calls them in order."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pipeline import models, runfolder, tasks
from pipeline.data.collate import Collator, drop_long_targets, measure_targets
from pipeline.data.mixture import MixtureSampler, bucket_keys, groups_from_sources
from pipeline.errors import UvftError
from pipeline.evaluation.score import first_per_task
from pipeline.models.loss import token_losses
from pipeline.recipe import Recipe, changes
from pipeline.runtime import model_dtype
from pipeline.train import checkpoint as ckpt
from pipeline.train import sharding
from pipeline.train.signals import ignore_stop_signals, stop_signals_blocked

logger = logging.getLogger(__name__)


def run_folder_policy(recipe: Recipe, resume: str | None, overwrite: bool) -> Path | None:
    """A folder with checkpoints is resumed (with an unchanged recipe) or explicitly overwritten.
    Returns the checkpoint to resume from (None: a fresh run)."""
    existing = ckpt.checkpoint_dirs(recipe.run_dir)
    if existing and resume is None:
        if not overwrite:
            raise UvftError(
                f"{recipe.run_dir} already has checkpoints (latest {existing[-1].name}): pass --resume auto "
                "to continue that run, --overwrite to start over, or set output_dir"
            )
        shutil.rmtree(recipe.run_dir / "checkpoints", ignore_errors=True)  # never resume into stale ones
    resume_from = ckpt.resolve_resume(resume, recipe.run_dir)
    if resume_from is not None:
        check_resume_recipe(recipe, resume_from)
    return resume_from


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
    "train.compile",  # the same step, kernels fused (losses equal to float rounding)
    "eval.",
    "data.root",
    "data.cache_dir",
    "data.max_repair_fraction",  # decides whether the build fails, never what the records hold
    "output_dir",
    "model.attn_implementation",
)


def check_resume_recipe(recipe: Recipe, checkpoint: Path) -> None:
    """Refuse to resume from `checkpoint` with a recipe that changes what decides the run, listing
    the changes. The recipe compared with is the one the checkpoint was trained with (its
    recipe.yaml); a checkpoint written before checkpoints kept one is compared with its run's
    recipe.yaml, which each run rewrites (so what it records stays true)."""
    saved, source = runfolder.read_recipe(checkpoint), checkpoint / runfolder.RECIPE
    if saved is None:
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else recipe.run_dir
        saved, source = runfolder.read_recipe(run_dir), run_dir / runfolder.RECIPE
        if saved is None:
            logger.warning(
                "%s was written before checkpoints kept their recipe, and %s is gone: the recipe it "
                "was trained with is unknown, so this one is not compared with it",
                checkpoint,
                source,
            )
            return
        logger.warning(
            "%s was written before checkpoints kept their recipe: comparing with %s", checkpoint, source
        )
    diffs = [d for d in changes(saved, recipe) if not d[0].startswith(RESUMABLE)]
    new = recipe.train.batch_size
    old = next((d[1] for d in diffs if d[0] == "train.batch_size"), new)
    problem = _global_batch_problem(checkpoint, old, new)
    if problem is None:  # the batch size made up for another process count
        diffs = [d for d in diffs if d[0] != "train.batch_size"]
    elif all(d[0] == "train.batch_size" for d in diffs):
        raise UvftError(f"cannot resume {checkpoint}: {problem}")
    if diffs:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise UvftError(
            f"cannot resume {checkpoint} with a changed recipe: {listed}{more} (compared with {source}). "
            "These decide the run already trained; start over with --overwrite or another output_dir. "
            "What may change on resume: train.steps (to extend a run), save/log/eval settings, "
            "data.root, data.cache_dir, and train.batch_size with another process count that keeps "
            "the global batch (train.batch_size x processes)"
        )


def processes() -> int:
    """How many processes this launch has (known before Accelerate is: torchrun's and Accelerate's
    launchers set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _global_batch_problem(checkpoint: Path, old: int, new: int) -> str | None:
    """What is wrong with resuming at another global batch (train.batch_size x processes) than the
    checkpoint's; None when it is the same. Another process count is fine when the batch size makes
    up for it (2 processes of b after 1 of 2b): the sampler continues the same global sequence, each
    process its slice. A checkpoint that does not say how many processes wrote it keeps its batch size."""
    try:
        saved = json.loads((checkpoint / "state.json").read_text()).get("processes")
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, int):
        return (
            None
            if old == new
            else f"train.batch_size changed ({old} -> {new}); resume with train.batch_size={old}"
        )
    now = processes()
    if old * saved == new * now:
        return None
    fits = f"train.batch_size={old * saved // now}" if (old * saved) % now == 0 else "another process count"
    return (
        f"its global batch was {old * saved} (train.batch_size {old} x {saved} processes), this launch's "
        f"is {new * now} (train.batch_size {new} x {now}); the global batch decides the run already "
        f"trained: resume with {fits}"
    )


def check_sharding(accelerator: Any, resume_from: Path | None, *, eval_every: int = 0) -> None:
    """Say what a DeepSpeed launch config really gives, and refuse what is not supported: resuming
    under DeepSpeed (uvft's checkpoints are written by the main process, which under ZeRO holds only
    its partition of the optimizer state), and generation during training under ZeRO-3 (each
    process would need every other one for each of its forward passes). FSDP launch configs get
    uvft's own sharding, which does both (pipeline.train.sharding)."""
    from accelerate.utils import DistributedType

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    asked = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if asked and not deepspeed and accelerator.is_main_process:
        logger.warning(
            "the launch config asks for DeepSpeed, but Accelerate runs it only on accelerators: on %s "
            "this run is plain data parallel over %d processes (each holds the whole model and "
            "optimizer); for sharding on any device set train.sharding=fsdp2",
            accelerator.device.type,
            accelerator.num_processes,
        )
    if deepspeed and eval_every and sharding.zero3(accelerator):
        raise UvftError(
            "eval.every under DeepSpeed ZeRO-3: generation during training is not supported there "
            "(weights partitioned across processes); set eval.every=0 and run `uvft eval` on the "
            "finished model, or train with train.sharding=fsdp2, which evaluates during training"
        )
    if deepspeed and resume_from is not None:
        raise UvftError(
            f"cannot resume {resume_from} under DeepSpeed: uvft's checkpoints do not hold every "
            "process's ZeRO partition; start over with --overwrite, or train with train.sharding=fsdp2 "
            "(recipes/accelerate/fsdp.yaml), whose sharded checkpoints resume exactly, also with "
            "another number of processes"
        )


def check_splits(recipe: Recipe, records: Any) -> None:
    """The records have the splits training needs; a missing validation split says how to carve one."""
    data, val = recipe.data, recipe.train.val_split
    if data.train_split not in records:
        raise UvftError(
            f"data.train_split {data.train_split!r} is not a split of the records: {sorted(records)}"
        )
    if val not in records:
        raise UvftError(
            f"train.val_split {val!r} is not a split of the records ({', '.join(sorted(records))}): give "
            f"the sources a {val!r} split, or carve one from {data.train_split!r} with data.val_fraction=0.1 "
            "(a seeded tenth of each source's images)"
        )


def with_epochs(recipe: Recipe, n_train: int, processes: int) -> Recipe:
    """The recipe with train.steps from train.epochs when that is set: enough global batches to see
    `epochs` times as many samples as the training split has records (with mixture weights, a source
    is then seen more or less often than once per epoch)."""
    cfg = recipe.train
    if cfg.epochs is None:
        return recipe
    steps = max(1, math.ceil(cfg.epochs * n_train / (cfg.batch_size * cfg.grad_accum * processes)))
    return recipe.model_copy(update={"train": cfg.model_copy(update={"steps": steps})})


def banner(recipe: Recipe, train_ds: Any, val_size: int, params: tuple[int, int], processes: int) -> str:
    """What a run is about to do, said before it starts: the model (and whether it is uvft's tiny
    stand-in), the adapter, the records per task, the steps and the epochs they make, the global
    batch, the learning rate and where the run is written."""
    cfg, (trainable, total) = recipe.train, params
    family = models.get(recipe.model.family).DISPLAY_NAME
    if recipe.model.id is not None:
        model = f"{family} {recipe.model.id}"
    else:
        tiny = recipe.model.tiny
        model = f"uvft's tiny {family} stand-in (model.id: null): random weights, not a pretrained model"
        if tiny.stages():
            steps = " + ".join(f"{s.steps:,}" for s in tiny.stages())
            model += f", after a {steps}-step base stage"
    a = recipe.adapter
    adapter = f"LoRA r={a.r}, alpha={a.alpha}, preset {a.preset}" if a.method == "lora" else "full fine-tune"
    counts = Counter(train_ds["task"])
    per_task = ", ".join(f"{t} {counts[t]:,}" for t in tasks.ordered(counts))
    batch = cfg.batch_size * cfg.grad_accum * processes
    epochs = cfg.steps * batch / max(len(train_ds), 1)
    long_warmup = cfg.warmup_steps >= cfg.steps
    return "\n".join(
        [
            f"run {recipe.name}: fine-tune {recipe.model.family} on {len(counts)} tasks",
            f"  model    {model} ({total:,} parameters)",
            f"  adapter  {adapter} ({trainable:,} trainable, {100 * trainable / max(total, 1):.1f}%)",
            f"  records  train {len(train_ds):,} ({per_task}); {recipe.train.val_split} {val_size:,}",
            f"  steps    {cfg.steps:,} = {epochs:.2f} epochs of the training records; global batch {batch} "
            f"({cfg.batch_size} x {cfg.grad_accum} accumulation x {processes} process"
            f"{'es' if processes > 1 else ''})",
            *([f"  sharding {_sharding_line(cfg.sharding, processes)}"] if cfg.sharding else []),
            f"  lr       {cfg.lr:g}, {cfg.schedule}, {cfg.warmup_steps} warmup steps",
            f"  output   {recipe.run_dir}",
            *(
                [f"  note     the warmup ({cfg.warmup_steps} steps) is as long as the run"]
                if long_warmup
                else []
            ),
        ]
    )


def _sharding_line(kind: str, processes: int) -> str:
    if processes == 1:
        return f"{kind}: one process holds the whole model; checkpoints sharded (resumable on more)"
    return f"{kind}: weights, gradients and optimizer state split over the {processes} processes"


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


def compiled_losses(
    recipe: Recipe, accelerator: Any
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """With train.compile, the training step's `token_losses` under torch.compile (forward, loss
    and their backward fused by Inductor); None without it. Compiled once, with dynamic sizes
    from the first batch on, so that every step runs the same kernels whatever came before it: a
    run resumed mid-way computes what the uninterrupted one did, to the bit (kernels specialised
    on the first batch's sizes and then recompiled would depend on where a process began). The
    image's sizes stay static: they never vary, and symbolic ones fail in Inductor's convolution
    lowering on Florence-2's DaViT. Only the step is compiled: the held-out loss (eval mode, no
    grad) and generation would each compile again for a handful of calls."""
    if not recipe.train.compile:
        return None  # (the loop checked the compiler before anything loaded: check_compiler)
    # dynamo's compiled code hangs on token_losses' code object, with a cache of a few entries per
    # model: a process that trains again (the tiny model's base stage, then the run) starts afresh
    torch._dynamo.reset()
    # the graph breaks inside transformers' forward (a .item() check, boolean indexing) are
    # upstream's, handled, and not for the user to act on
    logging.getLogger("torch._dynamo.variables.tensor").setLevel(logging.ERROR)
    if accelerator.is_main_process:
        logger.info("train.compile: the first step compiles the model (about a minute on a CPU)")
    compiled = torch.compile(token_losses, dynamic=True)

    def step_losses(model: torch.nn.Module, batch: dict[str, Any], *, shift: bool):
        pixels = batch.get("pixel_values")
        if isinstance(pixels, torch.Tensor):
            torch._dynamo.mark_static(pixels)
        return compiled(model, batch, shift=shift)

    return step_losses


@contextlib.contextmanager
def deterministic_when_compiled(recipe: Recipe) -> Iterator[None]:
    """With train.compile, deterministic algorithms for the run (the setting before it restored
    after). Inductor's CPU kernels accumulate some gradients with atomic adds across threads: two
    identical runs then differ in the last bits, and a resumed run cannot equal one that never
    stopped. Asked for deterministic algorithms when it compiles the forward and, at the first
    backward, the backward, it writes kernels that reproduce (warn_only: an eager op without a
    deterministic version warns instead of failing)."""
    if not recipe.train.compile:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def check_compiler(device: torch.device) -> None:
    """train.compile needs what Inductor builds kernels with: a C++ compiler for the CPU, Triton for
    CUDA. Without it the first step would fail deep inside torch: say so before anything loads."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UvftError("train.compile needs Triton on CUDA (pip install triton), or train.compile=false")
    elif device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            get_cpp_compiler()
        except InvalidCxxCompiler as e:
            raise UvftError(
                f"train.compile needs a C++ compiler on the CPU (g++ or clang++, or set CXX): {e}; "
                "or set train.compile=false"
            ) from None


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


def build_data(recipe: Recipe, records: Any, processor: Any, accelerator: Any):
    """Over-long targets dropped (and counted), the task-balanced sampler, the training and the
    held-out loaders: (train_ds, dropped, sampler, loader, val_loader, val_counted): val_counted, when
    not None, is how many of this process's held-out records count, the rest padding (sharded runs:
    every process runs the same held-out batches, each forward pass being one of all processes)."""
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
    chosen = first_per_task(val_ds["task"], per_task)
    subset = chosen[accelerator.process_index :: accelerator.num_processes]
    val_counted = None
    if sharding.wanted(recipe) and accelerator.num_processes > 1 and len(chosen):
        val_counted, width = len(subset), -(-len(chosen) // accelerator.num_processes)
        subset = [*subset, *[chosen[0]] * (width - len(subset))]
    val_kwargs = {**loader_kwargs, "persistent_workers": False}
    val_loader = StopSafeLoader(
        val_ds.select(subset), shuffle=False, generator=_generator(cfg.seed), **val_kwargs
    )
    loader = StopSafeLoader(
        train_ds, sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed), **loader_kwargs
    )
    return train_ds, dropped, sampler, loader, val_loader, val_counted


class StopSafeLoader(DataLoader):
    """A DataLoader whose workers are forked with SIGINT/SIGTERM blocked, so that one that comes
    before their worker_init_fn ignores it cannot kill them (see signals.py). A signal to the main
    process meanwhile waits until the workers are started, then reaches the StopRequest as usual."""

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        with stop_signals_blocked():
            return super()._get_iterator()


def _prompt_chars(ds: Any) -> Any:
    """Each record's prompt length in characters, counted in Arrow (a Python list of a COCO-sized
    prompt column costs seconds of start-up)."""
    import pyarrow.compute as pc

    return pc.utf8_length(ds.with_format("arrow")["prompt"]).to_numpy()


def _generator(seed: int) -> torch.Generator:
    # Loaders get their own generators: starting an iterator draws a seed, and drawing it from the
    # global RNG would shift dropout after a resume.
    return torch.Generator().manual_seed(seed)
