"""A Hugging Face `datasets` dataset (hub id, local data folder, or a save_to_disk folder) -> Examples.

`path`, `name`, `hf_split` and `data_files` go to `datasets.load_dataset`; with `from_disk=True`
`path` is a folder written by `save_to_disk` (a DatasetDict folder picks `hf_split`). `path` is a
string, not resolved against the recipe's data root: give local folders as absolute paths.

Columns: `columns` maps an Example field to a dataset column; unspecified fields use these
defaults (a default column that the dataset lacks is simply not used, except where required):

    image        "image"        required; an Image feature, or a string path
    id           (row index)    map it (e.g. {"id": "question_id"}) to use a column; must be unique
    label        "label"        classification, required; ClassLabel ints become names
    captions     "captions"     caption: a list of str, used when the column exists, else
    caption      "caption"      a str or a list of str; the first caption is trained on
    question     "question"     vqa, required
    answers      "answers"      vqa: list of str, or list of {"answer": str, "answer_id"?: int}
    answer       "answer"       vqa: str; default most_frequent_answer(answers)
    answer_type  "answer_type"  vqa, optional
    objects      "objects"      detection, required: a list of {bbox, category} or, as
    bbox         "bbox"           `Sequence({...})` stores it, {bbox: [...], category: [...]};
    category     "category"       category is a ClassLabel int or a str
    phrase       "phrase"       grounding/segmentation, required: the referring expression
    bboxes       "bboxes"       grounding/segmentation: a list of boxes per row, used when the
    bbox         "bbox"           column exists, else a column of one box per row; required
                                  for grounding, optional for segmentation (an explicit mapping
                                  of either wins; mapping both is an error)
    category     "category"     grounding/segmentation, optional: the boxes' category (a
                                  ClassLabel int or a str); None or blank: the phrase
    polygons     "polygons"     segmentation, required: a list of flat [x1, y1, x2, y2, ...]
                                  polygons in pixels
    text         "text"         ocr, required: all the text of the image
    regions      "regions"      ocr, optional: a list of {text, quad} (8 numbers, clockwise from
                                  top-left) or {text, bbox} (in `bbox_format`), or the struct of
                                  lists a Sequence({...}) stores
    language     "language"     caption/vqa, optional: a language code per row ("de", "zh-Hant");
                                  None: English. Mapping it for another task is an error.

So `bbox` and `category` name sub-fields of `objects` for detection and columns of their own
for grounding and segmentation. Boxes are read in `bbox_format` ("xyxy" or "xywh", absolute
pixels), then clipped to the real image like every other source; region quads and polygons are
kept as given. Texts (phrase, text, region texts) are stripped. categories: the ClassLabel names
of the label (classification) or object category (detection) feature, else the sorted distinct
values in the split (grounding, segmentation and ocr Examples carry none).

Images: the image column is read undecoded ({"bytes", "path"}). A `path` that is an existing
absolute file (e.g. `load_dataset("imagefolder", ...)`) is referenced as is; otherwise the bytes
are written once to `image_cache`, named by their SHA-256 and stored format (Example.image must
be a file). A relative path without bytes is looked up under `images`.

Skipped and counted: "missing label" (None, or ClassLabel's -1), "image without captions",
"question without answers", "missing box" (grounding: no box in the row), "no usable box"
(grounding: no box has area inside the image), "missing polygons" (segmentation: none, or only
degenerate ones), "image without text" (ocr: None or blank), "missing image" (no bytes and no
file), unusable image files.
Repaired: "empty caption dropped", "box clipped", "zero-area box dropped", "degenerate polygon
dropped" (fewer than three points), "empty region dropped" (a region with blank text).
Errors (DataError naming the dataset and split, the row and the field): a blank or non-string
question or phrase, malformed boxes, polygons or regions, a language that is not a code.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.records import LANGUAGE_TASKS, TASKS, Box, Example, Object, Tally
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    ImageCheck,
    check_image,
    clip_objects,
    id_sort_key,
    image_format_suffix,
    language_code,
    parse_box,
    parse_polygons,
    parse_regions,
)
from pipeline.sources.paths import confine
from pipeline.sources.vqav2 import most_frequent_answer

logger = logging.getLogger(__name__)

DEFAULT_COLUMNS: dict[str, str] = {
    "image": "image",
    "label": "label",
    "captions": "captions",
    "caption": "caption",
    "question": "question",
    "answers": "answers",
    "answer": "answer",
    "answer_type": "answer_type",
    "objects": "objects",
    "bbox": "bbox",
    "category": "category",
    "bboxes": "bboxes",
    "phrase": "phrase",
    "polygons": "polygons",
    "text": "text",
    "regions": "regions",
    "language": "language",
}
_MAPPABLE = {*DEFAULT_COLUMNS, "id"}


def _load(path: str, name: str | None, hf_split: str, from_disk: bool, data_files: Any) -> Any:
    import datasets  # heavy: imported only when this source is used

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
    image_cache: Path | None = None,
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
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    # `path` is a hub id or a folder: a relative folder that exists under the data root wins.
    if ctx.root is not None and not Path(path).is_absolute() and (ctx.root / path).exists():
        path = str(ctx.root / path)
    ds = _load(path, name, hf_split, from_disk, data_files)
    features = ds.features
    where = f"{path} [{hf_split}]"

    def column(field: str, *, required: bool) -> str | None:
        col = cols.get(field)
        if col in features:
            return col
        if required or (columns and field in columns):  # an explicit mapping must exist
            raise DataError(
                f"dataset has no column {col!r} for {field}; columns: {sorted(features)}",
                file=where,
                field=field,
            )
        return None

    image_col = column("image", required=True)
    id_col = column("id", required=False)
    needed = [image_col, *([id_col] if id_col else [])]
    categories: list[str] = []
    if task == "classification":
        label_col = column("label", required=True)
        label_names = _class_names(features[label_col])
        needed.append(label_col)
        categories = label_names or sorted({str(v) for v in ds.unique(label_col) if v is not None})
    elif task == "caption":
        caption_col = column("captions", required=False) or column("caption", required=False)
        if caption_col is None:
            raise DataError(
                f"dataset has no caption column ({cols['captions']!r} or {cols['caption']!r}); "
                f"columns: {sorted(features)}",
                file=where,
                field="caption",
            )
        needed.append(caption_col)
    elif task == "vqa":
        question_col = column("question", required=True)
        answers_col = column("answers", required=False)
        answer_col = column("answer", required=False)
        type_col = column("answer_type", required=False)
        if answers_col is None and answer_col is None:
            raise DataError(
                f"dataset has no answer column ({cols['answers']!r} or {cols['answer']!r}); "
                f"columns: {sorted(features)}",
                file=where,
                field="answers",
            )
        needed += [c for c in (question_col, answers_col, answer_col, type_col) if c]
    elif task in ("grounding", "segmentation"):
        phrase_col = column("phrase", required=True)
        box_field, box_col = _box_column(column, columns or {}, where)
        if box_col is None and task == "grounding":
            raise DataError(
                f"dataset has no box column ({cols['bboxes']!r} or {cols['bbox']!r}); "
                f"columns: {sorted(features)}",
                file=where,
                field="bbox",
            )
        ref_category_col = column("category", required=False)
        ref_category_names = _class_names(features[ref_category_col]) if ref_category_col else None
        polygons_col = column("polygons", required=True) if task == "segmentation" else None
        needed += [c for c in (phrase_col, box_col, ref_category_col, polygons_col) if c]
    elif task == "ocr":
        text_col = column("text", required=True)
        regions_col = column("regions", required=False)
        needed += [c for c in (text_col, regions_col) if c]
    else:
        objects_col = column("objects", required=True)
        struct = _inner(features[objects_col])
        bbox_key, category_key = cols["bbox"], cols["category"]
        for field, key in (("bbox", bbox_key), ("category", category_key)):
            if not isinstance(struct, dict) or key not in struct:
                raise DataError(
                    f"column {objects_col!r} has no sub-field {key!r} for {field}", file=where, field=field
                )
        category_names = _class_names(struct[category_key])
        needed.append(objects_col)
    if task in LANGUAGE_TASKS:
        language_col = column("language", required=False)
        needed += [language_col] if language_col else []
    elif columns and "language" in columns:
        raise DataError(
            f"a language is only for {' and '.join(LANGUAGE_TASKS)} examples, not {task}",
            file=where,
            field="language",
        )

    ds = ds.select_columns(list(dict.fromkeys(needed)))
    if isinstance(features[image_col], Image):
        ds = ds.cast_column(image_col, Image(decode=False))  # {"bytes", "path"}: no decoding here

    def image_path(value: Any, record: str) -> Path | None:
        file_path, data = (
            (value.get("path"), value.get("bytes")) if isinstance(value, dict) else (value, None)
        )
        if file_path is not None and not isinstance(file_path, str):
            raise DataError(
                f"image must be a path or {{bytes, path}}, got {value!r}",
                file=where,
                record=record,
                field="image",
            )
        if file_path and os.path.isabs(file_path) and os.path.isfile(file_path):
            return Path(file_path)
        if data:
            if image_cache is None:
                raise DataError(
                    "images are embedded as bytes: set image_cache to a folder to write them to",
                    file=where,
                    record=record,
                    field="image_cache",
                )
            return cache_image_bytes(data, image_cache)
        if file_path and not os.path.isabs(file_path) and images is not None:
            return confine(images, file_path, file=where, record=record, field="image")
        ctx.tally.skip("missing image", f"{record}: no bytes and no file at {file_path!r}")
        return None

    def category_name(value: Any, names: list[str] | None, record: str, field: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and names is not None:
            if not 0 <= value < len(names):
                raise DataError(
                    f"class index {value} outside 0..{len(names) - 1}", file=where, record=record, field=field
                )
            return names[value]
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise DataError(
            f"expected a class name or index, got {value!r}", file=where, record=record, field=field
        )

    def row_objects(value: Any, record: str) -> list[Object]:
        if value is None:
            return []
        if isinstance(value, dict):  # Sequence({...}) stores a struct of lists
            boxes, cats = value.get(bbox_key) or [], value.get(category_key) or []
            if len(boxes) != len(cats):
                raise DataError(
                    f"{len(boxes)} boxes but {len(cats)} categories",
                    file=where,
                    record=record,
                    field="objects",
                )
            pairs = list(zip(boxes, cats, strict=True))
        elif isinstance(value, list) and all(isinstance(o, dict) for o in value):
            pairs = [(o.get(bbox_key), o.get(category_key)) for o in value]
        else:
            raise DataError(
                f"expected a list of objects, got {value!r}", file=where, record=record, field="objects"
            )
        return [
            Object(
                parse_box(box, fmt=bbox_format, file=where, record=record, field="bbox"),
                category_name(cat, category_names, record, "category"),
            )
            for box, cat in pairs
        ]

    if task == "detection" and category_names is None:
        seen_cats = {
            o.category
            for i, r in enumerate(ds.select_columns([objects_col]))
            for o in row_objects(r[objects_col], f"row {i}")
        }
        categories = sorted(seen_cats)
    elif task == "detection":
        categories = list(category_names)

    seen_ids: set[str] = set()
    checks: dict[Path, ImageCheck] = {}
    for index, row in enumerate(ds):
        example_id = str(row[id_col]) if id_col else str(index)
        record = f"row {index}" + (f" (id {example_id})" if id_col else "")
        if id_col:
            if example_id in seen_ids:
                raise DataError(f"duplicate id {example_id!r}", file=where, record=record, field="id")
            seen_ids.add(example_id)

        fields: dict[str, Any] = {"task": task}
        if task == "classification":
            value = row[label_col]
            if value is None or (label_names is not None and value == -1):
                ctx.tally.skip("missing label", record)
                continue
            fields["label"] = category_name(value, label_names, record, "label")
            fields["categories"] = categories
        elif task == "caption":
            value = row[caption_col]
            raw = [value] if isinstance(value, str) else value or []
            if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
                raise DataError(
                    f"expected str or list of str, got {value!r}", file=where, record=record, field="caption"
                )
            captions = [c.strip() for c in raw if c.strip()]
            if len(captions) < len(raw):
                ctx.tally.repair("empty caption dropped", record, n=len(raw) - len(captions))
            if not captions:
                ctx.tally.skip("image without captions", record)
                continue
            fields.update(caption=captions[0], captions=captions)
        elif task == "vqa":
            question = row[question_col]
            if not isinstance(question, str) or not question.strip():
                raise DataError(
                    f"expected a question, got {question!r}", file=where, record=record, field="question"
                )
            answers = _answers(row[answers_col], where, record) if answers_col else []
            answer = row[answer_col] if answer_col else None
            if answer is not None and not isinstance(answer, str):
                raise DataError(
                    f"expected a string, got {answer!r}", file=where, record=record, field="answer"
                )
            if not answers and not answer:
                ctx.tally.skip("question without answers", record)
                continue
            fields.update(
                question=question.strip(),
                answers=answers or [answer],
                answer=answer if answer else most_frequent_answer(answers),
                answer_type=row[type_col] if type_col else None,
            )
        elif task in ("grounding", "segmentation"):
            phrase = _phrase(row[phrase_col], where, record)
            boxes = _boxes(row[box_col], box_field, bbox_format, where, record) if box_col else []
            if task == "grounding" and not boxes:
                ctx.tally.skip("missing box", record)
                continue
            value = row[ref_category_col] if ref_category_col else None
            if isinstance(value, str):
                value = value.strip() or None  # a blank category: the phrase names the box
            names = ref_category_names
            category = phrase if value is None else category_name(value, names, record, "category")
            fields.update(phrase=phrase, objects=[Object(box, category) for box in boxes])
            if task == "segmentation":
                polygons = _polygons(row[polygons_col], ctx.tally, where, record)
                if not polygons:
                    ctx.tally.skip("missing polygons", record)
                    continue
                fields["polygons"] = polygons
        elif task == "ocr":
            text = row[text_col]
            if text is not None and not isinstance(text, str):
                raise DataError(f"expected a string, got {text!r}", file=where, record=record, field="text")
            if not text or not text.strip():
                ctx.tally.skip("image without text", record)
                continue
            regions = _struct_rows(row[regions_col]) if regions_col else None
            fields.update(
                text=text.strip(),
                regions=parse_regions(regions, ctx.tally, file=where, record=record, bbox_format=bbox_format),
            )
        else:
            fields["objects"] = row_objects(row[objects_col], record)
            fields["categories"] = categories
        if task in LANGUAGE_TASKS and language_col:
            fields["language"] = language_code(row[language_col], file=where, record=record)

        path_ = image_path(row[image_col], record)
        if path_ is None:
            continue
        size = check_image(path_, ctx, record=record, cache=checks)
        if size is None:
            continue
        if fields.get("objects"):
            fields["objects"] = clip_objects(fields["objects"], size, ctx.tally, record=record)
            if task == "grounding" and not fields["objects"]:
                ctx.tally.skip("no usable box", f"{record}: no box has area inside the image")
                continue
        yield ctx.example(example_id, path_, size, **fields)


def _box_column(column: Any, explicit: dict[str, str], where: str) -> tuple[str, str | None]:
    """(field, column) of a grounding/segmentation source's boxes: `bboxes` (a list of boxes per
    row) or `bbox` (one box); an explicit mapping of either wins over the defaults."""
    if "bbox" in explicit and "bboxes" in explicit:
        raise DataError(
            "map 'bbox' (one box) or 'bboxes' (a list of boxes), not both", file=where, field="columns"
        )
    order = ("bbox", "bboxes") if "bbox" in explicit else ("bboxes", "bbox")
    for field in order:
        col = column(field, required=False)
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
