"""RefCOCO, RefCOCO+ and RefCOCOg as distributed (lichengunc/refer) -> grounding or
segmentation Examples (the registered source "refcoco"), by way of `Ref`s.

The layout: one folder per dataset, e.g.

    refcoco/   instances.json   refs(unc).p  refs(google).p
    refcoco+/  instances.json   refs(unc).p
    refcocog/  instances.json   refs(umd).p  refs(google).p

`instances.json` is a COCO instances file restricted to the images the refs use (`images` with
`file_name`, `width`, `height`; `annotations` with an xywh `bbox` and a `segmentation`;
`categories`). `refs(<split_by>).p` is a pickle (protocol 2, written by Python 2) of a list of
dicts: `ref_id`, `ann_id`, `image_id`, `split` ("train", "val", "testA", "testB", "test"),
`category_id`, `sentences` (each with `sent`, the cleaned text, and `raw`, as typed, plus
`tokens` and `sent_id`), `sent_ids`, and a `file_name` that is NOT an image file (it is the
COCO name with the ann_id appended): the image is the one `instances.json` names for `image_id`,
found under `images` (COCO's train2014 folder). Some conversions ship the same list as JSON
(`refs(unc).json`); `load_refs` reads either, telling them apart by content, not by name.

What is read: one `Ref` per referring expression set (one annotated object): its phrases (each
sentence's `sent`, else `raw`, stripped), the object's box as absolute xyxy, its segmentation
polygons (or its RLE mask, kept apart), its category name, and the image's path and declared
size. Images are not opened here: the step that builds Examples checks them and clips boxes.

How the pickle is made safe: it is read by an `Unpickler` whose `find_class` refuses every
global and whose `persistent_load` refuses every persistent id. Those are the only ways a pickle
reaches a callable (REDUCE, NEWOBJ, INST, OBJ and the extension registry all go through
`find_class`), so nothing in the file can run code: what comes back is only lists, dicts,
tuples, sets, strings, bytes, numbers, booleans and None. Python 2 `str` values (and keys) are
decoded as UTF-8 when every one of them is valid UTF-8 (ASCII is), else the file is read again
with all of them decoded as latin1, which never fails; Python 2 `unicode` values need neither.

Repaired and counted in the tally (the ref is kept): "empty phrase dropped" (a sentence whose
text is blank), "degenerate polygon dropped" (fewer than three points).
Skipped and counted: "ref without phrases" (every sentence blank, or none at all).

Refused with a DataError naming file, record and field: a pickle that names any global (a class
instance, a `posix.system` or `builtins.eval` payload) or a persistent id, a file that is neither
a pickle nor JSON, refs that nest deeper than 64 levels (sources/nesting.py), refs that are not a
list of dicts with `ref_id`, `ann_id`, `image_id`, `split` and `sentences` (a list of dicts with a
`sent` or `raw` string), duplicate ref ids, a `splits` filter naming a split no ref has, an
`ann_id` missing from the annotations, an `image_id` that differs from the annotation's or is
missing from the images, a `category_id` that differs from the annotation's, a box with negative
extent, malformed segmentations or image sizes, and a `file_name` outside `images` (absolute,
`..`, or a symlink out).

The source ("refcoco", `read_refcoco_source`) yields one Example per phrase, as RefCOCO's
evaluation counts samples: id "<ref_id>/<i>" (i: the phrase's place among the ref's kept
phrases), `split` the recipe's split; `ref_splits` (default: the recipe's split name) picks the
refs. Task "grounding": `phrase` and `objects` = [the object's box, named by its category].
Task "segmentation": `phrase`, `polygons` and the box in `objects`. Each image is checked once
(images.check_image, the verdict counted per Example); the box is clipped to the real image.
Counted per Example not yielded (so skips compare with Examples), besides what `read_refcoco`
counts: unusable image files (images.check_image), "no usable box" (the box has no area left
inside the image; "zero-area box dropped" is counted with it), and for segmentation "RLE mask
(segmentation needs polygons)" and "ref without polygons" (every polygon degenerate).
Repaired: "box clipped", "image size differs from annotation" (the real image wins, as in
coco_detection; boxes are clipped, polygons are kept as annotated). As in coco_detection, these,
blank phrases and degenerate polygons fail the build when they hit more than
`data.max_repair_fraction` of a split's items (and at least 3), naming the likely cause
(sources/repairs.py).
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import Box, Example, Object, Tally
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    COCO_SEGMENTATION,
    check_image,
    clip_objects,
    coco_categories,
    coco_images,
    coco_segmentation,
    id_sort_key,
    parse_box,
    parse_json,
    prefetch_checks,
    read_data_file,
    read_json,
    require,
    require_id,
    require_list,
)
from pipeline.sources.nesting import check_value
from pipeline.sources.paths import Paths
from pipeline.sources.repairs import EMPTY_PHRASE, SIZE_DIFFERS
from pipeline.tasks import GROUNDING, SEGMENTATION

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


@dataclass(frozen=True)
class Ref:
    """One referred object with every phrase that refers to it (boxes in absolute pixels)."""

    ref_id: int | str
    split: str
    image_path: str  # absolute, confined to the images folder
    image_id: int | str
    width: int  # as instances.json declares: the real image is checked later
    height: int
    phrases: list[str]  # stripped, non-empty, in the file's order
    bbox: Box  # x1, y1, x2, y2
    polygons: list[list[float]]  # flat [x1, y1, x2, y2, ...] each; [] when the mask is RLE
    category: str
    rle: dict[str, Any] | None = None  # the annotation's RLE segmentation ({"counts", "size"})


# ---------------------------------------------------------------------------- refs file


class _PlainUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars: every global and persistent id is refused."""

    def __init__(self, data: bytes, *, file: Path, encoding: str) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False, encoding=encoding, errors="strict")
        self._file = file

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(
            f"refs pickle references {module}.{name}; only plain lists, dicts, strings and numbers are read",
            file=self._file,
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"refs pickle holds a persistent id {str(pid)[:80]!r}; only plain lists, dicts, strings and "
            "numbers are read",
            file=self._file,
        )


