"""Phrase grounding: the box of the object a referring expression names; scored by top-box
accuracy at IoU >= 0.5 and mean IoU, per source (RefCOCO's val / testA / testB apart)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.records import Example, Object
from pipeline.tasks.task import (
    Baseline,
    CardMetric,
    Headline,
    Row,
    TrainColumns,
    blank_example,
    describe_objects,
    identity,
    need_phrase,
    no_language,
    parsed_fields,
    predicted_objects,
    text_rows,
)

NAME = "grounding"
FIELDS = ("phrase", "objects")
# `bboxes` (a list of boxes per row) or `bbox` (one box); `category` names the boxes
COLUMNS = {"phrase": "phrase", "bboxes": "bboxes", "bbox": "bbox", "category": "category"}
HEADLINE = Headline("accuracy", "accuracy@IoU0.5")
LOWER_IS_BETTER = False
UNIT_LABEL = "{}"
BASELINE = Baseline("whole_image_baseline", "whole-image box baseline")
EXTRAS = ()
HUB_TASK = ("zero-shot-object-detection", "Phrase Grounding")
CARD_METRICS = (
    CardMetric("accuracy", "accuracy", "accuracy@IoU0.5 (top box)"),
    CardMetric("mean_iou", "iou", "mean IoU"),
)
VOCABULARY = None
CLOSED_SET = False
ANSWER_IN_TEXT = False
LABELS_DRAWN = True
EXAMPLE_INPUTS: Mapping[str, str] = {"phrase": "the object"}

unit_score = identity


def references(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"phrase": record["phrase"], "objects": record["objects"]}


def score(rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from pipeline.evaluation.metrics.grounding import grounding_metrics

    metrics = grounding_metrics(
        [[o["bbox"] for o in r["parsed"]["objects"]] for r in rows],
        [[o["bbox"] for o in r["references"]["objects"]] for r in rows],
        splits=[r["source"] for r in rows],
    )
    metrics["per_source"] = metrics.pop("per_split")
    for r, iou in zip(rows, metrics.pop("per_example_iou"), strict=True):
        r["score"] = 0.0 if iou is None else iou
    return metrics


def baseline(rows: list[Row], train: TrainColumns) -> dict[str, Any]:
    """The whole image as the box."""
    from pipeline.evaluation.metrics.grounding import grounding_metrics, whole_image_box

    m = grounding_metrics(
        [whole_image_box(*r["image_size"]) for r in rows],
        [[o["bbox"] for o in r["references"]["objects"]] for r in rows],
    )
    return {"accuracy": m["accuracy"], "mean_iou": m["mean_iou"]}


def prompt_example(
    *, question: str | None, classes: Sequence[str], phrase: str | None, language: str | None
) -> Example:
    phrase = need_phrase(NAME, phrase)
    no_language(NAME, language)
    return blank_example(NAME, phrase=phrase, objects=[Object((0.0, 0.0, 1.0, 1.0), phrase)])


def template_example(language: str | None) -> None:
    return None


def parsed(pred: Any, scores: Sequence[float]) -> dict[str, Any]:
    return parsed_fields(pred, scores, text=False)


def result(parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"objects": predicted_objects(parsed)}


describe = describe_objects
card_rows = text_rows
