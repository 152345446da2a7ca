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

Everything is a pure function of the arguments: each image draws from its own generator seeded by
(seed, image_id), PNGs carry no metadata and JSON is written in a fixed key order, so two runs give
byte-identical trees. The set is written into a temporary folder next to `out` and renamed into
place, so an interrupted run never leaves a half dataset behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
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


def written_params(out: Path) -> dict[str, Any] | None:
    """The arguments a shapes set in `out` was generated with (None: no shapes set, or one written
    before the arguments were recorded)."""
    path = Path(out) / PARAMS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_GAP = 2  # pixels kept free between shape boxes, so every box stays tight in the composed image
_TRIES = 50  # placement attempts per shape before settling for fewer shapes

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
    progress: bool = True,
) -> dict[str, Any]:
    """Write the shapes set to `out`; return {"path", "counts": {format: {split: n}}, "objects", ...}.

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
    _check_replaceable(out)

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset folder should be readable like any other
        params = {
            "n_train": n_train,
            "n_val": n_val,
            "image_size": image_size,
            "max_shapes": max_shapes,
            "shape_size": [lo, hi],
            "seed": seed,
        }
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
    shapes: list[Shape] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(wanted):
        for _ in range(_TRIES):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            side = int(rng.integers(min_side, max_side + 1))
            x0 = int(rng.integers(0, size - side + 1))
            y0 = int(rng.integers(0, size - side + 1))
            mask = _shape_mask(kind, side)
            ys, xs = np.nonzero(mask)
            box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
            if any(_near(box, other) for other in taken):
                continue
            canvas[y0 : y0 + side, x0 : x0 + side][mask] = COLORS[color]
            taken.append(box)
            shapes.append(Shape(kind, color, box, int(mask.sum())))
            break
    return canvas, shapes


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


def captions(rng: np.random.Generator, shapes: list[Shape]) -> list[str]:
    """Five references in different styles; all name every shape with its colour."""
    groups = _groups(shapes)
    n = len(shapes)

    def shuffled() -> list[str]:
        return [groups[i] for i in rng.permutation(len(groups))]

    first = _join(shuffled()) + "."
    first = first[0].upper() + first[1:]
    counted = f"{_number(n)} shape{'s' if n > 1 else ''}: {_join(shuffled())}"
    order = shuffled()
    if len(order) > 1:
        beside = f"{order[0]} next to {_join(order[1:])}"
    elif n == 1:
        beside = f"{order[0]} on a plain background"
    else:
        beside = f"{order[0]} side by side"
    left_to_right = [f"a {s.phrase}" for s in sorted(shapes, key=lambda s: (s.box[0] + s.box[2], s.box[1]))]
    if n == 1:
        positional = f"a single {shapes[0].phrase} in the picture"
    else:
        positional = "from left to right: " + _join(left_to_right)
    tone = ("light", "pale", "plain")[int(rng.integers(3))]
    scene = f"a simple drawing of {_join(shuffled())} on a {tone} background"
    return [first, counted, beside, positional, scene]


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
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    counts: dict[str, dict[str, int]] = {f: {} for f in FORMATS}
    objects: dict[str, int] = {}
    classes: dict[str, dict[str, int]] = {}
    ann_id = cap_id = 1  # running across splits: ids stay unique over the whole set
    ranges = {"train": range(0, n_train), "val": range(n_train, n_train + n_val)}
    bar = tqdm(total=n_train + n_val, desc="shapes", unit=" img", disable=not progress, leave=False)
    for split in SPLITS:
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True)
        for kind in SHAPES:
            (root / "imagefolder" / split / kind).mkdir(parents=True)
        images: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        caps: list[dict[str, Any]] = []
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
                x1, y1, x2, y2 = s.box
                instances.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat_id[s.kind],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": s.area,
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
            for text in captions(rng, shapes):
                caps.append({"id": cap_id, "image_id": image_id, "caption": text})
                cap_id += 1
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

        info = {"description": "uvft synthetic shapes", "version": "1.0", "contributor": "uvft"}
        licenses = [{"id": 1, "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}]
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
    bar.close()
    return {"counts": counts, "objects": objects, "classes": classes, "categories": list(SHAPES)}


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

License: Apache-2.0 (generated data).
"""
    (root / "README.md").write_text(text, encoding="utf-8")


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
