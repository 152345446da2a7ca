"""A JSON Lines file, one example per line, any task -> Examples.

Schema of one line (a JSON object; blank lines are skipped):

    id           str or int, optional: default the 1-based line number. Must be unique in the file.
    task         "classification" | "caption" | "vqa" | "detection", required
    image        path relative to `images` (default: the JSONL file's folder), required
    label        classification: str, required
    caption      caption: str; and/or
    captions     caption: list of str. caption defaults to captions[0], captions to [caption];
                 one of the two is required
    question     vqa: str, required
    answer       vqa: str; and/or
    answers      vqa: list of str (all human answers, for scoring). answer defaults to
                 most_frequent_answer(answers), answers to [answer]; one of the two is required
    answer_type  vqa: str, optional
    objects      detection: [{"bbox": [x1, y1, x2, y2], "category": str}, ...] in absolute pixels
                 of the EXIF-oriented image, optional (absent or [] = a negative image)
    categories   classification/detection: list of str, optional (the label vocabulary; when
                 given, every object's category must be in it). Default: [].

Texts the model reads or writes (label, caption(s), question, answer(s)) are stripped. A blank
label or question is an error; a blank caption or answer counts as absent, and blank items of
`captions` / `answers` are dropped and counted ("empty caption dropped", "empty answer dropped"),
so an example left with no caption or answer is an error, as an absent one is.

Other keys are ignored. Boxes are clipped to the real image ("box clipped") and boxes with no
area left dropped ("zero-area box dropped"); unusable image files are skipped and counted.
Errors (DataError naming the file, the record as "line N" and the field): a line that is not
JSON or not an object, a missing or mistyped required field, an unknown task, x2 < x1 or
y2 < y1, a category outside `categories`, a duplicate id, an image path outside `images`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.records import TASKS, Example, Object, Tally
from pipeline.sources import SourceContext, register
from pipeline.sources.images import ImageCheck, check_image, clip_objects, confine, parse_box, parse_json
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

    if task == "classification":
        fields["label"] = line.text("label", required=True, content=True)
    elif task == "caption":
        caption = line.text("caption", required=False, content=True)
        captions = line.texts("captions", tally, "empty caption dropped")
        if caption is None and not captions:
            raise line.error("a caption example needs 'caption' or a non-empty 'captions'", "caption")
        fields["caption"] = caption if caption is not None else captions[0]
        fields["captions"] = captions if captions else [caption]
    elif task == "vqa":
        fields["question"] = line.text("question", required=True, content=True)
        answer = line.text("answer", required=False, content=True)
        answers = line.texts("answers", tally, "empty answer dropped")
        if answer is None and not answers:
            raise line.error("a vqa example needs 'answer' or a non-empty 'answers'", "answers")
        fields["answer"] = answer if answer is not None else most_frequent_answer(answers)
        fields["answers"] = answers if answers else [answer]
        fields["answer_type"] = line.text("answer_type", required=False)
    else:  # detection
        raw = line.data.get("objects") or []
        if not isinstance(raw, list):
            raise line.error(f"must be a list of objects, got {raw!r}", "objects")
        objects = []
        for i, obj in enumerate(raw):
            if not isinstance(obj, dict):
                raise line.error(f"object {i} must be a JSON object, got {obj!r}", "objects")
            if "bbox" not in obj:
                raise line.error(f"object {i} has no bbox", "bbox")
            category = obj.get("category")
            if not isinstance(category, str) or not category:
                raise line.error(
                    f"object {i}: category must be a non-empty string, got {category!r}", "category"
                )
            if categories is not None and category not in categories:
                raise line.error(f"object {i}: category {category!r} is not in 'categories'", "category")
            box = parse_box(obj["bbox"], fmt="xyxy", file=line.file, record=line.record, field="bbox")
            objects.append(Object(box, category))
        fields["objects"] = objects
    return task, path, fields


@register("jsonl")
def read_jsonl(ctx: SourceContext, *, path: Path, images: Path | None = None) -> Iterator[Example]:
    """Yield one Example per non-blank line of a JSONL file; see the module docstring for the schema."""
    file = Path(path)
    images_root = Path(images) if images is not None else file.parent
    seen: set[str] = set()
    checks: dict[Path, ImageCheck] = {}  # several lines may share an image (e.g. many questions)
    try:
        handle = file.open("rb")
    except FileNotFoundError:
        raise DataError("file not found", file=file) from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            record = f"line {lineno}"
            data = parse_json(raw, file=file, record=record)
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
            if task == "detection":
                fields["objects"] = clip_objects(fields["objects"], size, ctx.tally, record=record)
            yield ctx.example(example_id, image_path, size, **fields)
