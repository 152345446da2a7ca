"""The synthetic "shapes" demo set: coloured shapes on light backgrounds, in real on-disk formats.
This module is the set's public surface: `generate`, the arguments it records (`written_params`,
`canonical_params`) and the constants of the modules behind it (layout, draw, texts).

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
    "regions"      out/regions/instances_<split>.json            COCO instances of the referring scenes,
                                                                 per split (their region tasks)
                   out/regions/<split>/region_descriptions.json  each referring scene's shapes described
                   out/regions/<split>/image_data.json           region by region, as Visual Genome ships
                   out/regions/captions_<split>.jsonl            a detailed caption and a paragraph of
                                                                 each scene (caption levels)
                   out/ocr/region_ocr_<split>.jsonl              each OCR word: its box -> the word
                   out/ocr/ocr_text_<split>.jsonl                the OCR images' text without regions
                   (needs "refer" and "ocr": it describes their images)

Everything is a pure function of the arguments: each image draws from its own generator seeded by
(seed, image_id) (the extra image sets by (seed, image_id, purpose), so they leave the main set's
streams alone), PNGs carry no metadata and JSON is written in a fixed key order, so two runs give
byte-identical trees; without `extra_tasks` the tree is the one this module wrote before they
existed. The set is written into a temporary folder next to `out` and renamed into place, so an
interrupted run never leaves a half dataset behind.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline import folders
from pipeline.demo.draw import (
    COLORS,
    OCR_MAX_WORDS,
    OCR_WORDS,
    REFER_MIN_SIDE,
    REFER_SHAPE_SIZE,
    REFER_SHAPES,
    SHAPES,
    Shape,
    dominant,
    draw_image,
    draw_ocr_image,
    draw_refer_scene,
    word_ink,
)
from pipeline.demo.layout import (
    CAPTIONS,
    CAPTIONS_DE,
    CAPTIONS_DE_SET,
    DETAILED_CAPTIONS,
    EXTRA_TASKS,
    FORMATS,
    IMAGES,
    INSTANCES,
    MAIN_IMAGES,
    OCR_IMAGES,
    OCR_JSONL,
    OCR_SET,
    OCR_TEXT_JSONL,
    PARAMS_FILE,
    README,
    README_TITLE,
    REFER_IMAGES,
    REFER_INSTANCES,
    REFER_REFS,
    REFER_SET,
    REGION_OCR_JSONL,
    REGIONS_INSTANCES,
    REGIONS_NEEDS,
    REGIONS_SET,
    SPLITS,
)
from pipeline.demo.readme import write_readme
from pipeline.demo.texts import (
    DIRECTIONS,
    PLURALS,
    CaptionPlan,
    caption_plan,
    captions,
    detailed_caption,
    human_answers,
    most_frequent,
    paragraph,
    pick_phrases,
    questions,
    referring_phrases,
    region_description,
    render_captions,
    render_captions_de,
)
from pipeline.demo.writers import (
    caption_line,
    coco_annotation,
    coco_caption,
    coco_categories,
    coco_image,
    make_image_folder,
    ocr_line,
    ocr_text_line,
    png_bytes,
    refcoco_ref,
    region_ocr_lines,
    vg_image,
    vg_region,
    vqa_annotation,
    vqa_question,
    write_coco_captions,
    write_coco_instances,
    write_image_folder_image,
    write_json,
    write_lines,
    write_ocr_jsonl,
    write_refcoco,
    write_visual_genome,
    write_vqav2,
)
from pipeline.errors import DataError

__all__ = [
    "CAPTIONS_DE",
    "COLORS",
    "DIRECTIONS",
    "EXTRA_TASKS",
    "FORMATS",
    "OCR_JSONL",
    "OCR_MAX_WORDS",
    "OCR_WORDS",
    "PARAMS_FILE",
    "PLURALS",
    "README_TITLE",
    "REFER_INSTANCES",
    "REFER_MIN_SIDE",
    "REFER_REFS",
    "REFER_SHAPES",
    "REFER_SHAPE_SIZE",
    "SHAPES",
    "SPLITS",
    "CaptionPlan",
    "Shape",
    "canonical_params",
    "caption_plan",
    "captions",
    "dominant",
    "draw_image",
    "draw_ocr_image",
    "draw_refer_scene",
    "generate",
    "human_answers",
    "most_frequent",
    "questions",
    "referring_phrases",
    "render_captions",
    "render_captions_de",
    "word_ink",
    "written_params",
]

logger = logging.getLogger(__name__)

# The third word of the extra sets' per-image seeds: (seed, image_id) alone is the main set's.
_REFER_STREAM, _OCR_STREAM = 1, 2


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
    if REGIONS_SET in extra and not set(REGIONS_NEEDS) <= set(extra):
        raise ValueError(
            f"extra task {REGIONS_SET} describes the images of {' and '.join(REGIONS_NEEDS)}: name them too"
        )
    if extra:
        out["extra_tasks"] = [t for t in EXTRA_TASKS if t in extra]
    return out


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
    # written whole beside `out` and swapped in, under `out`'s lock (a second build waits for it)
    with folders.writing(out, "uvft data demo", owned=_is_shapes, wait=True) as tmp:
        summary = _write_all(tmp, params, progress)
        write_readme(tmp, params, summary)
        write_json(tmp / PARAMS_FILE, params)
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


# --- writing -------------------------------------------------------------------------------------------


def _write_all(root: Path, params: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Every file of the set but README.md and shapes.json; returns what `generate` reports."""
    n_train, n_val = params["n_train"], params["n_val"]
    extra = params.get("extra_tasks", [])
    ranges = {"train": range(0, n_train), "val": range(n_train, n_train + n_val)}
    n_sets = 1 + sum(t in extra for t in (REFER_SET, OCR_SET))
    bar = tqdm(
        total=(n_train + n_val) * n_sets, desc="shapes", unit=" img", disable=not progress, leave=False
    )
    categories = coco_categories(SHAPES)
    summary = _write_main(root, params, ranges, categories, bar)
    if REFER_SET in extra:
        summary[REFER_SET] = _write_refer(root, params, ranges, categories, bar)
        summary["counts"]["refcoco"] = summary[REFER_SET]["refs"]
    if OCR_SET in extra:
        summary[OCR_SET] = _write_ocr(root, params, ranges, bar)
        summary["counts"]["jsonl"] = summary[OCR_SET]["images"]
    if REGIONS_SET in extra:
        summary[REGIONS_SET] = _write_regions(root, params, ranges, categories)
    bar.close()
    return summary


