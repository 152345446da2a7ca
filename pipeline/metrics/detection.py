"""COCO-style detection metrics (mAP@[.5:.95], AP50/75, AP/AR by size), class-aware.

The evaluation is COCOeval's, run by faster-coco-eval (its C++ port: the same 12 stats as pycocotools,
several times faster on a split of thousands of images) or, with ``backend="pycocotools"``, by
pycocotools itself, the reference the tests compare against.

Ground truth per image: ``{"image_id", "width", "height", "objects": [{"bbox": xyxy, "category"}],
"crowd": [{"bbox", "category"}] (optional), "categories": [...] (optional vocabulary)}``; an object with
``"iscrowd": 1`` counts as a crowd region too. An object or crowd region may carry ``"area"`` (COCO's
annotation area, of the segmentation: it decides small / medium / large); without one, the box's
area stands in. Predictions per image: ``{"image_id", "objects":
[{"bbox": xyxy, "category", "score"}]}`` (score defaults to 1.0: a generation often has none).
Objects may also be ``pipeline.records.Object`` instances.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from pipeline.metrics import box_iou

# who runs COCOeval: faster-coco-eval (default) or pycocotools (the reference)
BACKENDS = ("faster-coco-eval", "pycocotools")
DEFAULT_BACKEND = "faster-coco-eval"

# COCOeval.stats, in order
STAT_KEYS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _xywh(bbox: Iterable[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)]


def _quiet(fn, *args, **kwargs):
    # pycocotools prints progress and the summary table; the numbers are what we keep
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _silent(*args: Any, **kwargs: Any) -> None:
    """faster-coco-eval's ``print_function``: it logs what pycocotools prints; we keep neither."""


