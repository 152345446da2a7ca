"""Region proposals: a box around every object, without classes (Florence-2's `<REGION_PROPOSAL>`);
scored by COCO's class-agnostic average recall at 100 proposals (AR@100, pycocotools)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import Example
from pipeline.tasks.task import Baseline, BoxTask, CardMetric, Extra, Headline

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns

# the sliding-window baseline: a k x k grid of boxes for each k, the coarse ones scored first
GRIDS = (1, 2, 3, 4, 5, 6)


class RegionProposal(BoxTask):
    NAME = "region_proposal"
    FIELDS = ("objects",)
    # the objects' boxes are the answer; their category is kept but not rendered
    COLUMNS = ("objects", "bbox", "category")
    HEADLINE = Headline("ar_100", "AR@100")
    EXTRAS = (Extra("ar_10", "AR@10"),)
    BASELINE = Baseline("grid_baseline", f"sliding-window baseline ({sum(k * k for k in GRIDS)} boxes)")
    HUB_TASK = ("object-detection", "Region Proposal")
    CARD_METRICS = (CardMetric("ar_100", "recall", "AR@100 (class-agnostic)"),)

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"objects": record["objects"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.detection import detection_f1
        from pipeline.metrics.proposals import proposal_recall

        metrics = proposal_recall(
            [r["parsed"]["objects"] for r in rows],
            [r["references"]["objects"] for r in rows],
            [r["image_size"] for r in rows],
        )
        for r in rows:
            r["score"] = detection_f1(r["parsed"]["objects"], r["references"]["objects"], by_class=False)
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any]:
        """A fixed sliding window: k x k boxes tiling the image for each k of GRIDS."""
        from pipeline.metrics.proposals import proposal_recall

        m = proposal_recall(
            [grid_boxes(*r["image_size"]) for r in rows],
            [r["references"]["objects"] for r in rows],
            [r["image_size"] for r in rows],
        )
        return {"ar_100": m["ar_100"], "ar_10": m["ar_10"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example()


def grid_boxes(width: float, height: float) -> list[dict[str, Any]]:
    """The sliding-window proposals of an image: k x k tiles for each k of GRIDS, scored 1/k."""
    boxes = []
    for k in GRIDS:
        w, h = width / k, height / k
        boxes += [
            {"bbox": [i * w, j * h, (i + 1) * w, (j + 1) * h], "category": "", "score": 1.0 / k}
            for j in range(k)
            for i in range(k)
        ]
    return boxes


TASK = RegionProposal()
