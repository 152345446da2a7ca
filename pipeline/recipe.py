"""Recipes: the typed schema, safe YAML loading, dotted overrides, and errors that name the key.

A recipe is data. It is validated in full (schema, then each source's parameters against its
reader's signature) before anything heavy starts, so a typo fails in the first second with
the dotted path of the key, e.g. ``data.sources.1.splits.train.annotatons``.

Relative paths in a recipe are relative to the directory uvft runs in (the repository root when
run through `make`); ``~`` and ``$VARS`` are expanded.
"""

from __future__ import annotations

import copy
import inspect
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import RecipeError
from pipeline.records import FAMILIES, TASKS

Family = Literal["florence2", "paligemma"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelSection(_Strict):
    family: Family
    # Hub id (e.g. microsoft/Florence-2-base) or local folder; None means the tiny model uvft builds.
    id: str | None = None
    revision: str | None = None
    # Tokenizer used for the target-length statistics of `uvft build`; defaults to `id`.
    tokenizer: str | None = None


class DemoSection(_Strict):
    """Parameters of the synthetic shapes set, generated into `data.root` when it is missing."""

    n_train: int = Field(800, gt=0)
    n_val: int = Field(200, gt=0)
    image_size: int = Field(64, ge=32)
    max_shapes: int = Field(3, ge=1)
    seed: int = 0


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
    seed: int = 0
    train_split: str = "train"
    # Captions in the training split: one record per reference caption, or one sampled caption per image.
    # Other splits always get one record per image (every caption kept as a reference).
    caption_targets: Literal["per_caption", "sample"] = "per_caption"
    check_images: Literal["full", "header"] = "full"
    max_image_pixels: int = Field(89_478_485, gt=0)
    # The build fails when a source/split skips more than this fraction of its examples.
    max_skip_fraction: float = Field(0.01, ge=0.0, le=1.0)
    demo: DemoSection | None = None
    sources: list[SourceSection] = Field(min_length=1)

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
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"not valid YAML: {e}", file=path) from None
    if not isinstance(raw, dict):
        raise RecipeError("a recipe must be a YAML mapping at the top level", file=path)
    raw = apply_overrides(raw, overrides, file=path)
    return validate(raw, file=path)


def validate(raw: dict[str, Any], file: str | Path | None = None) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise RecipeError(f"{err['msg']}{more}", path=loc, file=file) from None
    validate_sources(recipe, file=file)
    return recipe


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
                    f"{src.format} takes no parameter {key!r}; it takes: {', '.join(sorted(accepted))}",
                    path=f"{base}.options.{key}",
                    file=file,
                )
        for split in src.splits:
            params = src.params(split)
            for key in params:
                if key not in accepted:
                    raise RecipeError(
                        f"{src.format} takes no parameter {key!r}; it takes: {', '.join(sorted(accepted))}",
                        path=f"{base}.splits.{split}.{key}",
                        file=file,
                    )
            missing = sorted(required - set(params))
            if missing:
                raise RecipeError(
                    f"{src.format} needs {', '.join(missing)}", path=f"{base}.splits.{split}", file=file
                )


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
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            # Not YAML (e.g. `{image_id}.jpg`): take it as the plain string the user typed; the
            # schema still rejects it where a string does not belong.
            value = text
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"override {item!r} has an empty key", file=file)
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            node = _step(node, part, create=True, path=".".join(parts[: depth + 1]), file=file)
        last = parts[-1]
        if isinstance(node, list):
            idx = _list_index(node, last, path=key, file=file)
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError("cannot set a key inside a scalar value", path=key, file=file)
    return raw


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
    raise RecipeError(
        f"no list item named {part!r}; names: {', '.join(names) or '(none)'}", path=path, file=file
    )


def dump(recipe: Recipe) -> str:
    """The resolved recipe as YAML (what a run folder keeps)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "FAMILIES",
    "TASKS",
    "DataSection",
    "ModelSection",
    "Recipe",
    "RecipeError",
    "SourceSection",
    "apply_overrides",
    "dump",
    "load_recipe",
    "reader_params",
    "validate",
]
