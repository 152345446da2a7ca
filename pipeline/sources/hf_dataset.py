"""A Hugging Face `datasets` dataset (hub id, local data folder, or a save_to_disk folder) -> Examples.

`path`, `name`, `hf_split` and `data_files` go to `datasets.load_dataset`; with `from_disk=True`
`path` is a folder written by `save_to_disk` (a DatasetDict folder picks `hf_split`). `path` is a
string, not resolved against the recipe's data root: give local folders as absolute paths.

Columns: `columns` maps an Example field to a dataset column; unspecified fields use these
defaults (a default column that the dataset lacks is simply not used, except where required):

    image        "image"        required; an Image feature, or a string path
    id           (row index)    map it (e.g. {"id": "question_id"}) to use a column; must be unique
    label        "label"        classification, region_to_category, required; ClassLabel ints
                                  become names
    captions     "captions"     caption, region_to_description: a list of str, used when the
    caption      "caption"        column exists, else a str or a list of str; the first caption
                                  is trained on
    level        "level"        caption, optional: "brief" (as None), "detailed" or "paragraph"
                                  (records.CAPTION_LEVELS) per row
    question     "question"     vqa, required
    answers      "answers"      vqa: list of str, or list of {"answer": str, "answer_id"?: int}
    answer       "answer"       vqa: str; default most_frequent_answer(answers)
    answer_type  "answer_type"  vqa, optional
    objects      "objects"      detection, open_vocabulary_detection, dense_region_caption,
    bbox         "bbox"           region_proposal, required: a list of {bbox, category} or, as
    category     "category"       `Sequence({...})` stores it, {bbox: [...], category: [...]};
                                  category is a ClassLabel int or a str. dense_region_caption:
                                  the category is the region's description (a sub-field
                                  "description" is read when there is no "category");
                                  region_proposal: the category is optional (default "object",
                                  kept, never rendered)
    categories   "categories"   open_vocabulary_detection, required: the classes the prompt
                                  names per row, a non-empty list of str; every object's category
                                  must be one of them
    phrase       "phrase"       grounding/segmentation, required: the referring expression
    bboxes       "bboxes"       grounding/segmentation: a list of boxes per row, used when the
    bbox         "bbox"           column exists, else a column of one box per row; required
                                  for grounding, optional for segmentation (an explicit mapping
                                  of either wins; mapping both is an error)
    category     "category"     grounding/segmentation, optional: the boxes' category (a
                                  ClassLabel int or a str); None or blank: the phrase
    polygons     "polygons"     segmentation, required: a list of flat [x1, y1, x2, y2, ...]
                                  polygons in pixels
    polygons     "polygons"     region_to_segmentation, required, as for segmentation; with
    category     "category"       optional: the object's category (its box: the region)
    text         "text"         ocr, region_to_ocr, required: all the text of the image (of the
                                  region)
    region       "region"       region_to_category, region_to_description, region_to_ocr,
                                  region_to_segmentation, required: the region the prompt gives,
                                  four finite numbers in `bbox_format` (x1, y1, x2, y2 by
                                  default), absolute pixels
    regions      "regions"      ocr, optional: a list of {text, quad} (8 numbers, clockwise from
                                  top-left) or {text, bbox} (in `bbox_format`), or the struct of
                                  lists a Sequence({...}) stores
    language     "language"     caption/vqa, optional: a language code per row ("de", "zh-Hant");
                                  None: English. Mapping it for another task is an error.

So `bbox` and `category` name sub-fields of `objects` for detection and columns of their own
for grounding and segmentation. Boxes are read in `bbox_format` ("xyxy" or "xywh", absolute
pixels), then clipped to the real image like every other source, and so is a `region` (a row
whose region has no area left inside the image is skipped, "no usable region"); region quads and polygons are
kept as given. Texts (phrase, text, region texts) are stripped. categories: the ClassLabel names
of the label (classification) or object category (detection) feature, else the sorted distinct
values in the split (the other tasks' Examples carry none, but open_vocabulary_detection's own
classes).

Images: the image column is read undecoded ({"bytes", "path"}). A `path` that is an existing
absolute file (e.g. `load_dataset("imagefolder", ...)`) is referenced as is; otherwise the bytes
are written once to `image_cache`, named by their SHA-256 and stored format (Example.image must
be a file). A relative path without bytes is looked up under `images`.

Skipped and counted: "missing label" (None, or ClassLabel's -1), "image without captions",
"question without answers", "missing box" (grounding: no box in the row), "no usable box"
(grounding: no box has area inside the image), "missing polygons" (segmentation,
region_to_segmentation: none, or only degenerate ones), "image without text" (ocr, region_to_ocr:
None or blank), "no usable region" (region_to_*), "missing image" (no bytes and no file),
unusable image files.
Repaired: "empty caption dropped", "box clipped", "zero-area box dropped", "degenerate polygon
dropped" (fewer than three points), "empty region dropped" (a region with blank text). When one
of them hits more than `data.max_repair_fraction` of a split's captions, boxes, polygons or
regions (and at least 3), or boxes lie inside [0, 1] (normalised), the build fails naming the
likely cause, e.g. xyxy boxes read with `bbox_format: xywh` (sources/repairs.py).
Errors (DataError naming the dataset and split, the row and the field): a blank or non-string
question or phrase, malformed boxes, polygons or regions, a language that is not a code, a level
that is not a caption level, a missing or malformed region, an open-vocabulary row without
classes or with an object of a class it does not name, a blank description, a value
of a `Json` column that nests deeper than 64 levels (sources/nesting.py).
"""

