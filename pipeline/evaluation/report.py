"""Evaluation report: metric tables (text, Markdown), loss plots, and an HTML gallery of generations.

The HTML is self-contained (images and plots embedded as base64 PNG) so it can be opened from
any machine or uploaded to the hub next to the model card.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from pipeline import tasks
from pipeline.sources.images import load_image
from pipeline.tasks.task import text_rows

log = logging.getLogger(__name__)

# Keys of the metrics dict that are not tasks.
NON_TASK_KEYS = ("base", "counts")

PRED_COLOR = (230, 25, 75)  # red: what the model predicted
REF_COLOR = (60, 180, 75)  # green: the reference
MIN_SIDE = 256  # small images are upscaled (nearest) so boxes and labels stay readable
MAX_SIDE = 512  # large ones are downscaled to keep the HTML small
LINE_WIDTH = 2
MASK_ALPHA = 90  # ~0.35: the image stays visible under both masks, and their overlap shows both tints

Generation = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# tables


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Nested metric dicts become dotted names ("per_answer_type.yes/no"); lists and strings are dropped."""
    flat: dict[str, float | None] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        elif _is_number(value) or value is None:
            flat[name] = value
    return flat


def _tasks(metrics: Mapping[str, Any]) -> list[str]:
    return tasks.ordered(k for k, v in metrics.items() if k not in NON_TASK_KEYS and isinstance(v, Mapping))


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def format_delta(value: float | None, base: float | None) -> str:
    if not (_is_number(value) and _is_number(base)):
        return "-"
    delta = value - base
    if isinstance(delta, int):
        return f"{delta:+d}"
    return "-" if math.isnan(delta) else f"{delta:+.4f}"


def _resolve_base(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None) -> Mapping | None:
    if base_metrics is not None:
        return base_metrics
    base = metrics.get("base")
    return base if isinstance(base, Mapping) else None


def metric_rows(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None
) -> list[tuple[str, list[list[str]]]]:
    """Per task, the rows [metric, fine-tuned] (+ [base, delta] when base metrics are given)."""
    base = _resolve_base(metrics, base_metrics)
    out = []
    for task in _tasks(metrics):
        flat = flatten_metrics(metrics[task])
        base_flat = flatten_metrics(base.get(task, {})) if base is not None else {}
        names = list(flat) + [n for n in base_flat if n not in flat]
        rows = []
        for name in names:
            value = flat.get(name)
            row = [name, format_value(value)]
            if base is not None:
                base_value = base_flat.get(name)
                row += [format_value(base_value), format_delta(value, base_value)]
            rows.append(row)
        out.append((task, rows))
    return out


def _headers(with_base: bool) -> list[str]:
    return ["metric", "fine-tuned", "base", "delta"] if with_base else ["metric", "fine-tuned"]


def _task_count(metrics: Mapping[str, Any], task: str) -> int | None:
    counts = metrics.get("counts")
    if isinstance(counts, Mapping) and _is_number(counts.get(task)):
        return int(counts[task])
    return None


def format_table(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None) -> str:
    """Plain-text summary table (task, metric, fine-tuned[, base, delta]) with aligned columns."""
    with_base = _resolve_base(metrics, base_metrics) is not None
    header = ["task", *_headers(with_base)]
    lines = [[task, *row] for task, rows in metric_rows(metrics, base_metrics) for row in rows]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = "| " + " | ".join(("-" * w if i == 0 else "-" * (w - 1) + ":") for i, w in enumerate(widths)) + " |"
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in rows)])


def _markdown(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None, plots: Mapping[str, Path]
) -> str:
    with_base = _resolve_base(metrics, base_metrics) is not None
    parts = ["# Evaluation report", ""]
    if with_base:
        parts += ["Fine-tuned model against the base model; delta = fine-tuned - base.", ""]
    for task, rows in metric_rows(metrics, base_metrics):
        count = _task_count(metrics, task)
        parts += [f"## {task}" + (f" (n = {count})" if count is not None else ""), ""]
        parts += [_markdown_table(_headers(with_base), rows), ""]
    if plots:
        parts += ["## Training curves", ""]
        parts += [f"![{name}]({path.name})" for name, path in plots.items()]
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# plots


