"""The model a run starts from: the recipe's hub id or folder, or uvft's tiny model, built from
the records' text and, with model.tiny.base_steps, given a cached base stage (full training that
stands in for a pretrained foundation model). The trainer is passed in: the loop uses this module."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import models
from pipeline.recipe import AdapterSection, Recipe, dump, expand_path

logger = logging.getLogger(__name__)


def base_model_path(
    recipe: Recipe, records: Any, *, progress: bool, accelerator: Any, trainer: Callable[..., Any]
) -> str:
    """The model the run starts from: the recipe's hub id or folder, or uvft's tiny model (built on
    the spot from the records' text and, with model.tiny.base_steps, given a cached base stage
    that `trainer`, the training loop's `train`, runs)."""
    if recipe.model.id is not None:
        return recipe.model.id
    tiny = recipe.model.tiny
    family = models.get(recipe.model.family)
    texts = sorted({t for ds in records.values() for t in (*ds["prompt"], *ds["target"])})
    # the builder's code is part of the key: a changed initialisation must not reuse a stale model
    code = [hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest() for m in (family, models.common)]
    key = hashlib.sha256(
        json.dumps([recipe.model.family, tiny.size, tiny.seed, texts, code], sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = expand_path(recipe.data.cache_dir) / "tiny"
    folder = cache / f"{recipe.model.family}-{key}"
    with accelerator.main_process_first():
        if not (folder / "config.json").is_file() and accelerator.is_main_process:
            tmp = cache / f".tmp-{folder.name}"
            family.build_tiny(tmp, texts, seed=tiny.seed, **tiny.size)
            tmp.rename(folder)
    if tiny.base_steps == 0:
        return str(folder)
    return _base_stage(recipe, folder, progress=progress, accelerator=accelerator, trainer=trainer)


def _base_stage(
    recipe: Recipe, tiny_folder: Path, *, progress: bool, accelerator: Any, trainer: Callable[..., Any]
) -> str:
    """Full training of the tiny model (a stand-in for a pretrained foundation model), run once
    and cached under a key of everything that decides it."""
    tiny = recipe.model.tiny
    stage = recipe.model_copy(deep=True)
    stage.name, stage.output_dir = "base", None  # the fine-tune's name and folder don't decide the base
    stage.model.id = str(tiny_folder)
    # full training, and the vision tower too: with random weights it has everything to learn
    stage.adapter = AdapterSection(method="full", freeze_vision=False)
    stage.train.steps = tiny.base_steps
    stage.train.lr = tiny.base_lr
    stage.train.val_every = 0
    stage.eval.every = 0
    stage.train.trackers = []
    if tiny.base_sources is not None:
        stage.data.sources = [s for s in stage.data.sources if s.name in tiny.base_sources]
        if stage.mixture.weights:
            stage.mixture.weights = {k: v for k, v in stage.mixture.weights.items() if k in tiny.base_sources}
    key = hashlib.sha256((dump(stage) + str(tiny_folder)).encode()).hexdigest()[:16]
    out = expand_path(recipe.data.cache_dir) / "base" / f"{recipe.model.family}-{key}"
    stage.output_dir = str(out)
    if not (out / "model" / "config.json").is_file():
        logger.info(
            "base stage: full training of the tiny model for %d steps (cached in %s)", tiny.base_steps, out
        )
        _base_stage_train(stage, trainer, progress=progress, accelerator=accelerator)
    return str(out / "model")


def _base_stage_train(
    stage: Recipe, trainer: Callable[..., Any], *, progress: bool, accelerator: Any
) -> None:
    # resume="auto": an interrupted base stage continues where it stopped
    trainer(stage, resume="auto", progress=progress, accelerator=accelerator)