from __future__ import annotations

import abc
import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import CAPTION_FIELD, CAPTION_LEVELS, LANGUAGE_TASKS, TASKS, Box, Example, Object, Tally
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    ImageCheck,
    check_image,
    clip_objects,
    clip_region,
    id_sort_key,
    image_format_suffix,
    language_code,
    parse_box,
    parse_polygons,
    parse_regions,
)
from pipeline.sources.nesting import check_value
from pipeline.sources.paths import WRITTEN, SymlinkLoop, confine, resolve
from pipeline.sources.repairs import EMPTY_CAPTION
from pipeline.sources.vqav2 import most_frequent_answer

logger = logging.getLogger(__name__)

# the image column, then every task's columns (pipeline/tasks/<task>.py), each named as its field
DEFAULT_COLUMNS: dict[str, str] = {
    "image": "image",
    **{column: column for task in tasks.all_tasks() for column in task.COLUMNS},
}
_MAPPABLE = {*DEFAULT_COLUMNS, "id"}


def _load(path: str, name: str | None, hf_split: str, from_disk: bool, data_files: Any) -> Any:
    import datasets  # heavy: imported only when this source is used

    if os.path.lexists(path):  # a local folder (else a hub id)
        try:
            resolve(path)
        except SymlinkLoop:  # `datasets` says "not found", which sends a person looking for it
            raise DataError("the path is a symlink loop: it never reaches a folder", file=path) from None
    if not from_disk:
        return datasets.load_dataset(path, name, split=hf_split, data_files=data_files)
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        if hf_split not in loaded:
            raise DataError(
                f"no split {hf_split!r}; the folder has {sorted(loaded)}", file=path, field="hf_split"
            )
        return loaded[hf_split]
    logger.info("%s holds a single split; hf_split=%r is not checked", path, hf_split)
    return loaded


def _inner(feature: Any) -> Any:
    # List / LargeList / Sequence wrap their element feature in `.feature`; a dict is a struct
    while feature is not None and not isinstance(feature, dict) and hasattr(feature, "feature"):
        feature = feature.feature
    return feature


def _holds_json(feature: Any) -> bool:
    """Whether a column of this feature may hold a `Json` value, whose nesting its schema does not
    bound (pyarrow's schemas stop at 64 levels themselves)."""
    from datasets import Json

    if isinstance(feature, Json):
        return True
    if isinstance(feature, dict):
        return any(_holds_json(sub) for sub in feature.values())
    if isinstance(feature, list | tuple):  # the old spelling of a list: [feature]
        return any(_holds_json(sub) for sub in feature)
    return _holds_json(feature.feature) if hasattr(feature, "feature") else False  # List, Sequence


def _class_names(feature: Any) -> list[str] | None:
    from datasets import ClassLabel

    feature = _inner(feature)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def cache_image_bytes(data: bytes, cache: Path) -> Path:
    """Write encoded image bytes once under `cache`, named by content; return the file's path."""
    digest = hashlib.sha256(data).hexdigest()
    target = Path(os.path.abspath(cache)) / digest[:2] / f"{digest}{image_format_suffix(data)}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # atomic: parallel builders never see half a file
    return target


