"""Scoring generations: each task by its field's metric, the headline number of each task and the
one the best checkpoint is chosen by, the trivial baselines, and the fixed per-task subsets that
in-training evaluation and `--limit` score. Imports nothing of training."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from pipeline import tasks
from pipeline.errors import UvftError
from pipeline.tasks import TrainColumns


def score_tasks(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Metrics per task from generations (each task's `score`, in the table's order); also sets each
    row's per-example `score`."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    return {t.NAME: t.score(by_task[t.NAME], records) for t in tasks.all_tasks() if by_task.get(t.NAME)}


def trivial_baselines(metrics: dict[str, Any], train: Any, rows: list[dict[str, Any]]) -> None:
    """Add the trivial baseline a model must beat to each scored task that has one (the task's
    `BASELINE` key): the most frequent training answer, class or text, or the whole image as the
    box or mask. A training column is read only for a task that was scored, each column once."""
    scored: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["task"] in metrics:
            scored[r["task"]].append(r)
    columns = TrainColumns(train)
    for task in tasks.all_tasks():
        if task.BASELINE is None or not scored[task.NAME]:
            continue
        result = task.baseline(scored[task.NAME], columns)
        if result is not None:
            metrics[task.NAME][task.BASELINE.key] = result


def headline(metrics: dict[str, Any], key: str) -> float:
    """The number the best checkpoint is chosen by (eval.metric): "mean" of the tasks' headline
    scores, each in [0, 1] (CIDEr-D / 10, OCR's max(0, 1 - CER)), or a dotted key of the metrics."""
    if key == "mean":
        values = [
            t.unit_score(metrics[t.NAME][t.HEADLINE.key])
            for t in tasks.all_tasks()
            if t.NAME in metrics and metrics[t.NAME].get(t.HEADLINE.key) is not None
        ]
        if not values:
            raise UvftError("eval.metric 'mean': no task was scored")
        return sum(values) / len(values)
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            raise UvftError(f"eval.metric {key!r}: no {part!r} in the metrics; there: {', '.join(known)}")
        node = node[part]
    if not isinstance(node, (int, float)):
        raise UvftError(f"eval.metric {key!r} is not a number (it is {type(node).__name__})")
    return float(node)


def metric_at(node: Any, key: str) -> float | None:
    """The number at a dotted `key` ("closed_set.accuracy") of a task's metrics, else None."""
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def first_per_task(tasks: Sequence[str], n: int | None) -> list[int]:
    """Indices, in order, of the first `n` records of each task (all when n is None): a fixed
    subset in which every task stays represented."""
    if n is None:
        return list(range(len(tasks)))
    seen: Counter[str] = Counter()
    keep = []
    for i, task in enumerate(tasks):
        if seen[task] < n:
            seen[task] += 1
            keep.append(i)
    return keep
