"""What model a run starts from: the recipe's hub id or folder, or uvft's tiny model, built on the
spot from the records' text and, with model.tiny.base_steps, given a base stage (full training
that stands in for a pretrained foundation model) cached under a key of everything that decides
it. This module decides what the base model is and where it lives; it does not train: the loop
runs a base stage that is not cached yet (loop.base_model_path)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import folders, models
from pipeline.recipe import AdapterSection, Recipe, dump, expand_path


@dataclass(frozen=True)
class BaseModel:
    """The model a run starts from (`path`: a hub id or a folder) and, when that is the tiny
    model's base stage, the recipe of the training that writes it (`stage`, whose output_dir
    holds `path`)."""

    path: str
    stage: Recipe | None = None

    @property
    def trained(self) -> bool:
        """False for a base stage not cached yet: `stage` must run before `path` can be loaded."""
        return self.stage is None or (Path(self.path) / "config.json").is_file()


def plan(recipe: Recipe, records: Any, accelerator: Any) -> BaseModel:
    """The recipe's model id; else the tiny model's folder (built here when it is not cached) or,
    with model.tiny.base_steps, its base stage."""
    if recipe.model.id is not None:
        return BaseModel(recipe.model.id)
    folder = _tiny_model(recipe, records, accelerator)
    if recipe.model.tiny.base_steps == 0:
        return BaseModel(str(folder))
    stage = _base_stage(recipe, folder)
    return BaseModel(str(Path(stage.output_dir) / "model"), stage)


def _tiny_model(recipe: Recipe, records: Any, accelerator: Any) -> Path:
    """uvft's tiny model of the recipe's family, built once from the records' text and cached under
    a key of everything that decides it."""
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
            # one builder at a time (another run of the same recipe waits, then finds it built)
            with folders.locked(folder, "uvft finetune (tiny model)", wait=True):
                if not (folder / "config.json").is_file():
                    with folders.writing(folder, "uvft finetune (tiny model)", locked_already=True) as tmp:
                        family.build_tiny(tmp, texts, seed=tiny.seed, **tiny.size)
    return folder


def _base_stage(recipe: Recipe, tiny_folder: Path) -> Recipe:
    """The recipe of the base stage: full training of the tiny model (a stand-in for a pretrained
    foundation model), its output_dir a cache folder named by a key of everything that decides it."""
    tiny = recipe.model.tiny
    stage = recipe.model_copy(deep=True)
    stage.name, stage.output_dir = "base", None  # the fine-tune's name and folder don't decide the base
    stage.model.id = str(tiny_folder)
    # full training, and the vision tower too: with random weights it has everything to learn
    stage.adapter = AdapterSection(method="full", freeze_vision=False)
    stage.train.steps, stage.train.epochs = tiny.base_steps, None  # not the fine-tune's epochs
    stage.train.lr = tiny.base_lr
    stage.train.schedule = tiny.base_schedule or stage.train.schedule
    stage.train.val_every = 0
    stage.eval.every = 0
    stage.train.trackers = []
    if tiny.base_sources is not None:
        stage.data.sources = [s for s in stage.data.sources if s.name in tiny.base_sources]
        if stage.mixture.weights:
            stage.mixture.weights = {k: v for k, v in stage.mixture.weights.items() if k in tiny.base_sources}
    key = hashlib.sha256((dump(stage) + str(tiny_folder)).encode()).hexdigest()[:16]
    stage.output_dir = str(expand_path(recipe.data.cache_dir) / "base" / f"{recipe.model.family}-{key}")
    return stage
