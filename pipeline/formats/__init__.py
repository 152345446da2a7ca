"""Text formats per model family: `render(example) -> (prompt, target)` and
`parse(text, task, image_size) -> Prediction`, side by side so the code that writes a target
is the code that reads predictions back."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pipeline.errors import DataError
from pipeline.families import FAMILY_MODULES
from pipeline.records import DEFAULT_LANGUAGE, Example, Object, Region


@dataclass
class Prediction:
    """What a generation says, structured. `errors` counts the pieces that could not be parsed."""

    task: str
    text: str = ""  # caption / answer / label / recognised text, or the raw text for box tasks
    objects: list[Object] = field(default_factory=list)  # detection, grounding
    polygons: list[list[float]] = field(default_factory=list)  # segmentation, flat xy lists in pixels
    regions: list[Region] = field(default_factory=list)  # ocr with regions
    # segmentation written as codes (PaliGemma): per object of `objects` (its box), its 16 mask codes;
    # `mask` is their decoded union in the image, a COCO RLE with text counts (evaluation.predict)
    mask_codes: list[list[int]] = field(default_factory=list)
    mask: dict[str, Any] | None = None
    errors: int = 0


def text_pair(
    ex: Example, *, caption: Mapping[str | None, str], vqa: str, classification: str
) -> tuple[str, str]:
    """(prompt, target) of a caption, vqa or classification Example, given a family's prompts
    (`caption` by level, None the brief one; `vqa` holds `{question}`; both may hold `{lang}`, the
    example's language, default "en"): the text tasks render alike in every family. A family
    without a prompt for a caption's level refuses it before calling this."""
    lang = ex.language or DEFAULT_LANGUAGE
    if ex.task == "caption":
        assert ex.caption is not None  # Example guarantees each task's target field
        return caption[ex.level].format(lang=lang), ex.caption
    if ex.task == "vqa":
        assert ex.question is not None and ex.answer is not None
        return vqa.format(question=ex.question, lang=lang), ex.answer
    if ex.task == "classification":
        assert ex.label is not None
        return classification, ex.label
    raise ValueError(f"example {ex.id}: {ex.task!r} is not a text task")


@functools.lru_cache(maxsize=1 << 16)  # a build asks about the same few hundred names millions of times
def writable_label(category: str, forbidden: str) -> bool:
    """True when a category reads back as itself from a target: non-empty, no surrounding spaces,
    none of the `forbidden` characters (where a format's parser ends or splits a label)."""
    stripped = category.strip()
    return bool(stripped) and category == stripped and not any(c in category for c in forbidden)


def check_phrase(ex: Example, forbidden: str) -> str:
    """The example's phrase (grounding, segmentation), refused with a DataError naming the record
    when a format could not write it in a prompt or read it back from a target."""
    phrase = ex.phrase or ""
    if not writable_label(phrase, forbidden):
        shown = " or ".join(repr(c) for c in forbidden)
        raise DataError(
            f"phrase {phrase!r} cannot be written (it must be non-empty, without surrounding spaces, "
            f"without {shown})",
            record=ex.id,
            field="phrase",
        )
    return phrase


def check_named(ex: Example, named: list[str]) -> None:
    """An open-vocabulary example's objects are all of the classes its prompt names (a box of
    another class would be trained as an answer to a question that did not ask for it)."""
    wanted = set(named)
    for i, o in enumerate(ex.objects):
        if o.category not in wanted:
            raise DataError(
                f"object {o.category!r} is not among the classes the prompt names "
                f"({', '.join(map(repr, named))})",
                record=ex.id,
                field=f"objects[{i}].category",
            )


def refuse(ex: Example, family: str, reason: str, field: str = "task") -> DataError:
    """The build's refusal of what a family cannot write, with the reason, naming the record."""
    what = f"a {ex.level} caption" if field == "level" else ex.task
    return DataError(f"{what} is not supported for {family}: {reason}", record=ex.id, field=field)


def get(family: str) -> ModuleType:
    """The format module of a model family (`render`, `parse`, its location scheme `LOCATIONS`)."""
    return importlib.import_module(FAMILY_MODULES.get(family).format)
