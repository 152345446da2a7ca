"""Helpers every source reader shares: checking and loading images, clipping boxes, parsing the
fields several formats hold (boxes, polygons, regions, language codes), and reading JSON with
errors that name the place. Confining image paths to a dataset is paths.py's.

`check_image` is the one gate an image passes before it becomes an Example: it returns the size
*after* EXIF orientation (the frame boxes live in), or None after counting why the image was
skipped. It never converts pixels; `load_image` does that when the collator needs them, and the
check counts the conversions that will happen there as repairs, so the build stats show them.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.errors import DataError
from pipeline.records import Box, ImageSize, Object, Region, Tally
from pipeline.sources.context import SourceContext
from pipeline.sources.nesting import DepthCheckedFile, check_json
from pipeline.sources.repairs import BOX_CLIPPED, BOX_DROPPED, DEGENERATE_POLYGON, EMPTY_REGION, SIZE_DIFFERS

try:  # orjson parses the 450 MB COCO train JSON several times faster; json is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # 90/270 degree rotations: width and height trade places

# ---------------------------------------------------------------------------- image checks


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one image file, independent of which record asked (so it can be cached)."""

    size: ImageSize | None  # (w, h) after EXIF orientation; None when the image is unusable
    skip: tuple[str, str] | None = None  # (reason, detail) when size is None
    repairs: tuple[tuple[str, str], ...] = ()  # (reason, detail) for fixes load_image will make

    def apply(self, tally: Tally, record: str) -> ImageSize | None:
        """Count this verdict for one record: one skip, or the repairs, then return the size."""
        if self.skip is not None:
            tally.skip(self.skip[0], f"{record}: {self.skip[1]}")
            return None
        for reason, detail in self.repairs:
            tally.repair(reason, f"{record}: {detail}")
        return self.size