def _unpickle(data: bytes, file: Path) -> Any:
    for encoding in ("utf-8", "latin1"):  # latin1 maps every byte: the second pass cannot fail on text
        try:
            return _PlainUnpickler(data, file=file, encoding=encoding).load()
        except DataError:
            raise
        except UnicodeDecodeError:
            logger.info("%s: Python 2 strings are not all UTF-8; decoding them as latin1", file)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as e:
            # what a truncated or corrupt pickle raises (a bad memo key, a short read, an unhashable key)
            raise DataError(f"not a readable pickle: {type(e).__name__}: {e}", file=file) from None
    raise AssertionError("unreachable: latin1 decodes every byte")


def load_refs(path: Path | str) -> list[dict[str, Any]]:
    """The refs list of a `refs(<split_by>).p` pickle or its JSON conversion, validated.

    Each ref is a dict with at least `ref_id`, `ann_id`, `image_id` (integers or strings), `split`
    (a non-empty string) and `sentences` (a list of dicts, each with a `sent` or `raw` string);
    ref ids are unique. Anything else is a DataError naming the file, the ref and the field.
    """
    file = Path(path)
    data = read_data_file(file)
    # a JSON list starts with "[" (an object with "{"); a pickle never does: protocol 0 opens with
    # an opcode such as "(", protocol 1 with "]" and protocols 2+ with b"\x80"
    if data.lstrip()[:1] in (b"[", b"{"):
        refs = parse_json(data, file=file)  # counted before it is parsed
    else:
        refs = _unpickle(data, file)  # C, without recursion: as deep as the file says
        check_value(refs, file=file)  # before any repr of it in an error message
    if not isinstance(refs, list):
        raise DataError(f"refs must be a list of dicts, got {type(refs).__name__}", file=file)

    seen: set[Any] = set()
    for index, ref in enumerate(refs):
        ref_id = _check_ref(ref, index, file)
        if ref_id in seen:
            raise DataError("duplicate ref_id", file=file, record=f"ref {ref_id}", field="ref_id")
        seen.add(ref_id)
    return refs


