"""Recipes: the typed schema, safe YAML loading, dotted overrides, and errors that name the key.

A recipe is data. It is validated in full (schema, then each source's parameters against its
reader's signature) before anything heavy starts, so a typo fails in the first second with
the dotted path of the key, e.g. ``data.sources.1.splits.train.annotatons``.

Relative paths in a recipe are relative to the directory uvft runs in (the repository root when
run through `make`); ``~`` and ``$VARS`` are expanded.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import os
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.errors import RecipeError
from pipeline.records import TASKS
from pipeline.safe_yaml import load_yaml, yaml_problem

logger = logging.getLogger(__name__)

Family = Literal["florence2", "paligemma"]
Schedule = Literal["cosine", "linear", "constant"]
# The top-level key of settings for one family only (see apply_family_settings)
BY_FAMILY = "by_family"


def _not_bool(v: Any) -> Any:
    # pydantic's lax mode reads true as 1: `train.steps=true` would train one step
    if isinstance(v, bool):
        raise ValueError(f"must be a number, not {v} (YAML reads true/false, yes/no, on/off as booleans)")
    return v


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)
    # Keys added after recipes were in use, left out of a dump while they hold their default: a recipe
    # that does not use them dumps as it always did, so the cached base stages keyed on the dump stay
    # valid, and runs saved before the key existed still resume (their recipe.yaml lacks it).
    _OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in self._OMIT_AT_DEFAULT:
            if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                call_default_factory=True
            ):
                data.pop(name)
        return data


class BaseStage(_Strict):
    """One stage of the tiny model's base stage: `steps` of full training on `sources` (None: every
    training source), from the stage before it (the first from the random weights)."""

    steps: Int = Field(gt=0)
    sources: list[str] | None = None


class TinySection(_Strict):
    """The tiny model uvft builds from a config when `model.id` is null (demo and tests).

    `size` goes to the family's `build_tiny` (hidden sizes, layers...). With `base_steps` > 0, the
    tiny model is first fully trained for that many steps on the `base_sources` (a stand-in for
    a pretrained foundation model, built once and cached), and the LoRA fine-tune starts from it.
    `base_stages` says the same as a list, trained in turn, each from the one before (a curriculum:
    e.g. localisation on single shapes first, then every task); each stage is cached on its own.
    """

    size: dict[str, Any] = Field(default_factory=dict)
    seed: Int = 0
    base_steps: Int = Field(0, ge=0)
    base_lr: Float = Field(3e-4, gt=0)
    base_sources: list[str] | None = None  # None: every training source
    # None: the fine-tune's train.schedule. A cosine over a short base stage spends its last third
    # under 27% of the rate; the Florence-2 stand-in learns colour only with the rate held.
    base_schedule: Schedule | None = None
    # None: one stage, base_steps on base_sources. Stages share base_lr and base_schedule.
    base_stages: list[BaseStage] | None = None

    _OMIT_AT_DEFAULT = ("base_schedule", "base_stages")

    @model_validator(mode="after")
    def _one_way_to_say_the_stages(self) -> TinySection:
        if self.base_stages is not None:
            if not self.base_stages:
                raise ValueError("base_stages: give at least one stage, or null for none")
            if self.base_steps or self.base_sources is not None:
                raise ValueError(
                    "base_stages is given: leave base_steps (0) and base_sources (null) out, "
                    "the stages say their own steps and sources"
                )
        return self

    def stages(self) -> list[BaseStage]:
        """The base stages in training order: base_stages, or one of base_steps on base_sources
        (none when base_steps is 0)."""
        if self.base_stages is not None:
            return list(self.base_stages)
        return [BaseStage(steps=self.base_steps, sources=self.base_sources)] if self.base_steps else []


class ModelSection(_Strict):
    family: Family
    # Hub id (e.g. microsoft/Florence-2-base) or local folder; None means the tiny model uvft builds.
    id: str | None = None
    revision: str | None = None
    # Tokenizer used for the target-length statistics of `uvft build`; defaults to `id`.
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, else fp32
    attn_implementation: str | None = None  # e.g. sdpa, eager, flash_attention_2
    # PaliGemma's mask codec (pipeline.data.mask_codes): "oid" (big_vision's vae-oid.npz, fetched once),
    # a .npz / .safetensors path, or "stand-in" (fitted on the training masks); None: "stand-in" for
    # the tiny model (id null or a folder in data.cache_dir), else "oid". Read only when PaliGemma
    # trains segmentation.
    mask_vae: str | None = None
    tiny: TinySection = Field(default_factory=TinySection)


class AdapterSection(_Strict):
    """What is trained: LoRA (peft) on a preset of modules, or every weight (`full`)."""

    method: Literal["lora", "full"] = "lora"
    # attention: language-model attention; attention_mlp: + its MLP; all_linear: every linear
    # layer of the language model and the projector (never the vision tower).
    preset: Literal["attention", "attention_mlp", "all_linear"] = "attention_mlp"
    r: Int = Field(16, gt=0)
    alpha: Int = Field(32, gt=0)
    dropout: Float = Field(0.05, ge=0.0, lt=1.0)
    freeze_vision: bool = True  # false: method full trains the vision tower too
    modules_to_save: list[str] | None = None  # e.g. embeddings + lm_head when tokens were added

    @model_validator(mode="after")
    def _vision_trains_only_in_full(self) -> AdapterSection:
        # peft freezes every weight it does not wrap, and no preset wraps the vision tower: with
        # LoRA, freeze_vision=false would change nothing (measured: same trainable count, same run)
        if self.method == "lora" and not self.freeze_vision:
            raise ValueError(
                "freeze_vision: false trains the vision tower only with adapter.method=full; LoRA's "
                "presets never adapt it (peft freezes every weight it does not wrap), so it would stay "
                "frozen: set adapter.method=full, or leave adapter.freeze_vision true"
            )
        return self


class MixtureSection(_Strict):
    """Task-balanced sampling over the training sources (p ∝ n^(1/T) for `temperature`)."""

    strategy: Literal["proportional", "temperature", "uniform", "weights"] = "temperature"
    temperature: Float = Field(2.0, gt=0)
    weights: dict[str, Float] | None = None  # source name -> weight, for strategy `weights`
    # length-aware batching: draws are ordered by target length within windows of this many global
    # batches (the shares kept window by window, the batch order shuffled); 0 turns it off.
    # bench/padding.py, COCO + VQAv2 + captions lengths: target-token efficiency 0.77 at 32,
    # 0.92 at 128, 0.98 at 512 (random batches: 0.20)
    bucket_batches: Int = Field(512, ge=0)

    @model_validator(mode="after")
    def _weights_given(self) -> MixtureSection:
        if self.strategy == "weights" and not self.weights:
            raise ValueError("strategy 'weights' needs mixture.weights (source name -> weight)")
        if self.strategy != "weights" and self.weights is not None:
            # the sampler would refuse them at the start of training (data/mixture.py)
            raise ValueError(
                f"weights: only strategy 'weights' uses them, and mixture.strategy is {self.strategy!r}: "
                "set mixture.strategy=weights to use them, or mixture.weights=null to drop them"
            )
        return self


class TrainSection(_Strict):
    steps: Int = Field(1000, gt=0)  # optimizer steps
    # or: passes over the training split; steps = ceil(epochs * training records / global batch)
    epochs: Float | None = Field(None, gt=0)
    batch_size: Int = Field(8, gt=0)  # per process, per micro-batch
    grad_accum: Int = Field(1, gt=0)
    lr: Float = Field(1e-4, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    warmup_steps: Int = Field(0, ge=0)
    schedule: Schedule = "cosine"
    max_grad_norm: Float | None = Field(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, no on CPU
    gradient_checkpointing: bool = False
    # torch.compile of the step's forward and loss (and so their backward): faster steps after a
    # one-off compile of about a minute on a CPU, which short runs do not earn back
    # (bench/train_step.py); the held-out loss and generation stay eager
    compile: bool = False
    # fsdp2: under a launch of several processes, every decoder/encoder block and then the model
    # are sharded (torch FSDP2, parameters, gradients and optimizer state split across processes)
    # and checkpoints are sharded too (torch.distributed.checkpoint), resumable with another
    # process count; null: each process holds the whole model (data parallel). An FSDP launch
    # config (recipes/accelerate/fsdp.yaml) sets it. pipeline/train/sharding.py
    sharding: Literal["fsdp2"] | None = None
    num_workers: Int = Field(2, ge=0)
    pin_memory: bool | None = None  # None: when CUDA is used
    persistent_workers: bool = True
    seed: Int = 0
    log_every: Int = Field(10, gt=0)
    save_every: Int = Field(500, gt=0)
    keep_last: Int = Field(2, gt=0)
    max_target_tokens: Int | None = Field(None, gt=0)  # longer targets are dropped and counted
    max_nonfinite: Int = Field(5, gt=0)  # this many non-finite losses in a row stop the run
    val_every: Int = Field(0, ge=0)  # held-out per-task loss every N steps (0: start and end only)
    val_batches: Int = Field(8, gt=0)  # size of the fixed held-out subset, in batches
    val_split: str = "val"
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])
    wandb_project: str | None = None

    _OMIT_AT_DEFAULT = ("epochs", "compile", "sharding")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML 1.1 reads a bare `no` as false

    @model_validator(mode="after")
    def _sharding_precision(self) -> TrainSection:
        if self.sharding and self.mixed_precision == "fp16":
            raise ValueError(
                "sharding: fsdp2 trains in bf16 or fp32: fp16 needs a sharded gradient scaler uvft "
                "does not have; set train.mixed_precision=bf16"
            )
        return self


class EvalSection(_Strict):
    """Generation-based evaluation: `uvft eval`, and during training every `every` steps on a fixed
    validation subset (the first `per_task` records of each task), keeping the best adapter by
    `metric` in <run>/best.

    `metric` is "mean" (the mean of each task's headline score: VQA accuracy, top-1 accuracy,
    CIDEr-D / 10, mAP@0.5; all in [0, 1]) or a dotted key of metrics.json such as
    "detection.map_50", "vqa.accuracy", "classification.closed_set.accuracy". Higher is better.
    """

    every: Int = Field(0, ge=0)  # 0: no generation eval during training
    per_task: Int = Field(32, gt=0)  # the in-training subset: a seeded sample of this many per task
    seed: Int = 0  # draws the in-training subset and `uvft eval --limit`'s sample
    metric: str = "mean"
    num_beams: Int = Field(1, gt=0)  # 1: greedy
    max_new_tokens: Int | None = Field(None, gt=0)  # None: train.max_target_tokens, else 256
    batch_size: Int = Field(32, gt=0)
    # Classification also scored by likelihood over the class names (the answer is always a label).
    closed_set: bool = True
    labels: list[str] | None = None  # closed-set candidates; None: each record's own class list
    _OMIT_AT_DEFAULT = ("seed",)

    @field_validator("metric")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v != "mean" and (v.split(".")[0] not in TASKS or "." not in v):
            raise ValueError(f"metric {v!r}: use 'mean' or '<task>.<key>' with a task of {', '.join(TASKS)}")
        return v


class DemoSection(_Strict):
    """Parameters of the synthetic shapes set, generated into `data.root` when it is missing."""

    n_train: Int = Field(5000, gt=0)
    n_val: Int = Field(200, gt=0)
    image_size: Int = Field(64, ge=32)
    max_shapes: Int = Field(1, ge=1)
    shape_size: tuple[Float, Float] = (0.3, 0.6)  # a shape's side, as fractions of the image side
    seed: Int = 0
    # the opt-in sets of the grounding / segmentation, OCR and German-caption tasks (demo/shapes.py)
    extra_tasks: list[Literal["refer", "ocr", "captions_de", "regions"]] = Field(default_factory=list)

    # no extras: the dump a recipe had before they existed (shapes.json keys on it too)
    _OMIT_AT_DEFAULT = ("extra_tasks",)


class SourceSection(_Strict):
    name: str = Field(min_length=1)
    format: str  # a registered reader: coco_detection, coco_captions, vqav2, image_folder, jsonl, hf_dataset
    card: str | None = None  # path to the data card (data_cards/*.md)
    options: dict[str, Any] = Field(default_factory=dict)  # reader parameters shared by every split
    splits: dict[str, dict[str, Any]]  # split name -> reader parameters for that split

    @field_validator("splits")
    @classmethod
    def _some_split(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("a source needs at least one split")
        return v

    def params(self, split: str) -> dict[str, Any]:
        return {**self.options, **(self.splits[split] or {})}


class DataSection(_Strict):
    root: str = "."  # folder that relative paths in source parameters are resolved against
    cache_dir: str = ".cache/uvft"
    seed: Int = 0
    train_split: str = "train"
    # Captions in the training split: one record per reference caption, or one sampled caption per image.
    # Other splits always get one record per image (every caption kept as a reference).
    caption_targets: Literal["per_caption", "sample"] = "per_caption"
    check_images: Literal["full", "header"] = "full"
    max_image_pixels: Int = Field(89_478_485, gt=0)
    # The build fails when a source/split skips more than this fraction of its examples.
    max_skip_fraction: Float = Field(0.01, ge=0.0, le=1.0)
    # The build fails when a repair that says the data is laid out wrong (boxes clipped or dropped,
    # boxes inside [0, 1], blank captions...: pipeline/sources/repairs.py) hits more than this
    # fraction of a source/split's boxes, captions...; 1.0 trains on them as repaired.
    max_repair_fraction: Float = Field(0.05, ge=0.0, le=1.0)
    # Sources without the validation split (train.val_split) give it this fraction of their training
    # images, drawn by image (all of an image's records go one way) with data.seed; 0: none carved.
    val_fraction: Float = Field(0.0, ge=0.0, lt=1.0)
    # Polygon targets (segmentation, region -> mask) simplified to within this many pixels of the
    # source's outline (Douglas-Peucker; formats/outline.py), 0: as the source has them. Each vertex
    # is two location tokens: a traced outline spends them on sub-pixel steps. Scoring keeps the
    # source's polygons.
    polygon_tolerance: Float = Field(0.0, ge=0.0)
    demo: DemoSection | None = None
    sources: list[SourceSection] = Field(min_length=1)

    _OMIT_AT_DEFAULT = ("max_repair_fraction", "val_fraction", "polygon_tolerance")

    @model_validator(mode="after")
    def _unique_names(self) -> DataSection:
        seen: set[str] = set()
        for i, s in enumerate(self.sources):
            if s.name in seen:
                raise ValueError(f"sources.{i}.name: duplicate source name {s.name!r}")
            seen.add(s.name)
        return self


class Recipe(_Strict):
    name: str = Field(min_length=1)
    output_dir: str | None = None  # default: runs/<name>
    model: ModelSection
    data: DataSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    mixture: MixtureSection = Field(default_factory=MixtureSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _names_refer_to_sources(self) -> Recipe:
        names = [s.name for s in self.data.sources]
        for key, given in (
            ("mixture.weights", list(self.mixture.weights or {})),
            ("model.tiny.base_sources", self.model.tiny.base_sources or []),
            *(
                (f"model.tiny.base_stages[{i}].sources", stage.sources or [])
                for i, stage in enumerate(self.model.tiny.base_stages or [])
            ),
        ):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise ValueError(f"{key}: unknown source {unknown[0]!r}; sources: {', '.join(names)}")
        return self

    @property
    def run_dir(self) -> Path:
        return expand_path(self.output_dir or f"runs/{self.name}")


def expand_path(p: str | Path) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(p))))


# --- loading -------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, override and validate a recipe; raise RecipeError naming the file and the key path."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no such recipe file: {path}")
    try:
        raw = load_yaml(path.read_text(), lambda message: RecipeError(message, file=path))
    except yaml.YAMLError as e:
        raise RecipeError(f"not valid YAML ({yaml_problem(e)})", file=path) from None
    if not isinstance(raw, dict):
        raise RecipeError("a recipe must be a YAML mapping at the top level", file=path)
    raw = apply_overrides(raw, overrides, file=path)
    raw, others = apply_family_settings(raw, overrides, file=path)
    recipe = validate(raw, file=path)  # the recipe that runs first: its own mistakes name no block
    for family, other in others:  # settled only now: the recipe that runs is checked first
        try:
            validate(other, file=path)
        except RecipeError as e:
            raise RecipeError(f"{e.message} (with {BY_FAMILY}.{family})", path=e.path, file=path) from None
    return recipe


def apply_family_settings(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), file: str | Path | None = None
) -> tuple[dict[str, Any], Iterator[tuple[str, dict[str, Any]]]]:
    """Resolve `by_family`, the settings for one model family only, e.g.

        by_family:
          florence2: {model.tiny.base_schedule: constant, train.lr: 1.0e-3}

    The block of `model.family` is applied key by key, as command-line overrides are (a key may be
    dotted or nested), and the command line's own overrides are applied again after it, so
    `train.lr=...` on the command line wins over the recipe's family block. Returns the recipe as
    it runs, without `by_family` (a run folder keeps the recipe it ran), and, lazily, (family, the
    recipe as its block would make it) for each other family, for the caller to check after the
    recipe that runs: a mistake in any block fails at once, whichever family runs."""
    raw = copy.deepcopy(raw)
    blocks = raw.pop(BY_FAMILY, None)
    if blocks is None:
        return raw, iter(())
    families = typing.get_args(Family)
    if not isinstance(blocks, dict):
        raise RecipeError("a mapping of model family to that family's settings", path=BY_FAMILY, file=file)
    for family, block in blocks.items():
        where = f"{BY_FAMILY}.{family}"
        if family not in families:
            raise RecipeError(f"unknown model family; families: {', '.join(families)}", path=where, file=file)
        if not isinstance(block, dict):
            raise RecipeError("a mapping of recipe keys to values", path=where, file=file)
        if "model.family" in flatten(block):
            raise RecipeError(
                "the family is what chooses this block: set model.family outside it", path=where, file=file
            )
    chosen = (raw.get("model") or {}).get("family")
    chosen_known = isinstance(chosen, str) and chosen in blocks  # a wrong type fails in the caller's validate
    others = (
        (f, _settle(raw, f, b, overrides, file)) for f, b in blocks.items() if not chosen_known or f != chosen
    )
    if not chosen_known:
        return raw, others
    if blocks[chosen]:
        given = {o.partition("=")[0].strip() for o in overrides}
        settings = [f"{k}={v}" for k, v in flatten(blocks[chosen]).items() if k not in given]
        logger.info(
            "%s.%s sets %s", BY_FAMILY, chosen, ", ".join(settings) or "nothing the command line does not"
        )
    return _settle(raw, chosen, blocks[chosen], overrides, file), others


def _settle(
    raw: dict[str, Any], family: str, block: dict[str, Any], overrides: Any, file: str | Path | None
) -> dict[str, Any]:
    """`raw` for `family`: its block's settings, then the command line's overrides again."""
    out = copy.deepcopy(raw)
    out.setdefault("model", {})["family"] = family
    for key, value in (flatten(block) if block else {}).items():
        _set(out, key.split("."), copy.deepcopy(value), file=file, prefix=f"{BY_FAMILY}.{family}.")
    return apply_overrides(out, overrides, file=file)


def validate(raw: dict[str, Any], file: str | Path | None = None) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        msg = _no_such_key(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "value_error":  # our validators': "key.path: message" names the key
            msg = msg.removeprefix("Value error, ")
            key, sep, rest = msg.partition(": ")
            if sep and re.fullmatch(r"[\w.]+", key):
                loc, msg = f"{loc}.{key}" if loc else key, rest
        raise RecipeError(f"{msg}{more}", path=loc, file=file) from None
    validate_sources(recipe, file=file)
    return recipe


def _no_such_key(loc: tuple[Any, ...]) -> str:
    """The message for a key the schema does not take: "no such key" and the close match among the
    keys at its level ("did you mean train.steps?"), else those keys."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):  # a list item: its model is the list's, already unwrapped
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return "no such key"
    keys = list(model.model_fields)
    prefix = "".join(f"{p}." for p in loc[:-1])
    return "no such key; " + _did_you_mean(str(loc[-1]), keys, prefix=prefix)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The recipe section a field holds (through Optional, list and Annotated), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (dict, Literal):
        return None
    models = [m for m in map(_model_of, typing.get_args(annotation)) if m is not None]
    return models[0] if models else None


