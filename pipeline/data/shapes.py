"""The synthetic "shapes" demo set: coloured shapes on light backgrounds, in real on-disk formats.

One generated image set is written four ways, exactly as the real sources lay out their files, so
the demo exercises the same readers as COCO, VQAv2 and Imagenette:

    out/images/{train,val}/<image_id:06d>.png
    out/annotations/instances_<split>.json                   COCO instances (detection)
    out/annotations/captions_<split>.json                    COCO captions, five per image
    out/annotations/v2_OpenEnded_shapes_<split>_questions.json  VQAv2 questions
    out/annotations/v2_shapes_<split>_annotations.json       VQAv2 annotations, ten answers each
    out/imagefolder/<split>/<class>/<image_id:06d>.png       ImageFolder; class = largest shape
    out/README.md
    out/shapes.json                                          the arguments it was generated with

`extra_tasks` (off by default) adds, each when named:

    "refer"        out/images/refer_<split>/<image_id:06d>.png   scenes of 2-3 distinct shapes
                   out/refer/instances.json, out/refer/refs(unc).p  as RefCOCO ships (grounding,
                                                                   referring segmentation)
    "ocr"          out/images/ocr_<split>/<image_id:06d>.png     1-3 words in the default bitmap font
                   out/ocr/ocr_<split>.jsonl                     text in reading order, word boxes
    "captions_de"  out/annotations/captions_<split>_de.json      German captions of the main images,
                                                                 translations of the English five

Everything is a pure function of the arguments: each image draws from its own generator seeded by
(seed, image_id) (the extra image sets by (seed, image_id, purpose), so they leave the main set's
streams alone), PNGs carry no metadata and JSON is written in a fixed key order, so two runs give
byte-identical trees; without `extra_tasks` the tree is the one this module wrote before they
existed. The set is written into a temporary folder next to `out` and renamed into place, so an
interrupted run never leaves a half dataset behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from pipeline.errors import DataError

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "diamond")  # category ids 1..5, in this order
PLURALS = {s: s + "s" for s in SHAPES}
COLORS: dict[str, tuple[int, int, int]] = {
    # Saturated, each with a channel <= 60: never confused with the light background (>= 180).
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (140, 60, 180),
}
SPLITS = ("train", "val")
FORMATS = ("coco_detection", "coco_captions", "vqav2", "image_folder")
README_TITLE = "# shapes: the synthetic demo set of uvft"
PARAMS_FILE = "shapes.json"  # the generator's arguments, written with the set
EXTRA_TASKS = ("refer", "ocr", "captions_de")  # opt-in extra sets, in the order they are written

# The extra sets' files, relative to the set's folder.
REFER_INSTANCES = "refer/instances.json"
REFER_REFS = "refer/refs(unc).p"
OCR_JSONL = "ocr/ocr_{split}.jsonl"
CAPTIONS_DE = "annotations/captions_{split}_de.json"


def written_params(out: Path) -> dict[str, Any] | None:
    """The arguments a shapes set in `out` was generated with (None: no shapes set, or one written
    before the arguments were recorded). A set without extra tasks has no `extra_tasks` key, as
    sets written before the key existed, so both compare equal to `canonical_params` of the same
    arguments."""
    path = Path(out) / PARAMS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def canonical_params(params: dict[str, Any]) -> dict[str, Any]:
    """Arguments of `generate` as shapes.json holds them: `shape_size` a list, `extra_tasks` a list
    in EXTRA_TASKS order, left out when empty (so the default writes the file it always wrote).
    Compare a recipe's wish with `written_params` through this."""
    out = dict(params)
    if "shape_size" in out:
        out["shape_size"] = list(out["shape_size"])
    extra = out.pop("extra_tasks", None) or ()
    if isinstance(extra, str):
        raise ValueError(f"extra_tasks must be a list of names, got the string {extra!r}")
    extra = tuple(extra)
    unknown = sorted(set(extra) - set(EXTRA_TASKS))
    if unknown:
        raise ValueError(f"unknown extra task(s) {', '.join(unknown)}; known: {', '.join(EXTRA_TASKS)}")
    if extra:
        out["extra_tasks"] = [t for t in EXTRA_TASKS if t in extra]
    return out


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_GAP = 2  # pixels kept free between shape boxes, so every box stays tight in the composed image
_TRIES = 50  # placement attempts per shape before settling for fewer shapes
# The third word of the extra sets' per-image seeds: (seed, image_id) alone is the main set's.
_REFER_STREAM, _OCR_STREAM = 1, 2

