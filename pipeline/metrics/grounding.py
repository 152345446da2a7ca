"""Referring expression comprehension / phrase grounding: top-1 box accuracy at IoU >= 0.5, mean IoU.

The field's standard (RefCOCO/+/g as reported by MDETR, Florence-2, PaliGemma): each record (one
referring expression) is scored by its TOP predicted box only, the first one the model generated;
later boxes are ignored. Against the record's reference box(es), the top box scores the IoU of the
best-matching reference (RefCOCO has one reference per expression; phrase grounding may have several).

* ``accuracy``: fraction of records whose top box has IoU >= ``threshold`` (0.5) with a reference
  box; an IoU of exactly 0.5 counts as correct.
* ``mean_iou``: mean over records of that best IoU, with 0 for a record where the model produced no
  box (no box counts as a miss for ``accuracy`` too; ``num_no_box`` counts those records).
* ``per_split``: the same four numbers per split name (val / testA / testB ...) when ``splits`` is
  given, in order of first appearance.

Boxes are ``(x1, y1, x2, y2)`` in pixels, continuous coordinates: area ``(x2 - x1) * (y2 - y1)``, no
"+1" (as torchvision's ``box_iou`` and COCO; the old PASCAL VOC +1 convention is not used). The IoU
of two boxes whose union has zero area is defined as 0, so zero-area boxes never divide by zero. A
predicted box with ``x2 < x1`` or ``y2 < y1`` (a model may generate the corners swapped) has no area
and scores 0; a reference box like that is malformed and raises. ``accuracy`` and ``mean_iou`` are
None when there are no records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import datasets
import evaluate

from pipeline.metrics import TEXT, box_iou, metric_info
from pipeline.records import Box

THRESHOLD = 0.5
_BOXES = datasets.List(datasets.List(datasets.Value("float64")))


def whole_image_box(width: float, height: float) -> Box:
    """The trivial baseline's answer: the whole image, ``(0, 0, width, height)``."""
    if not (width > 0 and height > 0):
        raise ValueError(f"image size {width}x{height}: width and height must be positive")
    return (0.0, 0.0, float(width), float(height))


def _as_boxes(value: Any) -> list[Any]:
    """A record's boxes as a list: a single flat box ``[x1, y1, x2, y2]`` becomes a list of one."""
    if value is None:
        return []
    items = list(value)
    return [items] if items and isinstance(items[0], Real) else items


def _check_box(box: Any, index: int, side: str) -> Box:
    if isinstance(box, (str, bytes)):
        raise ValueError(f"record {index}: {side} box {box!r} is not four numbers")
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"record {index}: {side} box {box!r} is not four numbers") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"record {index}: {side} box {box!r} is not four finite numbers (x1, y1, x2, y2)")
    return values  # type: ignore[return-value]


def top_box_iou(prediction: Any, reference: Any, index: int = 0) -> float | None:
    """Best IoU of the top (first) predicted box with the reference box(es); None when no box was predicted.

    ``prediction`` and ``reference`` are one xyxy box or a list of them. ``index`` names the record
    in errors.
    """
    preds = [_check_box(b, index, "predicted") for b in _as_boxes(prediction)]
    refs = [_check_box(b, index, "reference") for b in _as_boxes(reference)]
    if not refs:
        raise ValueError(f"record {index}: no reference box")
    for x1, y1, x2, y2 in refs:
        if x2 < x1 or y2 < y1:
            raise ValueError(f"record {index}: reference box {[x1, y1, x2, y2]} has x2 < x1 or y2 < y1")
    if not preds:
        return None
    return max(box_iou(preds[0], r) for r in refs)


def _summary(ious: Sequence[float | None], threshold: float) -> dict[str, Any]:
    n = len(ious)
    scores = [0.0 if v is None else v for v in ious]
    return {
        "accuracy": sum(v >= threshold for v in scores) / n if n else None,
        "mean_iou": sum(scores) / n if n else None,
        "num_no_box": sum(v is None for v in ious),
        "num_examples": n,
    }


