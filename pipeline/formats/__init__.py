"""Text formats per model family: `render(example) -> (prompt, target)` and
`parse(text, task, image_size) -> Prediction`, side by side so the code that writes a target
is the code that reads predictions back."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from types import ModuleType

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
    errors: int = 0


def text_pair(ex: Example, *, caption: str, vqa: str, classification: str) -> tuple[str, str]:
    """(prompt, target) of a caption, vqa or classification Example, given a family's prompts
    (`vqa` holds `{question}`; both may hold `{lang}`, the example's language, default "en"): the
    text tasks render alike in every family."""
    lang = ex.language or DEFAULT_LANGUAGE
    if ex.task == "caption":
        assert ex.caption is not None  # Example guarantees each task's target field
        return caption.format(lang=lang), ex.caption
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


def get(family: str) -> ModuleType:
    """The format module of a model family (`render`, `parse`, its location scheme `LOCATIONS`)."""
    return importlib.import_module(FAMILY_MODULES.get(family).format)
