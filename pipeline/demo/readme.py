"""The shapes set's README.md: what the set holds, the call that wrote it, a table of counts per
split and a section per extra set. Its first line (README_TITLE) is how `generate` knows a folder
as an earlier shapes set it may replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.demo.draw import COLORS, OCR_MAX_WORDS, REFER_SHAPES, SHAPES
from pipeline.demo.layout import (
    CAPTIONS_DE,
    CAPTIONS_DE_SET,
    DETAILED_CAPTIONS,
    OCR_JSONL,
    OCR_SET,
    OCR_TEXT_JSONL,
    README,
    README_TITLE,
    REFER_INSTANCES,
    REFER_REFS,
    REFER_SET,
    REGION_OCR_JSONL,
    REGIONS_INSTANCES,
    REGIONS_SET,
    SPLITS,
    VG_IMAGES,
    VG_REGIONS,
)


def write_readme(root: Path, params: dict[str, Any], summary: dict[str, Any]) -> None:
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

    python -c "from pathlib import Path; from pipeline.demo.shapes import generate; {command}"

| split | images | objects | captions | questions |
|-------|--------|---------|----------|-----------|
{rows}

{_extra_readme(params, summary)}License: Apache-2.0 (generated data).
"""
    (root / README).write_text(text, encoding="utf-8")


def _extra_readme(params: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README's section on the extra sets ("" without extra tasks: the README is unchanged)."""
    extra = params.get("extra_tasks", [])
    size = params["image_size"]
    parts = []
    if REFER_SET in extra:
        r = summary[REFER_SET]
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
    if OCR_SET in extra:
        o = summary[OCR_SET]
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
    if CAPTIONS_DE_SET in extra:
        parts.append(f"""## German captions

{CAPTIONS_DE.format(split="{train,val}")}: COCO captions of the main images, five per image, the
translations of the English five ("ein roter Kreis und zwei blaue Rauten").
""")
    if REGIONS_SET in extra:
        g = summary[REGIONS_SET]
        rows = "\n".join(
            f"| {split} | {g['regions'][split]} | {g['captions'][split]} | {g['words'][split]} |"
            for split in SPLITS
        )
        parts.append(f"""## Regions (Florence-2's region tasks)

About the referring scenes and the OCR images above:

- {REGIONS_INSTANCES.format(split="{train,val}")}: COCO instances of the referring scenes, one file
  per split (`file_name` relative to images/, polygon `segmentation`s): region proposals,
  open-vocabulary detection, region -> category and region -> mask.
- {VG_REGIONS.format(split="{train,val}")} and {VG_IMAGES.format(split="{train,val}")}: Visual
  Genome 1.2's layout, one region per shape (x, y, width, height) described by its colour, its
  shape and, where its box lies on one side of all others, where it is ("red circle on the left");
  image_data.json's urls end in the file names under images/refer_<split>/.
- {DETAILED_CAPTIONS.format(split="{train,val}")}: per scene a caption of level "detailed" (every
  shape, left to right, in one sentence) and one of level "paragraph" (a sentence per shape).
- {REGION_OCR_JSONL.format(split="{train,val}")}: one line per word of the OCR images: task
  region_to_ocr, its box as `region` and the word as `text`.
- {OCR_TEXT_JSONL.format(split="{train,val}")}: the OCR images' text without regions (task ocr,
  Florence-2's `<OCR>`).

| split | regions | captions | words |
|-------|---------|----------|-------|
{rows}
""")
    return "".join(part + "\n" for part in parts)