@register("hf_dataset")
def read_hf_dataset(
    ctx: SourceContext,
    *,
    path: str,
    task: str,
    name: str | None = None,
    hf_split: str = "train",
    data_files: str | list[str] | None = None,
    from_disk: bool = False,
    columns: dict[str, str] | None = None,
    bbox_format: str = "xyxy",
    image_cache: Annotated[Path, WRITTEN] | None = None,
    images: Path | None = None,
) -> Iterator[Example]:
    """Yield one Example of `task` per row of a `datasets` split; see the module docstring."""
    from datasets import Image

    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; known: {', '.join(TASKS)}", file=path, field="task")
    if bbox_format not in ("xyxy", "xywh"):
        raise DataError(
            f"unknown bbox_format {bbox_format!r}; known: xyxy, xywh", file=path, field="bbox_format"
        )
    unknown = set(columns or {}) - _MAPPABLE
    if unknown:
        raise DataError(
            f"unknown Example field(s) {sorted(unknown)} in columns; known: {sorted(_MAPPABLE)}",
            file=path,
            field="columns",
        )
    # `path` is a hub id or a folder: a relative folder that exists under the data root wins.
    if ctx.root is not None and not Path(path).is_absolute() and (ctx.root / path).exists():
        path = str(ctx.root / path)
    ds = _load(path, name, hf_split, from_disk, data_files)
    split = _Split(
        where=f"{path} [{hf_split}]",
        features=ds.features,
        cols={**DEFAULT_COLUMNS, **(columns or {})},
        explicit=columns or {},
        bbox_format=bbox_format,
        tally=ctx.tally,
        image_cache=image_cache,
        images=images,
    )
    image_col = split.column("image", required=True)
    id_col = split.column("id", required=False)
    rows = _ROWS[task](split, ds)
    language_col = None
    if task in LANGUAGE_TASKS:
        language_col = split.column("language", required=False)
    elif "language" in split.explicit:
        raise DataError(
            f"a language is only for {' and '.join(LANGUAGE_TASKS)} examples, not {task}",
            file=split.where,
            field="language",
        )
    needed = list(dict.fromkeys(c for c in (image_col, id_col, *rows.columns, language_col) if c))
    unbounded = [column for column in needed if _holds_json(split.features[column])]
    ds = ds.select_columns(needed)
    if isinstance(split.features[image_col], Image):
        ds = ds.cast_column(image_col, Image(decode=False))  # {"bytes", "path"}: no decoding here
    rows.read_ahead(ds)
    yield from _examples(ctx, split, ds, rows, task, image_col, id_col, language_col, unbounded)


def _examples(
    ctx: SourceContext,
    split: _Split,
    ds: Any,
    rows: _Rows,
    task: str,
    image_col: str,
    id_col: str | None,
    language_col: str | None,
    unbounded: list[str],
) -> Iterator[Example]:
    """The Examples of the split's rows, in order: ids checked, the nesting of the `unbounded`
    columns' values (_holds_json), each row's task fields, then its language, its image (checked once
    per file) and its boxes clipped to the image."""
    seen_ids: set[str] = set()
    checks: dict[Path, ImageCheck] = {}
    for index, row in enumerate(ds):
        example_id = str(row[id_col]) if id_col else str(index)
        record = f"row {index}" + (f" (id {example_id})" if id_col else "")
        if id_col:
            if example_id in seen_ids:
                raise DataError(f"duplicate id {example_id!r}", file=split.where, record=record, field="id")
            seen_ids.add(example_id)

        for column in unbounded:  # before any repr of a value in an error message
            check_value(row[column], file=split.where, record=record)
        fields = rows.fields(row, record)
        if fields is None:
            continue
        if language_col:
            fields["language"] = language_code(row[language_col], file=split.where, record=record)

        path_ = split.image_path(row[image_col], record)
        if path_ is None:
            continue
        size = check_image(path_, ctx, record=record, cache=checks)
        if size is None:
            continue
        if "region" in fields:  # a region_to_* row: its region clipped as boxes are
            region = clip_region(fields["region"], size, ctx.tally, record=record, written=split.bbox_format)
            if region is None:
                ctx.tally.skip("no usable region", f"{record}: the region has no area inside the image")
                continue
            fields["region"] = region
            # region_to_segmentation: the object's box is the region
            fields["objects"] = [Object(region, o.category) for o in fields.get("objects", [])]
        elif fields.get("objects"):
            fields["objects"] = clip_objects(
                fields["objects"], size, ctx.tally, record=record, written=split.bbox_format
            )
            if rows.boxes_required and not fields["objects"]:
                ctx.tally.skip("no usable box", f"{record}: no box has area inside the image")
                continue
        yield ctx.example(example_id, path_, size, task=task, **fields)


