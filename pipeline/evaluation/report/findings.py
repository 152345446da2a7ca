"""What the report concludes before any table: per task the headline beside the base model and the
trivial baseline, with verdicts that know a lower-is-better headline, and the warnings (a limited
evaluation, a task that does not beat its baseline, generations that did not parse, a base model
evaluated on other records)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipeline import tasks
from pipeline.evaluation.report.tables import (
    DECIMALS,
    Generation,
    as_number,
    comparable_base,
    format_delta,
    format_value,
    is_number,
    task_count,
    task_metrics,
    task_names,
)

FORMAT_WARN_SHARE = 0.05  # more generations than this that did not parse (or objects outside the vocabulary)
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
    count = task_count(metrics, task)
    if count is None:
        return "-"
    sample = _sample(metrics)
    of = (sample.get("of") or {}).get(task) if sample and sample.get("limit") is not None else None
    return f"{count} of {of}" if is_number(of) and of != count else str(count)


def summarize(metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None = None) -> list[TaskSummary]:
    """Per task uvft knows, in the table's order: its headline metric, the base model's beside it
    when the base evaluated the same records, the trivial baseline's, and the verdicts."""
    base, _ = comparable_base(metrics, base_metrics)
    out = []
    for name in task_names(metrics):
        task = tasks.TABLE.get(name)
        if task is None:  # no headline known: its numbers are in the full tables
            continue
        own = metrics[name]
        value = as_number(own.get(task.HEADLINE.key))
        baseline = None
        if task.BASELINE is not None and isinstance(own.get(task.BASELINE.key), Mapping):
            baseline = as_number(own[task.BASELINE.key].get(task.HEADLINE.key))
        base_value = as_number(task_metrics(base, name).get(task.HEADLINE.key))
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
    return int(errors) if is_number(errors) else 0


def group_by_task(generations: Iterable[Generation]) -> dict[str, list[Generation]]:
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(str(gen.get("task", "unknown")), []).append(gen)
    return by_task


def _format_warnings(metrics: Mapping[str, Any], generations: Sequence[Generation]) -> list[str]:
    """Generations that did not parse: a task's `format_validity` block where its metrics have one
    (detection's), else the parse errors its generations count."""
    by_task = group_by_task(generations)
    out = []
    for name in tasks.ordered(set(by_task) | set(task_names(metrics))):
        validity = task_metrics(metrics, name).get("format_validity")
        if isinstance(validity, Mapping) and is_number(validity.get("total")):
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


def headline_parts(row: TaskSummary) -> tuple[str, str]:
    """A task's headline in two halves: its numbers, and its verdicts."""
    extra = [f"base {format_value(row.base)}"] if row.against_base is not None else []
    if row.baseline is not None:
        extra.append(f"trivial baseline {format_value(row.baseline)}")
    shown = f"{row.metric} {format_value(row.value)}" + (f" ({', '.join(extra)})" if extra else "")
    return shown, "; ".join(v.text for v in row.verdicts)