@contextmanager
def _strict_truncation() -> Iterator[None]:
    # a truncated file must fail the full check even if some other code relaxed PIL's global
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8), 1 when absent or malformed.

    PIL decodes a PNG to answer this unless its eXIf chunk came before the pixels, so the "header"
    check is not header-only for PNGs: that is the price of sizes that always match load_image.
    """
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF blocks are common in the wild; treat as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def inspect_image(path: Path, *, check: str = "full", max_pixels: int | None = None) -> ImageCheck:
    """Open `path` and judge it; see `check_image`. Does not touch any tally."""
    path = Path(path)
    try:
        exists = path.is_file()
    except OSError as e:  # e.g. a name longer than the file system allows: no such file can exist
        return ImageCheck(None, ("missing image", f"{str(path)[:200]}: {e.strerror}"))
    if not exists:
        return ImageCheck(None, ("missing image", str(path)))
    try:
        with warnings.catch_warnings():
            # we apply our own limit (max_pixels) below; PIL's warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    return ImageCheck(
                        None, ("decompression bomb", f"{path}: {w}x{h} exceeds {max_pixels} pixels")
                    )
                mode = img.mode
                if check == "full":  # decode before reading EXIF: PNG keeps it after the pixels
                    with _strict_truncation():
                        try:
                            img.load()
                        except (OSError, SyntaxError, ValueError) as e:
                            reason = (
                                "truncated image" if "truncated" in str(e).lower() else "unreadable image"
                            )
                            return ImageCheck(None, (reason, f"{path}: {e}"))
                orientation = exif_orientation(img)
    except Image.DecompressionBombError as e:  # PIL refuses above twice its own global limit
        return ImageCheck(None, ("decompression bomb", f"{path}: {e}"))
    except UnidentifiedImageError as e:
        return ImageCheck(None, ("unreadable image", f"{path}: {e}"))
    except (OSError, SyntaxError, ValueError) as e:  # broken headers
        reason = "truncated image" if "truncated" in str(e).lower() else "unreadable image"
        return ImageCheck(None, (reason, f"{path}: {e}"))

    repairs: list[tuple[str, str]] = []
    if mode != "RGB":
        repairs.append((f"{mode} converted to RGB", str(path)))
    if orientation != 1:
        repairs.append(("EXIF orientation applied", f"{path}: orientation {orientation}"))
        if orientation in _SWAPPING_ORIENTATIONS:
            w, h = h, w
    return ImageCheck((w, h), None, tuple(repairs))


def check_image(
    path: Path | str, ctx: SourceContext, *, record: str, cache: dict[str, ImageCheck] | None = None
) -> ImageSize | None:
    """Return the image's (w, h) after EXIF orientation, or None after counting a skip.

    Skips: "missing image", "unreadable image", "truncated image" (only caught when
    ctx.check_images == "full", which decodes every pixel once), "decompression bomb"
    (w * h > ctx.max_image_pixels; PIL itself refuses above twice its global limit).
    Repairs (the image is kept): "<mode> converted to RGB" and "EXIF orientation applied".
    Each file is opened once per `cache` (by default `ctx.image_checks`, which the build shares
    between its sources: COCO detection, captions and VQAv2 name the same images); the verdict
    is still counted once per record.
    """
    if cache is None:
        cache = ctx.image_checks
    key = path if type(path) is str else str(path)
    verdict = cache.get(key)
    if verdict is None:
        verdict = inspect_image(Path(key), check=ctx.check_images, max_pixels=ctx.max_image_pixels)
        cache[key] = verdict
    return verdict.apply(ctx.tally, record)


def prefetch_checks(paths: Iterable[str], ctx: SourceContext, *, processes: int | None = None) -> None:
    """Inspect the images of `paths` not yet in `ctx.image_checks` in worker processes, ahead of
        the reader's loop, so that its check_image calls find them. Opening an image is mostly
        Python (PIL's header parsers), so threads would only contend for the GIL; processes check a
        COCO-size set ~1.5x faster on 2 cores. They are fresh interpreters (`python -m
        pipeline.sources.image_worker`), not forks: a fork copies the build's parsed JSON page by page
        as Python touches it, and spawn / forkserver re-run the caller's `__main__` script in every
        worker. Verdicts are the same as one by one, and the tally is still counted by check_image,
        in the reader's order. Below 2,000 new images, or on one core, nothing is done ahead; where a
        worker fails, its images are left to check_image. `processes`: one per core, at most 8.
    Nothing is done ahead when `ctx.prefetch` is False."""
    if not ctx.prefetch:
        return
    todo = [p for p in dict.fromkeys(paths) if p not in ctx.image_checks]
    processes = processes or min(8, len(os.sched_getaffinity(0)))
    if processes < 2 or len(todo) < PREFETCH_MIN_IMAGES:
        return  # check_image does them as they come
    import subprocess
    import sys
    import tempfile

    package_root = str(Path(__file__).resolve().parents[2])  # importable however uvft was installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    size = -(-len(todo) // processes)
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    module = [sys.executable, "-m", "pipeline.sources.image_worker"]
    with tempfile.TemporaryDirectory(prefix="uvft-image-checks-") as tmp:
        workers = []
        for i, chunk in enumerate(chunks):  # files, not pipes: a full pipe would stall a worker
            listing, out, err = (Path(tmp) / f"{i}.{ext}" for ext in ("in", "out", "err"))
            listing.write_text(json.dumps(chunk))
            args = [ctx.check_images, str(ctx.max_image_pixels), str(listing), str(out)]
            with err.open("wb") as stderr:
                workers.append((chunk, out, err, subprocess.Popen([*module, *args], stderr=stderr, env=env)))
        for chunk, out, err, proc in workers:
            proc.wait()
            lines = out.read_text().splitlines() if out.exists() else []
            for path, line in zip(chunk, lines, strict=False):
                size_, skip, repairs = json.loads(line)
                ctx.image_checks[path] = ImageCheck(
                    None if size_ is None else (size_[0], size_[1]),
                    None if skip is None else (skip[0], skip[1]),
                    tuple((r[0], r[1]) for r in repairs),
                )
            if proc.returncode != 0 or len(lines) < len(chunk):
                why = err.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                logger.warning(
                    "image check worker stopped after %d of %d images (%s); the rest are checked one by one",
                    len(lines),
                    len(chunk),
                    why[0],
                )


PREFETCH_MIN_IMAGES = 2000


def _to_8bit(img: Image.Image) -> Image.Image:
    # PIL's own I/I;16/F -> RGB conversion clips at 255, which turns 16-bit images white
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = np.clip(arr, 0, 65535) / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open an image as the model sees it: EXIF orientation applied, RGB, fully loaded.

    `image` is a path, or an image already in memory (`uvft predict`, the Python API): both go
    through the same orientation and mode conversions, so inference sees what training saw.
    """
    if isinstance(image, Image.Image):
        return _as_model_image(image, own=False)
    with Image.open(image) as img:
        return _as_model_image(img, own=True)


def _as_model_image(img: Image.Image, *, own: bool) -> Image.Image:
    """`own`: an image opened here, turned in place (no copy); else the caller's, left as it is."""
    try:  # either way loaded, so usable once the file closes
        if own:
            ImageOps.exif_transpose(img, in_place=True)
        else:
            img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF: upright, as check_image assumed when it sized the image
        img = img if own else img.copy()
        img.load()
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns on P -> RGB when the palette has transparency
    elif img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    return img.convert("RGB")


# ---------------------------------------------------------------------------- boxes


def parse_box(value: Any, *, fmt: str, file: str | Path, record: str | int, field: str) -> Box:
    """Four finite numbers in `fmt` ("xyxy" or "xywh") -> an xyxy box; DataError if malformed.

    A box with negative extent (x2 < x1, or a negative width) is an error, not a repair: it means
    the file's box convention is not the one we were told.
    """
    # hot path (a million boxes in COCO train): exact type checks, no generators
    if type(value) not in (list, tuple) or len(value) != 4 or any(type(v) not in (int, float) for v in value):
        raise DataError(f"a box must be four numbers, got {value!r}", file=file, record=record, field=field)
    a, b, c, d = float(value[0]), float(value[1]), float(value[2]), float(value[3])
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c) and math.isfinite(d)):
        raise DataError(f"box has non-finite values {value!r}", file=file, record=record, field=field)
    if fmt == "xywh":
        if c < 0 or d < 0:
            raise DataError(
                f"box {value!r} (x, y, w, h) has a negative width or height",
                file=file,
                record=record,
                field=field,
            )
        return (a, b, a + c, b + d)
    if fmt != "xyxy":
        raise ValueError(f"unknown box format {fmt!r}; known: xyxy, xywh")
    if c < a or d < b:
        raise DataError(
            f"box {value!r} (x1, y1, x2, y2) has x2 < x1 or y2 < y1", file=file, record=record, field=field
        )
    return (a, b, c, d)


