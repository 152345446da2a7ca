"""What `uvft check` finds in a recipe beyond its schema, and the early checks `uvft finetune` runs
before anything is built or loaded.

- Data: every path of every source and split, resolved under `data.root` (a missing data root is
  one finding, not one per file; a demo recipe's set is generated on first use), each source's
  data card, and one record of each source read through its reader (what it found, or why not).
- Model: `model.id` against `model.family`. A local folder's config.json names its `model_type`
  (a checkpoint's model_type is its family's name: models/family.py); a hub id's config comes from
  the local hub cache, else from the hub if it answers within HUB_TIMEOUT seconds (one request,
  no retries), else the name says it ("paligemma" in a florence2 recipe is a mismatch). `model.id:
  null` is uvft's tiny stand-in, which `uvft check` describes.

Each finding is one line that names the key, the source and split, or the path it is about.
"""

from __future__ import annotations

import inspect
import json
import tempfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import formats, sources, tasks
from pipeline.data import mask_codes
from pipeline.data.build import demo_data_pending, source_context
from pipeline.errors import ModelError, UvftError
from pipeline.families import FAMILIES
from pipeline.recipe import Recipe, SourceSection, expand_path, reader_params
from pipeline.records import Example, Object, Region, Tally
from pipeline.sources.paths import is_written

HUB_TIMEOUT = 3.0  # seconds the hub has to answer for a model's config before the name decides

OK, NOTE, PROBLEM = "ok", "note", "problem"


@dataclass(frozen=True)
class Finding:
    level: str  # OK, NOTE (worth knowing, not wrong) or PROBLEM
    subject: str  # what it is about, for the verdict: "data.root", "model.id", "<source>/<split>"
    message: str  # one line that names the key, the source and split, or the path

    def line(self) -> str:
        return f"{self.level:<8} {self.message}"


def check(recipe: Recipe, *, fetch: HubFetch | None = None) -> list[Finding]:
    """Everything `uvft check` says of a valid recipe: the model, then the data."""
    return [
        *model_findings(recipe, fetch=fetch, describe_tiny=True),
        *mask_vae_findings(recipe),
        *data_findings(recipe, read_one=True),
    ]


def preflight(recipe: Recipe, *, fetch: HubFetch | None = None) -> None:
    """`uvft finetune`'s early checks, before anything is built or loaded: the model id against
    the family and the data paths (no record read). Problems raise one UvftError line."""
    findings = (*model_findings(recipe, fetch=fetch), *mask_vae_findings(recipe), *data_findings(recipe))
    problems = [f for f in findings if f.level == PROBLEM]
    if len(problems) == 1:
        raise UvftError(problems[0].message)
    if problems:
        raise UvftError(f"{len(problems)} problems: " + "; ".join(p.message for p in problems))


def mask_vae_findings(recipe: Recipe) -> list[Finding]:
    """`model.mask_vae` naming a file that is not there, for a family that writes masks as codes:
    said in the first second, not when the build meets its first mask."""
    name = recipe.model.mask_vae
    if name in (None, mask_codes.OID, mask_codes.STAND_IN) or not formats.get(recipe.model.family).MASK_CODES:
        return []
    path = expand_path(name)
    if path.is_file():
        return [Finding(OK, "model.mask_vae", f"model.mask_vae {path}: the mask codec's file is there")]
    return [
        Finding(
            PROBLEM,
            "model.mask_vae",
            f"model.mask_vae {path}: no such file (a .npz or .safetensors "
            "in vae-oid.npz's layout; or oid, or stand-in)",
        )
    ]


def verdict(findings: list[Finding]) -> str:
    problems = [f for f in findings if f.level == PROBLEM]
    if not problems:
        return "ok: ready to train"
    subjects = ", ".join(dict.fromkeys(p.subject for p in problems))
    return f"{len(problems)} problem{'s' if len(problems) > 1 else ''}: {subjects}"


# --- the data ------------------------------------------------------------------------------------


