"""Source readers: one module per on-disk format, each registered by name.

A reader is a function `read(ctx: SourceContext, **params) -> Iterator[Example]`. Its keyword
parameters are what a recipe's source entry gives for one split (paths annotated as `Path` are
resolved against the recipe's data root before the call). It counts what it skips or repairs
in `ctx.tally` and raises `DataError` (file, record, field) for input it cannot trust.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import Example, ImageSize, Tally
from pipeline.registry import Registry

Reader = Callable[..., Iterator[Example]]

SOURCES: Registry[Reader] = Registry("source")
register = SOURCES.register

_MODULES = ("coco_detection", "coco_captions", "vqav2", "image_folder", "jsonl", "hf_dataset", "refcoco")


@dataclass
class SourceContext:
    name: str  # the recipe's name for this source: becomes Example.source
    split: str  # becomes Example.split
    tally: Tally = field(default_factory=Tally)
    check_images: str = "full"  # "full": decode every image once; "header": size and mode only
    max_image_pixels: int = 89_478_485  # PIL's default bomb limit; larger images are skipped
    root: Path | None = None  # the recipe's data root, for parameters that may be a path or a name
    # Shared by every source of one build (each makes its own when not given): image verdicts by
    # path (images.check_image), and resolved folders for confining paths (images.Paths).
    image_checks: dict[Any, Any] = field(default_factory=dict)
    paths: Any = None

    def __post_init__(self) -> None:
        if self.paths is None:
            from pipeline.sources.images import Paths  # images imports this module

            self.paths = Paths()

    def example(self, id: str, image: Path | str, image_size: ImageSize, **fields: Any) -> Example:
        """An Example of this source and split (what a reader yields), counted in the tally."""
        self.tally.examples += 1
        return Example(
            id=id, image=str(image), image_size=image_size, source=self.name, split=self.split, **fields
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
