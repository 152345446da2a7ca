"""Visual Genome region descriptions as distributed (release 1.2) -> dense_region_caption or
region_to_description Examples (the registered source "visual_genome").

The layout, as the release's zips unpack:

    region_descriptions.json   a list, one entry per image: {"id": <image id>, "regions": [
                               {"region_id", "image_id", "phrase", "x", "y", "width", "height"},
                               ...]} (x, y, width, height: the region's box in pixels)
    image_data.json            a list of {"image_id", "width", "height", "url", "coco_id",
                               "flickr_id"} ("id" for "image_id" in release 1.0)
    VG_100K/  VG_100K_2/       the images (images.zip, images2.zip), named as the url's last part

`images` is the folder holding VG_100K/ and VG_100K_2/, or a flat folder of all the images: an
image is looked for in the url's folder (VG_100K or VG_100K_2) under `images`, then directly in
`images`. `image_ids` optionally picks the images of a split: a JSON file holding a list of image
ids, or an object of such lists by split name, as DenseCap's `densecap_splits.json` ({"train",
"val", "test"}); `id_split` names the list (default: the recipe's split). Without it every image
is read (VG has no official split).

Tasks (`task`):
- "dense_region_caption" (the default): one Example per image, id str(image id), in the order
  of image_data.json: objects = its regions (box, and the phrase as the category: the
  description), in the file's order.
- "region_to_description": one Example per region, id "<image id>/<region id>": region = its box,
  caption = its phrase, captions = [phrase].

Near-duplicates: VG's workers described the same thing many times (the same box and words, or
overlapping boxes with other words). By default every region is kept, as VG and DenseCap's
training data have them. `drop_duplicates: true` drops a region whose box and phrase
(case-folded, spaces collapsed) repeat an earlier region of the same image, counted "duplicate
region dropped" (a choice: never judged systematic); overlapping boxes with other words are kept.

Phrases are stripped. Repaired and counted: "box clipped", "zero-area box dropped" (boxes are
clipped to the real image), "image size differs from annotation" (the real image wins, as in
coco_detection), and for dense_region_caption "empty description dropped" (a blank phrase; when
most of a split's phrases are blank the build fails, sources/repairs.py) and "image without
usable regions excluded" (no region left, or none at all). Skipped and counted: unusable image
files (images.check_image, once per Example they would have given), and for
region_to_description "empty description" (a blank phrase) and "no usable box" (no area left
inside the image).

Errors (DataError naming file, record and field): JSON that does not parse or nests deeper than
64 levels, a top level that is not a list, missing keys, a box that is not four numbers or has a
negative width or height, a phrase that is not a string, a region whose image_id is not its
entry's, an entry or a split id naming an image image_data.json lacks, duplicate image or
region ids, a url whose file name leaves `images`, an unknown task, a split missing from
`image_ids`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    check_declared_size,
    check_image,
    clip_objects,
    clip_region,
    json_list_items,
    parse_box,
    prefetch_checks,
    read_json,
    require,
    require_id,
)
from pipeline.sources.repairs import EMPTY_DESCRIPTION

logger = logging.getLogger(__name__)

VG_TASKS = (tasks.DENSE_REGION_CAPTION, tasks.REGION_TO_DESCRIPTION)
IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")  # what images.zip and images2.zip unpack to


@dataclass(frozen=True)
class _Image:
    path: str  # absolute, confined to the images folder
    declared: tuple[Any, Any]  # width, height as image_data.json says


@register("visual_genome")
def read_visual_genome(
    ctx: SourceContext,
    *,
    region_descriptions: Path,
    image_data: Path,
    images: Path,
    task: str = tasks.DENSE_REGION_CAPTION,
    image_ids: Path | None = None,
    id_split: str | None = None,
    drop_duplicates: bool = False,
) -> Iterator[Example]:
    """Yield dense_region_caption Examples (one per image) or region_to_description Examples (one
    per region) of Visual Genome's region descriptions; see the module docstring."""
    rfile = Path(region_descriptions)
    if task not in VG_TASKS:
        raise DataError(
            f"unknown task {task!r}; visual_genome reads: {', '.join(VG_TASKS)}", file=rfile, field="task"
        )
    infos = _image_data(Path(image_data), Path(images), ctx)
    wanted = None if image_ids is None else _split_ids(Path(image_ids), id_split or ctx.split, infos)
    order = [i for i in infos if wanted is None or i in wanted]
    prefetch_checks([infos[i].path for i in order], ctx)

    regions_by_image: dict[Any, list[dict[str, Any]]] = {}
    for index, entry in enumerate(_entries(rfile)):
        image_id = require_id(entry, "id", file=rfile, record=f"entry {index}", what="an entry")
        record = f"image {image_id}"
        if image_id not in infos:
            raise DataError(
                f"image {image_id!r} is not in {Path(image_data).name}", file=rfile, record=record, field="id"
            )
        if image_id in regions_by_image:
            raise DataError("duplicate image id", file=rfile, record=record, field="id")
        regions = require(entry, "regions", file=rfile, record=record, what="an entry")
        if not isinstance(regions, list):
            raise DataError(
                f"'regions' must be a list, got {type(regions).__name__}",
                file=rfile,
                record=record,
                field="regions",
            )
        if wanted is None or image_id in wanted:
            regions_by_image[image_id] = regions

    seen_regions: set[Any] = set()
    for image_id in order:
        parsed = _regions(regions_by_image.get(image_id, []), image_id, rfile, seen_regions)
        image = infos[image_id]
        if task == tasks.DENSE_REGION_CAPTION:
            yield from _dense(ctx, image_id, image, parsed, drop_duplicates)
        else:
            yield from _per_region(ctx, image_id, image, parsed, drop_duplicates)