def data_findings(recipe: Recipe, *, read_one: bool = False) -> list[Finding]:
    """The data root, every source's paths and card, and (`read_one`) one record of each source."""
    root = expand_path(recipe.data.root)
    pending = demo_data_pending(recipe)
    if pending is not None:
        said = "no demo set there yet" if pending == "missing" else "the demo set there has other parameters"
        return [
            Finding(NOTE, "data.root", f"data.root {root}: {said}: it is generated on first use (data.demo)")
        ]
    out: list[Finding] = []
    if not root.is_dir():
        out.append(
            Finding(
                PROBLEM,
                "data.root",
                f"data.root {root}: no such folder (the sources' relative paths are resolved under it)",
            )
        )
    missing, looked = _missing_paths(recipe, root, skip_relative=not root.is_dir())
    relative = [m for m in missing if m[4]]
    if root.is_dir() and len(relative) == looked >= 2:  # nothing is where the root says: the root is wrong
        src, split, key, _, raw = relative[0]
        out.append(
            Finding(
                PROBLEM,
                "data.root",
                f"data.root {root}: none of the {looked} paths the sources name is under it (e.g. "
                f"{src}/{split} {key}: {raw}): is it the folder that holds them?",
            )
        )
        missing = [m for m in missing if not m[4]]
    for src, split, key, path, _ in missing:
        out.append(Finding(PROBLEM, f"{src}/{split}", f"{src}/{split}: {key} {path}: no such file or folder"))
    if not out and looked:
        out.append(
            Finding(OK, "data.root", f"data.root {root}: the {looked} paths the sources name are there")
        )
    out += _card_findings(recipe)
    if read_one and not any(f.level == PROBLEM for f in out):
        out += [_read_one(recipe, src, root) for src in recipe.data.sources]
    return out


def _missing_paths(
    recipe: Recipe, root: Path, *, skip_relative: bool
) -> tuple[list[tuple[str, str, str, Path, str | None]], int]:
    """(source, split, key, resolved path, the relative path as given or None when absolute) of
    every path a reader reads that is not there, and how many relative paths were looked for."""
    missing = []
    looked = 0
    for src in recipe.data.sources:
        reader = sources.get(src.format)
        hints = typing.get_type_hints(reader, include_extras=True)
        for split in src.splits:
            given = src.params(split)
            for key, value in reader_params(reader, given, root).items():
                if not isinstance(value, Path) or is_written(hints.get(key)):
                    continue
                relative = None if expand_path(given[key]).is_absolute() else str(given[key])
                if relative is not None:
                    if skip_relative:
                        continue
                    looked += 1
                if not value.exists():
                    missing.append((src.name, split, key, value, relative))
    return missing, looked


def _card_findings(recipe: Recipe) -> list[Finding]:
    """One finding per data card that is not there, naming the sources that name it."""
    by_card: dict[Path, list[str]] = {}
    for src in recipe.data.sources:
        if src.card is not None and not expand_path(src.card).is_file():
            by_card.setdefault(expand_path(src.card), []).append(src.name)
    return [
        Finding(
            PROBLEM,
            ", ".join(names),
            f"{', '.join(names)}: card {card}: no such file (relative to the folder uvft runs in)",
        )
        for card, names in by_card.items()
    ]


def _read_one(recipe: Recipe, src: SourceSection, root: Path) -> Finding:
    """The first record of the source's first split, read through its reader (images checked one
    at a time, not ahead), or why there is none. A reader that takes no file path (a hub dataset)
    is left to the build."""
    reader = sources.get(src.format)
    split = next(iter(src.splits))
    where = f"{src.name}/{split}"
    hints = typing.get_type_hints(reader)
    required = [
        name
        for name, p in inspect.signature(reader).parameters.items()
        if p.kind == p.KEYWORD_ONLY and p.default is p.empty
    ]
    if not any(_is_path(hints.get(name)) for name in required):
        return Finding(
            NOTE, where, f"{where}: {src.format} is opened by the build (its path may be on the hub)"
        )
    ctx = source_context(recipe, src.name, split, root, prefetch=False)
    tally = ctx.tally
    examples = reader(ctx, **reader_params(reader, src.params(split), root))
    try:
        first = next(examples, None)
    except UvftError as e:
        return Finding(PROBLEM, where, f"{where}: {e}")
    except OSError as e:  # a file it may not read, a folder where a reader opens a file itself
        said = str(e) if e.strerror is None else f"{e.strerror}: {e.filename}"
        return Finding(PROBLEM, where, f"{where}: {said}")
    finally:
        examples.close()
    counted = _counted(tally)
    if first is None:
        return Finding(PROBLEM, where, f"{where} ({src.format}): no examples{counted}")
    return Finding(OK, where, f"{where} ({src.format}): first example {describe(first)}{counted}")


