"""Each field's reference metric (detection, classification, vqa, caption, grounding,
segmentation, ocr, dense_caption, proposals): plain functions of plain values and offline
evaluate.Metric, below the task table (pipeline/tasks/), whose `score` calls them. Nothing here
knows a record, a model or a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

TEXT = datasets.Value("string")
TEXTS = datasets.Sequence(datasets.Value("string"))


def metric_info(description: str, citation: str, inputs: str, **features: Any) -> evaluate.MetricInfo:
    """The `_info` of an offline evaluate.Metric: its texts and its Arrow features by column."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs,
        features=datasets.Features(features),
    )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes; 0 when their union has no area (zero-area or inverted boxes)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