def clip_objects(
    objects: Iterable[Object], size: ImageSize, tally: Tally | None, *, record: str, written: str = "xyxy"
) -> list[Object]:
    """Clip boxes to the image; drop boxes with no area left. Counts "box clipped" and
    "zero-area box dropped" (a box dropped is not also counted as clipped), and every box in the
    tally's clues for the build's check of systematic errors (`written`: the format the source
    wrote the boxes in, "xyxy" or "xywh"; see sources/repairs.py); `tally` None: not counted
    (evaluation-only regions)."""
    tally = tally if tally is not None else Tally()
    w, h = size
    kept: list[Object] = []
    for obj in objects:
        x1, y1, x2, y2 = obj.bbox
        clipped = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
        dropped = clipped[2] <= clipped[0] or clipped[3] <= clipped[1]
        tally.boxes.add(obj.bbox, size, written=written, dropped=dropped)
        if dropped:
            tally.repair(BOX_DROPPED, f"{record}: {obj.category} {list(obj.bbox)} in {w}x{h}")
            continue
        if clipped != (x1, y1, x2, y2):
            tally.repair(BOX_CLIPPED, f"{record}: {obj.category} {list(obj.bbox)} to {w}x{h}")
            obj = dataclasses.replace(obj, bbox=clipped)  # its annotation area stays
        kept.append(obj)
    return kept


