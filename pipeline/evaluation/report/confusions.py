"""Confusion matrices: classification's (from its metrics), detection's (from the generations: boxes
matched by IoU, missed and spurious ones counted), and the most-confused pairs of either."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipeline import tasks
from pipeline.evaluation.report.tables import Generation, task_metrics

MATCH_IOU = 0.5  # a predicted box matches a reference box (detection's confusion)
TOP_PAIRS = 5
MISSED = "(missed)"  # detection's confusion: a reference box no prediction matched
SPURIOUS = "(spurious)"  # a predicted box that matched no reference box


@dataclass(frozen=True)
class Confusion:
    """Counts of reference classes (rows) predicted as classes (columns)."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


def confusion(task: str, metrics: Mapping[str, Any], generations: Sequence[Generation]) -> Confusion | None:
    """A task's confusion matrix: its metrics' own (classification's, "(other)" the labels outside
    the class list), or for detection the category confusion of its generations; else None."""
    own = task_metrics(metrics, task).get("confusion_matrix")
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


def pair_text(pair: Pair) -> str:
    share = f" ({pair.count / pair.of:.0%})" if pair.of else ""
    return f"{pair.reference} predicted as {pair.predicted}: {pair.count} of {pair.of}{share}"


def box_tally(conf: Confusion) -> str | None:
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