def _check_ref(ref: Any, index: int, file: Path) -> int | str:
    if not isinstance(ref, dict):
        raise DataError(f"a ref must be a dict, got {type(ref).__name__}", file=file, record=f"ref #{index}")
    ref_id = require_id(ref, "ref_id", file=file, record=f"ref #{index}", what="a ref")
    record = f"ref {ref_id}"
    for key in REQUIRED_KEYS[1:3]:
        require_id(ref, key, file=file, record=record, what="a ref")
    if "category_id" in ref:
        require_id(ref, "category_id", file=file, record=record, what="a ref")
    split = require(ref, "split", file=file, record=record, what="a ref")
    if not isinstance(split, str) or not split:
        raise DataError(
            f"split must be a non-empty string, got {split!r}", file=file, record=record, field="split"
        )
    sentences = require_list(ref, "sentences", file=file, record=record, what="a ref")
    for i, sentence in enumerate(sentences):
        where = f"sentences[{i}]"
        if not isinstance(sentence, dict):
            raise DataError(
                f"a sentence must be a dict, got {type(sentence).__name__}",
                file=file,
                record=record,
                field=where,
            )
        texts = [key for key in ("sent", "raw") if key in sentence]
        if not texts:
            raise DataError(
                "a sentence needs a 'sent' or 'raw' string", file=file, record=record, field=where
            )
        for key in texts:
            if not isinstance(sentence[key], str):
                raise DataError(
                    f"{key} must be a string, got {str(sentence[key])[:80]!r}",
                    file=file,
                    record=record,
                    field=f"{where}.{key}",
                )
    return ref_id


# ---------------------------------------------------------------------------- join with instances


def read_refcoco(
    refs: Path | str,
    instances: Path | str,
    images: Path | str,
    *,
    splits: Iterable[str] | None = None,
    paths: Paths | None = None,
    tally: Tally | None = None,
) -> list[Ref]:
    """One `Ref` per ref of `refs` (in `splits` when given), joined with `instances`, by ref_id.

    `images` is the folder the instances' `file_name`s are relative to (COCO train2014); `paths`
    is the build's shared `Paths` (one is made when not given); `tally` counts what is dropped
    or repaired (see the module docstring). Images are not opened.
    """
    refs_file, inst_file = Path(refs), Path(instances)
    tally = tally if tally is not None else Tally()
    paths = paths if paths is not None else Paths()
    items = load_refs(refs_file)
    if splits is not None:
        items = _in_splits(items, splits, refs_file)

    data = read_json(inst_file)
    inst = _Instances(
        inst_file,
        coco_categories(data, inst_file),
        coco_images(data, inst_file),
        _annotations(data, inst_file),
    )
    del data

    images_seen: dict[Any, tuple[str, int, int]] = {}  # image_id -> (path, width, height)
    out: list[Ref] = []
    for ref in sorted(items, key=lambda r: id_sort_key(r["ref_id"])):
        ref_id, image_id = ref["ref_id"], ref["image_id"]
        record = f"ref {ref_id}"
        phrases = _phrases(ref["sentences"], tally, record=record)
        if not phrases:
            tally.skip("ref without phrases", record)
            continue

        ann, category_id = _ref_annotation(ref, record, inst, refs_file)
        ann_record = f"annotation {ref['ann_id']}"
        raw_box = require(ann, "bbox", file=inst_file, record=ann_record, what="an annotation")
        bbox = parse_box(raw_box, fmt="xywh", file=inst_file, record=ann_record, field="bbox")
        seg = ann.get(COCO_SEGMENTATION)
        polygons, rle = coco_segmentation(seg, tally, file=inst_file, record=ann_record)

        image = images_seen.get(image_id)
        if image is None:
            image = images_seen[image_id] = _image(inst.images[image_id], image_id, images, paths, inst_file)
        path, width, height = image
        out.append(
            Ref(
                ref_id=ref_id,
                split=ref["split"],
                image_path=path,
                image_id=image_id,
                width=width,
                height=height,
                phrases=phrases,
                bbox=bbox,
                polygons=polygons,
                category=inst.categories[category_id],
                rle=rle,
            )
        )
    logger.info("%s: %d refs read (%d images)", refs_file, len(out), len(images_seen))
    return out


