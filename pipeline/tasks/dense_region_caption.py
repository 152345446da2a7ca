"""Dense region captioning: every salient region, a box and a free-text description each
(Florence-2's `<DENSE_REGION_CAPTION>`, Visual Genome's region descriptions); scored by dense
captioning mAP as DenseCap defines it (IoU thresholds x METEOR thresholds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import Example
from pipeline.tasks.task import Baseline, BoxTask, CardMetric, Extra, Headline, majority

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class DenseRegionCaption(BoxTask):
    NAME = "dense_region_caption"
    FIELDS = ("objects",)
    # each object's `category` is its description
    COLUMNS = ("objects", "bbox", "category")
    HEADLINE = Headline("map", "dense captioning mAP")
    EXTRAS = (Extra("det_map", "AP (boxes only)"),)
    BASELINE = Baseline("whole_image_baseline", "whole-image box, majority description")
    HUB_TASK = ("image-to-text", "Dense Region Captioning")
    CARD_METRICS = (CardMetric("map", "mAP", "dense captioning mAP (DenseCap)"),)

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"objects": record["objects"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.dense_caption import dense_caption_map
        from pipeline.metrics.detection import detection_f1

        metrics = dense_caption_map(
            [_regions(r["parsed"]["objects"]) for r in rows],
            [_regions(r["references"]["objects"]) for r in rows],
        )
        for r in rows:  # a row's own figure: boxes found at IoU 0.5, descriptions aside
            r["score"] = detection_f1(r["parsed"]["objects"], r["references"]["objects"], by_class=False)
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """One whole-image box described with the most frequent training description."""
        from pipeline.metrics.dense_caption import dense_caption_map

        text = majority([o["category"] for objs in train.values(self.NAME, "objects") for o in objs])
        if text is None:
            return None
        preds = [
            [{"bbox": [0.0, 0.0, *map(float, r["image_size"])], "description": text, "score": 1.0}]
            for r in rows
        ]
        m = dense_caption_map(preds, [_regions(r["references"]["objects"]) for r in rows])
        return {"text": text, "map": m["map"], "det_map": m["det_map"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example()


def _regions(objects: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Objects as the metric's regions: the description is the object's category."""
    return [{"bbox": o["bbox"], "description": o["category"], "score": o.get("score", 1.0)} for o in objects]


TASK = DenseRegionCaption()
