"""Region proposal recall: COCO's class-agnostic average recall, AR@1, AR@10, AR@100 and AR by size.

The evaluation is COCOeval's with ``params.useCats = 0`` (every box one class) and its default
``maxDets`` (1, 10, 100): the recall of the reference boxes by each image's top-scored 1, 10 or 100
predicted boxes, averaged over the IoU thresholds 0.5:0.05:0.95; the numbers are COCOeval's
``stats[6:12]`` (AR@1, AR@10, AR@100, then AR small / medium / large at 100). It is the
"AR@100" of proposal papers (Hosang et al., What makes for effective detection proposals?, PAMI
2016; Detectron's ``rpn`` evaluation). COCOeval's matching is greedy in score order: a box goes to
the unmatched reference it overlaps most, so a second box on a found region can still find a
neighbour. Predictions beyond an image's top 100 never count.

The COCO objects are built by ``pipeline.metrics.detection`` (``build_coco`` and the quiet
``COCOeval`` of ``_coco_api``), so boxes and areas mean what they mean there: xyxy in pixels,
continuous coordinates; a reference's ``area`` (COCO's, of its segmentation) decides small / medium
/ large, else its box's area stands in. ``backend`` runs COCOeval: pycocotools (default, the
reference) or faster-coco-eval.

Inputs, one entry per image: predictions ``[{"bbox": xyxy, "score": float}]`` (score optional:
1.0, so unscored boxes rank in input order), references ``[xyxy]`` or ``[{"bbox": xyxy, "area":
float}]``. ``image_sizes`` (``(width, height)`` per image) are written into the COCO images;
COCOeval's box evaluation does not use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import datasets
import evaluate

from pipeline.metrics import metric_info
from pipeline.metrics.detection import _coco_api, _get, _quiet, _xywh, build_coco, coco_pair, scored_items

DEFAULT_BACKEND = "pycocotools"
STAT_KEYS = ("ar_1", "ar_10", "ar_100", "ar_small", "ar_medium", "ar_large")  # COCOeval.stats[6:12]
_CLASS = "region"  # the one category every box is given: useCats=0 ignores it, COCO needs one


def _check_box(box: Any, where: str) -> list[float]:
    try:
        values = [float(v) for v in box] if not isinstance(box, (str, bytes)) else []
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where} {box!r} is not four finite numbers (x1, y1, x2, y2)")
    return values


def _reference(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, Mapping) or hasattr(item, "bbox"):
        box = _check_box(_get(item, "bbox"), f"{where}.bbox")
        area = _get(item, "area")
    else:
        box, area = _check_box(item, where), None
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"{where} box {box} has x2 < x1 or y2 < y1")
    if area is not None and not (isinstance(area, Real) and math.isfinite(area) and area >= 0):
        raise ValueError(f"{where}.area {area!r} is not a finite number >= 0")
    return {"bbox": box, "category": _CLASS, "area": None if area is None else float(area)}


def _prediction(item: Any, where: str) -> tuple[list[float], float]:
    box = _check_box(_get(item, "bbox"), f"{where}.bbox")
    score = _get(item, "score")
    score = 1.0 if score is None else score
    if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
        raise ValueError(f"{where}.score {score!r} is not a finite number")
    return box, float(score)


def _regions(items: Any, index: int, side: str) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ValueError(f"example {index}: {side} must be a list of boxes, not {type(items).__name__}")
    return list(items)


def proposal_recall(
    predictions: Sequence[Any],
    references: Sequence[Any],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    *,
    backend: str = DEFAULT_BACKEND,
) -> dict[str, Any]:
    """Class-agnostic COCO average recall of ``predictions`` against ``references`` (one list per image).

    Returns ``{"ar_1", "ar_10", "ar_100", "ar_small", "ar_medium", "ar_large": float | None,
    "num_images", "num_references", "num_predictions": int}``; an entry is None where COCOeval has
    nothing to recall (no image, or no reference of that size).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction lists but {len(references)} reference lists")
    if image_sizes is not None and len(image_sizes) != len(references):
        raise ValueError(f"{len(image_sizes)} image sizes but {len(references)} reference lists")
    gts = []
    for i, refs in enumerate(references):
        width, height = (0, 0) if image_sizes is None else image_sizes[i]
        objects = [
            _reference(r, f"example {i}: references[{j}]")
            for j, r in enumerate(_regions(refs, i, "references"))
        ]
        gts.append(
            {"image_id": i, "width": width, "height": height, "objects": objects, "categories": [_CLASS]}
        )
    gt_dict, img_ids, cat_ids = build_coco(gts)
    results = []
    for i, preds in enumerate(predictions):
        for j, p in enumerate(_regions(preds, i, "predictions")):
            box, score = _prediction(p, f"example {i}: predictions[{j}]")
            results.append(
                {
                    "image_id": img_ids[str(i)],
                    "category_id": cat_ids[_CLASS],
                    "bbox": _xywh(box),
                    "score": score,
                }
            )

    out: dict[str, Any] = dict.fromkeys(STAT_KEYS)
    out.update(
        num_images=len(gt_dict["images"]),
        num_references=len(gt_dict["annotations"]),
        num_predictions=len(results),
    )
    if not gt_dict["images"]:
        return out
    COCO, COCOeval = _coco_api(backend)
    coco_gt, coco_dt = coco_pair(COCO, gt_dict, results)
    ev = COCOeval(coco_gt, coco_dt)
    ev.params.useCats = 0
    ev.params.maxDets = [1, 10, 100]
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    for key, value in zip(STAT_KEYS, ev.stats[6:12], strict=True):
        out[key] = None if value < 0 else float(value)
    return out


