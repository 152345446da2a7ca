"""Location tokens shared by the format modules: quantization, token spelling, object order.

A box is quantized per axis into `bins` equal bins: `floor(v * bins / size)`, clamped to
`[0, bins - 1]` (as transformers' `Florence2PostProcessor.quantize`), so a coordinate on the
right/bottom edge lands in the last bin and `<loc_1000>` / `<loc1024>` are never written.
Coordinates outside the image clamp to the first/last bin. A bin decodes to its centre,
`(b + 0.5) * size / bins`, so every decoded coordinate lies strictly inside the image (no
clipping needed) and a box inside the image round trips to within half a bin width.

Two schemes, one per model family:

- Florence-2: `<loc_0>`..`<loc_999>`, 1000 bins, written x1 y1 x2 y2.
- PaliGemma: `<loc0000>`..`<loc1023>`, 1024 bins, written y1 x1 y2 x2 (big_vision's order).

Object order: detection targets list objects in raster order of their *quantized* boxes,
`(y1, x1, y2, x2)` then category (`sort_objects`). Sorting on the bins rather than the raw
floats keeps the order a function of what the model sees: two objects in the same top-row bin
are ordered left to right, never by a sub-bin difference the tokens do not show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.records import Box, ImageSize, Object

FLORENCE_BINS = 1000
PALI_BINS = 1024

# Markers a decoder may leave in generated text; none of them is ever content.
SPECIAL_MARKERS = ("<s>", "</s>", "<pad>", "<bos>", "<eos>", "<|endoftext|>")
_MARKERS_RE = re.compile("|".join(re.escape(m) for m in SPECIAL_MARKERS))


def strip_markers(text: str) -> str:
    """Remove decoder markers (`</s>`, `<pad>`, `<eos>`, ...) and surrounding whitespace."""
    return _MARKERS_RE.sub("", text).strip()


def quantize(v: float, size: float, bins: int) -> int:
    # v * bins is exact for integer pixels, so the floor is exact too; clamp keeps the edge in range
    return min(max(math.floor(v * bins / size), 0), bins - 1)


def dequantize(b: int, size: float, bins: int) -> float:
    return (b + 0.5) * size / bins


def box_to_bins(box: Box, size: ImageSize, bins: int) -> tuple[int, int, int, int]:
    """Bins of an absolute xyxy box, in x1 y1 x2 y2 order, each in [0, bins - 1]."""
    # floor into [0, bins-1]: a box touching the right edge must not produce bin == bins
    w, h = size
    x1, y1, x2, y2 = box
    return quantize(x1, w, bins), quantize(y1, h, bins), quantize(x2, w, bins), quantize(y2, h, bins)


def bins_to_box(bins: Sequence[int], size: ImageSize, nbins: int) -> Box:
    """The absolute xyxy box of four bins (x1 y1 x2 y2 order), at bin centres."""
    w, h = size
    bx1, by1, bx2, by2 = bins
    return (
        dequantize(bx1, w, nbins),
        dequantize(by1, h, nbins),
        dequantize(bx2, w, nbins),
        dequantize(by2, h, nbins),
    )


@dataclass(frozen=True)
class LocScheme:
    """How one family spells a box: token template, bin count and coordinate order."""

    name: str
    bins: int
    template: str  # format string of one token, with the bin as {0}
    pattern: re.Pattern[str]  # matches one location-like token; group 1 is the bin's digits
    yx: bool  # True: tokens are written y1 x1 y2 x2

    def token(self, b: int) -> str:
        return self.template.format(b)

    def describe(self) -> dict[str, Any]:
        """The convention for people and for uvft.json: token range, bin count, coordinate order."""
        order = "y1 x1 y2 x2" if self.yx else "x1 y1 x2 y2"
        return {"tokens": f"{self.token(0)}..{self.token(self.bins - 1)}", "bins": self.bins, "order": order}

    def tokens(self) -> list[str]:
        """Every location token of the scheme, in bin order."""
        return [self.token(b) for b in range(self.bins)]

    def encode(self, box: Box, size: ImageSize) -> str:
        """Four location tokens for an absolute xyxy box."""
        x1, y1, x2, y2 = box_to_bins(box, size, self.bins)
        order = (y1, x1, y2, x2) if self.yx else (x1, y1, x2, y2)
        return "".join(self.token(b) for b in order)

    def value(self, digits: str) -> int | None:
        """The bin a matched token's digits name, or None if no valid token spells it."""
        if len(digits) > 8:  # int() of thousands of digits raises; any such bin is out of range anyway
            return None
        b = int(digits)
        return b if b < self.bins else None

    def decode(self, bins: Sequence[int], size: ImageSize) -> Box:
        """The absolute xyxy box of four in-range bins given in this scheme's written order."""
        a, b, c, d = bins
        xyxy = (b, a, d, c) if self.yx else (a, b, c, d)
        return bins_to_box(xyxy, size, self.bins)

    def boxes(self, run: Sequence[int | None], size: ImageSize) -> tuple[list[Box], int]:
        """Boxes of a run of consecutive location tokens (None: an invalid token) and its error count.

        Each complete group of four is one box; a group holding an invalid token is one error, and
        a leftover of one to three tokens (a truncated box) is one more error.
        """
        boxes: list[Box] = []
        errors = 0
        full, rest = divmod(len(run), 4)
        for k in range(full):
            group = run[4 * k : 4 * k + 4]
            if any(b is None for b in group):
                errors += 1
            else:
                boxes.append(self.decode([b for b in group if b is not None], size))
        return boxes, errors + (1 if rest else 0)

    def encode_points(self, points: Sequence[float], size: ImageSize) -> str:
        """Two location tokens per point of a flat `[x1, y1, x2, y2, ...]` list (a polygon)."""
        if len(points) % 2:
            raise ValueError(f"a point list needs an even number of coordinates, got {len(points)}")
        w, h = size
        out = []
        for x, y in zip(points[::2], points[1::2], strict=True):
            bx, by = quantize(x, w, self.bins), quantize(y, h, self.bins)
            out.append(self.token(by) + self.token(bx) if self.yx else self.token(bx) + self.token(by))
        return "".join(out)

    def points(self, run: Sequence[int | None], size: ImageSize) -> tuple[list[float], int]:
        """The flat `[x, y, ...]` points of a run of location tokens (None: an invalid token), at bin
        centres, and its error count: a pair holding an invalid token is one error, and a last
        token without its pair one more."""
        w, h = size
        flat: list[float] = []
        errors = 0
        full, rest = divmod(len(run), 2)
        for k in range(full):
            a, b = run[2 * k], run[2 * k + 1]
            if a is None or b is None:
                errors += 1
                continue
            bx, by = (b, a) if self.yx else (a, b)
            flat += (dequantize(bx, w, self.bins), dequantize(by, h, self.bins))
        return flat, errors + rest

    def split(self, text: str) -> list[str | int | None]:
        """Text pieces and location tokens in order: str for text, int for a bin, None for a bad token."""
        pieces = self.pattern.split(text)  # the capture group puts each token's digits at odd indices
        return [self.value(p) if i % 2 else p for i, p in enumerate(pieces)]


FLORENCE = LocScheme(
    name="florence2",
    bins=FLORENCE_BINS,
    template="<loc_{0}>",
    pattern=re.compile(r"<loc_([0-9]+)>"),
    yx=False,
)
PALI = LocScheme(
    name="paligemma",
    bins=PALI_BINS,
    template="<loc{0:04d}>",
    pattern=re.compile(r"<loc([0-9]+)>"),
    yx=True,
)


def sort_objects(objects: Iterable[Object], size: ImageSize, bins: int) -> list[Object]:
    """Objects in raster order of their quantized boxes: top to bottom, left to right, then category."""

    def key(o: Object) -> tuple[int, int, int, int, str]:
        x1, y1, x2, y2 = box_to_bins(o.bbox, size, bins)
        return (y1, x1, y2, x2, o.category)

    return sorted(objects, key=key)
