"""Scoring generations: each task by its field's metric, the headline number of each task and the
one the best checkpoint is chosen by, the trivial baselines, and the fixed per-task subsets that
in-training evaluation and `--limit` score. Imports nothing of training."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from pipeline.errors import UvftError
from pipeline.evaluation.metrics.caption import caption_metrics
from pipeline.evaluation.metrics.classification import classification_metrics, normalize_label
from pipeline.evaluation.metrics.detection import detection_f1, detection_metrics, format_validity
from pipeline.evaluation.metrics.vqa import vqa_accuracy

# the headline number of each task, for the summary table
HEADLINE = {
    "vqa": ("accuracy", "VQA accuracy"),
    "classification": ("accuracy", "top-1 accuracy"),
    "caption": ("cider", "CIDEr-D"),
    "detection": ("map_50", "mAP@0.5"),
}


def score_tasks(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Metrics per task from generations; also sets each row's per-example `score`."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    metrics: dict[str, Any] = {}
    if rows_ := by_task.get("vqa"):
        metrics["vqa"] = vqa_accuracy(
            [r["parsed"]["text"] for r in rows_],
            [r["references"]["answers"] for r in rows_],
            [r["references"]["answer_type"] for r in rows_],
        )
        for r, acc in zip(rows_, metrics["vqa"].pop("per_question"), strict=True):
            r["score"] = acc
    if rows_ := by_task.get("caption"):
        metrics["caption"] = caption_metrics(
            [r["parsed"]["text"] for r in rows_], [r["references"]["captions"] for r in rows_]
        )
        for r, cider in zip(rows_, metrics["caption"].pop("per_image")["cider"], strict=True):
            r["score"] = min(float(cider), 1.0)
    if rows_ := by_task.get("classification"):
        labels = sorted({c for r in rows_ for c in r["references"]["categories"]})
        metrics["classification"] = classification_metrics(
            [r["parsed"]["text"] for r in rows_],
            [r["references"]["label"] for r in rows_],
            labels=labels or None,
        )
        closed = [r["parsed"].get("closed_set") for r in rows_]
        if all(c is not None for c in closed):
            metrics["classification"]["closed_set"] = classification_metrics(
                [c["label"] for c in closed], [r["references"]["label"] for r in rows_], labels=labels or None
            )
        for r in rows_:
            r["score"] = float(
                normalize_label(r["parsed"]["text"]) == normalize_label(r["references"]["label"])
            )
    if rows_ := by_task.get("detection"):
        gts = [
            {
                "image_id": f"{r['source']}/{r['id']}",
                "width": r["image_size"][0],
                "height": r["image_size"][1],
                "objects": r["references"]["objects"],
                "crowd": r["references"].get("crowd") or [],  # predictions from before crowd: none
                "categories": records[f"{r['source']}/{r['id']}"]["categories"],
            }
            for r in rows_
        ]
        preds = [{"image_id": f"{r['source']}/{r['id']}", "objects": r["parsed"]["objects"]} for r in rows_]
        metrics["detection"] = detection_metrics(gts, preds)
        vocab = {c for g in gts for c in g["categories"]}
        metrics["detection"]["format_validity"] = format_validity([r["parsed"] for r in rows_], vocab)
        for r in rows_:
            r["score"] = detection_f1(r["parsed"]["objects"], r["references"]["objects"])
    return metrics


def trivial_baselines(metrics: dict[str, Any], train: Any, rows: list[dict[str, Any]]) -> None:
    """Add the trivial baselines a model must beat: for VQA the most frequent training answer given
    to every question (VQAv2 accuracy), for classification the most frequent training class
    (top-1 accuracy); ties go to the first seen."""
    tasks, targets = train["task"], train["target"]
    for task, name in (("vqa", "answer"), ("classification", "label")):
        counts = Counter(t for k, t in zip(tasks, targets, strict=True) if k == task)
        scored = [r for r in rows if r["task"] == task]
        if not counts or not scored or task not in metrics:
            continue
        majority = counts.most_common(1)[0][0]
        if task == "vqa":
            refs = [r["references"]["answers"] for r in scored]
            acc = vqa_accuracy([majority] * len(scored), refs)["accuracy"]
        else:
            acc = sum(normalize_label(r["references"]["label"]) == normalize_label(majority) for r in scored)
            acc /= len(scored)
        metrics[task]["majority_baseline"] = {name: majority, "accuracy": acc}


def headline(metrics: dict[str, Any], key: str) -> float:
    """The number the best checkpoint is chosen by (eval.metric): "mean" of the tasks' headline
    scores, each in [0, 1] (CIDEr-D / 10), or a dotted key of the metrics."""
    if key == "mean":
        values = []
        for task, (name, _) in HEADLINE.items():
            if task in metrics and metrics[task].get(name) is not None:
                values.append(metrics[task][name] / (10.0 if task == "caption" else 1.0))
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
