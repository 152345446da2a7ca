"""COCO instances JSON (`instances_train2017.json` and friends) -> detection Examples, or the
Examples of another task its boxes, categories and masks answer (`task`, below).

Task "detection" (the default): one Example per image, id = str(image id), in the order of the
JSON's `images` list. Boxes go
from COCO's (x, y, w, h) to absolute (x1, y1, x2, y2) in the EXIF-oriented frame of the real
image, and categories are named (Example.categories = every category name, sorted by id).

What is repaired and counted (the image is kept):
- "crowd region excluded": `iscrowd=1` annotations are not objects to train on. COCOeval treats
  them as ignore regions (detections there are neither hits nor false positives), so teaching
  the model to box a crowd as one object would be wrong; they are kept, clipped, in
  Example.crowd, which only the detection metric reads, so uvft scores a split as COCOeval does
  on the original file.

Each object keeps its annotation's `area` (COCO's: of the segmentation, which decides small /
medium / large) for the metric, never for training; an area that is missing, not a number or not
positive leaves it None and the metric takes the box's.
- "box clipped" / "zero-area box dropped": boxes are clipped to the real image; what has no area
  left is dropped.
- "image size differs from annotation": the JSON's width/height disagree with the real image
  (after EXIF orientation). The real image wins; boxes are clipped to it, not rescaled.
- "negative image excluded": with keep_negatives=False, images with no annotations at all are
  left out. This is a choice, not bad data, so it is counted with the repairs (which do not
  count against the recipe's skip threshold), before the image is even opened.
- "image without usable boxes excluded": an image whose annotations were all dropped (crowd or
  zero-area) is left out even with keep_negatives=True: it is not a true negative (a crowd-only
  image has people in it), and training it as "nothing here" would teach the wrong thing.

Repairs that say the file is laid out wrong fail the build instead (sources/repairs.py) when they
hit more than `data.max_repair_fraction` (default 5%) of a split's boxes or images, and at least 3:
boxes clipped by more than a pixel or dropped (the likely cause named: x1, y1, x2, y2 written in
`bbox`, which is x, y, width, height; boxes of the original images on a resized copy, from the
declared sizes; or how far the boxes reach), boxes inside [0, 1] x [0, 1] (normalised
coordinates), and images whose declared size is not theirs. `data.max_repair_fraction: 1.0`
trains on them as repaired.

Skipped and counted: unusable image files (see images.check_image).

The other tasks (`task`), each from the same validated annotations, boxes clipped and counted as
above, crowd annotations never trained on (counted "crowd region excluded"):
- "region_proposal": one Example per image, id str(image id): its boxes (category kept, not
  rendered), crowd regions in Example.crowd; negatives and images without usable boxes as for
  detection.
- "region_to_category": one Example per non-crowd annotation, id "<image id>/<annotation id>":
  region = its box, label = its category name, categories = the vocabulary.
- "region_to_segmentation": one Example per non-crowd annotation with polygons, id
  "<image id>/<annotation id>": region = its box, polygons = its segmentation (degenerate
  polygons dropped, "degenerate polygon dropped"), objects = [its box and category]. Skipped and
  counted: "RLE mask (segmentation needs polygons)" and "annotation without polygons" (none, or
  only degenerate ones).
- "open_vocabulary_detection": one Example per image and category present in it (a non-crowd
  annotation of it), id "<image id>/<category id>", in category id order: categories = [that
  category's name], objects = all its boxes, crowd = its crowd regions. Negatives are off by
  default: `negatives_per_image: k` adds, per image, k categories absent from it (no annotation
  of theirs, crowd included: a crowd of people is no "no person here"), drawn with
  random.Random(f"{seed}:{image id}") from the vocabulary (all of them when fewer are absent),
  each an Example with no objects. An image without annotations then gives only negatives (with
  keep_negatives), and none without. "category without usable boxes excluded": a category whose
  boxes were all dropped (zero-area) is neither a positive nor a true negative.
For region_to_*, the annotation's box must keep an area inside the image: else the example is
skipped, "no usable box" (with "zero-area box dropped"). Unusable image files are counted once
per Example they would have given, so skips compare with Examples.

Errors (DataError naming file, record and field): JSON that does not parse or nests deeper than
64 levels (sources/nesting.py), missing required
keys, duplicate image or category ids, duplicate category names, an annotation pointing at an
unknown image or category, a box with negative width or height, a file_name outside `images`,
a malformed segmentation (region_to_segmentation), an unknown `task`, a `negatives_per_image`
that is not a count >= 0 or given for another task than open_vocabulary_detection.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import Example, ImageSize, Object
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    COCO_SEGMENTATION,
    check_declared_size,
    check_image,
    clip_objects,
    clip_region,
    coco_categories,
    coco_images,
    coco_segmentation,
    parse_box,
    prefetch_checks,
    read_json,
    require,
    require_id,
    require_list,
)
from pipeline.tasks import DETECTION

logger = logging.getLogger(__name__)

# the tasks a COCO instances file answers (see the module docstring)
COCO_TASKS = (
    DETECTION,
    tasks.REGION_PROPOSAL,
    tasks.REGION_TO_CATEGORY,
    tasks.REGION_TO_SEGMENTATION,
    tasks.OPEN_VOCABULARY_DETECTION,
)
RLE_SKIP = "RLE mask (segmentation needs polygons)"


@dataclass(frozen=True)
class _Ann:
    """One validated annotation: its id, object (xyxy box, category name, area), crowd flag,
    category id, and (region_to_segmentation only) its polygons or RLE mask."""

    id: Any
    obj: Object
    crowd: bool
    category_id: Any
    polygons: list[list[float]]
    rle: dict[str, Any] | None


@register("coco_detection")
def read_coco_detection(
    ctx: SourceContext,
    *,
    annotations: Path,
    images: Path,
    keep_negatives: bool = True,
    task: str = DETECTION,
    negatives_per_image: int = 0,
    seed: int = 0,
) -> Iterator[Example]:
    """Yield the `task` Examples of a COCO instances file (by default one detection Example per
    image); see the module docstring."""
    file = Path(annotations)
    _check_params(file, task, negatives_per_image)
    data = read_json(file)
    categories = coco_categories(data, file)
    vocabulary = list(categories.values())  # shared by every Example of this source: do not mutate

    image_infos = coco_images(data, file)
    masks = task == tasks.REGION_TO_SEGMENTATION
    per_annotation = task in tasks.REGION_TASKS

    # validate every annotation up front and group by image: a bad file fails before any I/O
    by_image: dict[Any, list[_Ann]] = {}
    seen_ids: set[Any] = set()
    for index, ann in enumerate(require_list(data, "annotations", file=file)):
        ann_id = ann.get("id", f"#{index}") if isinstance(ann, dict) else f"#{index}"
        record = f"annotation {ann_id}"
        image_id = require_id(ann, "image_id", file=file, record=record, what="an annotation")
        category_id = require_id(ann, "category_id", file=file, record=record, what="an annotation")
        raw_box = require(ann, "bbox", file=file, record=record, what="an annotation")
        if image_id not in image_infos:
            raise DataError(
                f"image_id {image_id!r} is not in 'images'", file=file, record=record, field="image_id"
            )
        if category_id not in categories:
            raise DataError(
                f"category_id {category_id!r} is not in 'categories'",
                file=file,
                record=record,
                field="category_id",
            )
        if per_annotation:  # an annotation's id becomes an Example's: it must be one of a kind
            if ann_id in seen_ids:
                raise DataError("duplicate annotation id", file=file, record=record, field="id")
            seen_ids.add(ann_id)
        box = parse_box(raw_box, fmt="xywh", file=file, record=record, field="bbox")
        crowd = bool(ann.get("iscrowd", 0))
        obj = Object(box, categories[category_id], _area(ann.get("area")))
        polygons, rle = [], None
        if masks and not crowd:
            polygons, rle = coco_segmentation(ann.get(COCO_SEGMENTATION), ctx.tally, file=file, record=record)
        by_image.setdefault(image_id, []).append(_Ann(ann_id, obj, crowd, category_id, polygons, rle))
    del data  # the parsed JSON can be hundreds of MB; keep only what we need

    # an image without annotations gives no Example of a per-annotation task, nor of
    # open-vocabulary detection without negatives to sample
    gives_negatives = keep_negatives and not per_annotation
    if task == tasks.OPEN_VOCABULARY_DETECTION:
        gives_negatives = keep_negatives and negatives_per_image > 0
    paths = {  # confined (a bad file_name fails before any image is opened), then checked ahead
        i: ctx.paths.confine(images, info["file_name"], file=file, record=f"image {i}", field="file_name")
        for i, info in image_infos.items()
        if gives_negatives or by_image.get(i)
    }
    prefetch_checks(paths.values(), ctx)
    for image_id, info in image_infos.items():
        record = f"image {image_id}"
        anns = by_image.get(image_id, [])
        if image_id not in paths:
            ctx.tally.repair("negative image excluded", record)
            continue
        path = paths[image_id]
        if task in (DETECTION, tasks.REGION_PROPOSAL):  # an example per image, its boxes
            size = check_image(path, ctx, record=record)
            if size is None:
                continue
            _check_size(ctx, info, size, record)
            objects, crowd = _split_crowd(ctx, anns, size, record)
            if anns and not objects:
                ctx.tally.repair("image without usable boxes excluded", record)
                continue
            vocab = vocabulary if task == DETECTION else []  # proposals name no class
            yield ctx.example(
                str(image_id), path, size, task=task, objects=objects, categories=vocab, crowd=crowd
            )
        elif task == tasks.OPEN_VOCABULARY_DETECTION:
            negatives = negatives_per_image if keep_negatives else 0
            yield from _open_vocabulary(ctx, image_id, path, info, anns, categories, negatives, seed)
        else:
            yield from _per_annotation(ctx, task, image_id, path, info, anns, vocabulary)


def _check_params(file: Path, task: str, negatives_per_image: Any) -> None:
    if task not in COCO_TASKS:
        raise DataError(
            f"unknown task {task!r}; coco_detection reads: {', '.join(COCO_TASKS)}", file=file, field="task"
        )
    n = negatives_per_image
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(
            f"negatives_per_image must be a count >= 0, got {negatives_per_image!r}",
            file=file,
            field="negatives_per_image",
        )
    if negatives_per_image and task != tasks.OPEN_VOCABULARY_DETECTION:
        raise DataError(
            f"negatives_per_image is for task {tasks.OPEN_VOCABULARY_DETECTION}, not {task}",
            file=file,
            field="negatives_per_image",
        )


def _check_size(ctx: SourceContext, info: dict[str, Any], size: ImageSize, record: str) -> None:
    """Count an image whose JSON width/height differ from the real image (the real one wins)."""
    check_declared_size(ctx, (info.get("width"), info.get("height")), size, record, "JSON")


def _split_crowd(
    ctx: SourceContext, anns: list[_Ann], size: ImageSize, record: str
) -> tuple[list[Object], list[Object]]:
    """(objects, crowd) of an image's annotations, clipped to it; objects counted, crowd not."""
    crowd = [a.obj for a in anns if a.crowd]
    if crowd:
        ctx.tally.repair("crowd region excluded", record, n=len(crowd))
        crowd = clip_objects(crowd, size, None, record=record)  # evaluation only: not counted
    objects = [a.obj for a in anns if not a.crowd]
    objects = clip_objects(objects, size, ctx.tally, record=record, written="xywh")
    return objects, crowd


