"""Evaluation report: report.md and report.html, which lead with the answer (per task the headline
metric beside the base model and the trivial baseline, a verdict, then the warnings), then per task
its confusions and its best and worst examples, the training curves, and last every metric.

The report owns what it concludes from metrics.json and the generations: the summary's verdicts
(which know a lower-is-better headline), the warnings, the detection confusion matrix, the
most-confused pairs. The HTML is self-contained (images and plots embedded as base64 PNG) so it
can be opened from any machine or uploaded to the hub next to the model card.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image, ImageDraw

from pipeline import tasks
from pipeline.sources.images import load_image
from pipeline.tasks.task import text_rows

log = logging.getLogger(__name__)

# Keys of the metrics dict that are not tasks: the base model's metrics, the records per task, the
# evaluated sample (`uvft eval --limit`: its limit, seed, records and fingerprint)
NON_TASK_KEYS = ("base", "counts", "sample")

DECIMALS = 4  # as numbers are shown; verdicts compare what is shown, so "+0.0000" is never "better"
FORMAT_WARN_SHARE = 0.05  # more generations than this that did not parse (or objects outside the vocabulary)
MATCH_IOU = 0.5  # a predicted box matches a reference box (detection's confusion)
MAX_MATRIX = 20  # classes beyond which a confusion matrix is too wide to read: the pairs list stays
TOP_PAIRS = 5
MISSED = "(missed)"  # detection's confusion: a reference box no prediction matched
SPURIOUS = "(spurious)"  # a predicted box that matched no reference box
NOT_COMPARED = "base evaluated on other records: not compared"

PRED_COLOR = (230, 25, 75)  # red: what the model predicted
REF_COLOR = (60, 180, 75)  # green: the reference
MIN_SIDE = 256  # small images are upscaled (nearest) so boxes and labels stay readable
MAX_SIDE = 512  # large ones are downscaled to keep the HTML small
LINE_WIDTH = 2
MASK_ALPHA = 90  # ~0.35: the image stays visible under both masks, and their overlap shows both tints

Generation = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# values and the full metric tables


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    return value if _is_number(value) and not math.isnan(value) else None


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


def _task_metrics(metrics: Mapping[str, Any] | None, task: str) -> Mapping[str, Any]:
    own = metrics.get(task) if metrics is not None else None
    return own if isinstance(own, Mapping) and task not in NON_TASK_KEYS else {}


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{DECIMALS}f}"


def format_delta(value: float | None, base: float | None) -> str:
    if not (_is_number(value) and _is_number(base)):
        return "-"
    delta = value - base
    if isinstance(delta, int):
        return f"{delta:+d}"
    return "-" if math.isnan(delta) else f"{delta:+.{DECIMALS}f}"


def _resolve_base(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None) -> Mapping | None:
    if base_metrics is not None:
        return base_metrics
    base = metrics.get("base")
    return base if isinstance(base, Mapping) else None


def _fingerprint(metrics: Mapping[str, Any]) -> str | None:
    sample = metrics.get("sample")
    return sample.get("fingerprint") if isinstance(sample, Mapping) else None


def comparable_base(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The base model's metrics (given, or under "base") when they may stand beside these, else
    (None, why not). They may when both evaluated the same records: the same sample fingerprint;
    metrics from before fingerprints (neither has one) stand beside when their counts agree."""
    base = _resolve_base(metrics, base_metrics)
    if base is None:
        return None, None
    mine, theirs = _fingerprint(metrics), _fingerprint(base)
    if mine is None and theirs is None:
        counts, base_counts = metrics.get("counts"), base.get("counts")
        if counts is None or base_counts is None or counts == base_counts:
            return base, None
    elif mine == theirs:
        return base, None
    return None, NOT_COMPARED


def metric_rows(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None
) -> list[tuple[str, list[list[str]]]]:
    """Per task, the rows [metric, fine-tuned] (+ [base, delta] when comparable base metrics are given)."""
    base, _ = comparable_base(metrics, base_metrics)
    out = []
    for task in _tasks(metrics):
        flat = flatten_metrics(metrics[task])
        base_flat = flatten_metrics(_task_metrics(base, task)) if base is not None else {}
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


