"""The two types that cross stage boundaries: Example (what a source says) and Record (rendered).

An Example is format-free: a task, an image reference and the task's structured content, with
boxes in absolute pixels (x1, y1, x2, y2) of the EXIF-oriented image. A Record is an Example
rendered for one model family: `prompt` and `target` text plus everything evaluation needs.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

TASKS = ("classification", "caption", "vqa", "detection")

Box = tuple[float, float, float, float]
ImageSize = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class Object:
    bbox: Box  # absolute x1, y1, x2, y2 in pixels
    category: str


@dataclass
class Example:
    id: str
    task: str
    image: str  # absolute path to the image file
    image_size: ImageSize  # (width, height) after EXIF orientation
    source: str = ""
    split: str = ""
    label: str | None = None  # classification
    caption: str | None = None  # caption: the text trained on
    captions: list[str] = field(default_factory=list)  # caption: every reference, for scoring
    question: str | None = None  # vqa
    answer: str | None = None  # vqa: the text trained on (most frequent human answer)
    answers: list[str] = field(default_factory=list)  # vqa: every human answer, for scoring
    answer_type: str | None = None  # vqa: "yes/no", "number", "other"
    objects: list[Object] = field(default_factory=list)  # detection
    categories: list[str] = field(default_factory=list)  # detection/classification vocabulary

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"example {self.id}: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        missing = {
            "classification": self.label is None,
            "caption": self.caption is None,
            "vqa": self.question is None or self.answer is None,
            "detection": False,
        }[self.task]
        if missing:
            raise ValueError(f"example {self.id}: a {self.task} example lacks its target field")


@dataclass
class Record:
    """An Example rendered for one model family (one row of the Arrow dataset)."""

    id: str
    source: str
    task: str
    split: str
    family: str
    image: str
    image_size: list[int]  # [width, height]
    prompt: str
    target: str
    label: str | None = None
    captions: list[str] = field(default_factory=list)
    question: str | None = None
    answers: list[str] = field(default_factory=list)
    answer_type: str | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)  # [{"bbox": [x1,y1,x2,y2], "category": str}]
    categories: list[str] = field(default_factory=list)

    @classmethod
    def from_example(cls, ex: Example, family: str, prompt: str, target: str) -> Record:
        return cls(
            id=ex.id,
            source=ex.source,
            task=ex.task,
            split=ex.split,
            family=family,
            image=ex.image,
            image_size=[int(ex.image_size[0]), int(ex.image_size[1])],
            prompt=prompt,
            target=target,
            label=ex.label,
            captions=list(ex.captions),
            question=ex.question,
            answers=list(ex.answers),
            answer_type=ex.answer_type,
            objects=[{"bbox": [float(v) for v in o.bbox], "category": o.category} for o in ex.objects],
            categories=list(ex.categories),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_features():
    """The Arrow schema of a record dataset (imported lazily: `datasets` is heavy)."""
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "task": Value("string"),
            "split": Value("string"),
            "family": Value("string"),
            "image": Value("string"),
            "image_size": List(Value("int32")),
            "prompt": Value("string"),
            "target": Value("string"),
            "label": Value("string"),
            "captions": List(Value("string")),
            "question": Value("string"),
            "answers": List(Value("string")),
            "answer_type": Value("string"),
            "objects": List({"bbox": List(Value("float64")), "category": Value("string")}),
            "categories": List(Value("string")),
        }
    )


class RecordColumns:
    """Records as Arrow columns, appended one at a time and taken out as a pyarrow Table in the
    schema of `record_features` (the build writes Arrow without a dict per row).

    `append(ex, family, prompt, target)` holds what `Record.from_example(...).to_dict()` holds,
    value for value; lists are kept flat (values and offsets), so a detection vocabulary shared by
    every Example of a source is referenced, not copied, until Arrow copies it once.
    """

    _TEXT = ("id", "source", "task", "split", "family", "image", "prompt", "target")
    _OPTIONAL = ("label", "question", "answer_type")

    def __init__(self) -> None:
        self.text: dict[str, list[str | None]] = {k: [] for k in (*self._TEXT, *self._OPTIONAL)}
        self.sizes: list[int] = []  # width, height, width, height, ...
        self.lists: dict[str, tuple[list[int], list[str]]] = {
            k: ([0], []) for k in ("captions", "answers", "categories")
        }  # name -> (offsets, values)
        self.object_offsets: list[int] = [0]
        self.boxes: list[float] = []  # x1, y1, x2, y2 per object
        self.object_categories: list[str] = []

    def __len__(self) -> int:
        return len(self.sizes) // 2

    def append(self, ex: Example, family: str, prompt: str, target: str) -> None:
        t = self.text
        for key, value in (
            ("id", ex.id),
            ("source", ex.source),
            ("task", ex.task),
            ("split", ex.split),
            ("family", family),
            ("image", ex.image),
            ("prompt", prompt),
            ("target", target),
            ("label", ex.label),
            ("question", ex.question),
            ("answer_type", ex.answer_type),
        ):
            t[key].append(value)
        self.sizes += (int(ex.image_size[0]), int(ex.image_size[1]))
        for key, values in (
            ("captions", ex.captions),
            ("answers", ex.answers),
            ("categories", ex.categories),
        ):
            offsets, flat = self.lists[key]
            flat += values
            offsets.append(len(flat))
        boxes, cats = self.boxes, self.object_categories
        for o in ex.objects:
            x1, y1, x2, y2 = o.bbox
            boxes += (float(x1), float(y1), float(x2), float(y2))
            cats.append(o.category)
        self.object_offsets.append(len(cats))

    def to_table(self):
        """The rows appended so far as a pyarrow Table with the Arrow schema of record_features()."""
        import numpy as np
        import pyarrow as pa

        schema = record_features().arrow_schema

        def listed(offsets: list[int], values: pa.Array, name: str) -> pa.Array:
            arr = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
            return arr.cast(schema.field(name).type)

        columns: dict[str, pa.Array] = {k: pa.array(v, pa.string()) for k, v in self.text.items()}
        sizes = pa.array(self.sizes, pa.int32())
        columns["image_size"] = listed(list(range(0, len(self.sizes) + 1, 2)), sizes, "image_size")
        for key, (offsets, values) in self.lists.items():
            columns[key] = listed(offsets, pa.array(values, pa.string()), key)
        n_boxes = len(self.object_categories)
        bbox = pa.ListArray.from_arrays(
            pa.array(np.arange(0, 4 * n_boxes + 1, 4, dtype=np.int32)), pa.array(self.boxes, pa.float64())
        )
        objects = pa.StructArray.from_arrays(
            [bbox, pa.array(self.object_categories, pa.string())], names=["bbox", "category"]
        )
        columns["objects"] = listed(self.object_offsets, objects, "objects")
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


@dataclass
class Tally:
    """What a source skipped (whole examples) and repaired (kept after a fix), by reason.

    Skips count against the recipe's skip threshold; repairs do not. The first few of each
    reason are logged with their detail so a person can find them.
    """

    examples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)
    log_first: int = 3

    def skip(self, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if self.skipped[reason] <= self.log_first:
            logger.warning("skipped (%s): %s", reason, detail)

    def repair(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.repaired[reason] += n
        if self.repaired[reason] <= self.log_first:
            logger.info("repaired (%s): %s", reason, detail)

    def add(self, other: Tally) -> None:
        self.examples += other.examples
        self.skipped.update(other.skipped)
        self.repaired.update(other.repaired)

    @property
    def skip_fraction(self) -> float:
        total = self.examples + sum(self.skipped.values())
        return sum(self.skipped.values()) / total if total else 0.0
