"""The examples: best and worst by their per-example score, each image drawn with its reference and
predicted boxes, masks and text regions, and its card of texts (HTML)."""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw

from pipeline import tasks
from pipeline.evaluation.report.tables import Generation, format_value, is_number
from pipeline.sources.images import load_image
from pipeline.tasks.task import text_rows

log = logging.getLogger(__name__)

PRED_COLOR = (230, 25, 75)  # red: what the model predicted
REF_COLOR = (60, 180, 75)  # green: the reference
ASKED_COLOR = (0, 130, 200)  # blue: the region a region_to_* prompt asked about
MIN_SIDE = 256  # small images are upscaled (nearest) so boxes and labels stay readable
MAX_SIDE = 512  # large ones are downscaled to keep the HTML small
LINE_WIDTH = 2
MASK_ALPHA = 90  # ~0.35: the image stays visible under both masks, and their overlap shows both tints


def select_examples(generations: Sequence[Generation], k: int) -> tuple[list[Generation], list[Generation]]:
    """Best (highest score first) and worst (lowest score first) examples, k in all, never repeated.

    Unscored examples are not ranked; they are shown (first k) only when no example has a score.
    """
    scored = [g for g in generations if is_number(g.get("score"))]
    if not scored:
        return list(generations[:k]), []
    ranked = sorted(scored, key=lambda g: -g["score"])  # stable: ties keep input order
    if len(ranked) <= k:
        return ranked, []
    n_best = math.ceil(k / 2)
    n_worst = k - n_best
    return ranked[:n_best], ranked[len(ranked) - n_worst :][::-1] if n_worst else []


def _load_image(gen: Generation) -> Image.Image:
    size = gen.get("image_size")
    path = gen.get("image")
    try:  # as the model saw it: EXIF orientation applied (the boxes live in that frame)
        return load_image(path)
    except (OSError, TypeError, ValueError, AttributeError) as err:
        log.warning("report: cannot open image %r of %s: %s", path, gen.get("id"), err)
        w, h = (int(size[0]), int(size[1])) if size else (64, 64)
        return Image.new("RGB", (max(w, 1), max(h, 1)), (200, 200, 200))


def _display_scale(w: int, h: int) -> float:
    longest = max(w, h)
    if longest < MIN_SIDE:
        return MIN_SIDE / longest
    if longest > MAX_SIDE:
        return MAX_SIDE / longest
    return 1.0


def render_example_image(gen: Generation) -> Image.Image:
    """The example's image, resized for display, with reference then predicted annotations drawn:
    boxes (labelled; a grounding reference with its phrase), segmentation masks as translucent fills
    with outlines, OCR text regions as quads, and the region a region_to_* prompt asked about."""
    image = _load_image(gen)
    ref_w, ref_h = gen.get("image_size") or image.size
    scale = _display_scale(*image.size)
    if scale != 1.0:
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
        image = image.resize(new_size, resample)
    # boxes are in the coordinates of image_size (the size the records were built with)
    sx, sy = image.width / ref_w, image.height / ref_h
    refs = gen.get("references") or {}
    parsed = gen.get("parsed") or {}
    ref_masks = [_points(p, sx, sy) for p in refs.get("polygons") or []]
    pred_masks = [_points(p, sx, sy) for p in parsed.get("polygons") or []]
    if ref_masks or pred_masks:
        image = _draw_masks(image, ((ref_masks, REF_COLOR), (pred_masks, PRED_COLOR)))
    decoded = parsed.get("mask")  # a mask decoded from codes (PaliGemma), a COCO RLE
    if decoded is not None:
        image = _draw_bitmask(image, decoded, PRED_COLOR)
    draw = ImageDraw.Draw(image)
    # a segmentation reference also lists the object's box; its mask already shows where it is
    ref_objects = [] if ref_masks or pred_masks or decoded is not None else refs.get("objects") or []
    pred_objects = parsed.get("objects") or []
    # a grounding reference is named by the phrase the model was given, not the source's category
    ref_label = refs.get("phrase")
    for objects, color, is_pred in ((ref_objects, REF_COLOR, False), (pred_objects, PRED_COLOR, True)):
        for obj in objects:
            x1, y1, x2, y2 = obj["bbox"]
            box = [x1 * sx, y1 * sy, max(x1 * sx, x2 * sx), max(y1 * sy, y2 * sy)]
            draw.rectangle(box, outline=color, width=LINE_WIDTH)
            label = str(ref_label if ref_label is not None and not is_pred else obj.get("category", ""))
            if is_pred and is_number(obj.get("score")):
                label += f" {obj['score']:.2f}"
            if label:
                _draw_label(draw, label, box, color, above=is_pred, image_size=image.size)
    for regions, color in ((refs.get("regions"), REF_COLOR), (parsed.get("regions"), PRED_COLOR)):
        for region in regions or []:
            quad = _points(region.get("quad") or [], sx, sy)
            if len(quad) >= 3:
                draw.polygon(quad, outline=color, width=LINE_WIDTH)
    if refs.get("region"):  # the region the prompt gave: what the answer is about
        x1, y1, x2, y2 = refs["region"]
        box = [x1 * sx, y1 * sy, max(x1 * sx, x2 * sx), max(y1 * sy, y2 * sy)]
        draw.rectangle(box, outline=ASKED_COLOR, width=LINE_WIDTH)
        _draw_label(draw, "asked", box, ASKED_COLOR, above=False, image_size=image.size)
    return image


