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
from pipeline.evaluation.metrics.grounding import grounding_metrics, whole_image_box
from pipeline.evaluation.metrics.ocr import ocr_metrics
from pipeline.evaluation.metrics.segmentation import segmentation_metrics
from pipeline.evaluation.metrics.vqa import vqa_accuracy
from pipeline.formats import DEFAULT_LANGUAGE

# the headline number of each task, for the summary table
HEADLINE = {
    "vqa": ("accuracy", "VQA accuracy"),
    "classification": ("accuracy", "top-1 accuracy"),
    "caption": ("cider", "CIDEr-D"),
    "detection": ("map_50", "mAP@0.5"),
    "grounding": ("accuracy", "accuracy@IoU0.5"),
    "segmentation": ("mean_iou", "mask mIoU"),
    "ocr": ("cer", "CER (lower is better)"),
}
LOWER_IS_BETTER = {"ocr"}  # the headline mean counts these as max(0, 1 - value)
# the trivial baseline of each task that has one: (key in the task's metrics, its name)
BASELINES = {
    "vqa": ("majority_baseline", "majority-answer baseline"),
    "classification": ("majority_baseline", "majority-class baseline"),
    "grounding": ("whole_image_baseline", "whole-image box baseline"),
    "segmentation": ("whole_image_baseline", "whole-image mask baseline"),
    "ocr": ("majority_baseline", "majority-text baseline"),
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
        metrics["caption"] = _caption_by_language(rows_)
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
    if rows_ := by_task.get("grounding"):
        metrics["grounding"] = grounding_metrics(
            [[o["bbox"] for o in r["parsed"]["objects"]] for r in rows_],
            [[o["bbox"] for o in r["references"]["objects"]] for r in rows_],
            splits=[r["source"] for r in rows_],
        )
        metrics["grounding"]["per_source"] = metrics["grounding"].pop("per_split")
        for r, iou in zip(rows_, metrics["grounding"].pop("per_example_iou"), strict=True):
            r["score"] = 0.0 if iou is None else iou
    if rows_ := by_task.get("segmentation"):
        metrics["segmentation"] = segmentation_metrics(
            [r["parsed"]["polygons"] for r in rows_],
            [r["references"]["polygons"] for r in rows_],
            [r["image_size"] for r in rows_],
        )
        for r, iou in zip(rows_, metrics["segmentation"].pop("per_example_iou"), strict=True):
            r["score"] = iou
    if rows_ := by_task.get("ocr"):
        metrics["ocr"] = ocr_metrics(
            [r["parsed"]["text"] for r in rows_], [r["references"]["text"] for r in rows_]
        )
        per_anls = metrics["ocr"].pop("per_example_anls")
        for r, cer, anls in zip(rows_, metrics["ocr"].pop("per_example_cer"), per_anls, strict=True):
            r["score"] = anls if cer is None else max(0.0, 1.0 - cer)
    return metrics


def _caption_by_language(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Caption metrics, each language scored apart (its own tokenizer and CIDEr document
    frequencies); with several languages the top-level numbers are their means weighted by caption
    count, and `by_language` holds each. Sets each row's score (its CIDEr-D, at most 1)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["references"].get("language") or DEFAULT_LANGUAGE].append(r)
    by_language: dict[str, Any] = {}
    for lang, group in sorted(groups.items()):
        m = caption_metrics(
            [r["parsed"]["text"] for r in group], [r["references"]["captions"] for r in group], language=lang
        )
        for r, cider in zip(group, m.pop("per_image")["cider"], strict=True):
            r["score"] = min(float(cider), 1.0)
        by_language[lang] = m
    if len(by_language) == 1:
        return next(iter(by_language.values()))
    total = sum(m["count"] for m in by_language.values())
    keys = [k for k, v in next(iter(by_language.values())).items() if k != "count" and isinstance(v, float)]
    out: dict[str, Any] = {k: sum(m[k] * m["count"] for m in by_language.values()) / total for k in keys}
    out.update(count=total, tokenizer="per language", by_language=by_language)
    return out


def trivial_baselines(metrics: dict[str, Any], train: Any, rows: list[dict[str, Any]]) -> None:
    """Add the trivial baselines a model must beat (`BASELINES`): for VQA the most frequent training
    answer given to every question (VQAv2 accuracy), for classification the most frequent training
    class (top-1 accuracy), for OCR the most frequent training text (CER, ANLS), ties to the first
    seen; for grounding the whole image as the box and for segmentation as the mask."""
    scored: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["task"] in metrics:
            scored[r["task"]].append(r)
    tasks = train["task"]
    read: dict[str, Any] = {}  # columns read so far (a Dataset column is a read of the whole column)
    for task, name, column in (
        ("vqa", "answer", "target"),
        ("classification", "label", "target"),
        ("ocr", "text", "text"),
    ):
        if not scored[task]:
            continue  # the column is read only for a task that was scored
        if column not in read:
            read[column] = train[column]
        values = read[column]
        counts = Counter(t for k, t in zip(tasks, values, strict=True) if k == task and t is not None)
        if not counts:
            continue
        majority = counts.most_common(1)[0][0]
        refs = [r["references"] for r in scored[task]]
        if task == "vqa":
            result = {
                "accuracy": vqa_accuracy([majority] * len(refs), [x["answers"] for x in refs])["accuracy"]
            }
        elif task == "classification":
            hits = sum(normalize_label(x["label"]) == normalize_label(majority) for x in refs)
            result = {"accuracy": hits / len(refs)}
        else:
            m = ocr_metrics([majority] * len(refs), [x["text"] for x in refs])
            result = {k: m[k] for k in ("cer", "wer", "anls", "exact_match")}
        metrics[task]["majority_baseline"] = {name: majority, **result}
    if rows_ := scored["grounding"]:
        m = grounding_metrics(
            [whole_image_box(*r["image_size"]) for r in rows_],
            [[o["bbox"] for o in r["references"]["objects"]] for r in rows_],
        )
        metrics["grounding"]["whole_image_baseline"] = {"accuracy": m["accuracy"], "mean_iou": m["mean_iou"]}
    if rows_ := scored["segmentation"]:
        whole = [[[0.0, 0.0, w, 0.0, w, h, 0.0, h]] for w, h in (r["image_size"] for r in rows_)]
        m = segmentation_metrics(
            whole, [r["references"]["polygons"] for r in rows_], [r["image_size"] for r in rows_]
        )
        metrics["segmentation"]["whole_image_baseline"] = {
            k: m[k] for k in ("mean_iou", "overall_iou", "precision@0.5")
        }


def baseline_value(metrics: dict[str, Any], task: str) -> float | None:
    """The task's trivial baseline in its headline metric (None when it has none)."""
    key, _ = BASELINES.get(task, (None, None))
    value = metrics.get(task, {}).get(key, {}).get(HEADLINE[task][0]) if key else None
    return float(value) if isinstance(value, (int, float)) else None


def headline(metrics: dict[str, Any], key: str) -> float:
    """The number the best checkpoint is chosen by (eval.metric): "mean" of the tasks' headline
    scores, each in [0, 1] (CIDEr-D / 10, OCR's max(0, 1 - CER)), or a dotted key of the metrics."""
    if key == "mean":
        values = []
        for task, (name, _) in HEADLINE.items():
            if task in metrics and metrics[task].get(name) is not None:
                value = metrics[task][name] / (10.0 if task == "caption" else 1.0)
                values.append(max(0.0, 1.0 - value) if task in LOWER_IS_BETTER else value)
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
