"""Scoring generations: each task by its field's metric, the headline number of each task and the
one the best checkpoint is chosen by, the trivial baselines, and the fixed per-task subsets that
in-training evaluation and `--limit` score. Imports nothing of training."""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Sample:
    """The records of a split that an evaluation scores: `indices` in split order, and what
    metrics.json records of it (`describe`)."""

    indices: list[int]
    limit: int | None  # at most this many per task; None: the whole split
    seed: int
    records: dict[str, int]  # task -> records scored
    of: dict[str, int]  # task -> records in the split
    fingerprint: str  # of the scored records' ids: two evaluations compare only on equal ones

    def describe(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "seed": self.seed,
            "records": self.records,
            "of": self.of,
            "fingerprint": self.fingerprint,
        }


def sample_split(ds: Any, limit: int | None, seed: int) -> Sample:
    """A seeded sample of at most `limit` records of each task of a split (all with limit None),
    stratified so it represents the split: by source for every task, and by class too for the tasks
    that stratify by one (classification's label). Each stratum gets its share in proportion to its
    size (largest remainder), at least one record while the limit allows; which records, a seeded
    draw per task. The same split, limit and seed give the same records."""
    columns = {"task": ds["task"], "source": ds["source"], "id": ds["id"]}
    fields = {t.STRATUM_FIELD for t in tasks.all_tasks() if t.STRATUM_FIELD}
    for name in sorted(fields):
        columns[name] = ds[name]
    strata: dict[str, dict[tuple[Any, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (task, source) in enumerate(zip(columns["task"], columns["source"], strict=True)):
        field = tasks.get(task).STRATUM_FIELD if task in tasks.TABLE else None
        strata[task][(source, str(columns[field][i]) if field else "")].append(i)
    keep: list[int] = []
    for task, groups in strata.items():
        if limit is None:
            keep += [i for g in groups.values() for i in g]
            continue
        rng = random.Random(f"{seed}:{task}")
        for key, n in _allocate({k: len(g) for k, g in groups.items()}, limit, rng).items():
            keep += rng.sample(groups[key], n)
    keep.sort()
    scored = Counter(columns["task"][i] for i in keep)
    ids = sorted(f"{columns['source'][i]}/{columns['id'][i]}" for i in keep)
    return Sample(
        indices=keep,
        limit=limit,
        seed=seed,
        records={t: scored[t] for t in tasks.ordered(scored)},
        of={t: sum(len(g) for g in strata[t].values()) for t in tasks.ordered(strata)},
        fingerprint=hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
    )


def _allocate(sizes: dict[tuple[Any, ...], int], n: int, rng: random.Random) -> dict[tuple[Any, ...], int]:
    """How many of `n` records each stratum gives: all when n covers them; one each from n strata
    drawn at random when there are more strata than n; else one each and the rest in proportion to
    what each has left, by largest remainder (ties to the first stratum in sorted order)."""
    keys = sorted(sizes)
    if n >= sum(sizes.values()):
        return dict(sizes)
    if n < len(keys):
        return {k: 1 for k in rng.sample(keys, n)}
    rest, left = n - len(keys), {k: sizes[k] - 1 for k in keys}
    total = sum(left.values())
    quotas = {k: rest * left[k] / total for k in keys}
    alloc = {k: 1 + math.floor(quotas[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: -(quotas[k] - math.floor(quotas[k])))
    for k in by_remainder[: n - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def same_records(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two metrics.json scored the same records: their samples' fingerprints agree; metrics
    written before samples were recorded (neither has one) when their per-task counts agree."""
    fa = ((a or {}).get("sample") or {}).get("fingerprint")
    fb = ((b or {}).get("sample") or {}).get("fingerprint")
    if fa is None and fb is None:
        counts, other = (a or {}).get("counts"), (b or {}).get("counts")
        return counts is None or other is None or counts == other
    return fa == fb


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