_BOX = datasets.List(datasets.Value("float64"))
_DESCRIPTION = "Class-agnostic COCO average recall (AR@1/10/100, AR by size at 100) of proposal boxes."
_CITATION = """@article{hosang2016effective,
  title={What Makes for Effective Detection Proposals?},
  author={Hosang, Jan and Benenson, Rodrigo and Doll{\\'a}r, Piotr and Schiele, Bernt},
  journal={IEEE TPAMI}, year={2016}}"""
_INPUTS = """
Args:
    predictions: list (one per image) of [{"bbox": [x1, y1, x2, y2], "score": float}].
    references: list (one per image) of [x1, y1, x2, y2] boxes.
    backend: "pycocotools" (default) or "faster-coco-eval".
Returns: the dict of ``proposal_recall``.
"""


def _fill_scores(batch: Sequence[Any] | None) -> list[list[dict[str, Any]]] | None:
    return scored_items(batch, ("bbox",))


def _boxes(batch: Sequence[Any] | None) -> list[list[Any]] | None:
    if batch is None:
        return None
    return [[_get(r, "bbox") if isinstance(r, Mapping) else r for r in refs or []] for refs in batch]


class ProposalRecall(evaluate.Metric):
    """``evaluate`` wrapper of :func:`proposal_recall`, usable offline:
    ``ProposalRecall().compute(predictions=[...], references=[...])`` (one list of boxes per image).
    References are plain boxes here (no ``area``: the box's area decides the size)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(
            _DESCRIPTION,
            _CITATION,
            _INPUTS,
            predictions=datasets.List({"bbox": _BOX, "score": datasets.Value("float64")}),
            references=datasets.List(_BOX),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images' boxes (a missing score filled in as 1.0)."""
        return super().add_batch(
            predictions=_fill_scores(predictions), references=_boxes(references), **kwargs
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image's boxes (a missing score filled in as 1.0)."""
        prediction = None if prediction is None else _fill_scores([prediction])[0]  # type: ignore[index]
        reference = None if reference is None else _boxes([reference])[0]  # type: ignore[index]
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, backend: str = DEFAULT_BACKEND) -> dict[str, Any]:
        return proposal_recall(predictions, references, backend=backend)