# Human-like answer variation: a synonym a person might type, scored as wrong by exact match.
_COLOR_SYNONYMS = {"purple": ["violet"], "green": ["dark green"], "blue": ["dark blue"], "yellow": ["gold"]}
_SHAPE_SYNONYMS = {
    "circle": ["oval", "round"],
    "square": ["rectangle", "box"],
    "triangle": ["triangular"],
    "star": ["star shape"],
    "diamond": ["rhombus"],
}


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


def generate(
    out: Path,
    *,
    n_train: int = 5000,
    n_val: int = 200,
    image_size: int = 64,
    max_shapes: int = 1,
    shape_size: tuple[float, float] = (0.3, 0.6),
    seed: int = 0,
    extra_tasks: Iterable[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Write the shapes set to `out`; return {"path", "counts": {format: {split: n}}, "objects", ...}.

    `extra_tasks` names extra sets of EXTRA_TASKS to write as well (see the module docstring);
    each has n_train + n_val images (the German captions: of the main images) on `image_size`.
    `out` is replaced when it holds an earlier shapes set (it is regenerable) or is empty; any other
    existing folder is refused rather than deleted.
    """
    out = Path(out)
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got {n_train}, {n_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 so shapes stay recognisable, got {image_size}")
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
    lo, hi = shape_size
    if not 0 < lo <= hi <= 1:
        raise ValueError(
            f"shape_size must be fractions of the image side with 0 < min <= max <= 1, got {shape_size}"
        )
    params = canonical_params(
        {
            "n_train": n_train,
            "n_val": n_val,
            "image_size": image_size,
            "max_shapes": max_shapes,
            "shape_size": [lo, hi],
            "seed": seed,
            "extra_tasks": extra_tasks,
        }
    )
    _check_replaceable(out)

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset folder should be readable like any other
        summary = _write_all(tmp, params, progress)
        _write_readme(tmp, params, summary)
        _write_json(tmp / PARAMS_FILE, params)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["path"] = str(out)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    logger.info(
        "shapes: wrote %s (images %s, questions %s) in %.1fs",
        out,
        summary["counts"]["coco_detection"],
        summary["counts"]["vqav2"],
        summary["seconds"],
    )
    return summary


# --- drawing ---------------------------------------------------------------------------------------


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


# --- captions ----------------------------------------------------------------------------------------


def _number(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(shapes: list[Shape]) -> list[str]:
    """'a red circle', 'two blue squares': one phrase per (colour, shape), in first-seen order."""
    counts = Counter((s.color, s.kind) for s in shapes)
    return [
        f"a {color} {kind}" if n == 1 else f"{_number(n)} {color} {PLURALS[kind]}"
        for (color, kind), n in counts.items()
    ]


@dataclass(frozen=True)
class CaptionPlan:
    """The random choices behind one image's five captions: group orders and the background's word.
    One plan renders the English captions and their German translations alike."""

    first: list[int]
    counted: list[int]
    beside: list[int]
    tone: int
    scene: list[int]


def caption_plan(rng: np.random.Generator, shapes: list[Shape]) -> CaptionPlan:
    n = len(Counter((s.color, s.kind) for s in shapes))
    # drawn in the order the English captions always drew them: the main set's stream is unchanged
    first, counted, beside = (rng.permutation(n).tolist() for _ in range(3))
    tone = int(rng.integers(3))
    return CaptionPlan(first, counted, beside, tone, rng.permutation(n).tolist())


def captions(rng: np.random.Generator, shapes: list[Shape], language: str = "en") -> list[str]:
    """Five references in different styles; all name every shape with its colour. language: "en"
    or "de" (the same five, translated, for the same draws of `rng`)."""
    plan = caption_plan(rng, shapes)
    if language == "en":
        return render_captions(shapes, plan)
    if language == "de":
        return render_captions_de(shapes, plan)
    raise ValueError(f"unknown caption language {language!r}; known: en, de")


def _left_to_right(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: (s.box[0] + s.box[2], s.box[1]))


def render_captions(shapes: list[Shape], plan: CaptionPlan) -> list[str]:
    groups = _groups(shapes)
    n = len(shapes)

    def ordered(order: list[int]) -> list[str]:
        return [groups[i] for i in order]

    first = _join(ordered(plan.first)) + "."
    first = first[0].upper() + first[1:]
    counted = f"{_number(n)} shape{'s' if n > 1 else ''}: {_join(ordered(plan.counted))}"
    order = ordered(plan.beside)
    if len(order) > 1:
        beside = f"{order[0]} next to {_join(order[1:])}"
    elif n == 1:
        beside = f"{order[0]} on a plain background"
    else:
        beside = f"{order[0]} side by side"
    if n == 1:
        positional = f"a single {shapes[0].phrase} in the picture"
    else:
        positional = "from left to right: " + _join([f"a {s.phrase}" for s in _left_to_right(shapes)])
    tone = ("light", "pale", "plain")[plan.tone]
    scene = f"a simple drawing of {_join(ordered(plan.scene))} on a {tone} background"
    return [first, counted, beside, positional, scene]


# German: nouns with gender and plural forms; adjectives take the endings of their case and gender.
_DE_NOUNS = {  # gender, singular, plural (nominative), plural (dative)
    "circle": ("m", "Kreis", "Kreise", "Kreisen"),
    "square": ("n", "Quadrat", "Quadrate", "Quadraten"),
    "triangle": ("n", "Dreieck", "Dreiecke", "Dreiecken"),
    "star": ("m", "Stern", "Sterne", "Sternen"),
    "diamond": ("f", "Raute", "Rauten", "Rauten"),
}
# "violett", not the commoner "lila": lila takes no endings, and the set should show them
_DE_COLORS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett"}
_DE_NUMBERS = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn")
# after the indefinite article: (article, adjective ending) by case and gender
_DE_ARTICLE = {
    ("nom", "m"): ("ein", "er"),
    ("nom", "n"): ("ein", "es"),
    ("nom", "f"): ("eine", "e"),
    ("dat", "m"): ("einem", "en"),
    ("dat", "n"): ("einem", "en"),
    ("dat", "f"): ("einer", "en"),
}


def _de_join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " und " + parts[-1]


def _de_group(color: str, kind: str, n: int, case: str, *, single: bool = False) -> str:
    """'ein roter Kreis' (nominative), 'einem roten Kreis' (dative), 'zwei rote Kreise', 'zwei roten
    Kreisen'; single: 'ein einzelner roter Kreis'."""
    gender, noun, plural, plural_dative = _DE_NOUNS[kind]
    adjective = _DE_COLORS[color]
    if n == 1:
        article, ending = _DE_ARTICLE[case, gender]
        extra = f"einzeln{ending} " if single else ""
        return f"{article} {extra}{adjective}{ending} {noun}"
    number = _de_number(n)
    # no article: the strong plural endings, -e in the nominative, -en (and -n on the noun) in the dative
    return f"{number} {adjective}e {plural}" if case == "nom" else f"{number} {adjective}en {plural_dative}"


def _de_number(n: int) -> str:
    return _DE_NUMBERS[n] if n < len(_DE_NUMBERS) else str(n)


def render_captions_de(shapes: list[Shape], plan: CaptionPlan) -> list[str]:
    """The German translations of `render_captions`, caption for caption."""
    counts = Counter((s.color, s.kind) for s in shapes)
    keys = list(counts)  # first-seen order, as _groups
    n = len(shapes)

    def ordered(order: list[int], case: str) -> list[str]:
        return [_de_group(*keys[i], counts[keys[i]], case) for i in order]

    first = _de_join(ordered(plan.first, "nom")) + "."
    first = first[0].upper() + first[1:]
    counted = (
        f"{'eine Form' if n == 1 else _de_number(n) + ' Formen'}: {_de_join(ordered(plan.counted, 'nom'))}"
    )
    if len(keys) > 1:
        head, *rest = plan.beside
        beside = f"{ordered([head], 'nom')[0]} neben {_de_join(ordered(rest, 'dat'))}"
    elif n == 1:
        beside = f"{ordered(plan.beside, 'nom')[0]} auf einem schlichten Hintergrund"
    else:
        beside = f"{ordered(plan.beside, 'nom')[0]} nebeneinander"
    if n == 1:
        positional = f"{_de_group(shapes[0].color, shapes[0].kind, 1, 'nom', single=True)} im Bild"
    else:
        positional = "von links nach rechts: " + _de_join(
            [_de_group(s.color, s.kind, 1, "nom") for s in _left_to_right(shapes)]
        )
    tone = ("hellen", "blassen", "schlichten")[plan.tone]
    scene = f"eine einfache Zeichnung von {_de_join(ordered(plan.scene, 'dat'))} auf einem {tone} Hintergrund"
    return [first, counted, beside, positional, scene]


# --- referring scenes -------------------------------------------------------------------------------

REFER_SHAPES = (2, 3)  # shapes per referring scene
REFER_SHAPE_SIZE = (0.25, 0.4)  # a shape's side, as fractions of the image side (3 must fit)
REFER_MIN_SIDE = 12  # px: below this a star's points blur into a blob
# Where an object is, as referring phrases say it: the word, its phrase after the noun, and the test
# "box a lies entirely on that side of box b" (boxes never overlap, so one of the four holds).
DIRECTIONS: dict[str, tuple[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]]] = {
    "left": ("on the left", lambda a, b: a[2] <= b[0]),
    "right": ("on the right", lambda a, b: a[0] >= b[2]),
    "top": ("at the top", lambda a, b: a[3] <= b[1]),
    "bottom": ("at the bottom", lambda a, b: a[1] >= b[3]),
}


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


def referring_phrases(target: Shape, scene: list[Shape]) -> list[str]:
    """Every phrase that picks out `target` alone in `scene`, in a fixed order:

    "the red circle"                    always (no two objects share colour and shape)
    "the circle"                        when it is the only circle
    "the red shape"                     when it is the only red object
    "the left circle", "the circle on the left", "the top shape", "the shape at the bottom", ...
                                        when its box lies entirely on that side of the boxes of
                                        all other circles (of all other objects, for "shape")
    """
    phrases = [f"the {target.color} {target.kind}"]
    if sum(s.kind == target.kind for s in scene) == 1:
        phrases.append(f"the {target.kind}")
    if sum(s.color == target.color for s in scene) == 1:
        phrases.append(f"the {target.color} shape")
    for noun, group in (
        (target.kind, [s for s in scene if s.kind == target.kind]),
        ("shape", scene),
    ):
        others = [s for s in group if s is not target]
        if not others:
            continue  # "the left circle" of one circle says no more than "the circle"
        for word, (after, beyond) in DIRECTIONS.items():
            if all(beyond(target.box, o.box) for o in others):
                phrases += [f"the {word} {noun}", f"the {noun} {after}"]
    return phrases


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


# --- questions ----------------------------------------------------------------------------------------


def _qa(question_type: str, rest: str, answer_type: str, answer: str) -> dict[str, Any]:
    # VQAv2's question_type is the question's first words
    q = f"{question_type} {rest}"
    return {"question": q, "question_type": question_type, "answer_type": answer_type, "answer": answer}


def questions(rng: np.random.Generator, shapes: list[Shape]) -> list[dict[str, Any]]:
    """Two or three questions of different types, each only where its answer is unambiguous."""
    kinds = Counter(s.kind for s in shapes)
    colors = Counter(s.color for s in shapes)
    candidates = [_qa("how many", "shapes are there?", "number", str(len(shapes)))]
    # yes/no: present or absent with equal odds, so "yes" is not a free win.
    absent = [k for k in SHAPES if k not in kinds]
    present = sorted(kinds, key=SHAPES.index)
    if absent and rng.random() < 0.5:
        asked, yes = absent[int(rng.integers(len(absent)))], "no"
    else:
        asked, yes = present[int(rng.integers(len(present)))], "yes"
    candidates.append(_qa("is there a", f"{asked}?", "yes/no", yes))
    unique_kinds = [s for s in shapes if kinds[s.kind] == 1]
    if unique_kinds:
        s = unique_kinds[int(rng.integers(len(unique_kinds)))]
        candidates.append(_qa("what color is the", f"{s.kind}?", "other", s.color))
    unique_colors = [s for s in shapes if colors[s.color] == 1]
    if unique_colors:
        s = unique_colors[int(rng.integers(len(unique_colors)))]
        candidates.append(_qa("what shape is the", f"{s.color} object?", "other", s.kind))
    k = min(len(candidates), int(rng.integers(2, 4)))
    picked = sorted(rng.choice(len(candidates), size=k, replace=False).tolist())
    return [candidates[i] for i in picked]


def human_answers(rng: np.random.Generator, q: dict[str, Any]) -> list[str]:
    """Ten answers: at least seven exactly right, the rest a synonym or a plausible mistake."""
    truth: str = q["answer"]
    answers = [truth] * 10
    for i in rng.choice(10, size=int(rng.integers(0, 4)), replace=False).tolist():
        answers[i] = _variant(rng, q["question_type"], truth)
    return answers


def _variant(rng: np.random.Generator, qtype: str, truth: str) -> str:
    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    synonym = rng.random() < 0.6
    if qtype == "how many":
        n = int(truth)
        if synonym:
            return _number(n)  # "two" for "2": equal after VQA answer normalisation
        return str(n + 1 if n == 1 or rng.random() < 0.5 else n - 1)
    if qtype == "is there a":
        return "no" if truth == "yes" else "yes"
    if qtype == "what color is the":
        if synonym and truth in _COLOR_SYNONYMS:
            return pick(_COLOR_SYNONYMS[truth])
        return pick([c for c in COLORS if c != truth])
    if synonym:
        return pick(_SHAPE_SYNONYMS[truth])
    return pick([s for s in SHAPES if s != truth])


def most_frequent(answers: list[str]) -> str:
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)  # first seen among the most frequent