def _points(flat: Sequence[float], sx: float, sy: float) -> list[tuple[float, float]]:
    """[x1, y1, x2, y2, ...] in image_size coordinates -> [(x, y), ...] in display coordinates."""
    return [(x * sx, y * sy) for x, y in zip(flat[0::2], flat[1::2], strict=False)]


def _draw_masks(image: Image.Image, layers: Sequence[tuple[list, tuple[int, int, int]]]) -> Image.Image:
    # one translucent layer per colour, composited in turn, so where the masks overlap both tints show
    image = image.convert("RGBA")
    for polygons, color in layers:
        polygons = [p for p in polygons if len(p) >= 3]  # fewer points enclose no area
        if not polygons:
            continue
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        layer_draw = ImageDraw.Draw(layer)
        for points in polygons:
            layer_draw.polygon(points, fill=(*color, MASK_ALPHA))
        image = Image.alpha_composite(image, layer)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    for polygons, color in layers:
        for points in polygons:
            if len(points) >= 3:
                draw.polygon(points, outline=color, width=LINE_WIDTH)
    return image


def _draw_bitmask(image: Image.Image, rle: dict, color: tuple[int, int, int]) -> Image.Image:
    """A COCO RLE mask (in image_size pixels) as a translucent fill, scaled to the display."""
    import numpy as np

    from pipeline.masks import from_rle

    mask = from_rle(rle)
    alpha = Image.fromarray((mask * MASK_ALPHA).astype(np.uint8)).resize(image.size, Image.Resampling.NEAREST)
    layer = Image.new("RGBA", image.size, (*color, 0))
    layer.putalpha(alpha)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _draw_label(draw, label, box, color, *, above: bool, image_size: tuple[int, int]) -> None:
    # predictions are labelled above their box, references inside it, so the two rarely overlap
    left, top, right, bottom = draw.textbbox((0, 0), label)
    tw, th = right - left + 4, bottom - top + 4
    x = min(max(box[0], 0), max(image_size[0] - tw, 0))
    y = box[1] - th if above else box[1] + LINE_WIDTH
    y = min(max(y, 0), max(image_size[1] - th, 0))
    draw.rectangle([x, y, x + tw, y + th], fill=color)
    draw.text((x + 2 - left, y + 2 - top), label, fill=(255, 255, 255))


def png_base64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _references_text(refs: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    if refs.get("label") is not None:
        out.append(("label", str(refs["label"])))
    if refs.get("captions"):
        out.append(("captions", " | ".join(map(str, refs["captions"]))))
    if refs.get("answers"):
        answers = ", ".join(map(str, refs["answers"]))
        if refs.get("answer_type"):
            answers += f" ({refs['answer_type']})"
        out.append(("answers", answers))
    if refs.get("objects"):
        out.append(("objects", ", ".join(str(o.get("category", "")) for o in refs["objects"])))
    if refs.get("phrase") is not None:
        out.append(("phrase", str(refs["phrase"])))
    if refs.get("text") is not None:
        out.append(("text", str(refs["text"])))
    if refs.get("language") is not None:  # absent means English
        out.append(("language", str(refs["language"])))
    if refs.get("level") is not None:  # absent means brief
        out.append(("level", str(refs["level"])))
    if refs.get("region"):
        out.append(("region asked", ", ".join(f"{v:.0f}" for v in refs["region"])))
    return out


def example_card(gen: Generation) -> str:
    e = html.escape
    image = render_example_image(gen)
    score = gen.get("score")
    parsed = gen.get("parsed") or {}
    rows = [
        ("id", str(gen.get("id", ""))),
        ("score", format_value(score) if is_number(score) else "-"),
        ("prompt", str(gen.get("prompt", ""))),
        ("generated", str(gen.get("generated_text", ""))),
    ]
    task = tasks.TABLE.get(str(gen.get("task")))
    rows += task.card_rows(parsed) if task else text_rows(parsed)
    if parsed.get("errors"):
        rows.append(("parse errors", str(parsed["errors"])))
    rows += [(f"ref {k}", v) for k, v in _references_text(gen.get("references") or {})]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    alt = e(f"{gen.get('task', '')} {gen.get('id', '')}", quote=True)
    return (
        f'<div class="card"><img alt="{alt}" src="data:image/png;base64,{png_base64(image)}">'
        f"<table>{table}</table></div>"
    )
