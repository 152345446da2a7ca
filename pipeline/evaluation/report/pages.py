"""report.md and report.html, in the same order: the summary, the warnings, per task its headline,
confusions and examples, the training curves, and last every metric (collapsed in HTML). The HTML is
self-contained (images and plots embedded as base64 PNG) so it opens on any machine."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.evaluation.report.confusions import Confusion, box_tally, confused_pairs, confusion, pair_text
from pipeline.evaluation.report.findings import (
    BAD,
    GOOD,
    TaskSummary,
    Verdict,
    group_by_task,
    headline_parts,
    summarize,
    summary_table,
    warnings,
)
from pipeline.evaluation.report.gallery import PRED_COLOR, REF_COLOR, example_card, select_examples
from pipeline.evaluation.report.tables import (
    Generation,
    comparable_base,
    is_number,
    markdown_table,
    metric_direction,
    metric_rows,
    table_headers,
    task_count,
    task_names,
)

MAX_MATRIX = 20  # classes beyond which a confusion matrix is too wide to read: the pairs list stays

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table.metrics, table.summary, table.confusion { border-collapse: collapse; margin-bottom: 1em; }
table.metrics td, table.metrics th, table.summary td, table.summary th,
table.confusion td, table.confusion th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
table.metrics td:first-child, table.metrics th:first-child { text-align: left; }
table.summary th:first-child, table.summary th:nth-child(2), table.summary th:last-child,
table.summary td:first-child, table.summary td:nth-child(2), table.summary td.verdict { text-align: left; }
table.summary td.value { font-weight: bold; }
table.confusion th { background: #f6f8fa; }
table.confusion tr > th:first-child { text-align: left; }
table.confusion td.zero { color: #bbb; }
.good { color: #1a7f37; } .bad { color: #cf222e; } .even, .none { color: #666; }
td.verdict span.good, td.verdict span.bad { font-weight: bold; }
ul.warnings { width: fit-content; background: #fff8c5; border: 1px solid #d4a72c;
  padding: 0.5em 1em 0.5em 2em; }
p.clear { color: #1a7f37; }
details > summary { font-size: 1.5em; font-weight: bold; cursor: pointer; margin: 0.8em 0; }
img.plot { display: block; max-width: 100%; margin-bottom: 1em; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 300px; border: 1px solid #ddd; padding: 6px; font-size: 12px; }
.card img { max-width: 100%; image-rendering: pixelated; display: block; }
.card th { text-align: left; vertical-align: top; padding-right: 6px; white-space: nowrap; }
.card td { word-break: break-word; font-family: monospace; }
.legend span { padding: 0 6px; color: white; }
"""


def _section_title(metrics: Mapping[str, Any], task: str) -> str:
    count = task_count(metrics, task)
    return task + (f" (n = {count})" if count is not None else "")


def weights_line(metrics: Mapping[str, Any]) -> str | None:
    """Which weights the numbers belong to (metrics.json's `weights`), for the report's reader."""
    weights = metrics.get("weights") or {}
    if not weights.get("sha256"):
        return f"Model: {weights['model']}." if weights.get("model") else None
    return f"Weights: {weights['model']}, sha256 {weights['sha256']}."


def markdown_page(
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    generations: Sequence[Generation],
) -> str:
    rows = summarize(metrics, base_metrics)
    parts = ["# Evaluation report", ""]
    if line := weights_line(metrics):
        parts += [line, ""]
    parts += ["## Summary", ""]
    if rows:
        headers, cells = summary_table(rows)
        parts += [markdown_table(headers, cells, left=(0, 1, len(headers) - 1)), ""]
    found = warnings(metrics, base_metrics, generations)
    parts += ["## Warnings", "", *([f"- {w}" for w in found] or ["None."]), ""]
    by_task = group_by_task(generations)
    headlines = {r.task: r for r in rows}
    for task in tasks.ordered(set(task_names(metrics)) | set(by_task)):
        parts += [f"## {_section_title(metrics, task)}", ""]
        if task in headlines:
            parts += [": ".join(headline_parts(headlines[task])), ""]
        conf = confusion(task, metrics, by_task.get(task, []))
        if conf is not None:
            parts += _markdown_confusion(conf)
    if plots:
        parts += ["## Training curves", ""]
        parts += [f"![{name}]({path.name})" for name, path in plots.items()]
        parts.append("")
    with_base = comparable_base(metrics, base_metrics)[0] is not None
    parts += ["## All metrics", ""]
    if with_base:
        parts += ["Fine-tuned model against the base model; delta = fine-tuned - base.", ""]
    for task, table in metric_rows(metrics, base_metrics):
        parts += [
            f"### {_section_title(metrics, task)}",
            "",
            markdown_table(table_headers(with_base), table),
            "",
        ]
    return "\n".join(parts)