def _entries(file: Path) -> Iterator[Any]:
    """The entries of a top-level JSON list, streamed (region_descriptions.json is ~700 MB); a
    file that does not parse, or whose top level is no list, is read whole for the error."""
    import ijson

    n = 0
    try:
        for n, entry in enumerate(json_list_items(file, None), start=1):  # noqa: B007
            yield entry
    except (ijson.JSONError, OSError):
        read_json(file)  # raises the error naming line and column
        raise DataError("cannot be read as a JSON list", file=file) from None
    if n == 0 and not isinstance(read_json(file), list):
        raise DataError("the top level must be a list of entries, one per image", file=file)


def _image_data(file: Path, images: Path, ctx: SourceContext) -> dict[Any, _Image]:
    """image_data.json by image id, in its order: each image's path (confined) and declared size."""
    data = read_json(file)
    if not isinstance(data, list):
        raise DataError("the top level must be a list of images", file=file)
    infos: dict[Any, _Image] = {}
    for index, info in enumerate(data):
        key = "image_id" if isinstance(info, dict) and "image_id" in info else "id"  # 1.0 wrote "id"
        image_id = require_id(info, key, file=file, record=f"image #{index}", what="an image")
        record = f"image {image_id}"
        if image_id in infos:
            raise DataError("duplicate image id", file=file, record=record, field=key)
        url = require(info, "url", file=file, record=record, what="an image")
        if not isinstance(url, str) or not url.strip():
            raise DataError(
                f"url must be a non-empty string, got {url!r}", file=file, record=record, field="url"
            )
        parts = url.strip().split("/")  # the file is the url's last part, in its folder's
        folder, name = (parts[-2] if len(parts) > 1 else ""), parts[-1]
        rel = name
        if folder in IMAGE_FOLDERS and (images / folder).is_dir():  # VG's own split of the images
            rel = f"{folder}/{name}"
        path = ctx.paths.confine(images, rel, file=file, record=record, field="url")
        infos[image_id] = _Image(path, (info.get("width"), info.get("height")))
    return infos


def _split_ids(file: Path, split: str, infos: dict[Any, _Image]) -> set[Any]:
    """The image ids of `split` in a split file: a list of ids, or lists by split name."""
    data = read_json(file)
    if isinstance(data, dict):
        if split not in data:
            raise DataError(f"no split {split!r}; the file has {sorted(data)}", file=file, field="id_split")
        ids, record = data[split], f"split {split}"
    else:
        ids, record = data, None
    if not isinstance(ids, list) or not all(
        isinstance(i, int | str) and not isinstance(i, bool) for i in ids
    ):
        raise DataError("expected a list of image ids", file=file, record=record)
    missing = [i for i in ids if i not in infos]
    if missing:
        raise DataError(
            f"{len(missing)} image id(s) not in image_data.json, e.g. {missing[:3]}", file=file, record=record
        )
    return set(ids)


