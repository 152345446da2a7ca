"""Source readers: one module per on-disk format, each registered by name.

A reader is a function `read(ctx: SourceContext, **params) -> Iterator[Example]`. Its keyword
parameters are what a recipe's source entry gives for one split (paths annotated as `Path` are
resolved against the recipe's data root before the call). It counts what it skips or repairs
in `ctx.tally` and raises `DataError` (file, record, field) for input it cannot trust. Repairs
that say the data is laid out wrong when they hit most records (boxes past the image, blank
captions) are named in sources/repairs.py, which the build asks after each source and split.
A reader does not look for a model's special tokens in its text: the build checks every
Example's text for the family's (formats/reserved.py), counting in the same tally.
`SourceContext` lives in sources/context.py (the readers and their helpers import it from there);
it is re-exported here for the build and the tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

from pipeline.records import Example
from pipeline.registry import Registry
from pipeline.sources.context import SourceContext

__all__ = ["SOURCES", "Reader", "SourceContext", "get", "names", "register"]

Reader = Callable[..., Iterator[Example]]

SOURCES: Registry[Reader] = Registry("source")
register = SOURCES.register

_MODULES = (
    *("coco_detection", "coco_captions", "vqav2", "image_folder", "jsonl", "hf_dataset", "refcoco"),
    "visual_genome",
)


def get(name: str) -> Reader:
    _load_all()
    return SOURCES.get(name)


def names() -> list[str]:
    _load_all()
    return SOURCES.names()


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"pipeline.sources.{module}")