# --- writing -------------------------------------------------------------------------------------------


def _write_all(root: Path, params: dict[str, Any], progress: bool) -> dict[str, Any]:
    n_train, n_val, size, seed = params["n_train"], params["n_val"], params["image_size"], params["seed"]
    extra = params.get("extra_tasks", [])
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    counts: dict[str, dict[str, int]] = {f: {} for f in FORMATS}
    objects: dict[str, int] = {}
    classes: dict[str, dict[str, int]] = {}
    ann_id = cap_id = cap_de_id = 1  # running across splits: ids stay unique over the whole set
    ranges = {"train": range(0, n_train), "val": range(n_train, n_train + n_val)}
    n_sets = 1 + sum(t in extra for t in ("refer", "ocr"))
    bar = tqdm(
        total=(n_train + n_val) * n_sets, desc="shapes", unit=" img", disable=not progress, leave=False
    )
    for split in SPLITS:
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True)
        for kind in SHAPES:
            (root / "imagefolder" / split / kind).mkdir(parents=True)
        images: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        caps: list[dict[str, Any]] = []
        caps_de: list[dict[str, Any]] = []
        vqa_q: list[dict[str, Any]] = []
        vqa_a: list[dict[str, Any]] = []
        per_class: Counter[str] = Counter()
        for image_id in ranges[split]:
            rng = np.random.default_rng([seed, image_id])
            pixels, shapes = draw_image(rng, size, params["max_shapes"], tuple(params["shape_size"]))
            file_name = f"{image_id:06d}.png"
            png = _png_bytes(pixels)
            (image_dir / file_name).write_bytes(png)
            label = dominant(shapes)
            per_class[label] += 1
            (root / "imagefolder" / split / label / file_name).write_bytes(png)

            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for s in shapes:
                instances.append(_coco_annotation(ann_id, image_id, cat_id[s.kind], s.box, s.area))
                ann_id += 1
            plan = caption_plan(rng, shapes)
            for text in render_captions(shapes, plan):
                caps.append({"id": cap_id, "image_id": image_id, "caption": text})
                cap_id += 1
            if "captions_de" in extra:
                for text in render_captions_de(shapes, plan):
                    caps_de.append({"id": cap_de_id, "image_id": image_id, "caption": text})
                    cap_de_id += 1
            for k, q in enumerate(questions(rng, shapes)):
                qid = image_id * 10 + k
                vqa_q.append({"image_id": image_id, "question": q["question"], "question_id": qid})
                answers = human_answers(rng, q)
                vqa_a.append(
                    {
                        "question_id": qid,
                        "image_id": image_id,
                        "question_type": q["question_type"],
                        "answer_type": q["answer_type"],
                        "multiple_choice_answer": most_frequent(answers),
                        "answers": [
                            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                            for i, a in enumerate(answers)
                        ],
                    }
                )
            bar.update()

        info, licenses = _INFO, _LICENSES
        ann_dir = root / "annotations"
        _write_json(
            ann_dir / f"instances_{split}.json",
            {
                "info": info,
                "licenses": licenses,
                "images": images,
                "annotations": instances,
                "categories": categories,
            },
        )
        _write_json(
            ann_dir / f"captions_{split}.json",
            {"info": info, "licenses": licenses, "images": images, "annotations": caps},
        )
        if "captions_de" in extra:
            _write_json(
                root / CAPTIONS_DE.format(split=split),
                {"info": info, "licenses": licenses, "images": images, "annotations": caps_de},
            )
            counts.setdefault("coco_captions_de", {})[split] = len(images)
        _write_json(
            ann_dir / f"v2_OpenEnded_shapes_{split}_questions.json",
            {
                "info": {},
                "task_type": "Open-Ended",
                "data_type": "shapes",
                "data_subtype": split,
                "questions": vqa_q,
            },
        )
        _write_json(
            ann_dir / f"v2_shapes_{split}_annotations.json",
            {"info": {}, "data_type": "shapes", "data_subtype": split, "annotations": vqa_a},
        )
        counts["coco_detection"][split] = len(images)
        counts["coco_captions"][split] = len(images)
        counts["vqav2"][split] = len(vqa_q)
        counts["image_folder"][split] = len(images)
        objects[split] = len(instances)
        classes[split] = {k: per_class[k] for k in SHAPES}
    summary = {"counts": counts, "objects": objects, "classes": classes, "categories": list(SHAPES)}
    if "refer" in extra:
        summary["refer"] = _write_refer(root, ranges, size, seed, categories, bar)
        counts["refcoco"] = summary["refer"]["refs"]
    if "ocr" in extra:
        summary["ocr"] = _write_ocr(root, ranges, size, seed, bar)
        counts["jsonl"] = summary["ocr"]["images"]
    bar.close()
    return summary