def _direction(task: str, metric: str) -> int | None:
    """+1 where a larger value of `metric` (a dotted name in the task's metrics) is better, -1 where
    a smaller one is, None where the report cannot know (counts, supports, most secondary numbers):
    the headline and the extras shown beside it, wherever they are nested, take the headline's
    direction."""
    known = tasks.TABLE.get(task)
    if known is None:
        return None
    keys = (known.HEADLINE.key, *(extra.key for extra in known.EXTRAS))
    if not any(metric == key or metric.endswith(f".{key}") for key in keys):
        return None
    return -1 if known.LOWER_IS_BETTER else 1


def format_table(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None) -> str:
    """Plain-text table of every metric (task, metric, fine-tuned[, base, delta]) with aligned columns."""
    with_base = comparable_base(metrics, base_metrics)[0] is not None
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


# ---------------------------------------------------------------------------------------------
# the answer: the summary table, its verdicts, the warnings

GOOD, BAD, EVEN, NONE = "good", "bad", "even", "none"  # a verdict's mood, its colour class in HTML


class Verdict(NamedTuple):
    text: str
    mood: str  # GOOD, BAD, EVEN or NONE


@dataclass(frozen=True)
class TaskSummary:
    """One task's line of the summary table."""

    task: str
    metric: str  # the headline metric's name
    count: str  # records evaluated: "200", or "20 of 200" for a limited evaluation
    value: float | None
    base: float | None  # the base model's (None: not scored, or no comparable base)
    baseline: float | None  # the trivial baseline's
    against_baseline: Verdict
    against_base: Verdict | None  # None: no comparable base model beside

    @property
    def verdicts(self) -> list[Verdict]:
        return [self.against_baseline, *([self.against_base] if self.against_base else [])]


def _compare(task: tasks.Task, value: float | None, other: float | None) -> int | None:
    """+1 when `value` is better than `other` by the headline's direction, -1 worse, 0 equal as
    shown; None when either is missing."""
    if value is None or other is None:
        return None
    a, b = round(value, DECIMALS), round(other, DECIMALS)
    sign = (a > b) - (a < b)
    return -sign if task.LOWER_IS_BETTER else sign


def _against_baseline(task: tasks.Task, value: float | None, baseline: float | None) -> Verdict:
    if task.BASELINE is None:
        return Verdict("no baseline", NONE)
    if baseline is None:  # no training split, or no training values to count
        return Verdict("baseline not computed", NONE)
    outcome = _compare(task, value, baseline)
    if outcome is None:
        return Verdict("no score", NONE)
    if outcome > 0:
        return Verdict("beats the baseline", GOOD)
    return Verdict("ties the baseline" if outcome == 0 else "worse than the baseline", BAD)


def _against_base(task: tasks.Task, value: float | None, base: float | None) -> Verdict:
    outcome = _compare(task, value, base)
    if outcome is None:
        return Verdict("base not scored" if base is None else "no score", NONE)
    if outcome == 0:
        return Verdict("same as the base", EVEN)
    word, mood = ("better", GOOD) if outcome > 0 else ("worse", BAD)
    return Verdict(f"{word} than the base ({format_delta(value, base)})", mood)