@dataclass
class _Split:
    """The split being read: where it is (the `file` of every DataError), its features, the
    columns the Example's fields come from, and what parsing a row needs besides the row."""

    where: str  # "<path> [<hf_split>]"
    features: Any  # the dataset's features, by column name
    cols: dict[str, str]  # Example field -> column: DEFAULT_COLUMNS under the recipe's `columns`
    explicit: dict[str, str]  # the recipe's `columns` as given: a column it names must exist
    bbox_format: str
    tally: Tally
    image_cache: Path | None
    images: Path | None

    def column(self, field: str, *, required: bool) -> str | None:
        """The column of `field` when the dataset has it; else a DataError when required or
        mapped explicitly, None otherwise."""
        col = self.cols.get(field)
        if col in self.features:
            return col
        if required or field in self.explicit:  # an explicit mapping must exist
            raise DataError(
                f"dataset has no column {col!r} for {field}; columns: {sorted(self.features)}",
                file=self.where,
                field=field,
            )
        return None

    def category_name(self, value: Any, names: list[str] | None, record: str, field: str) -> str:
        """A class name: a ClassLabel index through `names`, or a str (or int) as it is."""
        if isinstance(value, int) and not isinstance(value, bool) and names is not None:
            if not 0 <= value < len(names):
                raise DataError(
                    f"class index {value} outside 0..{len(names) - 1}",
                    file=self.where,
                    record=record,
                    field=field,
                )
            return names[value]
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise DataError(
            f"expected a class name or index, got {value!r}", file=self.where, record=record, field=field
        )

    def region(self, row: dict[str, Any], column: str, record: str) -> Box:
        """The region of a region_to_* row: four numbers in `bbox_format` (clipped later)."""
        value = row[column]
        if value is None:
            raise DataError(
                "expected the region the prompt gives, got None",
                file=self.where,
                record=record,
                field="region",
            )
        return parse_box(value, fmt=self.bbox_format, file=self.where, record=record, field="region")

    def image_path(self, value: Any, record: str) -> Path | None:
        """The image file of one row (see the module docstring), or None after counting a skip."""
        file_path, data = (
            (value.get("path"), value.get("bytes")) if isinstance(value, dict) else (value, None)
        )
        if file_path is not None and not isinstance(file_path, str):
            raise DataError(
                f"image must be a path or {{bytes, path}}, got {value!r}",
                file=self.where,
                record=record,
                field="image",
            )
        if file_path and os.path.isabs(file_path) and os.path.isfile(file_path):
            return Path(file_path)
        if data:
            if self.image_cache is None:
                raise DataError(
                    "images are embedded as bytes: set image_cache to a folder to write them to",
                    file=self.where,
                    record=record,
                    field="image_cache",
                )
            return cache_image_bytes(data, self.image_cache)
        if file_path and not os.path.isabs(file_path) and self.images is not None:
            return confine(self.images, file_path, file=self.where, record=record, field="image")
        self.tally.skip("missing image", f"{record}: no bytes and no file at {file_path!r}")
        return None


# ---------------------------------------------------------------------------- one reader per task


class _Rows(abc.ABC):
    """How one task reads the split: made by its entry in `_ROWS` from the split's features (which
    resolves and checks the columns it needs), then one row at a time."""

    columns: list[str]  # the dataset columns the task reads
    boxes_required = False  # a row whose boxes all fall outside its image is skipped ("no usable box")

    def read_ahead(self, ds: Any) -> None:
        """Read what must be known before the first row (detection's category names); most tasks
        need nothing."""
        return None

    @abc.abstractmethod
    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        """The Example's task fields of one row, or None after counting why the row is skipped."""


@dataclass
class _Classification(_Rows):
    split: _Split
    columns: list[str]
    label: str
    names: list[str] | None  # the label's ClassLabel names
    categories: list[str]

    @classmethod
    def resolve(cls, split: _Split, ds: Any) -> _Classification:
        label = split.column("label", required=True)
        names = _class_names(split.features[label])
        categories = names or sorted({str(v) for v in ds.unique(label) if v is not None})
        return cls(split, [label], label, names, categories)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        value = row[self.label]
        if value is None or (self.names is not None and value == -1):
            self.split.tally.skip("missing label", record)
            return None
        label = self.split.category_name(value, self.names, record, "label")
        return {"label": label, "categories": self.categories}


@dataclass
class _Caption(_Rows):
    split: _Split
    columns: list[str]
    level: str | None  # the column of a caption's level, if any

    @classmethod
    def resolve(cls, split: _Split, ds: Any) -> _Caption:
        col = _caption_column(split)
        level = split.column("level", required=False)
        return cls(split, [c for c in (col, level) if c], level)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        fields = _caption_fields(self.split, row[self.columns[0]], record)
        if fields is None or self.level is None:
            return fields
        level = row[self.level]
        if level is not None and level not in CAPTION_LEVELS:
            raise DataError(
                f"a caption's level is one of {', '.join(CAPTION_LEVELS)} (or None), got {level!r}",
                file=self.split.where,
                record=record,
                field="level",
            )
        return {**fields, "level": level}


