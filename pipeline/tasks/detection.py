"""Object detection: every object of the source's categories, a box and a label each; scored as
COCO's official COCOeval scores it (crowd regions ignored, areas deciding small / medium / large)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import Example
from pipeline.tasks.task import BoxTask, CardMetric, Extra, Headline

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row


class Detection(BoxTask):
    NAME = "detection"
    FIELDS = ("objects", "categories", "crowd")
    # `bbox` and `category` name the sub-fields of each object
    COLUMNS = ("objects", "bbox", "category")
    HEADLINE = Headline("map_50", "mAP@0.5")
    EXTRAS = (Extra("map", "mAP@[.5:.95]"),)
    HUB_TASK = ("object-detection", "Object Detection")
    CARD_METRICS = (
        CardMetric("map", "mAP", "COCO mAP@[.5:.95]"),
        CardMetric("map_50", "AP50", "COCO mAP@0.5"),
    )
    VOCABULARY = "categories"

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"objects": record["objects"], "crowd": record.get("crowd") or []}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.detection import detection_f1, detection_metrics, format_validity

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

    def prompt_example(self, given: PromptInputs) -> Example:
        """PaliGemma's detection prompt lists the categories to look for: the given classes."""
        given.no_language(self.NAME)
        return self.example(categories=list(given.classes))


TASK = Detection()