def _sample(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    sample = metrics.get("sample")
    return sample if isinstance(sample, Mapping) else None


def _count_text(metrics: Mapping[str, Any], task: str) -> str:
    count = _task_count(metrics, task)
    if count is None:
        return "-"
    sample = _sample(metrics)
    of = (sample.get("of") or {}).get(task) if sample and sample.get("limit") is not None else None
    return f"{count} of {of}" if _is_number(of) and of != count else str(count)


def summarize(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None) -> list[TaskSummary]:
    """Per task uvft knows, in the table's order: its headline metric, the base model's beside it
    when the base evaluated the same records, the trivial baseline's, and the verdicts."""
    base, _ = comparable_base(metrics, base_metrics)
    out = []
    for name in _tasks(metrics):
        task = tasks.TABLE.get(name)
        if task is None:  # no headline known: its numbers are in the full tables
            continue
        own = metrics[name]
        value = _number(own.get(task.HEADLINE.key))
        baseline = None
        if task.BASELINE is not None and isinstance(own.get(task.BASELINE.key), Mapping):
            baseline = _number(own[task.BASELINE.key].get(task.HEADLINE.key))
        base_value = _number(_task_metrics(base, name).get(task.HEADLINE.key))
        out.append(
            TaskSummary(
                task=name,
                metric=task.HEADLINE.name,
                count=_count_text(metrics, name),
                value=value,
                base=base_value,
                baseline=baseline,
                against_baseline=_against_baseline(task, value, baseline),
                against_base=_against_base(task, value, base_value) if base is not None else None,
            )
        )
    return out


def summary_table(rows: Sequence[TaskSummary]) -> tuple[list[str], list[list[str]]]:
    """The summary as (headers, cells): the base column only when a comparable base is beside."""
    with_base = any(r.against_base is not None for r in rows)
    headers = ["task", "metric", "n", *(["base"] if with_base else [])]
    headers += ["fine-tuned" if with_base else "model", "trivial baseline", "verdict"]
    cells = []
    for r in rows:
        verdict = "; ".join(v.text for v in r.verdicts)
        base = [format_value(r.base)] if with_base else []
        cells.append(
            [r.task, r.metric, r.count, *base, format_value(r.value), format_value(r.baseline), verdict]
        )
    return headers, cells


def warnings(
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None = None,
    generations: Sequence[Generation] = (),
) -> list[str]:
    """The report's warnings, one line each: a limited evaluation, a base model evaluated on other
    records, a task that does not beat its trivial baseline, generations that did not parse."""
    out = []
    limited = _limited(metrics)
    if limited:
        out.append(limited)
    for row in summarize(metrics, base_metrics):
        baseline = tasks.get(row.task).BASELINE
        if row.against_baseline.mood == BAD and baseline is not None:
            out.append(
                f"{row.task}: {row.metric} {format_value(row.value)} does not beat the "
                f"{baseline.name} ({format_value(row.baseline)})"
            )
    out += _format_warnings(metrics, generations)
    _, why = comparable_base(metrics, base_metrics)
    if why:
        out.append(why)
    return out


def _limited(metrics: Mapping[str, Any]) -> str | None:
    sample = _sample(metrics)
    if sample is None or sample.get("limit") is None:
        return None
    records, of = sample.get("records") or {}, sample.get("of") or {}
    parts = [f"{records[t]} of {of.get(t, '?')} {t} records" for t in tasks.ordered(records)]
    how = f"limit {sample['limit']}" + (f", seed {sample['seed']}" if sample.get("seed") is not None else "")
    return f"limited evaluation: {', '.join(parts)} ({how}): the numbers are a sample, not the whole split"


def _errors(gen: Generation) -> int:
    errors = (gen.get("parsed") or {}).get("errors")
    return int(errors) if _is_number(errors) else 0


def _by_task(generations: Iterable[Generation]) -> dict[str, list[Generation]]:
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(str(gen.get("task", "unknown")), []).append(gen)
    return by_task


def _format_warnings(metrics: Mapping[str, Any], generations: Sequence[Generation]) -> list[str]:
    """Generations that did not parse: a task's `format_validity` block where its metrics have one
    (detection's), else the parse errors its generations count."""
    by_task = _by_task(generations)
    out = []
    for name in tasks.ordered(set(by_task) | set(_tasks(metrics))):
        validity = _task_metrics(metrics, name).get("format_validity")
        if isinstance(validity, Mapping) and _is_number(validity.get("total")):
            out += _validity_warnings(name, validity)
            continue
        rows = by_task.get(name, [])
        failed = sum(1 for g in rows if _errors(g) > 0)
        if rows and failed / len(rows) > FORMAT_WARN_SHARE:
            out.append(f"{name}: low format validity: {failed} of {len(rows)} generations had parse errors")
    return out


def _validity_warnings(task: str, validity: Mapping[str, Any]) -> list[str]:
    def count(key: str) -> int:
        return int(validity.get(key) or 0)

    out = []
    total, unparsed, partial = count("total"), count("unparsed"), count("partial")
    if total and (unparsed + partial) / total > FORMAT_WARN_SHARE:
        out.append(
            f"{task}: low format validity: {unparsed + partial} of {total} generations had parse errors "
            f"({unparsed} not parsed at all, {partial} partly)"
        )
    objects, unknown = count("objects"), count("unknown_category")
    if total and not objects:  # empty outputs parse without an error, and score 0 without a word
        out.append(f"{task}: none of the {total} generations wrote an object")
    elif objects and unknown / objects > FORMAT_WARN_SHARE:
        out.append(f"{task}: {unknown} of {objects} predicted objects name a category outside the vocabulary")
    return out


# ---------------------------------------------------------------------------------------------
# confusions


@dataclass(frozen=True)
class Confusion:
    """Counts of reference classes (rows) predicted as classes (columns)."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


def confusion(task: str, metrics: Mapping[str, Any], generations: Sequence[Generation]) -> Confusion | None:
    """A task's confusion matrix: its metrics' own (classification's, "(other)" the labels outside
    the class list), or for detection the category confusion of its generations; else None."""
    own = _task_metrics(metrics, task).get("confusion_matrix")
    if isinstance(own, Mapping) and {"rows", "columns", "matrix"} <= set(own):
        return Confusion(list(own["rows"]), list(own["columns"]), [list(row) for row in own["matrix"]])
    if task == tasks.DETECTION and generations:
        return detection_confusion(generations)
    return None


def detection_confusion(generations: Iterable[Generation], iou: float = MATCH_IOU) -> Confusion:
    """Category confusion of detections. Per image, predicted boxes are matched one to one to
    reference boxes by IoU >= `iou` whatever their categories (highest IoU first; on a tie, the same
    category first). A matched pair counts in (reference, predicted), an unmatched reference in
    (reference, MISSED), an unmatched prediction in (SPURIOUS, predicted), unless it lies in a crowd
    region (half its area or more), which COCOeval ignores too."""
    from pipeline.metrics import (
        box_iou,
    )  # here: the metrics package loads `evaluate`, which drawing never needs

    counts: Counter[tuple[str, str]] = Counter()
    for gen in generations:
        refs = (gen.get("references") or {}).get("objects") or []
        crowd = (gen.get("references") or {}).get("crowd") or []
        preds = (gen.get("parsed") or {}).get("objects") or []
        candidates = sorted(
            (-box_iou(p["bbox"], r["bbox"]), p["category"] != r["category"], i, j)
            for i, p in enumerate(preds)
            for j, r in enumerate(refs)
        )
        used_p: set[int] = set()
        used_r: set[int] = set()
        for negative_iou, _, i, j in candidates:
            if -negative_iou < iou:
                break
            if i not in used_p and j not in used_r:
                used_p.add(i)
                used_r.add(j)
                counts[(str(refs[j]["category"]), str(preds[i]["category"]))] += 1
        for j, r in enumerate(refs):
            if j not in used_r:
                counts[(str(r["category"]), MISSED)] += 1
        for i, p in enumerate(preds):
            if i not in used_p and not any(_covered(p["bbox"], c["bbox"]) >= 0.5 for c in crowd):
                counts[(SPURIOUS, str(p["category"]))] += 1
    refs_seen = sorted({r for r, _ in counts if r != SPURIOUS})
    predicted = refs_seen + sorted({p for _, p in counts if p not in refs_seen and p != MISSED})
    rows, columns = [*refs_seen, SPURIOUS], [*predicted, MISSED]
    return Confusion(rows, columns, [[counts[(r, c)] for c in columns] for r in rows])


def _covered(box: Sequence[float], region: Sequence[float]) -> float:
    """The share of `box`'s area inside `region` (COCOeval's overlap with a crowd region)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    rx1, ry1, rx2, ry2 = (float(v) for v in region)
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    inter = max(0.0, min(x2, rx2) - max(x1, rx1)) * max(0.0, min(y2, ry2) - max(y1, ry1))
    return inter / area if area > 0 else 0.0