def _caption_column(split: _Split) -> str:
    """The column of the captions: `captions` when the dataset has it, else `caption`."""
    col = split.column("captions", required=False) or split.column(CAPTION_FIELD, required=False)
    if col is None:
        raise DataError(
            f"dataset has no caption column ({split.cols['captions']!r} or "
            f"{split.cols[CAPTION_FIELD]!r}); columns: {sorted(split.features)}",
            file=split.where,
            field=CAPTION_FIELD,
        )
    return col


def _caption_fields(split: _Split, value: Any, record: str) -> dict[str, Any] | None:
    """`caption` and `captions` from a caption column's value, or None after counting the skip."""
    raw = [value] if isinstance(value, str) else value or []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise DataError(
            f"expected str or list of str, got {value!r}",
            file=split.where,
            record=record,
            field=CAPTION_FIELD,
        )
    captions = [c.strip() for c in raw if c.strip()]
    split.tally.count_read(EMPTY_CAPTION, len(raw))
    if len(captions) < len(raw):
        split.tally.repair(EMPTY_CAPTION, record, n=len(raw) - len(captions))
    if not captions:
        split.tally.skip("image without captions", record)
        return None
    return {CAPTION_FIELD: captions[0], "captions": captions}


@dataclass
class _Vqa(_Rows):
    split: _Split
    columns: list[str]
    question: str
    answers: str | None
    answer: str | None
    answer_type: str | None

    @classmethod
    def resolve(cls, split: _Split, ds: Any) -> _Vqa:
        question = split.column("question", required=True)
        answers = split.column("answers", required=False)
        answer = split.column("answer", required=False)
        answer_type = split.column("answer_type", required=False)
        if answers is None and answer is None:
            raise DataError(
                f"dataset has no answer column ({split.cols['answers']!r} or {split.cols['answer']!r}); "
                f"columns: {sorted(split.features)}",
                file=split.where,
                field="answers",
            )
        columns = [c for c in (question, answers, answer, answer_type) if c]
        return cls(split, columns, question, answers, answer, answer_type)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        where = self.split.where
        question = row[self.question]
        if not isinstance(question, str) or not question.strip():
            raise DataError(
                f"expected a question, got {question!r}", file=where, record=record, field="question"
            )
        answers = _answers(row[self.answers], where, record) if self.answers else []
        answer = row[self.answer] if self.answer else None
        if answer is not None and not isinstance(answer, str):
            raise DataError(f"expected a string, got {answer!r}", file=where, record=record, field="answer")
        if not answers and not answer:
            self.split.tally.skip("question without answers", record)
            return None
        return {
            "question": question.strip(),
            "answers": answers or [answer],
            "answer": answer if answer else most_frequent_answer(answers),
            "answer_type": row[self.answer_type] if self.answer_type else None,
        }


@dataclass
class _Detection(_Rows):
    split: _Split
    columns: list[str]
    objects: str
    bbox_key: str  # the sub-fields of an object
    category_key: str
    names: list[str] | None  # the category's ClassLabel names
    categories: list[str] | None = None  # read ahead: the names, else every category of the split

    @classmethod
    def resolve(cls, split: _Split, ds: Any) -> _Detection:
        objects = split.column("objects", required=True)
        struct = _inner(split.features[objects])
        bbox_key, category_key = split.cols["bbox"], split.cols["category"]
        for field, key in (("bbox", bbox_key), ("category", category_key)):
            if not isinstance(struct, dict) or key not in struct:
                raise DataError(
                    f"column {objects!r} has no sub-field {key!r} for {field}", file=split.where, field=field
                )
        return cls(split, [objects], objects, bbox_key, category_key, _class_names(struct[category_key]))

    def read_ahead(self, ds: Any) -> None:
        if self.names is not None:
            self.categories = list(self.names)
            return
        seen = {
            o.category
            for i, r in enumerate(ds.select_columns([self.objects]))
            for o in self._objects(r[self.objects], f"row {i}")
        }
        self.categories = sorted(seen)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        return {"objects": self._objects(row[self.objects], record), "categories": self.categories}

    def _objects(self, value: Any, record: str) -> list[Object]:
        where = self.split.where
        if value is None:
            return []
        if isinstance(value, dict):  # Sequence({...}) stores a struct of lists
            boxes, cats = value.get(self.bbox_key) or [], value.get(self.category_key) or []
            if len(boxes) != len(cats):
                raise DataError(
                    f"{len(boxes)} boxes but {len(cats)} categories",
                    file=where,
                    record=record,
                    field="objects",
                )
            pairs = list(zip(boxes, cats, strict=True))
        elif isinstance(value, list) and all(isinstance(o, dict) for o in value):
            pairs = [(o.get(self.bbox_key), o.get(self.category_key)) for o in value]
        else:
            raise DataError(
                f"expected a list of objects, got {value!r}", file=where, record=record, field="objects"
            )
        return [
            Object(
                parse_box(box, fmt=self.split.bbox_format, file=where, record=record, field="bbox"),
                self._category(cat, record),
            )
            for box, cat in pairs
        ]

    def _category(self, value: Any, record: str) -> str:
        return self.split.category_name(value, self.names, record, "category")