def _is_path(hint: Any) -> bool:
    return hint is Path or Path in typing.get_args(hint)


def _counted(tally: Tally) -> str:
    counts = [
        *(f"{n} {r}" for r, n in tally.skipped.items()),
        *(f"{n} {r}" for r, n in tally.repaired.items()),
    ]
    return f" (on the way: {', '.join(counts)})" if counts else ""


def describe(ex: Example) -> str:
    """One Example in a line: its id and task, its image and size, and its task's fields (a list
    as its length and first items)."""
    parts = [f"{ex.id} ({ex.task}): image {Path(ex.image).name} {ex.image_size[0]}x{ex.image_size[1]}"]
    for name in tasks.get(ex.task).FIELDS:
        value = getattr(ex, name)
        if value in (None, [], ""):
            continue
        if isinstance(value, str):
            parts.append(f"{name} {_short(value)!r}")
            continue
        if isinstance(value[0], Object):
            items = [f"{o.category} {[round(float(v), 1) for v in o.bbox]}" for o in value[:2]]
        elif isinstance(value[0], Region):
            items = [repr(_short(r.text)) for r in value[:3]]
        elif isinstance(value[0], str):
            items = [repr(_short(v, 30)) for v in value[:3]]
        else:
            items = []  # polygons: the count says enough
        shown = f": {', '.join(items)}{', ...' if len(value) > len(items) else ''}" if items else ""
        parts.append(f"{name} ({len(value)}){shown}")
    return "; ".join(parts)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubAnswer:
    """What the hub (or its local cache) said of a model's config.json."""

    config: dict[str, Any] | None  # None: no config to read
    where: str  # "the local hub cache", "the hub"; or why there is no config
    missing: bool = False  # the hub says there is no such model, revision or config.json


HubFetch = Callable[[str, str | None, float], HubAnswer]


