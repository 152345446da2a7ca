"""Data cards: one Markdown file per source, YAML front matter for the builder and prose for people.

The front matter (between two `---` lines at the top) has these keys:

    name      str                  the card's name (used in warnings)
    tasks     [str]                of records.TASKS
    format    str | [str]          the uvft reader(s) for the files; a list when one source is
                                   written in several formats (the shapes demo set)
    license   str
    homepage  str
    citation  str                  BibTeX
    splits    {split: int}         examples the reader yields per split, for a one-format card;
              | {format: {split: int}}   keyed by format first when the card lists several;
                                   `format:task` for a reader asked for another task than its
                                   default (coco_detection:region_to_category), which the build
                                   otherwise does not check
    obtain    {...} | str          how to download and where files go (free form for people)
    label_map {str: str}           optional: folder or class id -> readable name

`check_counts` turns a mismatch between the card and what a reader yielded into a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import DataError
from pipeline.recipe import load_yaml
from pipeline.records import TASKS

FORMATS = (
    *("coco_detection", "coco_captions", "vqav2", "image_folder", "jsonl", "hf_dataset", "refcoco"),
    "visual_genome",
)
_REQUIRED = ("name", "tasks", "format", "license", "homepage", "citation", "splits", "obtain")
_OPTIONAL = ("label_map",)


@dataclass
class DataCard:
    path: Path
    name: str
    tasks: list[str]
    formats: list[str]
    license: str
    homepage: str
    citation: str
    counts: dict[str, dict[str, int]]  # format -> split -> expected number of examples
    obtain: dict[str, Any] | str
    body: str  # the Markdown below the front matter
    label_map: dict[str, str] = field(default_factory=dict)


def load_card(path: Path) -> DataCard:
    """Parse and validate one card; a DataError names the file and the offending field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read data card: {e}", file=path) from None
    meta, body = _split_front_matter(text, path)

    unknown = sorted(set(meta) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DataError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(_REQUIRED + _OPTIONAL)}",
            file=path,
            field=unknown[0],
        )
    for key in _REQUIRED:
        if key not in meta or meta[key] is None:
            raise DataError("missing required key in the front matter", file=path, field=key)

    for key in ("name", "license", "homepage", "citation"):
        _expect(isinstance(meta[key], str) and meta[key].strip(), path, key, "a non-empty string", meta[key])
    tasks = _str_list(meta["tasks"], path, "tasks")
    for task in tasks:
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; known: {', '.join(TASKS)}", file=path, field="tasks")
    formats = (
        [meta["format"]] if isinstance(meta["format"], str) else _str_list(meta["format"], path, "format")
    )
    for fmt in formats:
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}", file=path, field="format")
    counts = _counts(meta["splits"], formats, path)
    obtain = meta["obtain"]
    _expect(isinstance(obtain, dict | str), path, "obtain", "a mapping or a string", obtain)
    label_map = meta.get("label_map") or {}
    _expect(
        isinstance(label_map, dict) and all(isinstance(v, str) for v in label_map.values()),
        path,
        "label_map",
        "a mapping of names to strings",
        label_map,
    )
    return DataCard(
        path=path,
        name=meta["name"],
        tasks=tasks,
        formats=formats,
        license=meta["license"],
        homepage=meta["homepage"],
        citation=meta["citation"],
        counts=counts,
        obtain=obtain,
        body=body,
        label_map={str(k): v for k, v in label_map.items()},
    )


def load_cards(directory: Path) -> dict[str, DataCard]:
    """Every `*.md` card in a folder, by name."""
    cards: dict[str, DataCard] = {}
    for path in sorted(Path(directory).glob("*.md")):
        card = load_card(path)
        if card.name in cards:
            raise DataError(f"card name {card.name!r} is also used by {cards[card.name].path}", file=path)
        cards[card.name] = card
    return cards


def expected_count(card: DataCard, format: str, split: str) -> int | None:
    """What the card says the `format` reader yields for `split`; None when the card does not say."""
    return card.counts.get(format, {}).get(split)


def check_counts(card: DataCard, format: str, split: str, actual: int) -> str | None:
    """A warning when `actual` differs from the card's count (None when equal or not on the card)."""
    expected = expected_count(card, format, split)
    if expected is None or expected == actual:
        return None
    return (
        f"data card {card.name} ({card.path}): split {split!r} of format {format} has {actual} examples, "
        f"the card expects {expected} ({actual - expected:+d}); a partial download, a different version, "
        f"or examples the reader skipped"
    )


# --- helpers ---------------------------------------------------------------------------------------


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise DataError("no YAML front matter: the card must start with a '---' line", file=path)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise DataError("the front matter has no closing '---' line", file=path)
    try:
        meta = load_yaml("".join(lines[1:end]), lambda message: DataError(message, file=path), what="a card")
    except yaml.YAMLError as e:
        raise DataError(f"front matter is not valid YAML: {e}", file=path) from None
    if not isinstance(meta, dict):
        raise DataError(f"front matter must be a mapping, got {type(meta).__name__}", file=path)
    return meta, "".join(lines[end + 1 :]).lstrip("\n")


def _expect(ok: Any, path: Path, key: str, what: str, value: Any) -> None:
    if not ok:
        raise DataError(f"expected {what}, got {value!r}", file=path, field=key)


def _str_list(value: Any, path: Path, key: str) -> list[str]:
    ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    _expect(ok, path, key, "a non-empty list of strings", value)
    return list(value)


def _split_counts(value: Any, path: Path, key: str) -> dict[str, int]:
    _expect(isinstance(value, dict) and value, path, key, "a mapping of split to count", value)
    for split, n in value.items():
        # bool is an int subclass: `train: yes` must not pass as 1
        ok = isinstance(n, int) and not isinstance(n, bool) and n >= 0
        _expect(ok, path, f"{key}.{split}", "a count >= 0", n)
    return {str(s): n for s, n in value.items()}


def _counts(value: Any, formats: list[str], path: Path) -> dict[str, dict[str, int]]:
    _expect(isinstance(value, dict) and value, path, "splits", "a mapping", value)
    nested = all(isinstance(v, dict) for v in value.values())
    if not nested:
        if len(formats) > 1:
            raise DataError(
                f"the card lists {len(formats)} formats, so splits must be keyed by format first "
                f"({{format: {{split: count}}}})",
                file=path,
                field="splits",
            )
        return {formats[0]: _split_counts(value, path, "splits")}
    for fmt in value:
        if fmt.split(":")[0] not in formats:  # `format:task`: a reader's count for another task
            raise DataError(
                f"counts for {fmt!r}, which is not in the card's format list ({', '.join(formats)})",
                file=path,
                field=f"splits.{fmt}",
            )
    return {fmt: _split_counts(v, path, f"splits.{fmt}") for fmt, v in value.items()}