@dataclass
class _Boxes(_Detection):
    """dense_region_caption, region_proposal and open_vocabulary_detection: objects as detection
    reads them, without the split's vocabulary. A dense region's category is its description
    (stripped; blank is an error); a proposal's category is optional; an open-vocabulary row names
    its classes in `categories`, and its objects must be of them."""

    task: str = ""
    named: str | None = None  # open_vocabulary_detection: the column of the classes the prompt names

    @classmethod
    def resolve_task(cls, split: _Split, ds: Any, *, task: str) -> _Boxes:
        objects = split.column("objects", required=True)
        struct = _inner(split.features[objects])
        if not isinstance(struct, dict):
            raise DataError(f"column {objects!r} is not a list of objects", file=split.where, field="objects")
        bbox_key, category_key = split.cols["bbox"], split.cols["category"]
        if (
            task == tasks.DENSE_REGION_CAPTION
            and category_key not in struct
            and "category" not in split.explicit
        ):
            category_key = "description"  # a dense caption's other natural name
        if bbox_key not in struct:
            raise DataError(
                f"column {objects!r} has no sub-field {bbox_key!r} for bbox", file=split.where, field="bbox"
            )
        if category_key not in struct:
            if task != tasks.REGION_PROPOSAL or "category" in split.explicit:
                raise DataError(
                    f"column {objects!r} has no sub-field {category_key!r} for category",
                    file=split.where,
                    field="category",
                )
            category_key = None  # a proposal needs no class
        names = _class_names(struct[category_key]) if category_key else None
        named = split.column("categories", required=True) if task == tasks.OPEN_VOCABULARY_DETECTION else None
        columns = [c for c in (objects, named) if c]
        return cls(split, columns, objects, bbox_key, category_key, names, task=task, named=named)

    def read_ahead(self, ds: Any) -> None:
        return None  # no vocabulary: descriptions are free text, proposals have none, classes are per row

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        objects = self._objects(row[self.objects], record)
        if self.named is None:
            return {"objects": objects}
        where, named = self.split.where, row[self.named]
        if (
            not isinstance(named, list)
            or not named
            or not all(isinstance(c, str) and c.strip() for c in named)
        ):
            raise DataError(
                f"expected the classes the prompt names, a non-empty list of str, got {named!r}",
                file=where,
                record=record,
                field="categories",
            )
        for i, o in enumerate(objects):
            if o.category not in named:
                raise DataError(
                    f"object {i}: category {o.category!r} is not among the row's categories {named}",
                    file=where,
                    record=record,
                    field="category",
                )
        return {"categories": list(named), "objects": objects}

    def _category(self, value: Any, record: str) -> str:
        if self.category_key is None or (value is None and self.task == tasks.REGION_PROPOSAL):
            return PROPOSAL_CATEGORY
        name = super()._category(value, record)
        if self.task == tasks.DENSE_REGION_CAPTION:
            name = name.strip()
            if not name:
                raise DataError(
                    "a region's description must be non-empty, got a blank one",
                    file=self.split.where,
                    record=record,
                    field="category",
                )
        return name


# region_proposal: an object's category when the row gives none (kept, never rendered)
PROPOSAL_CATEGORY = "object"