def _regions(regions: list[Any], image_id: Any, file: Path, seen: set[Any]) -> list[tuple[Any, str, Object]]:
    """(region id, phrase stripped, Object(xyxy box, phrase)) of an image's regions, validated."""
    out = []
    for index, region in enumerate(regions):
        rid = require_id(
            region, "region_id", file=file, record=f"image {image_id} region #{index}", what="a region"
        )
        record = f"region {rid}"
        if rid in seen:
            raise DataError("duplicate region id", file=file, record=record, field="region_id")
        seen.add(rid)
        if region.get("image_id", image_id) != image_id:
            raise DataError(
                f"image_id {region['image_id']!r} differs from its entry's id {image_id!r}",
                file=file,
                record=record,
                field="image_id",
            )
        phrase = require(region, "phrase", file=file, record=record, what="a region")
        if not isinstance(phrase, str):
            raise DataError(
                f"phrase must be a string, got {phrase!r}", file=file, record=record, field="phrase"
            )
        xywh = [
            require(region, k, file=file, record=record, what="a region")
            for k in ("x", "y", "width", "height")
        ]
        box = parse_box(xywh, fmt="xywh", file=file, record=record, field="x, y, width, height")
        out.append((rid, phrase.strip(), Object(box, phrase.strip())))
    return out


def _duplicate_key(obj: Object) -> tuple[Any, ...]:
    return (*obj.bbox, re.sub(r"\s+", " ", obj.category).casefold())


def _dense(
    ctx: SourceContext,
    image_id: Any,
    image: _Image,
    regions: list[tuple[Any, str, Object]],
    drop_duplicates: bool,
) -> Iterator[Example]:
    record = f"image {image_id}"
    size = check_image(image.path, ctx, record=record)
    if size is None:
        return
    check_declared_size(ctx, image.declared, size, record, "image_data.json")
    ctx.tally.count_read(EMPTY_DESCRIPTION, len(regions))
    objects, seen = [], set()
    for rid, phrase, obj in regions:
        if not phrase:
            ctx.tally.repair(EMPTY_DESCRIPTION, f"region {rid}")
            continue
        if drop_duplicates:
            key = _duplicate_key(obj)
            if key in seen:
                ctx.tally.repair("duplicate region dropped", f"region {rid}")
                continue
            seen.add(key)
        objects.append(obj)
    objects = clip_objects(objects, size, ctx.tally, record=record, written="xywh")
    if not objects:
        ctx.tally.repair("image without usable regions excluded", record)
        return
    yield ctx.example(str(image_id), image.path, size, task=tasks.DENSE_REGION_CAPTION, objects=objects)


def _per_region(
    ctx: SourceContext,
    image_id: Any,
    image: _Image,
    regions: list[tuple[Any, str, Object]],
    drop_duplicates: bool,
) -> Iterator[Example]:
    checked, seen = False, set()
    for rid, phrase, obj in regions:
        record = f"region {rid}"
        if not phrase:
            ctx.tally.skip("empty description", record)
            continue
        if drop_duplicates:
            key = _duplicate_key(obj)
            if key in seen:
                ctx.tally.repair("duplicate region dropped", record)
                continue
            seen.add(key)
        size = check_image(image.path, ctx, record=record)
        if size is None:
            continue
        if not checked:
            check_declared_size(ctx, image.declared, size, f"image {image_id}", "image_data.json")
            checked = True
        region = clip_region(obj.bbox, size, ctx.tally, record=record, written="xywh")
        if region is None:
            ctx.tally.skip("no usable box", f"{record}: {list(obj.bbox)} in {size[0]}x{size[1]}")
            continue
        yield ctx.example(
            f"{image_id}/{rid}",
            image.path,
            size,
            task=tasks.REGION_TO_DESCRIPTION,
            region=region,
            caption=phrase,
            captions=[phrase],
        )
