"""Export: built records -> chat-format fine-tuning JSONL (TRL's SFT trainer, hosted multimodal APIs).

One file holds every split, one conversation per line, in split order then record order, UTF-8
(``ensure_ascii=False``: non-ASCII text is written as is, not as ``\\u`` escapes)::

    {"messages": [
       {"role": "user", "content": [
          {"type": "image_url", "image_url": {"url": "<file path or data: URL>"}},
          {"type": "text", "text": "<prompt>"}]},
       {"role": "assistant", "content": [{"type": "text", "text": "<target>"}]}],
     "id": "<record id>", "source": "<source name>", "task": "<task>", "split": "<split>"}

- The content parts take the OpenAI shape (``image_url`` with a ``url``); there is no system message.
- ``url`` is by default the image's absolute path exactly as stored in the record (images are never
  copied): TRL users load it themselves; hosted APIs need ``embed_images=True``.
- With ``embed_images=True`` it is ``data:image/<fmt>;base64,<...>`` of the file's exact bytes. The
  mime type comes from the image's real format as Pillow reads it, not from the file's extension:
  JPEG (and MPO, a camera JPEG) -> image/jpeg, PNG -> image/png, WEBP -> image/webp,
  GIF -> image/gif. Any other format (BMP, TIFF, ...), and any image with an EXIF orientation
  other than upright, is re-encoded as PNG with the orientation applied to its pixels, since the
  record's boxes and size refer to the oriented image and not every consumer applies the tag.
- ``text`` of the user turn is the record's ``prompt`` exactly and that of the assistant turn its
  ``target`` exactly: task tokens (``<OD>``) and location tokens (``<loc0123>``, ``<loc_123>``) stay
  in the text as they are, for the trainer's tokenizer to map.
- ``split`` is the name of the split the record was exported from; ``id``, ``source`` and ``task``
  are the record's. A built dataset's ``(source, split, id)`` is unique; ``id`` alone need not be
  (two sources over the same images may share ids).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm.auto import tqdm

from pipeline.errors import DataError

logger = logging.getLogger(__name__)

# "jsonl": every record field, one record per line (build.export_records_jsonl);
# "chat-jsonl": one chat conversation per line (export_chat_jsonl).
EXPORT_FORMATS = ("jsonl", "chat-jsonl")

# Formats sent as their own bytes; every other format is re-encoded as PNG, which every consumer reads.
_MIME = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}

# The same image usually serves several records (caption, vqa, detection). The cache is bounded:
# on a COCO-sized export, keeping every encoded image would take tens of GB of memory.
_CACHE_CHARS = 512 * 1024**2


def export_chat_jsonl(
    datasets: Mapping[str, Any],
    path: Path,
    *,
    embed_images: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write each record of every split (a datasets.DatasetDict or a dict split -> Dataset or list of
    record dicts) as one chat conversation per line; return the count per split."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    cache = _UrlCache(_CACHE_CHARS)
    total = sum(_length(ds) or 0 for ds in datasets.values())
    # Written next to the final file, then renamed: an interrupted export never looks complete.
    tmp = path.with_name(path.name + ".tmp")
    bar = tqdm(
        total=total or None, desc=f"export {path.name}", unit=" rec", disable=not progress, leave=False
    )
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for split, ds in datasets.items():
                counts[split] = 0
                for rec in ds:  # a datasets.Dataset and a list both yield record dicts
                    line = chat_line(rec, split, embed_images=embed_images, cache=cache)
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    counts[split] += 1
                    bar.update()
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    logger.info(
        "wrote %d conversations (%s) to %s%s",
        sum(counts.values()),
        ", ".join(f"{s}: {n}" for s, n in counts.items()),
        path,
        " with embedded images" if embed_images else "",
    )
    return counts


def chat_line(
    rec: Mapping[str, Any],
    split: str,
    *,
    embed_images: bool = False,
    cache: _UrlCache | None = None,
) -> dict[str, Any]:
    """One record as the chat conversation export_chat_jsonl writes (the module docstring's schema)."""
    rid = rec.get("id")
    for name in ("prompt", "target", "image"):
        if not isinstance(rec.get(name), str):
            raise DataError(f"expected a string, got {rec.get(name)!r}", record=rid, field=name)
    image = rec["image"]
    if not image:
        raise DataError("the record has no image path", record=rid, field="image")
    if not embed_images:
        url = image
    elif cache is None:
        url = _data_url(image, rid)
    else:
        url = cache.get(image, rid)
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": rec["prompt"]},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": rec["target"]}]},
        ],
        "id": rid,
        "source": rec.get("source"),
        "task": rec.get("task"),
        "split": split,
    }


def _data_url(image: str, rid: Any) -> str:
    """The image as a data: URL: its own bytes for JPEG/PNG/WEBP/GIF, re-encoded as PNG otherwise."""
    try:
        data = Path(image).read_bytes()
    except OSError as e:
        raise DataError(
            f"cannot read the image: {e.strerror or e}", file=image, record=rid, field="image"
        ) from e
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            mime = _MIME.get(fmt or "")
            # a rotated EXIF image: the records' boxes and size are of the upright image, and not
            # every consumer applies the tag, so the pixels are turned and sent as PNG
            rotated = img.getexif().get(0x0112, 1) not in (0, 1)
            if mime is None or rotated:
                logger.debug(
                    "%s is %s%s: embedded re-encoded as PNG", image, fmt, " (EXIF-rotated)" * rotated
                )
                data = _as_png(img)
                mime = "image/png"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # Pillow raises these for a file that is not an image it can read (or one too large to trust)
        raise DataError(f"cannot read the image: {e}", file=image, record=rid, field="image") from e
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _as_png(img: Image.Image) -> bytes:
    img = ImageOps.exif_transpose(img)  # the PNG carries no orientation tag: apply it to the pixels
    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):  # e.g. CMYK: PNG cannot hold it
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _UrlCache:
    """Data URLs by image path for one export, least recently used dropped past `max_chars`."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self._urls: OrderedDict[str, str] = OrderedDict()

    def get(self, image: str, rid: Any) -> str:
        url = self._urls.get(image)
        if url is not None:
            self._urls.move_to_end(image)
            return url
        url = _data_url(image, rid)
        self._urls[image] = url
        self.chars += len(url)
        while self.chars > self.max_chars and len(self._urls) > 1:
            _, old = self._urls.popitem(last=False)
            self.chars -= len(old)
        return url


def _length(ds: Any) -> int | None:
    try:
        return len(ds)
    except TypeError:  # a plain iterable of records: the bar then counts without a total
        return None