def _coco_api(backend: str) -> tuple[Any, Any]:
    """The backend's ``COCO`` factory and ``COCOeval(coco_gt, coco_dt)`` factory, both silent."""
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        def coco() -> Any:
            return COCO(print_function=_silent)

        def cocoeval(coco_gt: Any, coco_dt: Any) -> Any:
            return COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)

        return coco, cocoeval
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, lambda coco_gt, coco_dt: COCOeval(coco_gt, coco_dt, iouType="bbox")
    raise ValueError(f"detection metric backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def build_coco(gts: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """The COCO ground-truth dict of a split, with the image-id and category-name -> integer id maps."""
    gts = list(gts)
    names: set[str] = set()
    for gt in gts:
        names.update(str(c) for c in (_get(gt, "categories") or []))
        for o in list(_get(gt, "objects") or []) + list(_get(gt, "crowd") or []):
            names.add(str(_get(o, "category")))
    cat_ids = {name: i for i, name in enumerate(sorted(names), start=1)}
    img_ids: dict[str, int] = {}
    images, annotations = [], []
    for gt in gts:
        key = str(_get(gt, "image_id"))
        if key in img_ids:
            raise ValueError(f"ground truth: image_id {key!r} appears twice")
        img_ids[key] = len(img_ids) + 1  # COCO ids from 1: an id of 0 reads as "unmatched" in COCOeval
        images.append(
            {"id": img_ids[key], "width": int(_get(gt, "width")), "height": int(_get(gt, "height"))}
        )
        regions = [(o, int(bool(_get(o, "iscrowd", 0)))) for o in _get(gt, "objects") or []]
        regions += [(o, 1) for o in _get(gt, "crowd") or []]
        for o, crowd in regions:
            box = _xywh(_get(o, "bbox"))
            area = _get(o, "area")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_ids[key],
                    "category_id": cat_ids[str(_get(o, "category"))],
                    "bbox": box,
                    "area": box[2] * box[3] if area is None else float(area),
                    "iscrowd": crowd,
                }
            )
    categories = [{"id": i, "name": n} for n, i in cat_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, img_ids, cat_ids


def scored_items(batch: Sequence[Any] | None, fields: Sequence[str]) -> list[list[dict[str, Any]]] | None:
    """Per example, its items as dicts of `fields` and a `score` (missing: 1.0): the rows an Arrow
    batch of an evaluate.Metric needs (every field present)."""
    if batch is None:
        return None
    out = []
    for items in batch:
        rows = []
        for o in items or []:
            score = _get(o, "score")
            rows.append({**{f: _get(o, f) for f in fields}, "score": 1.0 if score is None else score})
        out.append(rows)
    return out


def coco_pair(COCO: Any, gt_dict: dict[str, Any], results: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(ground truth, detections) as COCO objects of the API `COCO`, indexed, for COCOeval."""
    coco_gt = COCO()
    coco_gt.dataset = gt_dict
    _quiet(coco_gt.createIndex)
    if results:
        return coco_gt, _quiet(coco_gt.loadRes, results)
    # loadRes fails on an empty list; an empty result set scores 0 wherever ground truth exists
    coco_dt = COCO()
    coco_dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"], "annotations": []}
    _quiet(coco_dt.createIndex)
    return coco_gt, coco_dt


def detection_metrics(
    gts: Iterable[Mapping[str, Any]],
    preds: Iterable[Mapping[str, Any]],
    *,
    backend: str = DEFAULT_BACKEND,
) -> dict[str, Any]:
    """COCO mAP/mAR on the whole split. Undefined entries (no ground truth of that size) are None.

    Predictions whose category is not in the ground-truth vocabulary are excluded and counted as
    ``unknown_category``; an image without predictions has none (its ground truth is missed).
    ``backend`` runs COCOeval: ``"faster-coco-eval"`` (default) or ``"pycocotools"`` (same numbers).
    """
    COCO, COCOeval = _coco_api(backend)
    gt_dict, img_ids, cat_ids = build_coco(gts)
    results: list[dict[str, Any]] = []
    unknown = 0
    seen: set[str] = set()
    for pred in preds:
        key = str(_get(pred, "image_id"))
        if key not in img_ids:
            raise ValueError(f"prediction for image_id {key!r}, which has no ground truth")
        if key in seen:
            raise ValueError(f"predictions: image_id {key!r} appears twice")
        seen.add(key)
        for o in _get(pred, "objects") or []:
            name = str(_get(o, "category"))
            if name not in cat_ids:
                unknown += 1
                continue
            score = _get(o, "score")
            results.append(
                {
                    "image_id": img_ids[key],
                    "category_id": cat_ids[name],
                    "bbox": _xywh(_get(o, "bbox")),
                    "score": 1.0 if score is None else float(score),
                }
            )

    coco_gt, coco_dt = coco_pair(COCO, gt_dict, results)

    out: dict[str, Any] = dict.fromkeys(STAT_KEYS)
    per_class: dict[str, float | None] = dict.fromkeys(cat_ids)
    if gt_dict["images"]:
        ev = COCOeval(coco_gt, coco_dt)
        _quiet(ev.evaluate)
        _quiet(ev.accumulate)
        _quiet(ev.summarize)
        for k, v in zip(STAT_KEYS, ev.stats, strict=True):
            out[k] = None if v < 0 else float(v)
        precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all", maxDets 100
        for k_idx, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k_idx, 0, -1]
            name = gt_dict["categories"][cat_id - 1]["name"]
            per_class[name] = float(np.mean(p[p > -1])) if (p > -1).any() else None
    out["map_per_class"] = per_class
    out["num_images"] = len(gt_dict["images"])
    out["num_gt_objects"] = sum(1 for a in gt_dict["annotations"] if not a["iscrowd"])
    out["num_predictions"] = len(results)
    out["unknown_category"] = unknown
    return out


def format_validity(predictions: Iterable[Any], categories: Iterable[str] | None = None) -> dict[str, int]:
    """How well generations parsed: fully (no errors), partially (errors but some objects kept), not at all.

    Each prediction is a ``pipeline.formats.Prediction`` or a mapping with ``errors`` and ``objects``.
    With ``categories``, objects naming a category outside it are counted as ``unknown_category``.
    """
    vocab = None if categories is None else {str(c) for c in categories}
    counts = {"total": 0, "parsed": 0, "partial": 0, "unparsed": 0, "objects": 0, "unknown_category": 0}
    for pred in predictions:
        objects = list(_get(pred, "objects") or [])
        errors = int(_get(pred, "errors", 0) or 0)
        counts["total"] += 1
        counts["objects"] += len(objects)
        if errors == 0:
            counts["parsed"] += 1
        elif objects:
            counts["partial"] += 1
        else:
            counts["unparsed"] += 1
        if vocab is not None:
            counts["unknown_category"] += sum(1 for o in objects if str(_get(o, "category")) not in vocab)
    return counts