def _did_you_mean(given: str, known: list[str], *, prefix: str = "") -> str:
    """'did you mean <prefix><closest>?' when a known name is close to `given`, else the known
    names."""
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return f"{prefix.rstrip('.') or 'a recipe'} takes: {', '.join(known)}"


def validate_sources(recipe: Recipe, file: str | Path | None = None) -> None:
    """Check every source's parameters against its reader's signature (names, required ones)."""
    from pipeline import sources

    for i, src in enumerate(recipe.data.sources):
        base = f"data.sources.{i}"
        try:
            reader = sources.get(src.format)
        except KeyError as e:
            raise RecipeError(str(e.args[0]), path=f"{base}.format", file=file) from None
        sig = inspect.signature(reader)
        accepted = {n for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}
        required = {n for n in accepted if sig.parameters[n].default is inspect.Parameter.empty}
        for key in src.options:
            if key not in accepted:
                raise RecipeError(
                    _no_parameter(src.format, key, accepted), path=f"{base}.options.{key}", file=file
                )
        for split in src.splits:
            params = src.params(split)
            for key in params:
                if key not in accepted:
                    raise RecipeError(
                        _no_parameter(src.format, key, accepted),
                        path=f"{base}.splits.{split}.{key}",
                        file=file,
                    )
            missing = sorted(required - set(params))
            if missing:
                raise RecipeError(
                    f"{src.format} needs {', '.join(missing)}", path=f"{base}.splits.{split}", file=file
                )