@dataclass
class _Ids:
    """The main set's next annotation and caption ids: running across splits, so that ids stay
    unique over the whole set."""

    ann: int = 1
    cap: int = 1
    cap_de: int = 1


@dataclass
class _Split:
    """One split of the main set, as its writers take it."""

    images: list[dict[str, Any]] = field(default_factory=list)  # COCO images, shared by both COCO files
    instances: list[dict[str, Any]] = field(default_factory=list)
    captions: list[dict[str, Any]] = field(default_factory=list)
    captions_de: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # VQAv2 annotations
    classes: Counter[str] = field(default_factory=Counter)  # ImageFolder images per class


def _write_main(
    root: Path, params: dict[str, Any], ranges: dict[str, range], categories: list[dict[str, Any]], bar: Any
) -> dict[str, Any]:
    """The main set, split by split: its images (images/ and imagefolder/) as they are drawn, then
    its COCO and VQAv2 files (and the German captions when asked for)."""
    german = CAPTIONS_DE_SET in params.get("extra_tasks", [])
    (root / "annotations").mkdir(parents=True)
    counts: dict[str, dict[str, int]] = {f: {} for f in FORMATS}
    objects: dict[str, int] = {}
    classes: dict[str, dict[str, int]] = {}
    ids = _Ids()
    for split in SPLITS:
        s = _draw_main_split(root, split, ranges[split], params, categories, ids, german, bar)
        write_coco_instances(root / INSTANCES.format(split=split), s.images, s.instances, categories)
        write_coco_captions(root / CAPTIONS.format(split=split), s.images, s.captions)
        if german:
            write_coco_captions(root / CAPTIONS_DE.format(split=split), s.images, s.captions_de)
            counts.setdefault("coco_captions_de", {})[split] = len(s.images)
        write_vqav2(root, split, s.questions, s.answers)
        counts["coco_detection"][split] = len(s.images)
        counts["coco_captions"][split] = len(s.images)
        counts["vqav2"][split] = len(s.questions)
        counts["image_folder"][split] = len(s.images)
        objects[split] = len(s.instances)
        classes[split] = {k: s.classes[k] for k in SHAPES}
    return {"counts": counts, "objects": objects, "classes": classes, "categories": list(SHAPES)}