def clip_region(
    region: Box, size: ImageSize, tally: Tally, *, record: str, written: str = "xyxy"
) -> Box | None:
    """The region a region_to_* prompt gives, clipped to the image by the rules (and counts) of
    `clip_objects`; None when it has no area left inside the image ("zero-area box dropped"): the
    caller skips the example."""
    kept = clip_objects([Object(region, "region")], size, tally, record=record, written=written)
    return kept[0].bbox if kept else None


# ---------------------------------------------------------------------------- JSON


def open_data_file(path: Path | str) -> BinaryIO:
    """`path` opened to read bytes; what stops that (no such file, a folder, a symlink loop, no
    permission) is a DataError naming the file, not an OSError from inside a reader."""
    try:
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except IsADirectoryError:  # e.g. `annotations: images`: a path one key off
        raise DataError("a folder, not a file", file=path) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError("the path is a symlink loop: it never reaches a file", file=path) from None
        raise DataError(f"cannot be read: {e.strerror or e}", file=path) from None


def read_data_file(path: Path | str) -> bytes:
    """The bytes of `path`; errors as `open_data_file`'s."""
    with open_data_file(path) as f:
        return f.read()


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing file or a syntax error is a DataError naming file, line, column."""
    return parse_json(read_data_file(path), file=path)


def parse_json(
    text: bytes | str, *, file: str | Path, record: str | int | None = None, offset: int = 0
) -> Any:
    """Parse JSON text, refusing nesting deeper than nesting.MAX_DEPTH first (`offset`: where the
    text starts in `file`, for the error); a syntax error is a DataError naming file, line, column."""
    check_json(text, file=file, record=record, offset=offset)
    try:
        return _orjson.loads(text) if _orjson is not None else json.loads(text)
    except json.JSONDecodeError as e:  # orjson's error subclasses this one
        raise DataError(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", file=file, record=record
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=file, record=record) from None


def json_list_items(path: Path, key: str | None) -> Iterator[Any]:
    """The items of the list `key` of a JSON file's top-level object (key None: of the top-level
    list itself, as Visual Genome writes its files), parsed one at a time by
    ijson (its C backend), so a file is never held parsed whole (VQAv2's train annotations: 2.5 GB
    parsed at once). The bytes are counted as ijson reads them (nesting.DepthCheckedFile): nesting
    past the bound is a DataError before ijson, whose memory grows with the square of the depth,
    sees it. Yields nothing when `key` is missing or not a list. A caller that meets
    `ijson.JSONError` or `OSError` part-way, or gets no item, reads the file with `read_json`
    instead, which raises the usual error naming file, line and column (or holds what the file
    really holds: no `key`, an empty list, another type)."""
    import ijson

    with open_data_file(path) as f:
        prefix = "item" if key is None else f"{key}.item"
        yield from ijson.items(DepthCheckedFile(f, file=path), prefix, use_float=True)


def require(obj: Any, key: str, *, file: str | Path, record: str | int | None, what: str = "record") -> Any:
    """obj[key], or a DataError naming the missing field."""
    if not isinstance(obj, dict):
        raise DataError(f"{what} must be a JSON object, got {type(obj).__name__}", file=file, record=record)
    try:
        return obj[key]
    except KeyError:
        raise DataError(f"required key {key!r} is missing", file=file, record=record, field=key) from None


def require_id(
    obj: Any, key: str, *, file: str | Path, record: str | int | None, what: str = "record"
) -> int | str:
    """obj[key] as an id: an integer or a string (ids index dicts: a list or an object cannot)."""
    value = require(obj, key, file=file, record=record, what=what)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError(
            f"{key} must be an integer or a string, got {str(value)[:80]!r}",
            file=file,
            record=record,
            field=key,
        )
    return value


def require_list(
    data: Any, key: str, *, file: str | Path, record: str | int | None = None, what: str = "the top level"
) -> list[Any]:
    """data[key], which must be a list (by default of the file's top-level object)."""
    value = require(data, key, file=file, record=record, what=what)
    if not isinstance(value, list):
        raise DataError(
            f"{key!r} must be a list, got {type(value).__name__}", file=file, record=record, field=key
        )
    return value


def id_sort_key(value: Any) -> tuple[int, Any]:
    """Sort key for record ids: numbers in numeric order, then anything else as text (no TypeError
    on a file that mixes them)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def image_format_suffix(data: bytes) -> str:
    """File suffix for encoded image bytes (".png", ".jpg", ...), ".bin" when PIL cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
    except Exception:
        return ".bin"
    return {"jpeg": ".jpg", "tiff": ".tif", "": ".bin"}.get(fmt, f".{fmt}")


# COCO's annotation fields that share a task's name: the text of a caption, an object's mask
COCO_CAPTION = "caption"  # COCO captions' field, not the task (a name: the format spells it so)
COCO_SEGMENTATION = "segmentation"  # COCO instances' polygons or RLE, not the task (likewise)


def coco_categories(data: Any, file: Path) -> dict[Any, str]:
    """category id -> name, in id order; ids and names must be unique."""
    by_id: dict[Any, str] = {}
    for cat in require_list(data, "categories", file=file):
        cid = require_id(cat, "id", file=file, record="category ?", what="a category")
        name = require(cat, "name", file=file, record=f"category {cid}", what="a category")
        if cid in by_id:
            raise DataError("duplicate category id", file=file, record=f"category {cid}", field="id")
        if not isinstance(name, str) or not name.strip():
            raise DataError(
                f"category name must be a non-empty string, got {name!r}",
                file=file,
                record=f"category {cid}",
                field="name",
            )
        by_id[cid] = name
    names = list(by_id.values())
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        # objects are named by category: two ids sharing a name would silently merge two classes
        raise DataError(f"category names are not unique: {dup}", file=file, field="name")
    return dict(sorted(by_id.items(), key=lambda kv: id_sort_key(kv[0])))


def coco_images(data: Any, file: Path) -> dict[Any, dict[str, Any]]:
    """A COCO file's `images`, by id: each needs an `id` and a `file_name`, and ids are unique."""
    infos: dict[Any, dict[str, Any]] = {}
    for info in require_list(data, "images", file=file):
        image_id = require_id(info, "id", file=file, record="image ?", what="an image")
        require(info, "file_name", file=file, record=f"image {image_id}", what="an image")
        if image_id in infos:
            raise DataError("duplicate image id", file=file, record=f"image {image_id}", field="id")
        infos[image_id] = info
    return infos


def coco_segmentation(
    seg: Any, tally: Tally, *, file: str | Path, record: str
) -> tuple[list[list[float]], dict[str, Any] | None]:
    """A COCO annotation's `segmentation` as (polygons, rle): flat polygons (degenerate ones dropped
    and counted, as parse_polygons does) or an RLE dict, checked; neither when absent."""
    if seg is None:
        return [], None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        size_ok = type(size) is list and len(size) == 2 and all(type(v) is int and v >= 0 for v in size)
        counts_ok = type(counts) is str or (type(counts) is list and all(type(c) is int for c in counts))
        if not (size_ok and counts_ok):
            raise DataError(
                "an RLE segmentation needs 'size' [height, width] and 'counts' (a string or integers)",
                file=file,
                record=record,
                field=COCO_SEGMENTATION,
            )
        return [], seg
    if not isinstance(seg, list):
        raise DataError(
            f"segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}",
            file=file,
            record=record,
            field=COCO_SEGMENTATION,
        )
    return parse_polygons(seg, tally, file=file, record=record, field=COCO_SEGMENTATION), None


# ---------------------------------------------------------------------------- fields of the unified tasks


def parse_polygons(
    value: list[Any], tally: Tally, *, file: str | Path, record: str, field: str
) -> list[list[float]]:
    """COCO polygons (each a flat [x1, y1, x2, y2, ...] list of finite numbers, of even length)
    as floats; polygons of fewer than three points are dropped and counted ("degenerate polygon
    dropped"). Anything else is a DataError naming file, record and `field`."""
    tally.count_read(DEGENERATE_POLYGON, len(value))
    polygons = []
    for i, poly in enumerate(value):
        if (
            type(poly) is not list
            or len(poly) % 2
            or any(type(v) not in (int, float) or not math.isfinite(v) for v in poly)
        ):
            raise DataError(
                f"polygon {i} must be an even-length list of finite numbers, got {str(poly)[:80]}",
                file=file,
                record=record,
                field=field,
            )
        if len(poly) < 6:  # two points or fewer enclose nothing; a mask built from it would be empty
            tally.repair(DEGENERATE_POLYGON, f"{record}: polygon {i} {list(poly)}")
            continue
        polygons.append([float(v) for v in poly])
    return polygons


def parse_regions(
    value: Any, tally: Tally, *, file: str | Path, record: str, bbox_format: str = "xyxy"
) -> list[Region]:
    """OCR regions: None, or a list of {"text": str, "quad": 8 numbers} or {"text": str, "bbox": 4
    numbers in `bbox_format`} (an axis-aligned quad). Texts are stripped; a region whose text is
    blank is dropped and counted ("empty region dropped"). Anything else is a DataError naming
    the field "regions"."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(
            f"must be a list of regions, got {value!r}", file=file, record=record, field="regions"
        )
    tally.count_read(EMPTY_REGION, len(value))
    regions = []
    for i, item in enumerate(value):
        region = _region(item, i, file=file, record=record, bbox_format=bbox_format)
        if region is None:
            tally.repair(EMPTY_REGION, f"{record}: region {i}")
        else:
            regions.append(region)
    return regions


def _region(item: Any, i: int, *, file: str | Path, record: str, bbox_format: str) -> Region | None:
    def error(message: str) -> DataError:
        return DataError(f"region {i}: {message}", file=file, record=record, field="regions")

    if not isinstance(item, dict):
        raise error(f"must be an object with 'text' and 'quad' or 'bbox', got {item!r}")
    text, quad, box = item.get("text"), item.get("quad"), item.get("bbox")
    if not isinstance(text, str):
        raise error(f"text must be a string, got {text!r}")
    if (quad is None) == (box is None):
        raise error("needs a 'quad' (8 numbers) or a 'bbox' (4 numbers), one of the two")
    if quad is not None and (
        type(quad) not in (list, tuple)
        or len(quad) != 8
        or any(type(v) not in (int, float) or not math.isfinite(v) for v in quad)
    ):
        raise error(f"a quad must be 8 finite numbers (x1, y1, ... x4, y4), got {quad!r}")
    if not text.strip():
        return None
    if quad is not None:
        return Region(text.strip(), tuple(float(v) for v in quad))
    xyxy = parse_box(box, fmt=bbox_format, file=file, record=record, field="regions")
    return Region.from_box(text.strip(), xyxy)


def language_code(value: Any, *, file: str | Path, record: str | None = None) -> str | None:
    """`value` as a language code (Example.language), or None (English): a non-empty string
    without whitespace, such as "de", "ko" or "zh-Hant". Anything else is a DataError naming
    the field "language"."""
    if value is None or (isinstance(value, str) and value and not any(c.isspace() for c in value)):
        return value
    hint = " (YAML reads no, yes, on and off as booleans: quote the code)" if isinstance(value, bool) else ""
    raise DataError(
        f"language must be a code such as 'de' or 'zh-Hant' (a non-empty string without spaces), "
        f"got {value!r}{hint}",
        file=file,
        record=record,
        field="language",
    )


def check_declared_size(
    ctx: SourceContext, declared: tuple[Any, Any], size: ImageSize, record: str, file: str
) -> None:
    """Count an image whose annotation `file` declares another width/height than the real image
    has (the real one wins; sources/repairs.py decides whether many of them fail the build)."""
    if declared == (None, None):
        return
    ctx.tally.count_read(SIZE_DIFFERS)
    if declared != size:
        ctx.tally.repair(SIZE_DIFFERS, f"{record}: {file} says {declared}, image is {size}")
        if all(isinstance(v, int | float) and v > 0 for v in declared):
            ctx.tally.boxes.size_differs(declared, size)