def _no_parameter(reader: str, key: str, accepted: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"{reader} takes no parameter {key!r}; {guess}it takes: {', '.join(sorted(accepted))}"


def reader_params(reader: Any, params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Resolve Path-annotated parameters of a reader against the data root."""
    hints = typing.get_type_hints(reader)
    out = dict(params)
    for key, value in params.items():
        hint = hints.get(key)
        if value is not None and hint is not None and _is_path_hint(hint):
            p = expand_path(value)
            out[key] = p if p.is_absolute() else (root / p)
    return out


def _is_path_hint(hint: Any) -> bool:
    if hint is Path:
        return True
    return any(a is Path for a in typing.get_args(hint))


# --- overrides -----------------------------------------------------------------------------------


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...], file: str | Path | None = None
) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML, else a plain string). List items are
    addressed by index or, for lists of named mappings such as data.sources, by name."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not of the form key.path=value", file=file)
        key, _, text = item.partition("=")
        try:
            value = load_yaml(text, _override_error(key, file)) if text != "" else ""
        except yaml.YAMLError:
            # Not YAML (e.g. `{image_id}.jpg`): take it as the plain string the user typed; the
            # schema still rejects it where a string does not belong.
            value = text
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"override {item!r} has an empty key", file=file)
        _set(raw, parts, value, file=file)
    return raw


def _set(
    raw: dict[str, Any], parts: list[str], value: Any, *, file: str | Path | None, prefix: str = ""
) -> None:
    """Set the value at a dotted key's `parts`, creating mappings on the way; an error names the
    key (after `prefix`: where it was written, e.g. `by_family.florence2.`)."""
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _step(node, part, create=True, path=prefix + ".".join(parts[: depth + 1]), file=file)
    path = prefix + ".".join(parts)
    if isinstance(node, list):
        node[_list_index(node, parts[-1], path=path, file=file)] = value
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise RecipeError("cannot set a key inside a scalar value", path=path, file=file)


def _override_error(key: str, file: str | Path | None) -> Callable[[str], RecipeError]:
    return lambda message: RecipeError(message, path=key.strip(), file=file)


def _step(node: Any, part: str, *, create: bool, path: str, file: str | Path | None) -> Any:
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise RecipeError("no such key", path=path, file=file)
            node[part] = {}
        return node[part]
    if isinstance(node, list):
        return node[_list_index(node, part, path=path, file=file)]
    raise RecipeError("cannot descend into a scalar value", path=path, file=file)


def _list_index(node: list[Any], part: str, *, path: str, file: str | Path | None) -> int:
    if part.lstrip("-").isdigit():
        idx = int(part)
        if not -len(node) <= idx < len(node):
            raise RecipeError(
                f"index {idx} out of range (the list has {len(node)} items)", path=path, file=file
            )
        return idx
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [str(item.get("name")) for item in node if isinstance(item, dict) and "name" in item]
    close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    raise RecipeError(
        f"no list item named {part!r}; {guess}names: {', '.join(names) or '(none)'}", path=path, file=file
    )


def dump(recipe: Recipe) -> str:
    """The resolved recipe as YAML (what a run folder keeps)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a recipe dump (list items by index), leaves as they are."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def changes(before: Recipe | dict[str, Any], after: Recipe) -> list[tuple[str, Any, Any]]:
    """(dotted key, before, after) for every leaf that differs between two recipes."""
    old = flatten(before.model_dump(mode="json") if isinstance(before, Recipe) else before)
    new = flatten(after.model_dump(mode="json"))
    missing = object()
    return [
        (k, old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if old.get(k, missing) != new.get(k, missing)
    ]


__all__ = [
    "TASKS",
    "DataSection",
    "ModelSection",
    "Recipe",
    "RecipeError",
    "SourceSection",
    "apply_overrides",
    "dump",
    "load_recipe",
    "load_yaml",
    "reader_params",
    "validate",
]
