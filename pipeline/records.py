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

# new tasks go at the end: checkpoints keep per-task loss sums by position in this tuple
TASKS = (
    *("classification", "caption", "vqa", "detection", "grounding", "segmentation", "ocr"),
    *("dense_region_caption", "region_proposal", "open_vocabulary_detection"),
    *("region_to_category", "region_to_description", "region_to_ocr", "region_to_segmentation"),
)
# the tasks whose prompt gives a region of the image (Example.region) to say something about
REGION_TASKS = ("region_to_category", "region_to_description", "region_to_ocr", "region_to_segmentation")
# a caption's level of detail (Example.level), each its own prompt (Florence-2's `<CAPTION>`,
# `<DETAILED_CAPTION>`, `<MORE_DETAILED_CAPTION>`); None is the first: a brief caption
CAPTION_LEVELS = ("brief", "detailed", "paragraph")
# the tasks whose prompts may carry a language (PaliGemma's `caption {lang}`, `answer {lang} ...`)
LANGUAGE_TASKS = ("caption", "vqa")
DEFAULT_LANGUAGE = "en"  # a text without a language is English
# Example.caption, the caption trained on, named as its task is; also a JSONL key and a default
# hf_dataset column
CAPTION_FIELD = "caption"

Box = tuple[float, float, float, float]
ImageSize = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class Object:
    bbox: Box  # absolute x1, y1, x2, y2 in pixels
    category: str
    # evaluation only: the annotation's area as COCO defines it (of the segmentation), which
    # decides small / medium / large; None: the box's area stands in
    area: float | None = None


