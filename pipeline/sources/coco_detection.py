"""COCO instances JSON (`instances_train2017.json` and friends) -> detection Examples.

One Example per image, id = str(image id), in the order of the JSON's `images` list. Boxes go
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

Errors (DataError naming file, record and field): JSON that does not parse or nests deeper than
64 levels (sources/nesting.py), missing required
keys, duplicate image or category ids, duplicate category names, an annotation pointing at an
unknown image or category, a box with negative width or height, a file_name outside `images`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    check_image,
    clip_objects,
    coco_categories,
    coco_images,
    parse_box,
    prefetch_checks,
    read_json,
    require,
    require_id,
    require_list,
)
from pipeline.sources.repairs import SIZE_DIFFERS
from pipeline.tasks import DETECTION

logger = logging.getLogger(__name__)


@register("coco_detection")
def read_coco_detection(
    ctx: SourceContext, *, annotations: Path, images: Path, keep_negatives: bool = True
) -> Iterator[Example]:
    """Yield one detection Example per image of a COCO instances file; see the module docstring."""
    file = Path(annotations)
    data = read_json(file)
    categories = coco_categories(data, file)
    vocabulary = list(categories.values())  # shared by every Example of this source: do not mutate

    image_infos = coco_images(data, file)

    # validate every annotation up front and group by image: a bad file fails before any I/O
    by_image: dict[Any, list[tuple[Object, bool]]] = {}
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
        box = parse_box(raw_box, fmt="xywh", file=file, record=record, field="bbox")
        crowd = bool(ann.get("iscrowd", 0))
        obj = Object(box, categories[category_id], _area(ann.get("area")))
        by_image.setdefault(image_id, []).append((obj, crowd))
    del data  # the parsed JSON can be hundreds of MB; keep only what we need

    paths = {  # confined (a bad file_name fails before any image is opened), then checked ahead
        i: ctx.paths.confine(images, info["file_name"], file=file, record=f"image {i}", field="file_name")
        for i, info in image_infos.items()
        if keep_negatives or by_image.get(i)
    }
    prefetch_checks(paths.values(), ctx)
    for image_id, info in image_infos.items():
        record = f"image {image_id}"
        anns = by_image.get(image_id, [])
        if image_id not in paths:
            ctx.tally.repair("negative image excluded", record)
            continue
        path = paths[image_id]
        size = check_image(path, ctx, record=record)
        if size is None:
            continue
        declared = (info.get("width"), info.get("height"))
        if declared != (None, None):
            ctx.tally.count_read(SIZE_DIFFERS)
            if declared != size:
                ctx.tally.repair(SIZE_DIFFERS, f"{record}: JSON says {declared}, image is {size}")
                if all(isinstance(v, int | float) and v > 0 for v in declared):
                    ctx.tally.boxes.size_differs(declared, size)

        objects = [obj for obj, crowd in anns if not crowd]
        crowd = [obj for obj, crowd in anns if crowd]
        if crowd:
            ctx.tally.repair("crowd region excluded", record, n=len(crowd))
            crowd = clip_objects(crowd, size, None, record=record)  # evaluation only: not counted
        objects = clip_objects(objects, size, ctx.tally, record=record, written="xywh")
        if anns and not objects:
            ctx.tally.repair("image without usable boxes excluded", record)
            continue

        yield ctx.example(
            str(image_id), path, size, task=DETECTION, objects=objects, categories=vocabulary, crowd=crowd
        )


def _area(value: Any) -> float | None:
    """The annotation's area where it is a positive finite number, else None (see the module doc)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None
