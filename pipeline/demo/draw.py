"""The shapes set's pixels: shapes on light backgrounds with their tight boxes and drawn areas, the
outlines (polygons) of the referring scenes with masks that match COCO's rasteriser, and the OCR
images of words in a bitmap font. Every function draws from the generator it is given, so one
image is a pure function of its seed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "square", "triangle", "star", "diamond")  # category ids 1..5, in this order
COLORS: dict[str, tuple[int, int, int]] = {
    # Saturated, each with a channel <= 60: never confused with the light background (>= 180).
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (140, 60, 180),
}

_GAP = 2  # pixels kept free between shape boxes, so every box stays tight in the composed image
_TRIES = 50  # placement attempts per shape before settling for fewer shapes


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # tight x1, y1, x2, y2 (pixel edges: x2 = last column + 1)
    area: int  # drawn pixels
    polygon: tuple[float, ...] = ()  # referring scenes: the outline drawn, flat x1, y1, x2, y2, ...

    @property
    def phrase(self) -> str:
        return f"{self.color} {self.kind}"


# --- the main images ---------------------------------------------------------------------------------


def draw_image(
    rng: np.random.Generator, size: int, max_shapes: int, shape_size: tuple[float, float] = (0.3, 0.6)
) -> tuple[np.ndarray, list[Shape]]:
    """One image (H x W x 3 uint8) and its shapes, in drawing order; a shape's side is drawn from
    `shape_size` (fractions of the image side), never below 10 px (to tell a star from a circle)."""
    canvas = _background(rng, size)
    min_side = min(size, max(10, round(size * shape_size[0])))
    max_side = min(size, max(min_side, round(size * shape_size[1])))
    wanted = int(rng.integers(1, max_shapes + 1))
    return canvas, _place(rng, canvas, wanted, (min_side, max_side))


def _place(
    rng: np.random.Generator,
    canvas: np.ndarray,
    wanted: int,
    sides: tuple[int, int],
    *,
    outline: bool = False,
    distinct: bool = False,
    keep_clear: list[tuple[int, int, int, int]] | None = None,
) -> list[Shape]:
    """Draw up to `wanted` shapes onto `canvas` where they keep _GAP from each other and from the
    `keep_clear` boxes. outline: drawn from a polygon (`_outline`) that the Shape keeps; distinct:
    no two with the same (colour, shape)."""
    size = canvas.shape[0]
    shapes: list[Shape] = []
    taken = list(keep_clear or [])
    for _ in range(wanted):
        for _ in range(_TRIES):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            side = int(rng.integers(sides[0], sides[1] + 1))
            x0 = int(rng.integers(0, size - side + 1))
            y0 = int(rng.integers(0, size - side + 1))
            if distinct and any((s.kind, s.color) == (kind, color) for s in shapes):
                continue
            mask = _polygon_mask(kind, side) if outline else _shape_mask(kind, side)
            ys, xs = np.nonzero(mask)
            box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
            if any(_near(box, other) for other in taken):
                continue
            canvas[y0 : y0 + side, x0 : x0 + side][mask] = COLORS[color]
            taken.append(box)
            polygon = (
                tuple(v + (x0, y0)[i % 2] for i, v in enumerate(_outline(kind, side))) if outline else ()
            )
            shapes.append(Shape(kind, color, box, int(mask.sum()), polygon))
            break
    return shapes


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # A light tint with a faint linear gradient in a random direction: varied, never saturated.
    base = rng.integers(200, 246, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0, 12)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    img = base[None, None, :] + amp * grad[:, :, None]
    return np.clip(np.rint(img), 180, 255).astype(np.uint8)


def _shape_mask(kind: str, side: int) -> np.ndarray:
    """A boolean side x side mask of the shape, drawn without anti-aliasing (exact colours)."""
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    e = side - 1
    if kind == "circle":
        draw.ellipse((0, 0, e, e), fill=255)
    elif kind == "square":
        draw.rectangle((0, 0, e, e), fill=255)
    elif kind == "triangle":
        draw.polygon([(e / 2, 0), (e, e), (0, e)], fill=255)
    elif kind == "diamond":
        draw.polygon([(e / 2, 0), (e, e / 2), (e / 2, e), (0, e / 2)], fill=255)
    elif kind == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, e / 2, e / 2 * 0.45)
        draw.polygon(
            [(e / 2 + r * np.cos(a), e / 2 + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)],
            fill=255,
        )
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")
    return np.asarray(img) > 0


_SUPERSAMPLE = 8  # outline masks: sub-pixels per pixel side


@cache
def _outline(kind: str, side: int) -> tuple[float, ...]:
    """The shape in a side x side square as a polygon, flat x1, y1, x2, y2, ... in COCO's pixel-edge
    coordinates ((0, 0) the top-left corner of the top-left pixel); a circle is a 32-gon. Rounded
    to 0.01 px, as written: the mask is drawn from the very numbers the annotation holds."""
    c = side / 2
    if kind == "square":
        points = [(0, 0), (side, 0), (side, side), (0, side)]
    elif kind == "triangle":
        points = [(c, 0), (side, side), (0, side)]
    elif kind == "diamond":
        points = [(c, 0), (side, c), (c, side), (0, c)]
    elif kind in ("star", "circle"):
        n = 10 if kind == "star" else 32
        angles = -np.pi / 2 + np.arange(n) * 2 * np.pi / n
        radii = np.where(np.arange(n) % 2 == 0, c, c * 0.45) if kind == "star" else np.full(n, c)
        points = list(zip(c + radii * np.cos(angles), c + radii * np.sin(angles), strict=True))
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")
    return tuple(round(float(v), 2) for point in points for v in point)


@cache
def _polygon_mask(kind: str, side: int) -> np.ndarray:
    """The side x side mask of `_outline`: a pixel is painted when at least half of it lies inside
    the polygon (PIL fills the polygon 8x larger; each pixel counts its sub-pixels). PIL's direct
    fill paints every pixel the outline touches, a pixel-wide rim beyond what COCO's rasteriser
    (pycocotools) makes of the same polygon; counting coverage matches it (mask IoU >= 0.9)."""
    k = _SUPERSAMPLE
    img = Image.new("L", (side * k, side * k), 0)
    flat = _outline(kind, side)
    # sub-pixel i covers [i, i + 1) in edge coordinates; PIL addresses its centre as i
    ImageDraw.Draw(img).polygon(
        [(x * k - 0.5, y * k - 0.5) for x, y in zip(flat[::2], flat[1::2], strict=True)], fill=1
    )
    covered = np.asarray(img, dtype=np.uint16).reshape(side, k, side, k).sum(axis=(1, 3))
    mask = covered * 2 >= k * k
    mask.flags.writeable = False  # cached: shared by every caller
    return mask


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1])


def dominant(shapes: list[Shape]) -> str:
    """The ImageFolder class: the shape with the most drawn pixels (the first one on a tie)."""
    return max(shapes, key=lambda s: s.area).kind  # max keeps the first of equal keys


# --- referring scenes -------------------------------------------------------------------------------

REFER_SHAPES = (2, 3)  # shapes per referring scene
REFER_SHAPE_SIZE = (0.25, 0.4)  # a shape's side, as fractions of the image side (3 must fit)
REFER_MIN_SIDE = 12  # px: below this a star's points blur into a blob


def draw_refer_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Shape]]:
    """A referring scene: 2 or 3 shapes, no two of the same (colour, shape), each drawn from its
    polygon (`Shape.polygon`), 25-40% of the image side (at least REFER_MIN_SIDE px)."""
    lo = min(size, max(REFER_MIN_SIDE, round(size * REFER_SHAPE_SIZE[0])))
    hi = min(size, max(lo, round(size * REFER_SHAPE_SIZE[1])))
    while True:  # at least two: a scene with one object needs no referring (one more draw suffices)
        canvas = _background(rng, size)
        wanted = int(rng.integers(REFER_SHAPES[0], REFER_SHAPES[1] + 1))
        shapes = _place(rng, canvas, wanted, (lo, hi), outline=True, distinct=True)
        if len(shapes) >= REFER_SHAPES[0]:
            return canvas, shapes


# --- OCR images --------------------------------------------------------------------------------------

OCR_WORDS = (*COLORS, *SHAPES, *"0123456789")  # a vocabulary small enough for a tiny model to learn
OCR_MAX_WORDS = 3
_OCR_MARGIN = 2  # px between a word and the image border
_OCR_LINE_GAP = 3  # px at least between two lines


@cache
def _font() -> ImageFont.ImageFont:
    # Pillow's built-in bitmap font (6 px wide, 11 px line), not the FreeType one load_default()
    # returns since Pillow 10.1: a bitmap renders the same pixels whatever FreeType is installed.
    load = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    return load()


@cache
def word_ink(word: str) -> np.ndarray:
    """The pixels of `word` in the bitmap font, cropped to its ink (no anti-aliasing)."""
    glyphs = _font().getmask(word, mode="1")
    ink = np.asarray(glyphs, dtype=np.uint8).reshape(glyphs.size[1], glyphs.size[0]) > 0
    ys, xs = np.nonzero(ink)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ink.flags.writeable = False
    return ink


def draw_ocr_image(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """An OCR image: 1 to 3 words of OCR_WORDS, one per line top to bottom (the reading order), in
    one dark colour (every channel <= 60, so no shape colour and no background), each box the
    word's tight ink, and a small shape beside them where one fits. Returns (pixels, [(word, box)])."""
    canvas = _background(rng, size)
    room = size - 2 * _OCR_MARGIN
    fitting = [w for w in OCR_WORDS if word_ink(w).shape[1] <= room]
    words = [
        fitting[int(i)] for i in rng.integers(len(fitting), size=int(rng.integers(1, OCR_MAX_WORDS + 1)))
    ]
    while len(words) > 1 and sum(word_ink(w).shape[0] + _OCR_LINE_GAP for w in words) - _OCR_LINE_GAP > room:
        words.pop()  # only at small image sizes: three lines always fit in 64 px
    ink_color = rng.integers(0, 61, size=3).astype(np.uint8)
    heights = [word_ink(w).shape[0] for w in words]
    slack = room - sum(heights) - _OCR_LINE_GAP * (len(words) - 1)
    offsets = np.sort(rng.integers(0, slack + 1, size=len(words)))  # extra space above each line
    regions = []
    y = _OCR_MARGIN
    for k, word in enumerate(words):
        ink = word_ink(word)
        h, w = ink.shape
        top = y + int(offsets[k])
        left = int(rng.integers(_OCR_MARGIN, size - _OCR_MARGIN - w + 1))
        canvas[top : top + h, left : left + w][ink] = ink_color
        regions.append((word, (left, top, left + w, top + h)))
        y += h + _OCR_LINE_GAP
    side_lo = min(size, max(10, round(size * 0.2)))
    _place(rng, canvas, 1, (side_lo, max(side_lo, round(size * 0.3))), keep_clear=[b for _, b in regions])
    return canvas, regions