def _markdown_confusion(conf: Confusion) -> list[str]:
    parts = []
    if len(conf.rows) <= MAX_MATRIX:
        parts += ["Confusion matrix (rows: reference, columns: predicted):", ""]
        cells = [[name, *map(str, row)] for name, row in zip(conf.rows, conf.matrix, strict=True)]
        parts += [markdown_table(["reference", *conf.columns], cells), ""]
    tally = box_tally(conf)
    if tally:
        parts += [tally, ""]
    pairs = confused_pairs(conf)
    parts += ["Most confused: " + ("; ".join(map(pair_text, pairs)) if pairs else "none"), ""]
    return parts


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, task: str | None = None) -> str:
    """A full metric table; its delta column (the 4th) is coloured where the metric's direction is
    known (`metric_direction`): a lower CER is green, a count is never coloured."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            mood = _delta_class(cell, metric_direction(task, row[0])) if i == 3 and task is not None else ""
            cells.append(f'<td class="{mood}">{e(cell)}</td>' if mood else f"<td>{e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="metrics"><tr>{head}</tr>{"".join(body)}</table>'


def _delta_class(cell: str, direction: int | None) -> str:
    """GOOD or BAD for a delta that is not zero as shown, by the metric's direction; "" when unknown."""
    if direction is None or not cell.strip("+-0."):
        return ""
    sign = 1 if cell.startswith("+") else -1 if cell.startswith("-") else 0
    return {1: GOOD, -1: BAD}.get(sign * direction, "")


def _anchor(task: str) -> str:
    return html.escape(f"task-{task}", quote=True)


def _verdict_html(verdicts: Sequence[Verdict]) -> str:
    return "; ".join(f'<span class="{v.mood}">{html.escape(v.text)}</span>' for v in verdicts)