@dataclass
class _Referring(_Rows):
    """Grounding and segmentation: a phrase, the box(es) it refers to and their category;
    segmentation adds the polygons, and its boxes are optional."""

    split: _Split
    columns: list[str]
    phrase: str
    box_field: str  # "bboxes" (a list of boxes per row) or "bbox" (one box)
    boxes: str | None
    category: str | None
    names: list[str] | None  # the category's ClassLabel names
    polygons: str | None
    boxes_required: bool = False  # grounding: a row without a box is skipped ("missing box")

    @classmethod
    def resolve(cls, split: _Split, ds: Any, *, boxes_required: bool, polygons: bool) -> _Referring:
        phrase = split.column("phrase", required=True)
        box_field, boxes = _box_column(split)
        if boxes is None and boxes_required:
            raise DataError(
                f"dataset has no box column ({split.cols['bboxes']!r} or {split.cols['bbox']!r}); "
                f"columns: {sorted(split.features)}",
                file=split.where,
                field="bbox",
            )
        category = split.column("category", required=False)
        names = _class_names(split.features[category]) if category else None
        polygons_col = split.column("polygons", required=True) if polygons else None
        columns = [c for c in (phrase, boxes, category, polygons_col) if c]
        return cls(split, columns, phrase, box_field, boxes, category, names, polygons_col, boxes_required)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        split = self.split
        phrase = _phrase(row[self.phrase], split.where, record)
        boxes = (
            _boxes(row[self.boxes], self.box_field, split.bbox_format, split.where, record)
            if self.boxes
            else []
        )
        if self.boxes_required and not boxes:
            split.tally.skip("missing box", record)
            return None
        value = row[self.category] if self.category else None
        if isinstance(value, str):
            value = value.strip() or None  # a blank category: the phrase names the box
        category = phrase if value is None else split.category_name(value, self.names, record, "category")
        fields: dict[str, Any] = {"phrase": phrase, "objects": [Object(box, category) for box in boxes]}
        if self.polygons:
            polygons = _polygons(row[self.polygons], split.tally, split.where, record)
            if not polygons:
                split.tally.skip("missing polygons", record)
                return None
            fields["polygons"] = polygons
        return fields


@dataclass
class _Ocr(_Rows):
    split: _Split
    columns: list[str]
    text: str
    regions: str | None

    @classmethod
    def resolve(cls, split: _Split, ds: Any) -> _Ocr:
        text = split.column("text", required=True)
        regions = split.column("regions", required=False)
        return cls(split, [c for c in (text, regions) if c], text, regions)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        where = self.split.where
        text = row[self.text]
        if text is not None and not isinstance(text, str):
            raise DataError(f"expected a string, got {text!r}", file=where, record=record, field="text")
        if not text or not text.strip():
            self.split.tally.skip("image without text", record)
            return None
        regions = _struct_rows(row[self.regions]) if self.regions else None
        tally, fmt = self.split.tally, self.split.bbox_format
        return {
            "text": text.strip(),
            "regions": parse_regions(regions, tally, file=where, record=record, bbox_format=fmt),
        }


@dataclass
class _Region(_Rows):
    """The region_to_* tasks: the region the prompt gives, and the answer: a label
    (region_to_category), captions (region_to_description), text (region_to_ocr) or polygons with
    an optional category (region_to_segmentation)."""

    split: _Split
    columns: list[str]
    task: str
    region: str
    answer: str  # the label, caption, text or polygons column
    names: list[str] | None = None  # the label's (or category's) ClassLabel names
    category: str | None = None  # region_to_segmentation: the object's category column

    @classmethod
    def resolve_task(cls, split: _Split, ds: Any, *, task: str) -> _Region:
        region = split.column("region", required=True)
        category, names = None, None
        if task == tasks.REGION_TO_CATEGORY:
            answer = split.column("label", required=True)
            names = _class_names(split.features[answer])
        elif task == tasks.REGION_TO_DESCRIPTION:
            answer = _caption_column(split)
        elif task == tasks.REGION_TO_OCR:
            answer = split.column("text", required=True)
        else:
            answer = split.column("polygons", required=True)
            category = split.column("category", required=False)
            names = _class_names(split.features[category]) if category else None
        columns = [c for c in (region, answer, category) if c]
        return cls(split, columns, task, region, answer, names, category)

    def fields(self, row: dict[str, Any], record: str) -> dict[str, Any] | None:
        split, value = self.split, row[self.answer]
        fields: dict[str, Any] = {"region": split.region(row, self.region, record)}
        if self.task == tasks.REGION_TO_CATEGORY:
            if value is None or (self.names is not None and value == -1):
                split.tally.skip("missing label", record)
                return None
            return {**fields, "label": split.category_name(value, self.names, record, "label")}
        if self.task == tasks.REGION_TO_DESCRIPTION:
            captions = _caption_fields(split, value, record)
            return None if captions is None else {**fields, **captions}
        if self.task == tasks.REGION_TO_OCR:
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"expected a string, got {value!r}", file=split.where, record=record, field="text"
                )
            if not value or not value.strip():
                split.tally.skip("region without text", record)
                return None
            return {**fields, "text": value.strip()}
        polygons = _polygons(value, split.tally, split.where, record)
        if not polygons:
            split.tally.skip("missing polygons", record)
            return None
        fields["polygons"] = polygons
        cat = row[self.category] if self.category else None
        if isinstance(cat, str):
            cat = cat.strip() or None
        if cat is not None:  # the object's box is the region, clipped with it
            fields["objects"] = [
                Object(fields["region"], split.category_name(cat, self.names, record, "category"))
            ]
        return fields