def _draw_main_split(
    root: Path,
    split: str,
    image_ids: range,
    params: dict[str, Any],
    categories: list[dict[str, Any]],
    ids: _Ids,
    german: bool,
    bar: Any,
) -> _Split:
    """Each image of one split from its own generator seeded by (seed, image_id): drawn, written to
    images/ and imagefolder/, then worded (captions, questions, answers) from the same stream."""
    size, seed = params["image_size"], params["seed"]
    cat_id = {c["name"]: c["id"] for c in categories}
    image_dir = root / IMAGES / MAIN_IMAGES.format(split=split)
    image_dir.mkdir(parents=True)
    make_image_folder(root, split, SHAPES)
    s = _Split()
    for image_id in image_ids:
        rng = np.random.default_rng([seed, image_id])
        pixels, drawn = draw_image(rng, size, params["max_shapes"], tuple(params["shape_size"]))
        file_name = f"{image_id:06d}.png"
        png = png_bytes(pixels)
        (image_dir / file_name).write_bytes(png)
        label = dominant(drawn)
        s.classes[label] += 1
        write_image_folder_image(root, split, label, file_name, png)

        s.images.append(coco_image(image_id, file_name, size))
        for shape in drawn:
            s.instances.append(coco_annotation(ids.ann, image_id, cat_id[shape.kind], shape.box, shape.area))
            ids.ann += 1
        plan = caption_plan(rng, drawn)
        for text in render_captions(drawn, plan):
            s.captions.append(coco_caption(ids.cap, image_id, text))
            ids.cap += 1
        if german:
            for text in render_captions_de(drawn, plan):
                s.captions_de.append(coco_caption(ids.cap_de, image_id, text))
                ids.cap_de += 1
        for k, qa in enumerate(questions(rng, drawn)):
            qid = image_id * 10 + k
            s.questions.append(vqa_question(image_id, qid, qa["question"]))
            answers = human_answers(rng, qa)
            s.answers.append(vqa_annotation(qid, image_id, qa, answers, most_frequent(answers)))
        bar.update()
    return s


def _write_refer(
    root: Path, params: dict[str, Any], ranges: dict[str, range], categories: list[dict[str, Any]], bar: Any
) -> dict[str, dict[str, int]]:
    """Referring scenes, each from its own stream (seed, image_id, _REFER_STREAM), in
    images/refer_<split>/: one ref per object with two or three of its phrases, written as RefCOCO
    ships them."""
    size, seed = params["image_size"], params["seed"]
    cat_id = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = {"images": {}, "refs": {}, "sentences": {}}
    ann_id, ref_id, sent_id = 1, 0, 0  # as in lichengunc/refer: ref and sentence ids from 0
    for split in SPLITS:
        folder = REFER_IMAGES.format(split=split)
        (root / IMAGES / folder).mkdir(parents=True)
        n_refs = n_sents = 0
        for image_id in ranges[split]:
            rng = np.random.default_rng([seed, image_id, _REFER_STREAM])
            pixels, scene = draw_refer_scene(rng, size)
            file_name = f"{folder}/{image_id:06d}.png"
            (root / IMAGES / file_name).write_bytes(png_bytes(pixels))
            images.append(coco_image(image_id, file_name, size))
            for target in scene:
                category = cat_id[target.kind]
                polygons = [list(target.polygon)]
                annotations.append(
                    coco_annotation(ann_id, image_id, category, target.box, target.area, polygons)
                )
                phrases = pick_phrases(rng, target, scene)
                refs.append(refcoco_ref(ref_id, ann_id, image_id, split, category, phrases, sent_id))
                sent_id += len(phrases)
                n_sents += len(phrases)
                ann_id += 1
                ref_id += 1
                n_refs += 1
            bar.update()
        stats["images"][split] = len(ranges[split])
        stats["refs"][split] = n_refs
        stats["sentences"][split] = n_sents
    write_refcoco(root, images, annotations, categories, refs)
    return stats