_BOX = datasets.List(datasets.Value("float64"))
_REF_OBJECT = {"bbox": _BOX, "category": datasets.Value("string"), "area": datasets.Value("float64")}
_FEATURES = datasets.Features(
    {
        "predictions": {
            "image_id": datasets.Value("string"),
            "objects": datasets.List(
                {"bbox": _BOX, "category": datasets.Value("string"), "score": datasets.Value("float64")}
            ),
        },
        "references": {
            "image_id": datasets.Value("string"),
            "width": datasets.Value("int64"),
            "height": datasets.Value("int64"),
            "objects": datasets.List(_REF_OBJECT),
            "crowd": datasets.List(_REF_OBJECT),
        },
    }
)


def _norm_obj(o: Any, with_score: bool) -> dict[str, Any]:
    d = {"bbox": [float(v) for v in _get(o, "bbox")], "category": str(_get(o, "category"))}
    if with_score:
        score = _get(o, "score")
        d["score"] = 1.0 if score is None else float(score)
    else:
        area = _get(o, "area")
        d["area"] = None if area is None else float(area)
    return d


def _norm_pred(p: Any) -> dict[str, Any]:
    return {
        "image_id": str(_get(p, "image_id")),
        "objects": [_norm_obj(o, True) for o in _get(p, "objects") or []],
    }


def _norm_ref(r: Any) -> dict[str, Any]:
    objects = list(_get(r, "objects") or [])
    return {
        "image_id": str(_get(r, "image_id")),
        "width": int(_get(r, "width")),
        "height": int(_get(r, "height")),
        "objects": [_norm_obj(o, False) for o in objects if not _get(o, "iscrowd", 0)],
        "crowd": [_norm_obj(o, False) for o in objects if _get(o, "iscrowd", 0)]
        + [_norm_obj(o, False) for o in _get(r, "crowd") or []],
    }


class DetectionMAP(evaluate.Metric):
    """``detection_metrics`` as an ``evaluate`` metric, usable offline:
    ``DetectionMAP().compute(predictions=[...], references=[...])`` (one entry per image)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="COCO-style box mAP@[.5:.95], AP50, AP75, AP/AR by size (COCOeval), class-aware.",
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=__doc__ or "",
            features=_FEATURES,
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of per-image predictions and references (optional fields filled in)."""
        # fill optional fields (crowd, score) so every row matches the Arrow features
        if predictions is not None:
            predictions = [_norm_pred(p) for p in predictions]
        if references is not None:
            references = [_norm_ref(r) for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image's prediction and reference (optional fields filled in)."""
        if prediction is not None:
            prediction = _norm_pred(prediction)
        if reference is not None:
            reference = _norm_ref(reference)
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, backend: str = DEFAULT_BACKEND) -> dict[str, Any]:
        return detection_metrics(references, predictions, backend=backend)


def detection_f1(
    pred: list[dict[str, Any]], ref: list[dict[str, Any]], iou: float = 0.5, *, by_class: bool = True
) -> float:
    """Per-image F1 at IoU >= 0.5, greedy by score: the per-example score the report ranks by. With
    `by_class` False a box matches whatever its category (proposals, dense captions' regions)."""
    if not pred and not ref:
        return 1.0
    used: set[int] = set()
    tp = 0
    for p in sorted(pred, key=lambda o: -o.get("score", 1.0)):
        best, best_j = iou, None
        for j, g in enumerate(ref):
            same = not by_class or g["category"] == p["category"]
            if j not in used and same and box_iou(p["bbox"], g["bbox"]) >= best:
                best, best_j = box_iou(p["bbox"], g["bbox"]), j
        if best_j is not None:
            used.add(best_j)
            tp += 1
    return 2 * tp / (len(pred) + len(ref))