# task -> what resolves its columns from the split (checking them) and reads its rows
_ROWS: dict[str, Callable[[_Split, Any], _Rows]] = {
    tasks.CLASSIFICATION: _Classification.resolve,
    tasks.CAPTION: _Caption.resolve,
    tasks.VQA: _Vqa.resolve,
    tasks.DETECTION: _Detection.resolve,
    tasks.GROUNDING: functools.partial(_Referring.resolve, boxes_required=True, polygons=False),
    tasks.SEGMENTATION: functools.partial(_Referring.resolve, boxes_required=False, polygons=True),
    tasks.OCR: _Ocr.resolve,
    **{
        task: functools.partial(_Boxes.resolve_task, task=task)
        for task in (tasks.DENSE_REGION_CAPTION, tasks.REGION_PROPOSAL, tasks.OPEN_VOCABULARY_DETECTION)
    },
    **{task: functools.partial(_Region.resolve_task, task=task) for task in tasks.REGION_TASKS},
}


# ---------------------------------------------------------------------------- field parsers


def _box_column(split: _Split) -> tuple[str, str | None]:
    """(field, column) of a grounding/segmentation source's boxes: `bboxes` (a list of boxes per
    row) or `bbox` (one box); an explicit mapping of either wins over the defaults."""
    explicit = split.explicit
    if "bbox" in explicit and "bboxes" in explicit:
        raise DataError(
            "map 'bbox' (one box) or 'bboxes' (a list of boxes), not both", file=split.where, field="columns"
        )
    order = ("bbox", "bboxes") if "bbox" in explicit else ("bboxes", "bbox")
    for field in order:
        col = split.column(field, required=False)
        if col is not None:
            return field, col
    return order[0], None


def _phrase(value: Any, where: str, record: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"expected a non-empty phrase, got {value!r}", file=where, record=record, field="phrase"
        )
    return value.strip()


def _boxes(value: Any, field: str, fmt: str, where: str, record: str) -> list[Box]:
    """The boxes of one row: `bbox` holds one box (or None), `bboxes` a list of them (or None)."""
    if value is None:
        return []
    if field == "bbox":
        return [parse_box(value, fmt=fmt, file=where, record=record, field=field)]
    if not isinstance(value, list):
        raise DataError(f"expected a list of boxes, got {value!r}", file=where, record=record, field=field)
    return [parse_box(box, fmt=fmt, file=where, record=record, field=field) for box in value]


def _polygons(value: Any, tally: Tally, where: str, record: str) -> list[list[float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(
            f"expected a list of flat [x1, y1, x2, y2, ...] polygons, got {value!r}",
            file=where,
            record=record,
            field="polygons",
        )
    return parse_polygons(value, tally, file=where, record=record, field="polygons")


def _struct_rows(value: Any) -> Any:
    """A Sequence({...}) value (a struct of lists) as a list of dicts; anything else as it is."""
    if isinstance(value, dict):
        return [dict(zip(value, items, strict=True)) for items in zip(*value.values(), strict=True)]
    return value


def _answers(value: Any, where: str, record: str) -> list[str]:
    """VQA answers as a list of str, from a list of str, a list of {"answer", "answer_id"?} or
    the struct of lists a Sequence({...}) feature yields."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [dict(zip(value, items, strict=True)) for items in zip(*value.values(), strict=True)]
    if not isinstance(value, list):
        raise DataError(
            f"expected a list of answers, got {value!r}", file=where, record=record, field="answers"
        )
    if all(isinstance(a, str) for a in value):
        return list(value)
    if all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in value):
        ordered = sorted(enumerate(value), key=lambda ia: id_sort_key(ia[1].get("answer_id", ia[0])))
        return [a["answer"] for _, a in ordered]
    raise DataError(
        f"expected answers as strings or {{answer}} objects, got {value!r}",
        file=where,
        record=record,
        field="answers",
    )