@dataclass(frozen=True)
class Region:
    """A piece of text in the image and where it is (OCR with regions)."""

    text: str
    quad: tuple[float, ...]  # x1, y1, x2, y2, x3, y3, x4, y4 in pixels, clockwise from top-left

    def __post_init__(self) -> None:
        if len(self.quad) != 8:
            raise ValueError(f"region {self.text!r}: a quad is 8 numbers (4 corners), not {len(self.quad)}")

    @classmethod
    def from_box(cls, text: str, box: Box) -> Region:
        """The quad of an axis-aligned xyxy box, clockwise from its top-left corner."""
        x1, y1, x2, y2 = (float(v) for v in box)
        return cls(text, (x1, y1, x2, y1, x2, y2, x1, y2))


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
    # detection, evaluation only: COCO crowd regions (iscrowd=1), never trained on or rendered; a
    # detection inside one is neither a hit nor a false positive, as the official scorer has it
    crowd: list[Object] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # detection/classification vocabulary
    # grounding, segmentation: the referring expression; its box(es) are `objects` (category: the
    # object's class where the source has one, else the phrase)
    phrase: str | None = None
    # segmentation: the referred object's mask as COCO polygons (flat [x1, y1, x2, y2, ...] in pixels)
    polygons: list[list[float]] = field(default_factory=list)
    # segmentation for a family that writes a mask as codes (PaliGemma's 16 `<segNNN>`): the codes
    # of the mask in its box (pipeline.models.vqvae), made by the build, never by a source
    mask_codes: list[int] = field(default_factory=list)
    text: str | None = None  # ocr: all the text of the image in reading order
    regions: list[Region] = field(default_factory=list)  # ocr: text with quads (OCR with regions)
    language: str | None = None  # caption, vqa: ISO 639-1 code of the text; None: English
    level: str | None = None  # caption: "detailed" or "paragraph" (CAPTION_LEVELS); None: brief
    # region_to_*: the region the prompt gives (absolute x1, y1, x2, y2 in pixels); the answer is
    # `label` (category), `caption` (description), `text` (ocr) or `polygons` (segmentation)
    region: Box | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"example {self.id}: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        missing = {
            "classification": self.label is None,
            "caption": self.caption is None,
            "vqa": self.question is None or self.answer is None,
            "detection": False,
            "grounding": not self.phrase or not self.objects,
            "segmentation": not self.phrase or not self.polygons,
            "ocr": self.text is None,
            "dense_region_caption": False,
            "region_proposal": False,
            "open_vocabulary_detection": not self.categories,  # the classes the prompt names
            "region_to_category": self.region is None or self.label is None,
            "region_to_description": self.region is None or self.caption is None,
            "region_to_ocr": self.region is None or self.text is None,
            "region_to_segmentation": self.region is None or not self.polygons,
        }[self.task]
        if missing:
            raise ValueError(f"example {self.id}: a {self.task} example lacks its target field")
        if self.language is not None and self.task not in LANGUAGE_TASKS:
            raise ValueError(
                f"example {self.id}: a language is only for {' and '.join(LANGUAGE_TASKS)} examples"
            )
        if self.level == CAPTION_LEVELS[0]:
            self.level = None  # brief is the default: one way to write it
        if self.level is not None and (self.task != "caption" or self.level not in CAPTION_LEVELS):
            raise ValueError(
                f"example {self.id}: a level is one of {', '.join(CAPTION_LEVELS)}, for caption examples"
            )
        if self.region is not None and self.task not in REGION_TASKS:
            raise ValueError(f"example {self.id}: a region is only for {', '.join(REGION_TASKS)} examples")


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
    objects: list[dict[str, Any]] = field(default_factory=list)  # [{"bbox": xyxy, "category", "area"}]
    categories: list[str] = field(default_factory=list)
    crowd: list[dict[str, Any]] = field(default_factory=list)  # as objects; evaluation only
    phrase: str | None = None
    polygons: list[list[float]] = field(default_factory=list)
    text: str | None = None
    regions: list[dict[str, Any]] = field(default_factory=list)  # [{"text", "quad"}]
    language: str | None = None
    level: str | None = None
    region: list[float] = field(default_factory=list)  # x1, y1, x2, y2; empty: none

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
            objects=[_object_dict(o) for o in ex.objects],
            categories=list(ex.categories),
            crowd=[_object_dict(o) for o in ex.crowd],
            phrase=ex.phrase,
            polygons=[[float(v) for v in p] for p in ex.polygons],
            text=ex.text,
            regions=[{"text": r.text, "quad": [float(v) for v in r.quad]} for r in ex.regions],
            language=ex.language,
            level=ex.level,
            region=[] if ex.region is None else [float(v) for v in ex.region],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _object_dict(o: Object) -> dict[str, Any]:
    area = None if o.area is None else float(o.area)
    return {"bbox": [float(v) for v in o.bbox], "category": o.category, "area": area}


