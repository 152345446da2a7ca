"""Open-vocabulary detection: the boxes of the classes a prompt names (Florence-2's
`<OPEN_VOCABULARY_DETECTION>{class}`, PaliGemma's `detect a ; b`); scored by COCO mAP over the
named classes (pycocotools' COCOeval), each record an image whose vocabulary is what it asked for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.errors import UvftError
from pipeline.records import Example
from pipeline.tasks.task import Baseline, BoxTask, CardMetric, Extra, Headline

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class OpenVocabularyDetection(BoxTask):
    NAME = "open_vocabulary_detection"
    FIELDS = ("categories", "objects")
    # `categories`: the classes the prompt names; `bbox` and `category` the sub-fields of each object
    COLUMNS = ("categories", "objects", "bbox", "category")
    HEADLINE = Headline("map_50", "mAP@0.5 (named classes)")
    EXTRAS = (Extra("map", "mAP@[.5:.95]"),)
    BASELINE = Baseline("whole_image_baseline", "whole-image box baseline")
    HUB_TASK = ("zero-shot-object-detection", "Open-Vocabulary Detection")
    CARD_METRICS = (
        CardMetric("map", "mAP", "COCO mAP@[.5:.95] over the named classes"),
        CardMetric("map_50", "AP50", "COCO mAP@0.5 over the named classes"),
    )
    VOCABULARY = "classes"
    EXAMPLE_INPUTS: ClassVar[dict[str, Any]] = {"classes": ["object"]}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"categories": record["categories"], "objects": record["objects"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """COCO mAP over the named classes. A box of a class the prompt did not name is left out
        (the question was about other classes) and counted in `other_class`."""
        from pipeline.metrics.detection import detection_f1, detection_metrics

        preds, other = [], 0
        for r in rows:
            named = set(r["references"]["categories"])
            kept = [o for o in r["parsed"]["objects"] if o["category"] in named]
            other += len(r["parsed"]["objects"]) - len(kept)
            preds.append({"image_id": f"{r['source']}/{r['id']}", "objects": kept})
            r["score"] = detection_f1(kept, r["references"]["objects"])
        metrics = detection_metrics(_truth(rows), preds)
        metrics["other_class"] = other
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any]:
        """One whole-image box per named class."""
        from pipeline.metrics.detection import detection_metrics

        preds = [
            {
                "image_id": f"{r['source']}/{r['id']}",
                "objects": [
                    {"bbox": [0.0, 0.0, *map(float, r["image_size"])], "category": c, "score": 1.0}
                    for c in r["references"]["categories"]
                ],
            }
            for r in rows
        ]
        m = detection_metrics(_truth(rows), preds)
        return {"map_50": m["map_50"], "map": m["map"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        """The prompt names the given classes (Florence-2: exactly one)."""
        given.no_language(self.NAME)
        if not given.classes:
            raise UvftError(f"task {self.NAME} needs the classes to find (--classes)")
        return self.example(categories=list(given.classes))


def _truth(rows: list[Row]) -> list[dict[str, Any]]:
    return [
        {
            "image_id": f"{r['source']}/{r['id']}",
            "width": r["image_size"][0],
            "height": r["image_size"][1],
            "objects": r["references"]["objects"],
            "categories": r["references"]["categories"],
        }
        for r in rows
    ]


TASK = OpenVocabularyDetection()
