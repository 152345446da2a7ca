"""What model a run starts from: the recipe's hub id or folder, or uvft's tiny model, built on the
spot from the records' text and, with model.tiny.base_steps (or base_stages), given a base stage
(full training that stands in for a pretrained foundation model) cached under a key of everything
that decides it. This module decides what the base model is and where it lives; it does not train:
the loop runs the base stages that are not cached yet (loop.base_model_path)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import folders, models
from pipeline.recipe import AdapterSection, BaseStage, Recipe, dump, expand_path


@dataclass(frozen=True)
class BaseModel:
    """The model a run starts from (`path`: a hub id or a folder) and, when that is the tiny
    model's base stage, the recipes of the trainings that write it (`stages`, in order: each
    output_dir holds a `model` folder the next starts from; the last one's is `path`)."""

    path: str
    stages: tuple[Recipe, ...] = ()

    @property
    def trained(self) -> bool:
        """False for a base stage not cached yet: `stages` must run before `path` can be loaded."""
        return all(stage_trained(s) for s in self.stages)


def stage_trained(stage: Recipe) -> bool:
    """Whether a base stage's model is in its cache folder."""
    return (Path(stage.output_dir) / "model" / "config.json").is_file()


def plan(recipe: Recipe, records: Any, accelerator: Any) -> BaseModel:
    """The recipe's model id; else the tiny model's folder (built here when it is not cached) or,
    with model.tiny.base_steps or base_stages, its base stages."""
    if recipe.model.id is not None:
        return BaseModel(recipe.model.id)
    start = _tiny_model(recipe, records, accelerator)
    codes = mask_codes_key(records[recipe.data.train_split])
    stages: list[Recipe] = []
    for step in recipe.model.tiny.stages():
        stages.append(_base_stage(recipe, step, start, codes))
        start = Path(stages[-1].output_dir) / "model"
    return BaseModel(str(start), tuple(stages))


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


def mask_codes_key(train: Any) -> str:
    """A hash of the training targets that hold mask codes (PaliGemma's `<segNNN>`), "" when none:
    the codes come from a codec (a refitted stand-in, another model.mask_vae) that the recipe's text
    does not name, so a base stage trained on other codes must not be reused."""
    h = hashlib.sha256()
    found = False
    for target in train["target"]:
        if "<seg" in target:
            h.update(target.encode())
            found = True
    return h.hexdigest() if found else ""


def _base_stage(recipe: Recipe, step: BaseStage, start: Path, codes: str = "") -> Recipe:
    """The recipe of one base stage: full training of the tiny model from `start` (its random
    weights, or the stage before), its output_dir a cache folder named by a key of everything that
    decides it. A stage's recipe says that stage alone (base_steps, base_sources), so the first
    stage of a list is the same cached stage as a one-stage base of its steps and sources."""
    tiny = recipe.model.tiny
    stage = recipe.model_copy(deep=True)
    stage.name, stage.output_dir = "base", None  # the fine-tune's name and folder don't decide the base
    stage.model.id = str(start)
    stage.model.tiny.base_steps, stage.model.tiny.base_sources = step.steps, step.sources
    stage.model.tiny.base_stages = None
    # full training, and the vision tower too: with random weights it has everything to learn
    stage.adapter = AdapterSection(method="full", freeze_vision=False)
    stage.train.steps, stage.train.epochs = step.steps, None  # not the fine-tune's epochs
    stage.train.lr = tiny.base_lr
    stage.train.schedule = tiny.base_schedule or stage.train.schedule
    stage.train.val_every = 0
    stage.eval.every = 0
    stage.train.trackers = []
    # the tiny model fits any process: its base is one cached stage however the fine-tune is sharded
    stage.train.sharding = None
    if step.sources is not None:
        stage.data.sources = [s for s in stage.data.sources if s.name in step.sources]
        if stage.mixture.weights:
            stage.mixture.weights = {k: v for k, v in stage.mixture.weights.items() if k in step.sources}
    key = hashlib.sha256((dump(stage) + str(start) + codes).encode()).hexdigest()[:16]
    stage.output_dir = str(expand_path(recipe.data.cache_dir) / "base" / f"{recipe.model.family}-{key}")
    return stage
