"""Phrase grounding: the box of the object a referring expression names; scored by top-box
accuracy at IoU >= 0.5 and mean IoU, per source (RefCOCO's val / testA / testB apart)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example, Object
from pipeline.tasks.task import Baseline, BoxTask, CardMetric, Headline

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class Grounding(BoxTask):
    NAME = "grounding"
    FIELDS = ("phrase", "objects")
    # `bboxes` (a list of boxes per row) or `bbox` (one box); `category` names the boxes
    COLUMNS = ("phrase", "bboxes", "bbox", "category")
    HEADLINE = Headline("accuracy", "accuracy@IoU0.5")
    BASELINE = Baseline("whole_image_baseline", "whole-image box baseline")
    HUB_TASK = ("zero-shot-object-detection", "Phrase Grounding")
    CARD_METRICS = (
        CardMetric("accuracy", "accuracy", "accuracy@IoU0.5 (top box)"),
        CardMetric("mean_iou", "iou", "mean IoU"),
    )
    EXAMPLE_INPUTS: ClassVar[dict[str, str]] = {"phrase": "the object"}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"phrase": record["phrase"], "objects": record["objects"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.grounding import grounding_metrics

        metrics = grounding_metrics(
            [[o["bbox"] for o in r["parsed"]["objects"]] for r in rows],
            [[o["bbox"] for o in r["references"]["objects"]] for r in rows],
            splits=[r["source"] for r in rows],
        )
        metrics["per_source"] = metrics.pop("per_split")
        for r, iou in zip(rows, metrics.pop("per_example_iou"), strict=True):
            r["score"] = 0.0 if iou is None else iou
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any]:
        """The whole image as the box."""
        from pipeline.metrics.grounding import grounding_metrics, whole_image_box

        m = grounding_metrics(
            [whole_image_box(*r["image_size"]) for r in rows],
            [[o["bbox"] for o in r["references"]["objects"]] for r in rows],
        )
        return {"accuracy": m["accuracy"], "mean_iou": m["mean_iou"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        phrase = given.phrase_for(self.NAME)
        given.no_language(self.NAME)
        return self.example(phrase=phrase, objects=[Object((0.0, 0.0, 1.0, 1.0), phrase)])


TASK = Grounding()