_INFO = {"description": "uvft synthetic shapes", "version": "1.0", "contributor": "uvft"}
_LICENSES = [{"id": 1, "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}]


def _write_refer(
    root: Path,
    ranges: dict[str, range],
    size: int,
    seed: int,
    categories: list[dict[str, Any]],
    bar: Any,
) -> dict[str, dict[str, int]]:
    """Referring scenes as RefCOCO ships them: one instances.json for all splits (file names
    relative to images/), and refs(unc).p, a protocol-2 pickle of one ref per object."""
    cat_id = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = {"images": {}, "refs": {}, "sentences": {}}
    ann_id, ref_id, sent_id = 1, 0, 0  # as in lichengunc/refer: ref and sentence ids from 0
    for split in SPLITS:
        folder = f"refer_{split}"
        (root / "images" / folder).mkdir(parents=True)
        n_refs = n_sents = 0
        for image_id in ranges[split]:
            rng = np.random.default_rng([seed, image_id, _REFER_STREAM])
            pixels, scene = draw_refer_scene(rng, size)
            file_name = f"{folder}/{image_id:06d}.png"
            (root / "images" / file_name).write_bytes(_png_bytes(pixels))
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for target in scene:
                annotations.append(
                    _coco_annotation(
                        ann_id, image_id, cat_id[target.kind], target.box, target.area, [list(target.polygon)]
                    )
                )
                # two or three of its phrases (fewer where fewer exist), as people give 2-3 per object
                phrases = referring_phrases(target, scene)
                keep = min(len(phrases), int(rng.integers(2, 4)))
                chosen = [phrases[i] for i in rng.permutation(len(phrases))[:keep]]
                sentences = [
                    {"sent": p, "raw": p, "tokens": p.split(), "sent_id": sent_id + i}
                    for i, p in enumerate(chosen)
                ]
                refs.append(
                    {
                        "ref_id": ref_id,
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "split": split,
                        "category_id": cat_id[target.kind],
                        "sent_ids": [x["sent_id"] for x in sentences],
                        # not a file: the image's name with the ann_id appended, as refer writes it
                        "file_name": f"{image_id:06d}_{ann_id}.jpg",
                        "sentences": sentences,
                    }
                )
                sent_id += len(sentences)
                n_sents += len(sentences)
                ann_id += 1
                ref_id += 1
                n_refs += 1
            bar.update()
        stats["images"][split] = len(ranges[split])
        stats["refs"][split] = n_refs
        stats["sentences"][split] = n_sents
    (root / "refer").mkdir()
    _write_json(
        root / REFER_INSTANCES,
        {
            "info": _INFO,
            "licenses": _LICENSES,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        },
    )
    (root / REFER_REFS).write_bytes(pickle.dumps(refs, protocol=2))
    return stats


def _write_ocr(
    root: Path, ranges: dict[str, range], size: int, seed: int, bar: Any
) -> dict[str, dict[str, int]]:
    """OCR images and one JSONL file per split: the text in reading order and each word's box."""
    (root / "ocr").mkdir()
    stats: dict[str, dict[str, int]] = {"images": {}, "words": {}}
    for split in SPLITS:
        folder = root / "images" / f"ocr_{split}"
        folder.mkdir(parents=True)
        lines = []
        n_words = 0
        for image_id in ranges[split]:
            rng = np.random.default_rng([seed, image_id, _OCR_STREAM])
            pixels, regions = draw_ocr_image(rng, size)
            (folder / f"{image_id:06d}.png").write_bytes(_png_bytes(pixels))
            line = {
                "id": image_id,
                "task": "ocr",
                "image": f"ocr_{split}/{image_id:06d}.png",  # relative to images/ (jsonl: images: images)
                "text": " ".join(word for word, _ in regions),
                "regions": [{"text": word, "bbox": list(box)} for word, box in regions],
            }
            lines.append(json.dumps(line, ensure_ascii=True, separators=(",", ":")) + "\n")
            n_words += len(regions)
            bar.update()
        (root / OCR_JSONL.format(split=split)).write_text("".join(lines), encoding="utf-8")
        stats["images"][split] = len(ranges[split])
        stats["words"][split] = n_words
    return stats


def _coco_annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    box: tuple[int, int, int, int],
    area: int,
    segmentation: list[list[float]] | None = None,
) -> dict[str, Any]:
    """A COCO instances annotation (xywh bbox) in the key order the set's JSON has always had; the
    referring scenes add their polygon `segmentation` before `area`."""
    x1, y1, x2, y2 = box
    ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category_id}
    ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    if segmentation is not None:
        ann["segmentation"] = segmentation
    ann.update(area=area, iscrowd=0)
    return ann