def _open_vocabulary(
    ctx: SourceContext,
    image_id: Any,
    path: str,
    info: dict[str, Any],
    anns: list[_Ann],
    categories: dict[Any, str],
    negatives: int,
    seed: int,
) -> Iterator[Example]:
    """One Example per category present in the image, and `negatives` drawn among the absent ones."""
    record = f"image {image_id}"
    present = [c for c in categories if any(a.category_id == c and not a.crowd for a in anns)]
    absent = [c for c in categories if not any(a.category_id == c for a in anns)]
    drawn = set(random.Random(f"{seed}:{image_id}").sample(absent, min(negatives, len(absent))))
    named = [c for c in categories if c in drawn or c in present]  # category id order
    if not named:
        if not anns:
            ctx.tally.repair("negative image excluded", record)
        else:  # only crowd annotations: no class to name, and no true negative either
            ctx.tally.repair("image without usable boxes excluded", record)
        return
    crowd_only = [c for c in categories if c not in present and c not in absent]
    if crowd_only:
        n = sum(a.crowd for a in anns if a.category_id in crowd_only)
        ctx.tally.repair("crowd region excluded", record, n=n)
    checked = False
    for category_id in named:
        example_record = f"{record} category {category_id}"
        size = check_image(path, ctx, record=example_record)
        if size is None:
            continue
        if not checked:
            _check_size(ctx, info, size, record)
            checked = True
        mine = [a for a in anns if a.category_id == category_id]
        objects, crowd = _split_crowd(ctx, mine, size, example_record)
        if mine and not objects:
            ctx.tally.repair("category without usable boxes excluded", example_record)
            continue
        yield ctx.example(
            f"{image_id}/{category_id}",
            path,
            size,
            task=tasks.OPEN_VOCABULARY_DETECTION,
            categories=[categories[category_id]],
            objects=objects,
            crowd=crowd,
        )


