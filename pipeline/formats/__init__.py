"""Text formats per model family: `render(example) -> (prompt, target)` and
`parse(text, task, image_size) -> Prediction`, side by side so the code that writes a target
is the code that reads predictions back."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from types import ModuleType

from pipeline.families import FAMILY_MODULES
from pipeline.records import Example, Object


@dataclass
class Prediction:
    """What a generation says, structured. `errors` counts the pieces that could not be parsed."""

    task: str
    text: str = ""  # caption / answer / label, or the raw text for detection
    objects: list[Object] = field(default_factory=list)
    errors: int = 0


def text_pair(ex: Example, *, caption: str, vqa: str, classification: str) -> tuple[str, str]:
    """(prompt, target) of a caption, vqa or classification Example, given a family's prompts
    (`vqa` holds `{question}`): the text tasks render alike in every family."""
    if ex.task == "caption":
        assert ex.caption is not None  # Example guarantees each task's target field
        return caption, ex.caption
    if ex.task == "vqa":
        assert ex.question is not None and ex.answer is not None
        return vqa.format(question=ex.question), ex.answer
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


def get(family: str) -> ModuleType:
    """The format module of a model family (`render`, `parse`, its location scheme `LOCATIONS`)."""
    return importlib.import_module(FAMILY_MODULES.get(family).format)
