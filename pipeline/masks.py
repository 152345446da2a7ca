"""Masks as every layer meets them: COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists in pixels)
and COCO RLEs (``{"size": [height, width], "counts": ...}``), through pycocotools, COCO's own
rasteriser and run-length coder.

One home for the geometry that the formats (a mask's window), the mask codec (`models/vqvae.py`),
the segmentation metric, the task table and the report gallery share: a rasterised polygon is the
same pixels everywhere, so a mask coded for training is scored against the mask the metric sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from pipeline.records import ImageSize


def usable_polygon(polygon: Any) -> bool:
    """A flat coordinate list with an even count of at least 6 (3 points), all finite numbers.
    (pycocotools must never see another: it reads a 4-number polygon as a box.)"""
    if isinstance(polygon, (str, bytes, Mapping)):
        return False
    try:
        values = [float(v) for v in polygon]
    except (TypeError, ValueError):
        return False
    return len(values) >= 6 and len(values) % 2 == 0 and all(math.isfinite(v) for v in values)


def polygons_to_rle(polygons: Sequence[Sequence[float]], width: int, height: int) -> dict[str, Any]:
    """The compressed RLE of the union of ``polygons`` (all usable) on a ``width`` x ``height`` image."""
    if not polygons:
        return mask_utils.frPyObjects({"size": [height, width], "counts": [width * height]}, height, width)
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return mask_utils.merge(rles)


def from_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The boolean mask `[height, width]` of a COCO RLE whose counts are bytes, text (as JSON keeps
    them) or run lengths."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    height, width = (int(v) for v in rle["size"])
    compressed = {"size": [height, width], "counts": counts}
    if isinstance(counts, list):  # run lengths: pycocotools compresses them first
        compressed = mask_utils.frPyObjects(compressed, height, width)
    return mask_utils.decode(compressed).astype(bool)


def to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask as a compressed COCO RLE with text counts (JSON-safe); `from_rle` inverts it."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rasterise(polygons: Sequence[Sequence[float]], size: ImageSize) -> np.ndarray:
    """The boolean mask `[H, W]` of the union of the usable polygons on an image of `size` (W, H);
    unusable ones are left out."""
    w, h = size
    return from_rle(polygons_to_rle([p for p in polygons if usable_polygon(p)], w, h))