def _png_bytes(pixels: np.ndarray) -> bytes:
    # No pnginfo: PIL then writes no text or time chunks, so the bytes depend on pixels alone.
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n", encoding="utf-8")


def _write_readme(root: Path, params: dict[str, Any], summary: dict[str, Any]) -> None:
    c, objects = summary["counts"], summary["objects"]
    size, max_shapes = params["image_size"], params["max_shapes"]
    args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in params.items())
    command = f"generate(Path('<out>'), {args})"
    rows = "\n".join(
        f"| {split} | {c['coco_detection'][split]} | {objects[split]} | {5 * c['coco_captions'][split]} "
        f"| {c['vqav2'][split]} |"
        for split in SPLITS
    )
    text = f"""{README_TITLE}

Synthetic images of 1 to {max_shapes} coloured shapes ({", ".join(SHAPES)}; colours
{", ".join(COLORS)}) on light backgrounds, {size}x{size} px, written in the on-disk formats of COCO
(instances and captions), VQAv2 (questions and annotations) and ImageFolder, so the uvft demo recipe
runs the same readers as the real data. Boxes are the exact tight pixel boxes of the drawn shapes.
The ImageFolder class of an image is its largest shape (most drawn pixels). See data_cards/shapes.md.

Generated deterministically (same arguments, byte-identical files) by:

    python -c "from pathlib import Path; from pipeline.data.shapes import generate; {command}"

| split | images | objects | captions | questions |
|-------|--------|---------|----------|-----------|
{rows}

{_extra_readme(params, summary)}License: Apache-2.0 (generated data).
"""
    (root / "README.md").write_text(text, encoding="utf-8")