class Pair(NamedTuple):
    reference: str
    predicted: str
    count: int
    of: int  # the reference class's total (its row)


def confused_pairs(conf: Confusion, top: int = TOP_PAIRS) -> list[Pair]:
    """The most frequent confusions, most first (ties in the matrix's order); detection's missed and
    spurious boxes are not confusions between classes (the matrix and its tally show them)."""
    cells = []
    for i, ref in enumerate(conf.rows):
        if ref == SPURIOUS:
            continue
        for j, pred in enumerate(conf.columns):
            count = conf.matrix[i][j]
            if count and pred not in (ref, MISSED):
                cells.append((-count, i, j, Pair(ref, pred, count, sum(conf.matrix[i]))))
    return [cell[-1] for cell in sorted(cells, key=lambda c: c[:3])[:top]]


def _pair_text(pair: Pair) -> str:
    share = f" ({pair.count / pair.of:.0%})" if pair.of else ""
    return f"{pair.reference} predicted as {pair.predicted}: {pair.count} of {pair.of}{share}"


def _tally(conf: Confusion) -> str | None:
    """Detection's matches, misses and spurious boxes in one line; None for a classification matrix."""
    if MISSED not in conf.columns or SPURIOUS not in conf.rows:
        return None
    refs = [(name, row) for name, row in zip(conf.rows, conf.matrix, strict=True) if name != SPURIOUS]
    total = sum(sum(row) for _, row in refs)
    missed = sum(row[conf.columns.index(MISSED)] for _, row in refs)
    right = sum(row[conf.columns.index(name)] for name, row in refs if name in conf.columns)
    spurious = sum(conf.matrix[conf.rows.index(SPURIOUS)])
    return (
        f"{total - missed} of {total} reference boxes matched at IoU >= {MATCH_IOU} ({right} with the "
        f"right category), {missed} missed; {spurious} spurious predicted boxes"
    )


