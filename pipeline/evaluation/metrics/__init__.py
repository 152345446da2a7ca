"""Metrics per task (detection, classification, vqa, caption): plain functions and evaluate.Metric."""

from __future__ import annotations

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