def grounding_metrics(
    predictions: Sequence[Any],
    references: Sequence[Any],
    splits: Sequence[str | None] | None = None,
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """Top-1 grounding accuracy at IoU >= ``threshold`` and mean IoU of ``predictions`` (one entry per
    record: the predicted boxes in generation order, or one box) against ``references`` (one box or
    a list of boxes per record).

    Returns ``{"accuracy": float | None, "mean_iou": float | None, "num_no_box": int,
    "num_examples": int, "per_example_iou": [float | None, ...] (None: no box predicted)}``, plus
    ``"per_split": {split: {"accuracy", "mean_iou", "num_no_box", "num_examples"}}`` when ``splits``
    (one split name per record) is given; a record whose split is None counts toward the overall
    numbers only.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if splits is not None and len(splits) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(splits)} split names")
    ious = [top_box_iou(p, r, i) for i, (p, r) in enumerate(zip(predictions, references, strict=True))]
    out = _summary(ious, threshold)
    out["per_example_iou"] = ious
    if splits is not None:
        by_split: dict[str, list[float | None]] = {}
        for iou, split in zip(ious, splits, strict=True):
            if split is not None:
                by_split.setdefault(str(split), []).append(iou)
        out["per_split"] = {name: _summary(values, threshold) for name, values in by_split.items()}
    return out


_DESCRIPTION = "Top-1 grounding accuracy (IoU >= 0.5) and mean IoU; see pipeline.metrics.grounding."
_CITATION = """@inproceedings{kazemzadeh2014referitgame,
  title={ReferItGame: Referring to Objects in Photographs of Natural Scenes},
  author={Kazemzadeh, Sahar and Ordonez, Vicente and Matten, Mark and Berg, Tamara},
  booktitle={EMNLP}, year={2014}}"""
_INPUTS = """
Args:
    predictions: list (one per record) of predicted xyxy boxes in generation order, or one box; may be empty.
    references: list (one per record) of reference xyxy boxes, or one box.
    splits: optional list of split names (or None), one per record ("val", "testA", "testB").
    threshold: IoU a top box needs to count as correct (default 0.5; >= counts).
Returns: the dict of ``grounding_metrics``.
"""


def _norm(batch: Sequence[Any] | None) -> list[list[Any]] | None:
    return None if batch is None else [[list(b) for b in _as_boxes(v)] for v in batch]


def _split_names(splits: Sequence[str | None] | None, n: int) -> list[str]:
    # an Arrow string column holds no None: "" stands for "no split"
    return [""] * n if splits is None else ["" if s is None else str(s) for s in splits]


class GroundingAccuracy(evaluate.Metric):
    """``evaluate`` wrapper of :func:`grounding_metrics`, usable offline:
    ``GroundingAccuracy().compute(predictions=[...], references=[...], splits=[...])``, ``splits``
    optional. Stored as Arrow strings, a missing split (None, or ``splits`` left out) becomes "" and
    back; with no split at all the result has no ``per_split``, as from the plain function."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION, _CITATION, _INPUTS, predictions=_BOXES, references=_BOXES, splits=TEXT
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """As ``evaluate.Metric.compute``, with ``splits`` optional."""
        kwargs.setdefault("splits", None)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, splits=None, **kwargs):
        """Add a batch of records; a single flat box per record is wrapped into a list of one."""
        if predictions is not None:
            splits = _split_names(splits, len(predictions))
        return super().add_batch(
            predictions=_norm(predictions), references=_norm(references), splits=splits, **kwargs
        )

    def add(self, *, prediction=None, reference=None, splits=None, **kwargs):
        """Add one record; a single flat box is wrapped into a list of one."""
        prediction = None if prediction is None else _norm([prediction])[0]  # type: ignore[index]
        reference = None if reference is None else _norm([reference])[0]  # type: ignore[index]
        splits = _split_names([splits], 1)[0]
        return super().add(prediction=prediction, reference=reference, splits=splits, **kwargs)

    def _compute(self, predictions, references, splits, threshold: float = THRESHOLD) -> dict[str, Any]:
        names = [s or None for s in splits]
        if all(s is None for s in names):
            return grounding_metrics(predictions, references, None, threshold)
        return grounding_metrics(predictions, references, names, threshold)