def _headline_parts(row: TaskSummary) -> tuple[str, str]:
    """A task's headline in two halves: its numbers, and its verdicts."""
    extra = [f"base {format_value(row.base)}"] if row.against_base is not None else []
    if row.baseline is not None:
        extra.append(f"trivial baseline {format_value(row.baseline)}")
    shown = f"{row.metric} {format_value(row.value)}" + (f" ({', '.join(extra)})" if extra else "")
    return shown, "; ".join(v.text for v in row.verdicts)


# ---------------------------------------------------------------------------------------------
# markdown


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Iterable[int] = (0,)) -> str:
    """A Markdown table; the columns in `left` (text) align left, the others (numbers) right."""
    left = set(left)
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    headers = [c.replace("|", "\\|") for c in headers]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = (
        "| "
        + " | ".join(("-" * w if i in left else "-" * (w - 1) + ":") for i, w in enumerate(widths))
        + " |"
    )
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in rows)])


def _section_title(metrics: Mapping[str, Any], task: str) -> str:
    count = _task_count(metrics, task)
    return task + (f" (n = {count})" if count is not None else "")


def _markdown(
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None,
    plots: Mapping[str, Path],
    generations: Sequence[Generation],
) -> str:
    rows = summarize(metrics, base_metrics)
    parts = ["# Evaluation report", "", "## Summary", ""]
    if rows:
        headers, cells = summary_table(rows)
        parts += [_markdown_table(headers, cells, left=(0, 1, len(headers) - 1)), ""]
    found = warnings(metrics, base_metrics, generations)
    parts += ["## Warnings", "", *([f"- {w}" for w in found] or ["None."]), ""]
    by_task = _by_task(generations)
    headlines = {r.task: r for r in rows}
    for task in tasks.ordered(set(_tasks(metrics)) | set(by_task)):
        parts += [f"## {_section_title(metrics, task)}", ""]
        if task in headlines:
            parts += [": ".join(_headline_parts(headlines[task])), ""]
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
        parts += [f"### {_section_title(metrics, task)}", "", _markdown_table(_headers(with_base), table), ""]
    return "\n".join(parts)


def _markdown_confusion(conf: Confusion) -> list[str]:
    parts = []
    if len(conf.rows) <= MAX_MATRIX:
        parts += ["Confusion matrix (rows: reference, columns: predicted):", ""]
        cells = [[name, *map(str, row)] for name, row in zip(conf.rows, conf.matrix, strict=True)]
        parts += [_markdown_table(["reference", *conf.columns], cells), ""]
    tally = _tally(conf)
    if tally:
        parts += [tally, ""]
    pairs = confused_pairs(conf)
    parts += ["Most confused: " + ("; ".join(map(_pair_text, pairs)) if pairs else "none"), ""]
    return parts