def hub_config(model_id: str, revision: str | None, timeout: float) -> HubAnswer:
    """A hub model's config.json: from the local hub cache, else one request of at most `timeout`
    seconds (no retries; none at all in offline mode)."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers, get_session

    try:
        cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # an id the cache cannot name (e.g. not namespace/name): ask the hub
        cached = None
    if isinstance(cached, str):
        return HubAnswer(json.loads(Path(cached).read_text()), "the local hub cache")
    if constants.is_offline_mode():
        return HubAnswer(None, "offline mode (HF_HUB_OFFLINE), and not in the local hub cache")
    try:
        response = get_session().get(
            hf_hub_url(model_id, "config.json", revision=revision),
            headers=build_hf_headers(),
            timeout=timeout,
            follow_redirects=True,
        )
    except Exception as e:  # no network, DNS, timeout, a malformed id: the name decides
        name = type(e).__name__
        if "Timeout" in name:
            return HubAnswer(None, f"the hub did not answer within {timeout:g} s, {name}")
        return HubAnswer(None, f"the hub could not be reached, {name}")
    status, code = response.status_code, response.headers.get("X-Error-Code")
    if status == 200:
        try:
            return HubAnswer(response.json(), "the hub")
        except ValueError:
            return HubAnswer(None, "the hub's config.json is not JSON")
    missing = {  # the hub's own error codes (anonymous callers get 401 for a repo that is not there)
        "RepoNotFound": "the hub has no such model (or it is private and this machine is not logged in: "
        "hf auth login)",
        "EntryNotFound": "its hub repo has no config.json (not a transformers model)",
        "RevisionNotFound": f"the hub has no revision {revision!r} of it",
    }
    if code in missing:
        return HubAnswer(None, missing[code], missing=True)
    if code == "GatedRepo" or status in (401, 403):
        return HubAnswer(None, f"the hub refused its config, HTTP {status}: a gated model not accepted yet?")
    return HubAnswer(None, f"the hub answered HTTP {status}")


def model_findings(
    recipe: Recipe, *, fetch: HubFetch | None = None, describe_tiny: bool = False
) -> list[Finding]:
    """`model.id` against `model.family` (see the module docstring); `describe_tiny`: what
    `model.id: null` trains."""
    model_id, family = recipe.model.id, recipe.model.family
    if model_id is None:
        return [Finding(NOTE, "model.id", tiny_description(recipe))] if describe_tiny else []
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            return [Finding(PROBLEM, "model.id", f"model.id {folder}: the folder has no config.json")]
        config = json.loads(config_file.read_text())
        return [_compare(model_id, family, config.get("model_type"), f"its {config_file}")]
    from pipeline.models.common import check_model_name

    try:
        check_model_name(model_id)  # written as a path: it must be a folder
    except ModelError as e:
        return [Finding(PROBLEM, "model.id", str(e))]
    answer = (fetch or hub_config)(model_id, recipe.model.revision, HUB_TIMEOUT)
    if answer.config is not None:
        said_by = f"its config.json (from {answer.where})"
        return [_compare(model_id, family, answer.config.get("model_type"), said_by)]
    if answer.missing:
        return [Finding(PROBLEM, "model.id", f"model.id {model_id}: {answer.where}")]
    named = name_family(model_id)
    unread = f" (its config was not read: {answer.where})"
    if named is None:
        said = (
            f"model.id {model_id}: not checked against model.family {family}: its name says no family{unread}"
        )
        return [Finding(NOTE, "model.id", said)]
    return [_compare(model_id, family, named, "its name", unread)]


def name_family(model_id: str) -> str | None:
    """The one family whose name a hub id spells ("Florence-2" is florence2), else None."""
    spelled = model_id.lower().replace("-", "").replace("_", "")
    found = [f for f in FAMILIES if f in spelled]
    return found[0] if len(found) == 1 else None


def _compare(model_id: str, family: str, model_type: Any, said_by: str, aside: str = "") -> Finding:
    """What `said_by` says the model is (`model_type`: a checkpoint's is its family's name) against
    the recipe's family."""
    if model_type == family:
        return Finding(
            OK, "model.id", f"model.id {model_id}: {said_by} says {family}, as model.family does{aside}"
        )
    fix = (
        f"set model.family: {model_type}, or model.id to a {family} model"
        if model_type in FAMILIES
        else f"uvft trains {', '.join(FAMILIES)}"
    )
    return Finding(
        PROBLEM,
        "model.id",
        f"model.id {model_id}: {said_by} says {model_type!r}, but model.family is {family}: {fix}{aside}",
    )


def tiny_description(recipe: Recipe) -> str:
    """What `model.id: null` trains, in one line."""
    from pipeline import models  # torch and transformers: only when there is a tiny model to describe

    family, tiny = models.get(recipe.model.family), recipe.model.tiny
    key = "model.tiny.base_stages" if tiny.base_stages is not None else "model.tiny.base_steps"
    stages = [
        f"{s.steps} steps{'' if tiny.base_stages else f' ({key})'} on "
        f"{', '.join(s.sources) if s.sources is not None else 'every training source'}"
        for s in tiny.stages()
    ]
    if tiny.base_stages is not None:
        base = f"given base stages ({key}) of {'; then '.join(stages)}"
    elif stages:
        base = f"given a base stage of {stages[0]}"
    else:
        base = "with no base stage (model.tiny.base_steps: 0)"
    parameters = _millions(tiny_parameters(recipe.model.family, tiny.size))
    return (
        f"model.id null: uvft's tiny stand-in {family.DISPLAY_NAME}, random weights (~{parameters} "
        f"parameters) {base}: for demos and tests, not a real model; set model.id to a hub id or a "
        "folder to fine-tune one"
    )


def tiny_parameters(family: str, size: dict[str, Any]) -> int:
    """The parameters of the family's tiny model of `size`, built with its fixed tokens only (the
    records' words add a few percent)."""
    from safetensors import safe_open
    from transformers.utils import logging as hf_logging

    from pipeline import models

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" is noise in a check
    try:
        with tempfile.TemporaryDirectory(prefix="uvft-tiny-") as tmp:
            models.get(family).build_tiny(Path(tmp), [], **size)
            total = 0
            for file in Path(tmp).glob("*.safetensors"):
                with safe_open(str(file), "pt") as weights:
                    for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                        shape = weights.get_slice(key).get_shape()
                        count = 1
                        for dim in shape:
                            count *= dim
                        total += count
            return total
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
