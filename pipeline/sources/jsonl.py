"""A JSON Lines file, one example per line, any task -> Examples.

Schema of one line (a JSON object; blank lines are skipped):

    id           str or int, optional: default the 1-based line number. Must be unique in the file.
    task         one of records.TASKS ("classification", "caption", "vqa", "detection", "grounding",
                 "segmentation", "ocr", "dense_region_caption", "region_proposal",
                 "open_vocabulary_detection", "region_to_category", "region_to_description",
                 "region_to_ocr", "region_to_segmentation"), required
    image        path relative to `images` (default: the JSONL file's folder), required
    label        classification, region_to_category: str, required
    caption      caption, region_to_description: str; and/or
    captions     caption, region_to_description: list of str. caption defaults to captions[0],
                 captions to [caption]; one of the two is required
    level        caption: optional level of detail, "brief" (the default, as null), "detailed" or
                 "paragraph" (records.CAPTION_LEVELS)
    question     vqa: str, required
    answer       vqa: str; and/or
    answers      vqa: list of str (all human answers, for scoring). answer defaults to
                 most_frequent_answer(answers), answers to [answer]; one of the two is required
    answer_type  vqa: str, optional
    objects      detection, open_vocabulary_detection: [{"bbox": [x1, y1, x2, y2], "category":
                 str}, ...] in absolute pixels of the EXIF-oriented image, optional (absent or [] =
                 a negative image);
                 dense_region_caption: [{"bbox": [...], "category": str}, ...], the category being
                 the region's free-text description ("description" is accepted for "category";
                 giving both is an error), optional;
                 region_proposal: [{"bbox": [...], "category": str (optional, default "object",
                 kept but never rendered)}, ...], optional
    categories   classification/detection: list of str, optional (the label vocabulary; when
                 given, every object's category must be in it). Default: [].
                 open_vocabulary_detection: required, the classes the prompt names (one or more;
                 Florence-2 takes exactly one); every object's category must be one of them
    phrase       grounding/segmentation: str, required (the referring expression)
    bbox         grounding/segmentation: the referred object's box [x1, y1, x2, y2]; or
    bboxes       grounding/segmentation: a non-empty list of such boxes (a phrase that refers to
                 several objects). One of the two is required for grounding, optional for
                 segmentation; giving both is an error.
    category     grounding/segmentation: str, optional: the boxes' category (default: the phrase);
                 must be in `categories` when both are given.
                 region_to_segmentation: str, optional: the object's category (its box: the region)
    polygons     segmentation, region_to_segmentation: list of COCO polygons, each a flat [x1, y1,
                 x2, y2, ...] list of finite numbers (even length) in pixels, required
    text         ocr, region_to_ocr: str, required: all the text of the image (ocr) or of the
                 region (region_to_ocr) in reading order
    regions      ocr: optional list of {"text": str, "quad": [x1, y1, ..., x4, y4]} (8 numbers,
                 clockwise from the top-left corner) or {"text": str, "bbox": [x1, y1, x2, y2]}
    region       region_to_category, region_to_description, region_to_ocr, region_to_segmentation:
                 required, the region the prompt gives: [x1, y1, x2, y2], four finite numbers in
                 absolute pixels of the EXIF-oriented image (x1 <= x2, y1 <= y2)
    language     caption/vqa: optional language code of the texts, e.g. "de", "ko", "zh-Hant"
                 (a non-empty string without spaces); absent or null: English

Texts the model reads or writes (label, caption(s), question, answer(s), phrase, category,
description, text, region texts) are stripped. A blank label, question, phrase, category,
description or text is an error; a blank caption
or answer counts as absent, and blank items of `captions` / `answers` are dropped and counted
("empty caption dropped", "empty answer dropped"), so an example left with no caption or answer
is an error, as an absent one is. Regions with blank text are dropped ("empty region dropped").
Polygons of fewer than three points are dropped ("degenerate polygon dropped"); a segmentation
line left without a polygon is an error.

Other keys are ignored. Boxes (of objects, bbox, bboxes) are clipped to the real image ("box
clipped") and boxes with no area left dropped ("zero-area box dropped"); a grounding line left
without a box is skipped ("no usable box"). A `region` is clipped by the same rule (and counted
the same way); a line whose region has no area left inside the image is skipped ("no usable
region"). Region quads and polygons are kept as given. Unusable
image files are skipped and counted. Boxes are absolute pixels: when more than
`data.max_repair_fraction` of a split's boxes (and at least 3) are clipped by more than a pixel or
dropped, or lie inside [0, 1] x [0, 1] (normalised coordinates), or as many captions, answers,
polygons or regions are dropped, the build fails naming the likely cause (sources/repairs.py).
Errors (DataError naming the file, the record as "line N" and the field): a line that is not JSON,
nests deeper than 64 levels (sources/nesting.py) or is not an object, a missing or mistyped
required field, an unknown task, x2 < x1 or y2 < y1, a category outside `categories`, a duplicate
id, an image path outside `images`, a malformed polygon or region, a `language` on a task other
than caption and vqa, a `level` that is not a caption level or on another task than caption, a
`region` on a task that gives none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import (
    CAPTION_FIELD,
    CAPTION_LEVELS,
    LANGUAGE_TASKS,
    REGION_TASKS,
    TASKS,
    Box,
    Example,
    Object,
    Tally,
)
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    ImageCheck,
    check_image,
    clip_objects,
    clip_region,
    language_code,
    open_data_file,
    parse_box,
    parse_json,
    parse_polygons,
    parse_regions,
)
from pipeline.sources.paths import confine
from pipeline.sources.repairs import EMPTY_ANSWER, EMPTY_CAPTION
from pipeline.sources.vqav2 import most_frequent_answer

logger = logging.getLogger(__name__)


class _Line:
    """Typed field access on one parsed line, raising DataError that names file, line and field."""

    def __init__(self, data: dict[str, Any], file: Path, record: str) -> None:
        self.data, self.file, self.record = data, file, record

    def error(self, message: str, field: str) -> DataError:
        return DataError(message, file=self.file, record=self.record, field=field)

    def text(self, key: str, *, required: bool, content: bool = False) -> str | None:
        """A string field. content=True: the text the model reads or writes, stripped; blank is
        an error when required and counts as absent otherwise (it would train an empty target or
        a prompt such as `answer en `)."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(f"must be a string, got {value!r}", key)
        if content and value is not None:
            value = value.strip()
            if not value:
                if required:
                    raise self.error("must be a non-empty string, got a blank one", key)
                value = None
        if value is None and required:
            raise self.error("required field is missing", key)
        return value

    def texts(self, key: str, tally: Tally | None = None, reason: str = "") -> list[str] | None:
        """A list of strings; with `tally`, stripped, and blank items dropped and counted."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"must be a list of strings, got {value!r}", key)
        if tally is None:
            return value
        kept = [v.strip() for v in value if v.strip()]
        tally.count_read(reason, len(value))
        if len(kept) < len(value):
            tally.repair(reason, f"{self.file.name} {self.record}", n=len(value) - len(kept))
        return kept


def _parse_line(line: _Line, images_root: Path, tally: Tally) -> tuple[str, Path, dict[str, Any]]:
    """Validate one line; return (task, image path, Example fields other than image/size)."""
    task = line.text("task", required=True)
    if task not in TASKS:
        raise line.error(f"unknown task {task!r}; known: {', '.join(TASKS)}", "task")
    image = line.text("image", required=True)
    path = confine(images_root, image, file=line.file, record=line.record, field="image")
    fields: dict[str, Any] = {"task": task}
    categories = line.texts("categories")
    if categories is not None:
        fields["categories"] = categories
    fields.update(_TASK_FIELDS[task](line, tally, categories))
    for key, allowed in (("level", (tasks.CAPTION,)), ("region", REGION_TASKS)):
        if line.data.get(key) is not None and task not in allowed:
            raise line.error(f"a {key} is only for {', '.join(allowed)} examples", key)
    if line.data.get("language") is not None:
        if task not in LANGUAGE_TASKS:
            raise line.error(f"a language is only for {' and '.join(LANGUAGE_TASKS)} examples", "language")
        fields["language"] = language_code(line.data["language"], file=line.file, record=line.record)
    return task, path, fields


def _classification(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    return {"label": line.text("label", required=True, content=True)}


def _caption(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    level = line.data.get("level")
    if level is not None and level not in CAPTION_LEVELS:
        raise line.error(
            f"a caption's level is one of {', '.join(CAPTION_LEVELS)} (or null), got {level!r}", "level"
        )
    return {**_captions(line, tally), "level": level}


def _captions(line: _Line, tally: Tally) -> dict[str, Any]:
    """`caption` and `captions`: the text trained on and every reference."""
    caption = line.text(CAPTION_FIELD, required=False, content=True)
    captions = line.texts("captions", tally, EMPTY_CAPTION)
    if caption is None and not captions:
        raise line.error(
            f"a {line.data['task']} example needs 'caption' or a non-empty 'captions'", CAPTION_FIELD
        )
    return {
        CAPTION_FIELD: caption if caption is not None else captions[0],
        "captions": captions if captions else [caption],
    }


def _vqa(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    question = line.text("question", required=True, content=True)
    answer = line.text("answer", required=False, content=True)
    answers = line.texts("answers", tally, EMPTY_ANSWER)
    if answer is None and not answers:
        raise line.error("a vqa example needs 'answer' or a non-empty 'answers'", "answers")
    return {
        "question": question,
        "answer": answer if answer is not None else most_frequent_answer(answers),
        "answers": answers if answers else [answer],
        "answer_type": line.text("answer_type", required=False),
    }


def _detection(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    return {"objects": _objects(line, categories)}


def _dense_region_caption(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    # the description is free text: no vocabulary holds it
    return {"objects": _objects(line, None, alias="description")}


def _region_proposal(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    return {"objects": _objects(line, categories, default=PROPOSAL_CATEGORY)}


def _open_vocabulary_detection(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    if not categories:
        raise line.error(
            "an open_vocabulary_detection example needs 'categories': the classes its prompt names",
            "categories",
        )
    return {"objects": _objects(line, categories)}


def _objects(
    line: _Line, categories: list[str] | None, *, alias: str | None = None, default: str | None = None
) -> list[Object]:
    """`objects`: boxes with a category (or its `alias`; `default` where a category is optional)."""
    raw = line.data.get("objects") or []
    if not isinstance(raw, list):
        raise line.error(f"must be a list of objects, got {raw!r}", "objects")
    objects = []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise line.error(f"object {i} must be a JSON object, got {obj!r}", "objects")
        if "bbox" not in obj:
            raise line.error(f"object {i} has no bbox", "bbox")
        key = "category"
        if alias is not None and alias in obj:
            if "category" in obj:
                raise line.error(f"object {i}: give 'category' or '{alias}', not both", alias)
            key = alias
        category = obj.get(key, default)
        if alias is not None and isinstance(category, str):
            category = category.strip()  # a description: text the model writes
        if not isinstance(category, str) or not category:
            raise line.error(f"object {i}: {key} must be a non-empty string, got {category!r}", key)
        if categories is not None and category not in categories:
            raise line.error(f"object {i}: category {category!r} is not in 'categories'", "category")
        box = parse_box(obj["bbox"], fmt="xyxy", file=line.file, record=line.record, field="bbox")
        objects.append(Object(box, category))
    return objects


def _grounding(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    phrase = line.text("phrase", required=True, content=True)
    return {"phrase": phrase, "objects": _referred(line, phrase, categories, required=True)}


def _segmentation(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    phrase = line.text("phrase", required=True, content=True)
    polygons = _polygons(line, tally)
    objects = _referred(line, phrase, categories, required=False)
    return {"phrase": phrase, "polygons": polygons, "objects": objects}


def _polygons(line: _Line, tally: Tally) -> list[list[float]]:
    raw = line.data.get("polygons")
    if raw is None:
        raise line.error("required field is missing", "polygons")
    if not isinstance(raw, list):
        raise line.error(f"must be a list of flat [x1, y1, x2, y2, ...] polygons, got {raw!r}", "polygons")
    polygons = parse_polygons(raw, tally, file=line.file, record=line.record, field="polygons")
    if not polygons:
        raise line.error(f"a {line.data['task']} example needs a polygon of three or more points", "polygons")
    return polygons


def _referred(line: _Line, phrase: str, categories: list[str] | None, *, required: bool) -> list[Object]:
    """The referred object's box(es) from `bbox` or `bboxes`, named by `category` (default: the phrase)."""
    one, many = line.data.get("bbox"), line.data.get("bboxes")
    if one is not None and many is not None:
        raise line.error("give 'bbox' (one box) or 'bboxes' (a list of boxes), not both", "bboxes")
    if many is not None and (not isinstance(many, list) or not many):
        raise line.error(f"must be a non-empty list of boxes, got {many!r}", "bboxes")
    if one is None and many is None:
        if required:
            raise line.error(f"a {line.data['task']} example needs 'bbox' or 'bboxes'", "bbox")
        return []
    where = "bbox" if one is not None else "bboxes"
    boxes = [parse_box(b, fmt="xyxy", file=line.file, record=line.record, field=where) for b in many or [one]]
    category = line.text("category", required=False, content=True)
    if category is not None and categories is not None and category not in categories:
        raise line.error(f"category {category!r} is not in 'categories'", "category")
    return [Object(box, category if category is not None else phrase) for box in boxes]