def _plot_curves(
    records: Sequence[Mapping[str, Any]], keys: Iterable[str], title: str, path: Path, ylabel: str = "loss"
) -> bool:
    # Figure + savefig without pyplot: no global backend state, safe in threads and headless (Agg).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    drawn = False
    for key in keys:
        points = [(r["step"], r[key]) for r in records if _is_number(r.get(key)) and "step" in r]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        label = key.removeprefix("loss/")
        style = "--" if label in ("loss", "all", "mean") else "-"
        ax.plot(steps, values, style, marker="." if len(points) < 30 else None, label=label)
        drawn = True
    if not drawn:
        return False
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True


def write_plots(out_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, Path]:
    """loss.png (per-task training loss), val_loss.png (held-out per-task loss) and val_metrics.png
    (the in-training evaluations' headline metrics), each when the summary has the data."""
    if not summary:
        return {}
    plots: dict[str, Path] = {}
    losses = summary.get("losses") or []
    loss_keys = sorted({k for r in losses for k in r if k.startswith("loss/")})
    if any("loss" in r for r in losses):
        loss_keys.append("loss")
    if losses and _plot_curves(losses, loss_keys, "Training loss per task", out_dir / "loss.png"):
        plots["loss"] = out_dir / "loss.png"
    val = summary.get("val") or []
    val_keys = sorted({k for r in val for k in r if k not in ("step", "all")})
    if any("all" in r for r in val):
        val_keys.append("all")
    if val and _plot_curves(val, val_keys, "Held-out loss per task", out_dir / "val_loss.png"):
        plots["val_loss"] = out_dir / "val_loss.png"
    evals, eval_keys = eval_curves(summary.get("evals") or [])
    title = "Validation metrics during training (fixed subset)"
    if evals and _plot_curves(evals, eval_keys, title, out_dir / "val_metrics.png", ylabel="score"):
        plots["val_metrics"] = out_dir / "val_metrics.png"
    return plots


def _unit_task(key: str) -> tasks.Task | None:
    """The task whose headline `key` ("caption/cider") is drawn on the 0-1 scale, else None."""
    name, _, metric = key.partition("/")
    task = tasks.TABLE.get(name)
    return task if task is not None and metric == task.HEADLINE.key else None


def _scaled_key(key: str) -> str:
    task = _unit_task(key)
    return task.UNIT_LABEL.format(key) if task else key


def _scaled(key: str, value: Any) -> Any:
    # drawn as the headline mean counts it: CIDEr-D / 10, max(0, 1 - CER)
    task = _unit_task(key)
    return task.unit_score(value) if task and _is_number(value) else value