def _per_annotation(
    ctx: SourceContext,
    task: str,
    image_id: Any,
    path: str,
    info: dict[str, Any],
    anns: list[_Ann],
    vocabulary: list[str],
) -> Iterator[Example]:
    """One region_to_category or region_to_segmentation Example per non-crowd annotation."""
    crowd = sum(a.crowd for a in anns)
    if crowd:
        ctx.tally.repair("crowd region excluded", f"image {image_id}", n=crowd)
    checked = False
    for ann in anns:
        if ann.crowd:
            continue
        record = f"annotation {ann.id}"
        if task == tasks.REGION_TO_SEGMENTATION and not ann.polygons:
            reason = RLE_SKIP if ann.rle is not None else "annotation without polygons"
            ctx.tally.skip(reason, record)
            continue
        size = check_image(path, ctx, record=record)
        if size is None:
            continue
        if not checked:
            _check_size(ctx, info, size, f"image {image_id}")
            checked = True
        region = clip_region(ann.obj.bbox, size, ctx.tally, record=record, written="xywh")
        if region is None:
            ctx.tally.skip("no usable box", f"{record}: {list(ann.obj.bbox)} in {size[0]}x{size[1]}")
            continue
        example_id = f"{image_id}/{ann.id}"
        if task == tasks.REGION_TO_CATEGORY:
            label = ann.obj.category
            yield ctx.example(
                example_id, path, size, task=task, region=region, label=label, categories=vocabulary
            )
        else:
            obj = Object(region, ann.obj.category, ann.obj.area)
            yield ctx.example(
                example_id, path, size, task=task, region=region, polygons=ann.polygons, objects=[obj]
            )


def _area(value: Any) -> float | None:
    """The annotation's area where it is a positive finite number, else None (see the module doc)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None
