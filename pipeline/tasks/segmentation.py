"""Referring expression segmentation: the mask of the object a phrase names, as polygons; scored
by mask mIoU, overall IoU and precision@0.5..0.9 (pycocotools.mask)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.records import Example
from pipeline.tasks.task import (
    Baseline,
    CardMetric,
    Headline,
    Row,
    TrainColumns,
    blank_example,
    identity,
    need_phrase,
    no_language,
    parsed_fields,
    text_rows,
)

NAME = "segmentation"
FIELDS = ("phrase", "polygons", "objects")
COLUMNS = {
    "phrase": "phrase",
    "bboxes": "bboxes",
    "bbox": "bbox",
    "category": "category",
    "polygons": "polygons",
}
HEADLINE = Headline("mean_iou", "mask mIoU")
LOWER_IS_BETTER = False
UNIT_LABEL = "{}"
BASELINE = Baseline("whole_image_baseline", "whole-image mask baseline")
EXTRAS = ()
HUB_TASK = ("image-segmentation", "Referring Expression Segmentation")
CARD_METRICS = (CardMetric("mean_iou", "iou", "mask mIoU"), CardMetric("overall_iou", "iou", "mask oIoU"))
VOCABULARY = None
CLOSED_SET = False
ANSWER_IN_TEXT = False
LABELS_DRAWN = False
EXAMPLE_INPUTS: Mapping[str, str] = {"phrase": "the object"}

unit_score = identity


def references(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"phrase": record["phrase"], "polygons": record["polygons"], "objects": record["objects"]}


def score(rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from pipeline.evaluation.metrics.segmentation import segmentation_metrics

    metrics = segmentation_metrics(
        [r["parsed"]["polygons"] for r in rows],
        [r["references"]["polygons"] for r in rows],
        [r["image_size"] for r in rows],
    )
    for r, iou in zip(rows, metrics.pop("per_example_iou"), strict=True):
        r["score"] = iou
    return metrics


def baseline(rows: list[Row], train: TrainColumns) -> dict[str, Any]:
    """The whole image as the mask."""
    from pipeline.evaluation.metrics.segmentation import segmentation_metrics

    whole = [[[0.0, 0.0, w, 0.0, w, h, 0.0, h]] for w, h in (r["image_size"] for r in rows)]
    m = segmentation_metrics(
        whole, [r["references"]["polygons"] for r in rows], [r["image_size"] for r in rows]
    )
    return {k: m[k] for k in ("mean_iou", "overall_iou", "precision@0.5")}


def prompt_example(
    *, question: str | None, classes: Sequence[str], phrase: str | None, language: str | None
) -> Example:
    phrase = need_phrase(NAME, phrase)
    no_language(NAME, language)
    return blank_example(NAME, phrase=phrase, polygons=[[0.0, 0.0, 1.0, 0.0, 1.0, 1.0]])


def template_example(language: str | None) -> None:
    return None


def parsed(pred: Any, scores: Sequence[float]) -> dict[str, Any]:
    return {**parsed_fields(pred, scores, text=False), "polygons": [list(p) for p in pred.polygons]}


def result(parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"polygons": parsed["polygons"]}


def describe(result: Mapping[str, Any]) -> str:
    polygons = result["polygons"]
    text = f"{len(polygons)} polygon{'s' if len(polygons) != 1 else ''} (x, y pairs in pixels)"
    return text + "".join("\n  [" + ", ".join(f"{v:.1f}" for v in p) + "]" for p in polygons)


card_rows = text_rows
