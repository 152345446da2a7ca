"""COCO captions JSON (`captions_train2017.json`) -> caption Examples.

One Example per image (id = str(image id), in the order of the JSON's `images` list) with
`captions` = every reference caption in annotation-id order and `caption` = the first of them.
The builder expands an Example into one training record per caption; evaluation scores against
all of them. Captions are stripped of surrounding whitespace (COCO's carry stray newlines).
`language` (optional, e.g. "ja" for STAIR Captions in COCO's format) is set on every Example;
None: English. It must be a code (see vqav2.language_code), else a DataError.

Skipped and counted: "image without captions", and unusable image files (images.check_image).
Repaired and counted: "empty caption dropped" (a caption that is blank after stripping); when it
hits more than `data.max_repair_fraction` of a split's captions (and at least 3), the build fails:
the text is likely in another field (sources/repairs.py).
Errors (DataError naming file, record and field): JSON that does not parse or nests deeper than
64 levels (sources/nesting.py), missing required
keys, duplicate image ids, a caption that is not a string, an annotation pointing at an image
that is not in `images`, a file_name outside `images`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    COCO_CAPTION,
    check_image,
    coco_images,
    id_sort_key,
    language_code,
    prefetch_checks,
    read_json,
    require,
    require_id,
    require_list,
)
from pipeline.sources.repairs import EMPTY_CAPTION
from pipeline.tasks import CAPTION


@register("coco_captions")
def read_coco_captions(
    ctx: SourceContext, *, annotations: Path, images: Path, language: str | None = None
) -> Iterator[Example]:
    """Yield one caption Example per image, with every reference caption kept for scoring."""
    file = Path(annotations)
    language = language_code(language, file=file)
    data = read_json(file)
    image_infos = coco_images(data, file)

    by_image: dict[Any, list[tuple[Any, str]]] = {}
    for index, ann in enumerate(require_list(data, "annotations", file=file)):
        ann_id = ann.get("id", index) if isinstance(ann, dict) else index
        record = f"annotation {ann_id}"
        image_id = require_id(ann, "image_id", file=file, record=record, what="an annotation")
        caption = require(ann, COCO_CAPTION, file=file, record=record, what="an annotation")
        if image_id not in image_infos:
            raise DataError(
                f"image_id {image_id!r} is not in 'images'", file=file, record=record, field="image_id"
            )
        if not isinstance(caption, str):
            raise DataError(
                f"caption must be a string, got {type(caption).__name__}",
                file=file,
                record=record,
                field=COCO_CAPTION,
            )
        caption = caption.strip()
        ctx.tally.count_read(EMPTY_CAPTION)
        if not caption:
            ctx.tally.repair(EMPTY_CAPTION, record)
            continue
        by_image.setdefault(image_id, []).append((ann_id, caption))
    del data

    paths = {
        i: ctx.paths.confine(images, info["file_name"], file=file, record=f"image {i}", field="file_name")
        for i, info in image_infos.items()
        if by_image.get(i)
    }
    prefetch_checks(paths.values(), ctx)
    for image_id in image_infos:
        record = f"image {image_id}"
        refs = by_image.get(image_id)
        if not refs:
            ctx.tally.skip("image without captions", record)
            continue
        path = paths[image_id]
        size = check_image(path, ctx, record=record)
        if size is None:
            continue
        captions = [c for _, c in sorted(refs, key=lambda r: id_sort_key(r[0]))]
        yield ctx.example(
            str(image_id),
            path,
            size,
            task=CAPTION,
            caption=captions[0],
            captions=captions,
            language=language,
        )