def _ocr(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    text = line.text("text", required=True, content=True)
    regions = parse_regions(line.data.get("regions"), tally, file=line.file, record=line.record)
    return {"text": text, "regions": regions}


def _region(line: _Line) -> Box:
    """The region a region_to_* prompt gives: four numbers, x1, y1, x2, y2 in pixels (clipped to
    the image once its size is known)."""
    value = line.data.get("region")
    if value is None:
        raise line.error("required field is missing: the region the prompt gives, [x1, y1, x2, y2]", "region")
    return parse_box(value, fmt="xyxy", file=line.file, record=line.record, field="region")


def _region_to_category(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    label = line.text("label", required=True, content=True)
    if categories is not None and label not in categories:
        raise line.error(f"label {label!r} is not in 'categories'", "label")
    return {"region": _region(line), "label": label}


def _region_to_description(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    return {"region": _region(line), **_captions(line, tally)}


def _region_to_ocr(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    return {"region": _region(line), "text": line.text("text", required=True, content=True)}


def _region_to_segmentation(line: _Line, tally: Tally, categories: list[str] | None) -> dict[str, Any]:
    region = _region(line)
    polygons = _polygons(line, tally)
    category = line.text("category", required=False, content=True)
    if category is not None and categories is not None and category not in categories:
        raise line.error(f"category {category!r} is not in 'categories'", "category")
    objects = [] if category is None else [Object(region, category)]  # the object's box: the region
    return {"region": region, "polygons": polygons, "objects": objects}


# task -> the parser of its fields
_TASK_FIELDS = {
    tasks.CLASSIFICATION: _classification,
    tasks.CAPTION: _caption,
    tasks.VQA: _vqa,
    tasks.DETECTION: _detection,
    tasks.GROUNDING: _grounding,
    tasks.SEGMENTATION: _segmentation,
    tasks.OCR: _ocr,
    tasks.DENSE_REGION_CAPTION: _dense_region_caption,
    tasks.REGION_PROPOSAL: _region_proposal,
    tasks.OPEN_VOCABULARY_DETECTION: _open_vocabulary_detection,
    tasks.REGION_TO_CATEGORY: _region_to_category,
    tasks.REGION_TO_DESCRIPTION: _region_to_description,
    tasks.REGION_TO_OCR: _region_to_ocr,
    tasks.REGION_TO_SEGMENTATION: _region_to_segmentation,
}
# region_proposal: an object's category when the line gives none (kept, never rendered)
PROPOSAL_CATEGORY = "object"


@register("jsonl")
def read_jsonl(ctx: SourceContext, *, path: Path, images: Path | None = None) -> Iterator[Example]:
    """Yield one Example per non-blank line of a JSONL file; see the module docstring for the schema."""
    file = Path(path)
    images_root = Path(images) if images is not None else file.parent
    seen: set[str] = set()
    checks: dict[Path, ImageCheck] = {}  # several lines may share an image (e.g. many questions)
    offset = 0  # of the line in the file, for an error about its nesting
    with open_data_file(file) as handle:
        for lineno, raw in enumerate(handle, start=1):
            offset += len(raw)
            if not raw.strip():
                continue
            record = f"line {lineno}"
            data = parse_json(raw, file=file, record=record, offset=offset - len(raw))
            if not isinstance(data, dict):
                raise DataError(
                    f"a line must be a JSON object, got {type(data).__name__}", file=file, record=record
                )
            raw_id = data.get("id", lineno)
            if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
                raise DataError(
                    f"id must be a string or an integer, got {raw_id!r}", file=file, record=record, field="id"
                )
            example_id = str(raw_id)
            if example_id in seen:
                raise DataError(f"duplicate id {example_id!r}", file=file, record=record, field="id")
            seen.add(example_id)

            line = _Line(data, file, record)
            task, image_path, fields = _parse_line(line, images_root, ctx.tally)
            size = check_image(image_path, ctx, record=f"{file.name} {record}", cache=checks)
            if size is None:
                continue
            if "region" in fields:  # a region_to_* line: its region clipped as boxes are
                region = clip_region(fields["region"], size, ctx.tally, record=record)
                if region is None:
                    detail = f"{file.name} {record}: the region has no area inside the image"
                    ctx.tally.skip("no usable region", detail)
                    continue
                fields["region"] = region
                # region_to_segmentation: the object's box is the region
                fields["objects"] = [Object(region, o.category) for o in fields.get("objects", [])]
            elif fields.get("objects"):
                fields["objects"] = clip_objects(fields["objects"], size, ctx.tally, record=record)
                if task == tasks.GROUNDING and not fields["objects"]:
                    ctx.tally.skip("no usable box", f"{file.name} {record}: no box has area inside the image")
                    continue
            yield ctx.example(example_id, image_path, size, **fields)