def _write_ocr(
    root: Path, params: dict[str, Any], ranges: dict[str, range], bar: Any
) -> dict[str, dict[str, int]]:
    """OCR images, each from its own stream (seed, image_id, _OCR_STREAM), in images/ocr_<split>/,
    and one JSONL file per split."""
    size, seed = params["image_size"], params["seed"]
    stats: dict[str, dict[str, int]] = {"images": {}, "words": {}}
    for split in SPLITS:
        folder = OCR_IMAGES.format(split=split)
        (root / IMAGES / folder).mkdir(parents=True)
        lines = []
        n_words = 0
        for image_id in ranges[split]:
            rng = np.random.default_rng([seed, image_id, _OCR_STREAM])
            pixels, regions = draw_ocr_image(rng, size)
            file_name = f"{folder}/{image_id:06d}.png"
            (root / IMAGES / file_name).write_bytes(png_bytes(pixels))
            lines.append(ocr_line(image_id, file_name, regions))
            n_words += len(regions)
            bar.update()
        write_ocr_jsonl(root, split, lines)
        stats["images"][split] = len(ranges[split])
        stats["words"][split] = n_words
    return stats


def _write_regions(
    root: Path, params: dict[str, Any], ranges: dict[str, range], categories: list[dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Florence-2's region tasks on the referring scenes and the OCR images (drawn again from their
    own streams, so the same scenes): COCO instances of the scenes per split (proposals,
    open-vocabulary detection, region -> category / mask), each shape's description in Visual
    Genome's layout, a detailed caption and a paragraph per scene (JSONL with levels), and one
    JSONL line per word."""
    size, seed = params["image_size"], params["seed"]
    cat_id = {c["name"]: c["id"] for c in categories}
    stats: dict[str, dict[str, int]] = {"regions": {}, "captions": {}, "words": {}}
    region_id = 1
    for split in SPLITS:
        images, coco_images, annotations, regions, captions, words, texts = [], [], [], {}, [], [], []
        for image_id in ranges[split]:
            _, scene = draw_refer_scene(np.random.default_rng([seed, image_id, _REFER_STREAM]), size)
            file_name = f"{image_id:06d}.png"
            image = f"{REFER_IMAGES.format(split=split)}/{file_name}"
            images.append(vg_image(image_id, file_name, size))
            coco_images.append(coco_image(image_id, image, size))
            regions[image_id] = []
            for shape in scene:
                description = region_description(shape, scene)
                regions[image_id].append(vg_region(region_id, image_id, description, shape.box))
                polygons = [list(shape.polygon)]
                annotations.append(
                    coco_annotation(region_id, image_id, cat_id[shape.kind], shape.box, shape.area, polygons)
                )
                region_id += 1
            captions.append(caption_line(f"{image_id}-detailed", image, detailed_caption(scene), "detailed"))
            captions.append(caption_line(f"{image_id}-paragraph", image, paragraph(scene), "paragraph"))
            _, found = draw_ocr_image(np.random.default_rng([seed, image_id, _OCR_STREAM]), size)
            ocr_image = f"{OCR_IMAGES.format(split=split)}/{file_name}"
            words += region_ocr_lines(image_id, ocr_image, found)
            texts.append(ocr_text_line(image_id, ocr_image, found))
        instances = root / REGIONS_INSTANCES.format(split=split)
        instances.parent.mkdir(parents=True, exist_ok=True)
        write_coco_instances(instances, coco_images, annotations, categories)
        write_visual_genome(root, split, images, regions)
        write_lines(root / DETAILED_CAPTIONS.format(split=split), captions)
        write_lines(root / REGION_OCR_JSONL.format(split=split), words)
        write_lines(root / OCR_TEXT_JSONL.format(split=split), texts)
        stats["regions"][split] = sum(len(r) for r in regions.values())
        stats["captions"][split] = len(captions)
        stats["words"][split] = len(words)
    return stats


def _is_shapes(out: Path) -> bool:
    readme = out / README
    return readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_TITLE)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError("exists and is not a folder; choose another path for the shapes set", file=out)
    if not _is_shapes(out) and any(out.iterdir()):
        raise DataError(
            "exists and does not hold a shapes set; remove it or choose another path (not deleting it)",
            file=out,
        )