def record_features():
    """The Arrow schema of a record dataset (imported lazily: `datasets` is heavy)."""
    from datasets import Features, List, Value

    _OBJECT = {"bbox": List(Value("float64")), "category": Value("string"), "area": Value("float64")}
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
            "objects": List(_OBJECT),
            "categories": List(Value("string")),
            "crowd": List(_OBJECT),
            "phrase": Value("string"),
            "polygons": List(List(Value("float64"))),
            "text": Value("string"),
            "regions": List({"text": Value("string"), "quad": List(Value("float64"))}),
            "language": Value("string"),
            "level": Value("string"),
            "region": List(Value("float64")),
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
    _OPTIONAL = ("label", "question", "answer_type", "phrase", "text", "language", "level")

    def __init__(self) -> None:
        self.text: dict[str, list[str | None]] = {k: [] for k in (*self._TEXT, *self._OPTIONAL)}
        self.sizes: list[int] = []  # width, height, width, height, ...
        self.lists: dict[str, tuple[list[int], list[str]]] = {
            k: ([0], []) for k in ("captions", "answers", "categories")
        }  # name -> (offsets, values)
        self.objects = _ObjectColumns()
        self.crowd = _ObjectColumns()
        # polygons: per record a list of polygons, each a list of floats (two levels of offsets)
        self.polygon_offsets: list[int] = [0]
        self.point_offsets: list[int] = [0]
        self.points: list[float] = []
        self.region_offsets: list[int] = [0]
        self.region_texts: list[str] = []
        self.quad_values: list[float] = []
        # the region a region_to_* prompt gives: x1, y1, x2, y2 per record that has one
        self.given_offsets: list[int] = [0]
        self.given_values: list[float] = []

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
            ("phrase", ex.phrase),
            ("text", ex.text),
            ("language", ex.language),
            ("level", ex.level),
        ):
            t[key].append(value)
        if ex.region is not None:
            self.given_values += (float(v) for v in ex.region)
        self.given_offsets.append(len(self.given_values))
        self.sizes += (int(ex.image_size[0]), int(ex.image_size[1]))
        for key, values in (
            ("captions", ex.captions),
            ("answers", ex.answers),
            ("categories", ex.categories),
        ):
            offsets, flat = self.lists[key]
            flat += values
            offsets.append(len(flat))
        self.objects.append(ex.objects)
        self.crowd.append(ex.crowd)
        for poly in ex.polygons:
            self.points += (float(v) for v in poly)
            self.point_offsets.append(len(self.points))
        self.polygon_offsets.append(len(self.point_offsets) - 1)
        for r in ex.regions:
            self.region_texts.append(r.text)
            self.quad_values += (float(v) for v in r.quad)
        self.region_offsets.append(len(self.region_texts))

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
        for key, objs in (("objects", self.objects), ("crowd", self.crowd)):
            n_boxes = len(objs.categories)
            bbox = pa.ListArray.from_arrays(
                pa.array(np.arange(0, 4 * n_boxes + 1, 4, dtype=np.int32)), pa.array(objs.boxes, pa.float64())
            )
            structs = pa.StructArray.from_arrays(
                [bbox, pa.array(objs.categories, pa.string()), pa.array(objs.areas, pa.float64())],
                names=["bbox", "category", "area"],
            )
            columns[key] = listed(objs.offsets, structs, key)
        polygons = pa.ListArray.from_arrays(
            pa.array(self.point_offsets, pa.int32()), pa.array(self.points, pa.float64())
        )
        columns["polygons"] = listed(self.polygon_offsets, polygons, "polygons")
        quads = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(self.quad_values) + 1, 8, dtype=np.int32)),
            pa.array(self.quad_values, pa.float64()),
        )
        regions = pa.StructArray.from_arrays(
            [pa.array(self.region_texts, pa.string()), quads], names=["text", "quad"]
        )
        columns["regions"] = listed(self.region_offsets, regions, "regions")
        columns["region"] = listed(self.given_offsets, pa.array(self.given_values, pa.float64()), "region")
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


class _ObjectColumns:
    """One list-of-Object column of RecordColumns, kept flat: offsets, boxes, categories, areas."""

    def __init__(self) -> None:
        self.offsets: list[int] = [0]
        self.boxes: list[float] = []  # x1, y1, x2, y2 per object
        self.categories: list[str] = []
        self.areas: list[float | None] = []

    def append(self, objects: list[Object]) -> None:
        for o in objects:
            x1, y1, x2, y2 = o.bbox
            self.boxes += (float(x1), float(y1), float(x2), float(y2))
            self.categories.append(o.category)
            self.areas.append(None if o.area is None else float(o.area))
        self.offsets.append(len(self.categories))


