"""What a run folder says about itself, read in one place: its resolved recipe (`recipe.yaml`, also
kept in each checkpoint) and its summary (`summary.json`: what the run did, and the base model it
started from). A damaged or partial file is one UvftError that names it and says what to do, never
a parser's traceback. Plain data only: the recipe's schema is pipeline.recipe's.

A run records a local base model by its absolute path (`recorded_base`), so that it resolves from
any folder. `local_base` also reads what runs recorded before: a path relative to the folder
training ran in, tried from here, from the run folder, and from that folder, which the run folder's
location gives (summary.json's `run_dir` is the run folder as training named it, e.g. runs/demo).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UvftError
from pipeline.safe_yaml import load_yaml, yaml_problem

RECIPE = "recipe.yaml"
SUMMARY = "summary.json"


def read_recipe(folder: Path) -> dict[str, Any] | None:
    """The recipe a run folder (or a checkpoint) keeps, as data; None when it keeps none."""
    path = Path(folder) / RECIPE
    if not path.is_file():
        return None
    try:  # bounded: a run folder from the hub is anyone's, and an alias bomb is ten lines
        raw = load_yaml(path.read_text(encoding="utf-8"), lambda m: UvftError(f"{path}: {m}"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problem = yaml_problem(e) if isinstance(e, yaml.YAMLError) else str(e)
        raise UvftError(f"{path}: not valid YAML ({problem}): {_recipe_advice(path)}") from None
    if not isinstance(raw, dict):
        raise UvftError(f"{path}: not a recipe (a YAML mapping of sections): {_recipe_advice(path)}")
    return raw


def _recipe_advice(path: Path) -> str:
    """What to do about a damaged recipe.yaml: a run's is copied in each of its checkpoints."""
    copies = sorted(path.parent.glob(f"checkpoints/step-*/{RECIPE}"))
    if copies:
        return f"the file is damaged or cut short; restore it from its latest checkpoint's copy, {copies[-1]}"
    return "the file is damaged or cut short; restore it from the recipe the run was trained with"


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's summary.json as data; None when it has none."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        where = f"line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else e
        raise UvftError(f"{path}: not valid JSON ({where}): {_SUMMARY_ADVICE}") from None
    if not isinstance(raw, dict):
        raise UvftError(f"{path}: not a run summary (a JSON object): {_SUMMARY_ADVICE}")
    return raw


_SUMMARY_ADVICE = (
    "the file is damaged or cut short; `uvft finetune RECIPE --resume auto` with the run's recipe "
    "writes it again from the run's latest checkpoint"
)


def summary_base(run_dir: Path) -> str | None:
    """The base model summary.json records (a hub id or a folder, as recorded); None without one."""
    summary = read_summary(run_dir)
    if summary is None:
        return None
    base = summary.get("base_model")
    if not isinstance(base, str) or not base:
        raise UvftError(
            f"{Path(run_dir) / SUMMARY} does not name the run's base_model: {_SUMMARY_ADVICE}, "
            "or set model.id to the model the run started from"
        )
    return base


def recorded_base(base: str) -> str:
    """How a run records its base model: a local folder by its absolute path, which resolves from
    any folder (a path relative to where training ran would not), a hub id as it is."""
    path = Path(base).expanduser()
    return os.path.abspath(path) if path.is_dir() else base


def local_base(name: str, run_dir: Path) -> Path | None:
    """The local folder a run's recorded base model names, or None when there is none: the path as
    it is (absolute, or relative to here), else relative to the run folder, else relative to the
    folder training ran in (older runs recorded such paths; see the module doc)."""
    if not name:
        return None
    path = Path(name).expanduser()
    candidates = [path]
    if not path.is_absolute():
        candidates.append(Path(run_dir) / path)
        trained_in = _trained_in(Path(run_dir))
        if trained_in is not None:
            candidates.append(trained_in / path)
    return next((c for c in candidates if c.is_dir()), None)


def _trained_in(run_dir: Path) -> Path | None:
    """The folder training ran in: the run folder's absolute path less the relative name the run
    gave it (summary.json's run_dir); None when that is absolute, absent or does not match."""
    path = run_dir / SUMMARY
    try:
        named = json.loads(path.read_text(encoding="utf-8")).get("run_dir") if path.is_file() else None
    except (ValueError, AttributeError):
        return None  # read_summary says what is wrong with it, where the summary itself is needed
    if not isinstance(named, str) or not named or Path(named).is_absolute():
        return None
    parts = [p for p in Path(os.path.normpath(named)).parts if p != "."]
    here = Path(os.path.abspath(run_dir))
    if ".." in parts or list(here.parts[-len(parts) :]) != parts:
        return None
    return Path(*here.parts[: -len(parts)])