# ---------------------------------------------------------------------------------------------
# plots


def curves_figure(
    records: Sequence[Mapping[str, Any]], keys: Iterable[str], title: str, ylabel: str = "loss"
) -> Any | None:
    """A matplotlib Figure of one curve per key over "step" (None: no key has a point), its legend
    beside the axes, never over the curves."""
    # Figure + savefig without pyplot: no global backend state, safe in threads and headless (Agg).
    from matplotlib.figure import Figure

    # wider than tall, so the curves keep their width beside the legend; constrained layout
    # makes room for the legend inside the image
    fig = Figure(figsize=(9, 4), dpi=100, layout="constrained")
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
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize="small")
    return fig


def _plot_curves(
    records: Sequence[Mapping[str, Any]], keys: Iterable[str], title: str, path: Path, ylabel: str = "loss"
) -> bool:
    fig = curves_figure(records, keys, title, ylabel)
    if fig is not None:
        fig.savefig(path, format="png")
    return fig is not None


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


# ---------------------------------------------------------------------------------------------
# html


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, task: str | None = None) -> str:
    """A full metric table; its delta column (the 4th) is coloured where the metric's direction is
    known (`_direction`): a lower CER is green, a count is never coloured."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            mood = _delta_class(cell, _direction(task, row[0])) if i == 3 and task is not None else ""
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
    tally = _tally(conf)
    if tally:
        parts.append(f"<p>{e(tally)}</p>")
    pairs = confused_pairs(conf)
    items = "".join(f"<li>{e(_pair_text(p))}</li>" for p in pairs)
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
        shown, _ = _headline_parts(headline)
        parts.append(f'<p class="headline">{e(shown)}: {_verdict_html(headline.verdicts)}</p>')
    conf = confusion(task, metrics, generations)
    if conf is not None:
        parts += ["<h3>Confusion</h3>", _confusion_html(conf)]
    best, worst = select_examples(generations, examples_per_task)
    for title, chosen in ((_first_title(best, worst, len(generations)), best), ("Worst examples", worst)):
        if chosen:
            cards = "".join(_card(g) for g in chosen)
            parts.append(f'<h3>{title}</h3><div class="gallery">{cards}</div>')
    return "\n".join(parts)


def _first_title(best: Sequence[Generation], worst: Sequence[Generation], total: int) -> str:
    # with every example shown (or none scored), "best" would call a set of failures the best
    if worst:
        return "Best examples"
    if not any(_is_number(g.get("score")) for g in best):
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
        parts.append(_html_table(_headers(with_base), rows, task=task))
    parts.append("</details>")
    return "\n".join(parts)


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


def _html(
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
        "<h2>Summary</h2>",
        _summary_html(rows) if rows else "<p>No task with a headline metric was scored.</p>",
        "<h2>Warnings</h2>",
        _warnings_html(warnings(metrics, base_metrics, generations)),
    ]
    by_task = _by_task(generations)
    if by_task:
        parts.append(
            '<p class="legend">In the examples, boxes, masks and text regions: '
            f'<span style="background: rgb{PRED_COLOR}">prediction</span> '
            f'<span style="background: rgb{REF_COLOR}">reference</span></p>'
        )
    headlines = {r.task: r for r in rows}
    for task in tasks.ordered(set(_tasks(metrics)) | set(by_task)):
        parts.append(_task_html(task, metrics, headlines.get(task), by_task.get(task, []), examples_per_task))
    if plots:
        parts.append("<h2>Training curves</h2>")
        for name, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<img class="plot" alt="{e(name)}" src="data:image/png;base64,{data}">')
    parts.append(_all_metrics_html(metrics, base_metrics))
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
    generations = list(generations)
    plots = write_plots(out_dir, summary)
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(metrics, base_metrics, plots, generations), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(
        _html(generations, metrics, base_metrics, plots, examples_per_task), encoding="utf-8"
    )
    log.info("report written to %s", out_dir)
    return {"markdown": md_path, "html": html_path, **plots}