@dataclass(frozen=True)
class _Instances:
    """What the refs are joined with, from `instances.json`."""

    file: Path
    categories: dict[Any, str]  # category id -> name
    images: dict[Any, dict[str, Any]]  # image id -> its entry
    annotations: dict[Any, dict[str, Any]]  # annotation id -> annotation


def _in_splits(items: list[dict[str, Any]], splits: Iterable[str], file: Path) -> list[dict[str, Any]]:
    """The refs of `splits` (one name, or several); a split no ref has is a DataError."""
    wanted = {splits} if isinstance(splits, str) else set(splits)
    present = {ref["split"] for ref in items}
    if missing := sorted(wanted - present):
        raise DataError(
            f"no ref has split {', '.join(missing)}; splits in the file: {', '.join(sorted(present))}",
            file=file,
            field="split",
        )
    return [ref for ref in items if ref["split"] in wanted]


def _ref_annotation(
    ref: dict[str, Any], record: str, inst: _Instances, refs_file: Path
) -> tuple[dict[str, Any], Any]:
    """(annotation, category id) of a ref, after checking that the ref and its annotation agree on
    the image and the category, and that both are in the instances."""
    ann_id, image_id = ref["ann_id"], ref["image_id"]
    ann = inst.annotations.get(ann_id)
    if ann is None:
        raise DataError(
            f"ann_id {ann_id!r} is not in the annotations of {inst.file}",
            file=refs_file,
            record=record,
            field="ann_id",
        )
    ann_record = f"annotation {ann_id}"
    ann_image = require_id(ann, "image_id", file=inst.file, record=ann_record, what="an annotation")
    if ann_image != image_id:
        raise DataError(
            f"image_id {image_id!r} differs from annotation {ann_id}'s image_id {ann_image!r}",
            file=refs_file,
            record=record,
            field="image_id",
        )
    if image_id not in inst.images:
        raise DataError(
            f"image_id {image_id!r} is not in the images of {inst.file}",
            file=refs_file,
            record=record,
            field="image_id",
        )
    category_id = require_id(ann, "category_id", file=inst.file, record=ann_record, what="an annotation")
    if category_id not in inst.categories:
        raise DataError(
            f"category_id {category_id!r} is not in 'categories'",
            file=inst.file,
            record=ann_record,
            field="category_id",
        )
    if "category_id" in ref and ref["category_id"] != category_id:
        raise DataError(
            f"category_id {ref['category_id']!r} differs from annotation {ann_id}'s {category_id!r}",
            file=refs_file,
            record=record,
            field="category_id",
        )
    return ann, category_id


def _annotations(data: Any, file: Path) -> dict[Any, dict[str, Any]]:
    """annotation id -> annotation; ids must be unique. Only the ones refs use are checked further."""
    by_id: dict[Any, dict[str, Any]] = {}
    for index, ann in enumerate(require_list(data, "annotations", file=file)):
        ann_id = require_id(ann, "id", file=file, record=f"annotation #{index}", what="an annotation")
        if ann_id in by_id:
            raise DataError("duplicate annotation id", file=file, record=f"annotation {ann_id}", field="id")
        by_id[ann_id] = ann
    return by_id


def _phrases(sentences: list[dict[str, Any]], tally: Tally, *, record: str) -> list[str]:
    tally.count_read(EMPTY_PHRASE, len(sentences))
    phrases = []
    for i, sentence in enumerate(sentences):
        # `sent` is refer's cleaned text; `raw` (as typed) stands in when it is missing or blank
        text = next((t for key in ("sent", "raw") if (t := sentence.get(key, "").strip())), "")
        if text:
            phrases.append(text)
        else:
            tally.repair(EMPTY_PHRASE, f"{record}: sentence {i}")
    return phrases


