"""Referring expression segmentation: the mask of the object a phrase names, as polygons (Florence-2)
or as a box and VQ-VAE codes decoded into a mask (PaliGemma: `mask`, a COCO RLE); scored by mask
mIoU, overall IoU and precision@0.5..0.9 (pycocotools.mask)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.task import Baseline, CardMetric, Headline, Task

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class Segmentation(Task):
    NAME = "segmentation"
    FIELDS = ("phrase", "polygons", "objects")
    COLUMNS = ("phrase", "bboxes", "bbox", "category", "polygons")
    HEADLINE = Headline("mean_iou", "mask mIoU")
    BASELINE = Baseline("whole_image_baseline", "whole-image mask baseline")
    HUB_TASK = ("image-segmentation", "Referring Expression Segmentation")
    CARD_METRICS = (CardMetric("mean_iou", "iou", "mask mIoU"), CardMetric("overall_iou", "iou", "mask oIoU"))
    ANSWER_IN_TEXT = False
    EXAMPLE_INPUTS: ClassVar[dict[str, str]] = {"phrase": "the object"}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"phrase": record["phrase"], "polygons": record["polygons"], "objects": record["objects"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.segmentation import segmentation_metrics

        metrics = segmentation_metrics(
            [predicted_mask(r["parsed"]) for r in rows],
            [r["references"]["polygons"] for r in rows],
            [r["image_size"] for r in rows],
        )
        for r, iou in zip(rows, metrics.pop("per_example_iou"), strict=True):
            r["score"] = iou
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any]:
        """The whole image as the mask."""
        from pipeline.metrics.segmentation import segmentation_metrics

        sizes = [r["image_size"] for r in rows]
        whole = [[[0.0, 0.0, w, 0.0, w, h, 0.0, h]] for w, h in sizes]
        m = segmentation_metrics(whole, [r["references"]["polygons"] for r in rows], sizes)
        return {k: m[k] for k in ("mean_iou", "overall_iou", "precision@0.5")}

    def prompt_example(self, given: PromptInputs) -> Example:
        phrase = given.phrase_for(self.NAME)
        given.no_language(self.NAME)
        # a placeholder mask (and its codes, for a family that writes masks as codes): only the prompt is used
        return self.example(phrase=phrase, polygons=[[0.0, 0.0, 1.0, 0.0, 1.0, 1.0]], mask_codes=[0] * 16)

    def parsed(self, pred: Any, scores: Sequence[float]) -> dict[str, Any]:
        out = {**super().parsed(pred, scores), "polygons": [list(p) for p in pred.polygons]}
        if pred.mask is not None:  # decoded from codes: the mask is the prediction, its boxes its parts
            out["mask"] = pred.mask
        return out

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        if parsed.get("mask") is not None:
            boxes = [
                {"bbox": o["bbox"], "label": o["category"], "score": o["score"]} for o in parsed["objects"]
            ]
            return {"polygons": parsed["polygons"], "mask": parsed["mask"], "objects": boxes}
        return {"polygons": parsed["polygons"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        if result.get("mask") is not None:
            h, w = result["mask"]["size"]
            boxes = "".join(
                "\n  box [" + ", ".join(f"{v:.1f}" for v in o["bbox"]) + "]" for o in result["objects"]
            )
            return f"a mask of {mask_area(result['mask'])} pixels on the {w}x{h} image (COCO RLE){boxes}"
        polygons = result["polygons"]
        text = f"{len(polygons)} polygon{'s' if len(polygons) != 1 else ''} (x, y pairs in pixels)"
        return text + "".join("\n  [" + ", ".join(f"{v:.1f}" for v in p) + "]" for p in polygons)


TASK = Segmentation()


def predicted_mask(parsed: Mapping[str, Any]) -> Any:
    """What a prediction says the mask is: its decoded mask (a COCO RLE) when it has one, else its
    polygons."""
    mask = parsed.get("mask")
    return mask if mask is not None else parsed["polygons"]


def mask_area(rle: Mapping[str, Any]) -> int:
    from pipeline.masks import from_rle

    return int(from_rle(rle).sum())
