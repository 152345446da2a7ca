"""Object detection: every object of the source's categories, a box and a label each; scored as
COCO's official COCOeval scores it (crowd regions ignored, areas deciding small / medium / large)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.records import Example
from pipeline.tasks.task import (
    CardMetric,
    Extra,
    Headline,
    Row,
    TrainColumns,
    blank_example,
    describe_objects,
    identity,
    no_language,
    parsed_fields,
    predicted_objects,
    text_rows,
)

NAME = "detection"
FIELDS = ("objects", "categories", "crowd")
# `bbox` and `category` name the sub-fields of each object
COLUMNS = {"objects": "objects", "bbox": "bbox", "category": "category"}
HEADLINE = Headline("map_50", "mAP@0.5")
LOWER_IS_BETTER = False
UNIT_LABEL = "{}"
BASELINE = None
EXTRAS = (Extra("map", "mAP@[.5:.95]"),)
HUB_TASK = ("object-detection", "Object Detection")
CARD_METRICS = (
    CardMetric("map", "mAP", "COCO mAP@[.5:.95]"),
    CardMetric("map_50", "AP50", "COCO mAP@0.5"),
)
VOCABULARY = "categories"
CLOSED_SET = False
ANSWER_IN_TEXT = False
LABELS_DRAWN = True
EXAMPLE_INPUTS: Mapping[str, str] = {}

unit_score = identity


def references(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"objects": record["objects"], "crowd": record.get("crowd") or []}


def score(rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from pipeline.evaluation.metrics.detection import detection_f1, detection_metrics, format_validity

    gts = [
        {
            "image_id": f"{r['source']}/{r['id']}",
            "width": r["image_size"][0],
            "height": r["image_size"][1],
            "objects": r["references"]["objects"],
            "crowd": r["references"].get("crowd") or [],  # predictions from before crowd: none
            "categories": records[f"{r['source']}/{r['id']}"]["categories"],
        }
        for r in rows
    ]
    preds = [{"image_id": f"{r['source']}/{r['id']}", "objects": r["parsed"]["objects"]} for r in rows]
    metrics = detection_metrics(gts, preds)
    vocab = {c for g in gts for c in g["categories"]}
    metrics["format_validity"] = format_validity([r["parsed"] for r in rows], vocab)
    for r in rows:
        r["score"] = detection_f1(r["parsed"]["objects"], r["references"]["objects"])
    return metrics


def baseline(rows: list[Row], train: TrainColumns) -> None:
    return None


def prompt_example(
    *, question: str | None, classes: Sequence[str], phrase: str | None, language: str | None
) -> Example:
    """PaliGemma's detection prompt lists the categories to look for: `classes`."""
    no_language(NAME, language)
    return blank_example(NAME, categories=list(classes))


def template_example(language: str | None) -> None:
    return None


def parsed(pred: Any, scores: Sequence[float]) -> dict[str, Any]:
    return parsed_fields(pred, scores, text=False)


def result(parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"objects": predicted_objects(parsed)}


describe = describe_objects
card_rows = text_rows