def _image(
    info: dict[str, Any], image_id: Any, images: Path | str, paths: Paths, file: Path
) -> tuple[str, int, int]:
    record = f"image {image_id}"
    size = []
    for key in ("width", "height"):
        value = require(info, key, file=file, record=record, what="an image")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(
                f"{key} must be a positive integer, got {value!r}", file=file, record=record, field=key
            )
        size.append(value)
    path = paths.confine(images, info["file_name"], file=file, record=record, field="file_name")
    return path, size[0], size[1]


# ---------------------------------------------------------------------------- the registered source

REFCOCO_TASKS = (GROUNDING, SEGMENTATION)


@register("refcoco")
def read_refcoco_source(
    ctx: SourceContext,
    *,
    refs: Path,
    instances: Path,
    images: Path,
    task: str = GROUNDING,
    ref_splits: str | list[str] | None = None,
) -> Iterator[Example]:
    """Yield one grounding or segmentation Example per phrase of each ref in `ref_splits`."""
    if task not in REFCOCO_TASKS:
        raise DataError(
            f"unknown task {task!r}; refcoco reads: {', '.join(REFCOCO_TASKS)}", file=refs, field="task"
        )
    # the task table says which task's Examples carry the ref's polygons (segmentation's target)
    polygons = "polygons" in tasks.get(task).FIELDS
    splits = _ref_splits(ref_splits, ctx.split, file=refs)
    items = read_refcoco(refs, instances, images, splits=splits, paths=ctx.paths, tally=ctx.tally)
    if polygons:
        items = [ref for ref in items if _has_polygons(ref, ctx.tally)]
    prefetch_checks([ref.image_path for ref in items], ctx)
    for ref in items:
        for i, phrase in enumerate(ref.phrases):
            example = _example(ctx, ref, i, phrase, task, polygons=polygons)
            if example is not None:
                yield example


def _ref_splits(value: Any, default: str, *, file: Path) -> list[str]:
    """`ref_splits` as a list: None means the recipe's split name; a string is one split."""
    if value is None:
        return [default]
    splits = [value] if isinstance(value, str) else value
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) and s for s in splits):
        raise DataError(
            f"ref_splits must be a split name or a non-empty list of them, got {value!r}",
            file=file,
            field="ref_splits",
        )
    return splits


def _has_polygons(ref: Ref, tally: Tally) -> bool:
    """Whether a ref can be a segmentation target; if not, one skip per phrase it would have given."""
    if ref.polygons:
        return True
    reason = "RLE mask (segmentation needs polygons)" if ref.rle is not None else "ref without polygons"
    for i in range(len(ref.phrases)):
        tally.skip(reason, f"ref {ref.ref_id} phrase {i}")
    return False


def _example(
    ctx: SourceContext, ref: Ref, i: int, phrase: str, task: str, *, polygons: bool
) -> Example | None:
    """The Example of one phrase, or None after counting why not (see the module docstring)."""
    record = f"ref {ref.ref_id} phrase {i}"
    size = check_image(ref.image_path, ctx, record=record)
    if size is None:
        return None
    ctx.tally.count_read(SIZE_DIFFERS)
    if size != (ref.width, ref.height):
        ctx.tally.repair(SIZE_DIFFERS, f"{record}: instances say {(ref.width, ref.height)}, image is {size}")
        ctx.tally.boxes.size_differs((ref.width, ref.height), size)
    objects = clip_objects([Object(ref.bbox, ref.category)], size, ctx.tally, record=record, written="xywh")
    if not objects:
        ctx.tally.skip("no usable box", f"{record}: {list(ref.bbox)} in {size[0]}x{size[1]}")
        return None
    fields: dict[str, Any] = {"phrase": phrase, "objects": objects}
    if polygons:
        fields["polygons"] = ref.polygons  # shared by the ref's Examples, as a vocabulary is: not mutated
    return ctx.example(f"{ref.ref_id}/{i}", ref.image_path, size, task=task, **fields)
