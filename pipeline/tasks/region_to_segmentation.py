"""Region to segmentation: the mask of the object in a given region, as polygons (Florence-2's
`<REGION_TO_SEGMENTATION>`); scored as referring segmentation is (mask mIoU, oIoU,
precision@0.5..0.9), against the given region's box as the mask for its baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.segmentation import Segmentation
from pipeline.tasks.task import Baseline

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class RegionToSegmentation(Segmentation):
    NAME = "region_to_segmentation"
    FIELDS = ("region", "polygons", "objects")
    COLUMNS = ("region", "polygons", "category")
    BASELINE = Baseline("box_baseline", "region-box mask baseline")
    HUB_TASK = ("image-segmentation", "Region Segmentation")
    EXAMPLE_INPUTS: ClassVar[dict[str, Any]] = {"region": (0.0, 0.0, 1.0, 1.0)}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"region": record["region"], "polygons": record["polygons"], "objects": record["objects"]}

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any]:
        """The given region's box as the mask: what a model knows without looking inside it."""
        from pipeline.metrics.segmentation import segmentation_metrics

        boxes = []
        for r in rows:
            x1, y1, x2, y2 = r["references"]["region"]
            boxes.append([[x1, y1, x2, y1, x2, y2, x1, y2]])
        sizes = [r["image_size"] for r in rows]
        m = segmentation_metrics(boxes, [r["references"]["polygons"] for r in rows], sizes)
        return {k: m[k] for k in ("mean_iou", "overall_iou", "precision@0.5")}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(
            given.image_size, region=given.region_for(self.NAME), polygons=[[0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]
        )


TASK = RegionToSegmentation()