def _extra_readme(params: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README's section on the extra sets ("" without extra tasks: the README is unchanged)."""
    extra = params.get("extra_tasks", [])
    size = params["image_size"]
    parts = []
    if "refer" in extra:
        r = summary["refer"]
        rows = "\n".join(
            f"| {split} | {r['images'][split]} | {r['refs'][split]} | {r['sentences'][split]} |"
            for split in SPLITS
        )
        parts.append(f"""## Referring expressions (grounding, referring segmentation)

Scenes of {REFER_SHAPES[0]} or {REFER_SHAPES[1]} shapes, no two of the same colour and shape,
{size}x{size} px, in images/refer_{{train,val}}/, laid out as RefCOCO ships them (lichengunc/refer):

- {REFER_INSTANCES}: COCO instances of these images, both splits, `file_name` relative to
  images/; each `segmentation` is the polygon the shape was drawn from.
- {REFER_REFS}: a protocol-2 pickle of one ref per object (ref_id, ann_id, image_id, split,
  category_id, sent_ids, file_name (not a file), sentences with sent, raw, tokens, sent_id).

Every phrase ("the red circle", "the circle", "the red shape", "the left circle", "the shape at
the top") picks out exactly one object of its scene.

| split | images | refs | phrases |
|-------|--------|------|---------|
{rows}
""")
    if "ocr" in extra:
        o = summary["ocr"]
        rows = "\n".join(f"| {split} | {o['images'][split]} | {o['words'][split]} |" for split in SPLITS)
        parts.append(f"""## OCR

1 to {OCR_MAX_WORDS} words (colour and shape names, digits) in Pillow's bitmap font, one per line, in a
dark colour, {size}x{size} px, in images/ocr_{{train,val}}/. {OCR_JSONL.format(split="{train,val}")} has one
JSON object per image: id, task "ocr", image (relative to images/), text (the words
top to bottom, joined by spaces) and regions (each word's text and tight pixel box x1, y1, x2, y2).

| split | images | words |
|-------|--------|-------|
{rows}
""")
    if "captions_de" in extra:
        parts.append(f"""## German captions

{CAPTIONS_DE.format(split="{train,val}")}: COCO captions of the main images, five per image, the
translations of the English five ("ein roter Kreis und zwei blaue Rauten").
""")
    return "".join(part + "\n" for part in parts)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError("exists and is not a folder; choose another path for the shapes set", file=out)
    readme = out / "README.md"
    is_shapes = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_TITLE)
    if not is_shapes and any(out.iterdir()):
        raise DataError(
            "exists and does not hold a shapes set; remove it or choose another path (not deleting it)",
            file=out,
        )


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an earlier `out` is moved aside first and removed only afterwards."""
    old: Path | None = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
