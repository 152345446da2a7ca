"""The report's numbers: how a value and a delta are written, which keys of metrics.json are tasks,
whether the base model's metrics may stand beside (the same records evaluated), which way a metric
is better, and the full metric tables (plain text and Markdown)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline import tasks
from pipeline.evaluation.score import same_records

# Keys of the metrics dict that are not tasks: the base model's metrics, the records per task, the
# evaluated sample (`uvft eval --limit`: its limit, seed, records and fingerprint)
NON_TASK_KEYS = ("base", "counts", "sample")
DECIMALS = 4  # as numbers are shown; verdicts compare what is shown, so "+0.0000" is never "better"
NOT_COMPARED = "base evaluated on other records: not compared"
Generation = Mapping[str, Any]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    return value if is_number(value) and not math.isnan(value) else None


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Nested metric dicts become dotted names ("per_answer_type.yes/no"); lists and strings are dropped."""
    flat: dict[str, float | None] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        elif is_number(value) or value is None:
            flat[name] = value
    return flat


def task_names(metrics: Mapping[str, Any]) -> list[str]:
    return tasks.ordered(k for k, v in metrics.items() if k not in NON_TASK_KEYS and isinstance(v, Mapping))


def task_metrics(metrics: Mapping[str, Any] | None, task: str) -> Mapping[str, Any]:
    own = metrics.get(task) if metrics is not None else None
    return own if isinstance(own, Mapping) and task not in NON_TASK_KEYS else {}


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{DECIMALS}f}"


def format_delta(value: float | None, base: float | None) -> str:
    if not (is_number(value) and is_number(base)):
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


def comparable_base(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The base model's metrics (given, or under "base") when they may stand beside these, else
    (None, why not). They may when both evaluated the same records: the same sample fingerprint;
    metrics from before fingerprints (neither has one) stand beside when their counts agree."""
    base = _resolve_base(metrics, base_metrics)
    if base is None:
        return None, None
    return (base, None) if same_records(dict(metrics), dict(base)) else (None, NOT_COMPARED)


def metric_rows(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None
) -> list[tuple[str, list[list[str]]]]:
    """Per task, the rows [metric, fine-tuned] (+ [base, delta] when comparable base metrics are given)."""
    base, _ = comparable_base(metrics, base_metrics)
    out = []
    for task in task_names(metrics):
        flat = flatten_metrics(metrics[task])
        base_flat = flatten_metrics(task_metrics(base, task)) if base is not None else {}
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


def table_headers(with_base: bool) -> list[str]:
    return ["metric", "fine-tuned", "base", "delta"] if with_base else ["metric", "fine-tuned"]


def task_count(metrics: Mapping[str, Any], task: str) -> int | None:
    counts = metrics.get("counts")
    if isinstance(counts, Mapping) and is_number(counts.get(task)):
        return int(counts[task])
    return None


def metric_direction(task: str, metric: str) -> int | None:
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
    header = ["task", *table_headers(with_base)]
    lines = [[task, *row] for task, rows in metric_rows(metrics, base_metrics) for row in rows]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Iterable[int] = (0,)) -> str:
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