@dataclass
class BoxClues:
    """How a source's boxes sit in their images: the clues from which the build names the likely
    cause when many boxes needed repair (pipeline/sources/repairs.py reads them). Counted by
    sources/images.clip_objects for every box a reader keeps or drops."""

    boxes: int = 0  # boxes read
    # clipped by more than CLIP_SLACK pixels, or dropped for having no area left in the image
    moved: int = 0
    unit: int = 0  # inside [0, 1] x [0, 1] of an image larger than that: normalised coordinates?
    xywh: int = 0  # written as x, y, width, height (COCO's bbox)
    # of the moved boxes written as xywh, those whose four numbers fit the image when read as
    # x1, y1, x2, y2: xyxy written into an xywh field
    moved_fit_as_xyxy: int = 0
    overflow: float = 1.0  # the largest factor a box reaches past its image (x2 / width, y2 / height)
    # declared size / real size (rounded to 0.01) of images whose annotation declares another size
    size_ratios: Counter[float] = field(default_factory=Counter)

    # a box past the edge by less than this is rounding (x + w = 640.0001), not a sign of anything
    CLIP_SLACK = 1.0

    def add(self, box: Box, size: ImageSize, *, written: str, dropped: bool) -> None:
        """Count one box (absolute x1, y1, x2, y2 as read, before clipping) in an image of `size`."""
        x1, y1, x2, y2 = box
        w, h = size
        self.boxes += 1
        if x2 <= 1.0 and y2 <= 1.0 and x1 >= 0.0 and y1 >= 0.0 and max(w, h) > 2:
            self.unit += 1
        past = max(-x1, -y1, x2 - w, y2 - h)
        moved = dropped or past > self.CLIP_SLACK
        if w > 0 and h > 0:
            self.overflow = max(self.overflow, x2 / w, y2 / h)
        if written == "xywh":
            self.xywh += 1
            # the four numbers as written: x1, y1, width, height; read as x1, y1, x2, y2 instead
            bw, bh = x2 - x1, y2 - y1
            if moved and x1 < bw <= w and y1 < bh <= h:
                self.moved_fit_as_xyxy += 1
        if moved:
            self.moved += 1

    def size_differs(self, declared: ImageSize, real: ImageSize) -> None:
        ratio = (declared[0] / real[0] + declared[1] / real[1]) / 2 if real[0] and real[1] else 0.0
        self.size_ratios[round(ratio, 2)] += 1

    def merge(self, other: BoxClues) -> None:
        for name in ("boxes", "moved", "unit", "xywh", "moved_fit_as_xyxy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.overflow = max(self.overflow, other.overflow)
        self.size_ratios.update(other.size_ratios)


@dataclass
class Tally:
    """What a source skipped (whole examples) and repaired (kept after a fix), by reason.

    Skips count against the recipe's skip threshold (data.max_skip_fraction). Repairs that hit a
    few records are bad records; repairs that hit most of them say the data is laid out wrong
    (boxes clipped because xyxy was written where xywh belongs, every caption blank): for those,
    `read` counts what each could have hit, `boxes` keeps clues to the cause, and the build fails
    past data.max_repair_fraction (pipeline/sources/repairs.py). The first few of each reason
    are logged with their detail so a person can find them.
    """

    examples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)
    # repair reason -> how many items it could have hit (captions read, polygons read...)
    read: Counter[str] = field(default_factory=Counter)
    boxes: BoxClues = field(default_factory=BoxClues)
    log_first: int = 3

    def skip(self, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if self.skipped[reason] <= self.log_first:
            logger.warning("skipped (%s): %s", reason, detail)

    def drop(self, reason: str, detail: str = "") -> None:
        """Skip an example already counted in `examples` (yielded by its reader, then refused by
        a check of the build's, formats/reserved.screen): it becomes a skip like any other."""
        self.examples -= 1
        self.skip(reason, detail)

    def repair(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.repaired[reason] += n
        if self.repaired[reason] <= self.log_first:
            logger.info("repaired (%s): %s", reason, detail)

    def count_read(self, reason: str, n: int = 1) -> None:
        """`n` items were read that the repair `reason` could have hit."""
        self.read[reason] += n

    def add(self, other: Tally) -> None:
        self.examples += other.examples
        self.skipped.update(other.skipped)
        self.repaired.update(other.repaired)
        self.read.update(other.read)
        self.boxes.merge(other.boxes)

    @property
    def skip_fraction(self) -> float:
        total = self.examples + sum(self.skipped.values())
        return sum(self.skipped.values()) / total if total else 0.0