def _summary_html(rows: Sequence[TaskSummary]) -> str:
    """The summary table: each task linked to its section, the verdicts coloured by what is better
    for the task (a lower CER beats a higher one), the baseline's name on hovering its value."""
    e = html.escape
    headers, cells = summary_table(rows)
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for row, line in zip(rows, cells, strict=True):
        baseline = tasks.get(row.task).BASELINE
        tds = [f'<td><a href="#{_anchor(row.task)}">{e(row.task)}</a></td>']
        for header, cell in zip(headers[1:-1], line[1:-1], strict=True):
            if header == "trivial baseline" and baseline is not None:
                tds.append(f'<td title="{e(baseline.name, quote=True)}">{e(cell)}</td>')
            else:
                tds.append(
                    f'<td class="value">{e(cell)}</td>'
                    if header in ("model", "fine-tuned")
                    else f"<td>{e(cell)}</td>"
                )
        tds.append(f'<td class="verdict">{_verdict_html(row.verdicts)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="summary"><tr>{head}</tr>{"".join(body)}</table>'


def _warnings_html(found: Sequence[str]) -> str:
    if not found:
        return '<p class="clear">None.</p>'
    return '<ul class="warnings">' + "".join(f"<li>{html.escape(w)}</li>" for w in found) + "</ul>"


def _confusion_html(conf: Confusion) -> str:
    """The matrix (reference rows, predicted columns) tinted by each cell's share of its row, green
    on the diagonal and red off it; detection's tally; the most-confused pairs."""
    e = html.escape
    parts = []
    if len(conf.rows) <= MAX_MATRIX:
        head = '<th class="corner">reference \\ predicted</th>' + "".join(
            f"<th>{e(c)}</th>" for c in conf.columns
        )
        body = []
        for name, row in zip(conf.rows, conf.matrix, strict=True):
            total = sum(row)
            cells = "".join(
                _confusion_cell(count, total, diagonal=name == column)
                for column, count in zip(conf.columns, row, strict=True)
            )
            body.append(f"<tr><th>{e(name)}</th>{cells}</tr>")
        parts.append(f'<table class="confusion"><tr>{head}</tr>{"".join(body)}</table>')
    else:
        parts.append(f"<p>{len(conf.rows)} classes: too many for a readable matrix.</p>")
    tally = box_tally(conf)
    if tally:
        parts.append(f"<p>{e(tally)}</p>")
    pairs = confused_pairs(conf)
    items = "".join(f"<li>{e(pair_text(p))}</li>" for p in pairs)
    parts.append(
        f'<p>Most confused:</p><ol class="pairs">{items}</ol>' if pairs else "<p>Most confused: none.</p>"
    )
    return "".join(parts)


def _confusion_cell(count: int, total: int, *, diagonal: bool) -> str:
    if not count:
        return '<td class="zero">0</td>'
    rgb = "26, 127, 55" if diagonal else "207, 34, 46"
    alpha = 0.12 + 0.6 * count / total
    return f'<td style="background: rgba({rgb}, {alpha:.2f})">{count}</td>'


def _task_html(
    task: str,
    metrics: Mapping[str, Any],
    headline: TaskSummary | None,
    generations: Sequence[Generation],
    examples_per_task: int,
) -> str:
    """A task's section: its headline and verdicts, its confusions, its best and worst examples."""
    e = html.escape
    parts = [f'<h2 id="{_anchor(task)}">{e(_section_title(metrics, task))}</h2>']
    if headline is not None:
        shown, _ = headline_parts(headline)
        parts.append(f'<p class="headline">{e(shown)}: {_verdict_html(headline.verdicts)}</p>')
    conf = confusion(task, metrics, generations)
    if conf is not None:
        parts += ["<h3>Confusion</h3>", _confusion_html(conf)]
    best, worst = select_examples(generations, examples_per_task)
    for title, chosen in ((_first_title(best, worst, len(generations)), best), ("Worst examples", worst)):
        if chosen:
            cards = "".join(example_card(g) for g in chosen)
            parts.append(f'<h3>{title}</h3><div class="gallery">{cards}</div>')
    return "\n".join(parts)


def _first_title(best: Sequence[Generation], worst: Sequence[Generation], total: int) -> str:
    # with every example shown (or none scored), "best" would call a set of failures the best
    if worst:
        return "Best examples"
    if not any(is_number(g.get("score")) for g in best):
        return f"The first {len(best)} examples (none scored)"
    return f"All {total} examples, best first"


def _all_metrics_html(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None) -> str:
    e = html.escape
    with_base = comparable_base(metrics, base_metrics)[0] is not None
    parts = ["<details><summary>All metrics</summary>"]
    if with_base:
        parts.append(
            "<p>delta = fine-tuned - base, coloured where the report knows which way is better "
            "(the headline metric and the numbers shown beside it).</p>"
        )
    for task, rows in metric_rows(metrics, base_metrics):
        parts.append(f"<h3>{e(_section_title(metrics, task))}</h3>")
        parts.append(_html_table(table_headers(with_base), rows, task=task))
    parts.append("</details>")
    return "\n".join(parts)


def html_page(
    generations: Sequence[Generation],
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    examples_per_task: int,
) -> str:
    e = html.escape
    rows = summarize(metrics, base_metrics)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
        f"<style>{CSS}</style></head><body><h1>Evaluation report</h1>",
        *([f"<p>{e(line)}</p>"] if (line := weights_line(metrics)) else []),
        "<h2>Summary</h2>",
        _summary_html(rows) if rows else "<p>No task with a headline metric was scored.</p>",
        "<h2>Warnings</h2>",
        _warnings_html(warnings(metrics, base_metrics, generations)),
    ]
    by_task = group_by_task(generations)
    if by_task:
        parts.append(
            '<p class="legend">In the examples, boxes, masks and text regions: '
            f'<span style="background: rgb{PRED_COLOR}">prediction</span> '
            f'<span style="background: rgb{REF_COLOR}">reference</span></p>'
        )
    headlines = {r.task: r for r in rows}
    for task in tasks.ordered(set(task_names(metrics)) | set(by_task)):
        parts.append(_task_html(task, metrics, headlines.get(task), by_task.get(task, []), examples_per_task))
    if plots:
        parts.append("<h2>Training curves</h2>")
        for name, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<img class="plot" alt="{e(name)}" src="data:image/png;base64,{data}">')
    parts.append(_all_metrics_html(metrics, base_metrics))
    parts.append("</body></html>")
    return "\n".join(parts)