def eval_curves(evals: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The in-training evaluations as val_metrics.png draws them: (rows, keys), "mean" last, every
    score on one 0-1 axis (a 0-10 metric divided, its key saying so)."""
    rows = [{_scaled_key(k): _scaled(k, v) for k, v in r.items()} for r in evals]
    keys = sorted({k for r in rows for k in r if k not in ("step", "mean")})
    if any("mean" in r for r in rows):
        keys.append("mean")
    return rows, keys


# ---------------------------------------------------------------------------------------------
# gallery


def select_examples(generations: Sequence[Generation], k: int) -> tuple[list[Generation], list[Generation]]:
    """Best (highest score first) and worst (lowest score first) examples, k in all, never repeated.

    Unscored examples are not ranked; they are shown (first k) only when no example has a score.
    """
    scored = [g for g in generations if _is_number(g.get("score"))]
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
    with outlines, and OCR text regions as quads."""
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
    draw = ImageDraw.Draw(image)
    # a segmentation reference also lists the object's box; its mask already shows where it is
    ref_objects = [] if ref_masks or pred_masks else refs.get("objects") or []
    pred_objects = parsed.get("objects") or []
    # a grounding reference is named by the phrase the model was given, not the source's category
    ref_label = refs.get("phrase")
    for objects, color, is_pred in ((ref_objects, REF_COLOR, False), (pred_objects, PRED_COLOR, True)):
        for obj in objects:
            x1, y1, x2, y2 = obj["bbox"]
            box = [x1 * sx, y1 * sy, max(x1 * sx, x2 * sx), max(y1 * sy, y2 * sy)]
            draw.rectangle(box, outline=color, width=LINE_WIDTH)
            label = str(ref_label if ref_label is not None and not is_pred else obj.get("category", ""))
            if is_pred and _is_number(obj.get("score")):
                label += f" {obj['score']:.2f}"
            if label:
                _draw_label(draw, label, box, color, above=is_pred, image_size=image.size)
    for regions, color in ((refs.get("regions"), REF_COLOR), (parsed.get("regions"), PRED_COLOR)):
        for region in regions or []:
            quad = _points(region.get("quad") or [], sx, sy)
            if len(quad) >= 3:
                draw.polygon(quad, outline=color, width=LINE_WIDTH)
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
    return out


def _card(gen: Generation) -> str:
    e = html.escape
    image = render_example_image(gen)
    score = gen.get("score")
    parsed = gen.get("parsed") or {}
    rows = [
        ("id", str(gen.get("id", ""))),
        ("score", format_value(score) if _is_number(score) else "-"),
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


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{_delta_class(c) if i == 3 else ""}">{e(c)}</td>' if i else f"<td>{e(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="metrics"><tr>{head}</tr>{body}</table>'


def _delta_class(cell: str) -> str:
    if not cell.strip("+-0."):
        return ""
    return "up" if cell.startswith("+") else "down" if cell.startswith("-") else ""


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.metrics { border-collapse: collapse; margin-bottom: 1em; }
table.metrics td, table.metrics th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
table.metrics td:first-child { text-align: left; }
td.up { color: #1a7f37; } td.down { color: #cf222e; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 300px; border: 1px solid #ddd; padding: 6px; font-size: 12px; }
.card img { max-width: 100%; image-rendering: pixelated; display: block; }
.card th { text-align: left; vertical-align: top; padding-right: 6px; white-space: nowrap; }
.card td { word-break: break-word; font-family: monospace; }
.legend span { padding: 0 6px; color: white; }
"""


def _html(
    generations: Sequence[Generation],
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    examples_per_task: int,
) -> str:
    e = html.escape
    with_base = _resolve_base(metrics, base_metrics) is not None
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
        f"<style>{CSS}</style></head><body><h1>Evaluation report</h1>",
        '<p class="legend">Boxes, masks and text regions: '
        f'<span style="background: rgb{PRED_COLOR}">prediction</span> '
        f'<span style="background: rgb{REF_COLOR}">reference</span></p>',
        "<h2>Metrics</h2>",
    ]
    for task, rows in metric_rows(metrics, base_metrics):
        count = _task_count(metrics, task)
        parts.append(f"<h3>{e(task)}" + (f" (n = {count})" if count is not None else "") + "</h3>")
        parts.append(_html_table(_headers(with_base), rows))
    if plots:
        parts.append("<h2>Training curves</h2>")
        for name, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<img class="plot" alt="{e(name)}" src="data:image/png;base64,{data}">')
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(str(gen.get("task", "unknown")), []).append(gen)
    for task in tasks.ordered(by_task):
        best, worst = select_examples(by_task[task], examples_per_task)
        parts.append(f"<h2>{e(task)} examples ({len(by_task[task])} in all)</h2>")
        for title, chosen in (("Best", best), ("Worst", worst)):
            if chosen:
                cards = "".join(_card(g) for g in chosen)
                parts.append(f'<h3>{title}</h3><div class="gallery">{cards}</div>')
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# entry point


def write_report(
    out_dir: Path,
    generations: Sequence[Generation],
    metrics: Mapping[str, Any],
    *,
    base_metrics: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    examples_per_task: int = 6,
) -> dict[str, Path]:
    """Write report.md, report.html and the loss plots into out_dir; return name -> path of what was written.

    Names: "markdown", "html", and "loss" / "val_loss" / "val_metrics" when the summary has their data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out_dir, summary)
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(metrics, base_metrics, plots), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(
        _html(list(generations), metrics, base_metrics, plots, examples_per_task), encoding="utf-8"
    )
    log.info("report written to %s", out_dir)
    return {"markdown": md_path, "html": html_path, **plots}
