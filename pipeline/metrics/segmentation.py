"""Mask IoU for referring / instance segmentation given as COCO polygons: mIoU, oIoU and precision@X.

Per record, the prediction is a list of polygons (COCO format: flat ``[x1, y1, x2, y2, ...]`` lists
in pixels) or a COCO RLE (a mask decoded from codes, as PaliGemma writes them), and so is the
reference: polygons, or a COCO RLE (``{"size": [height, width],
"counts": compressed bytes/str or uncompressed run lengths}``), with the image's ``(width, height)``.
Each side's polygons are rasterised by ``pycocotools.mask.frPyObjects`` (COCO's own rasteriser, so
masks match COCO's; a rectangle with integer corners covers exactly its area, the square
``0,0 10,0 10,10 0,10`` 100 pixels; parts outside the image are clipped) and merged into one mask,
the union of the object's parts. Then, with I and U the pixel counts of the intersection and the
union of the predicted and the reference mask:

* ``per_example_iou``: I / U per record, 0 when U is 0.
* ``mean_iou`` (mIoU): the mean of those IoUs over records.
* ``overall_iou`` (oIoU): cumulative I over cumulative U across all records, which weights large
  objects more. These are the "mIoU" and "oIoU" of RefCOCO segmentation papers (LAVT, CRIS), and
  ``precision@0.5``..``precision@0.9`` their "P@X": the fraction of records with IoU >= X, for
  X in 0.5, 0.6, 0.7, 0.8, 0.9. The record-level rules (IoU 0 when U is 0, ``>=`` at a threshold)
  are those of LAVT's evaluation code.
* ``num_empty``: records with no usable predicted polygon (an RLE prediction: no predicted
  pixel). A predicted polygon with fewer than 3 points, an odd number of coordinates or a
  non-finite one is unusable; it is dropped (counted in ``num_invalid_polygons``), not an error,
  and a prediction left with none is an empty mask (IoU 0).
  (pycocotools must never see those: it reads a 4-number polygon as a box.)

A malformed RLE prediction raises as a malformed reference does (uvft makes them; they are not
model output). A malformed reference (no polygon, an unusable polygon, an RLE whose size is not the image's or
whose run lengths do not add up to height x width) raises ValueError naming the record: a compressed
RLE that does not add up makes pycocotools loop forever, so it is checked before pycocotools sees it.
The means are None when there are no records, and ``overall_iou`` is None when the cumulative union
is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import evaluate
import pycocotools.mask as mask_utils

from pipeline.masks import polygons_to_rle, usable_polygon
from pipeline.metrics import metric_info
from pipeline.records import ImageSize

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
_POLYGONS = datasets.List(datasets.List(datasets.Value("float64")))


def _compressed_runs(counts: bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (``rleFrString`` of the COCO mask API), or
    None when it is not a well-formed one."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        while True:
            if p >= len(counts):
                return None  # the string ends inside a number
            c = counts[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            p += 1
            k += 1
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _rle_runs(counts: Any) -> list[int] | None:
    """Run lengths of compressed (bytes / str) or uncompressed (list) RLE counts; None if malformed."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            return None
    if isinstance(counts, bytes):
        return _compressed_runs(counts)
    try:
        return [int(v) for v in counts]
    except (TypeError, ValueError):
        return None


def _reference_rle(reference: Any, width: int, height: int, index: int) -> dict[str, Any]:
    if isinstance(reference, Mapping):
        size, counts = reference.get("size"), reference.get("counts")
        try:
            rle_size = [int(v) for v in size]
        except (TypeError, ValueError):
            rle_size = None
        if rle_size != [height, width]:
            raise ValueError(
                f"record {index}: reference RLE size {size!r} is not the image's "
                f"[height, width] [{height}, {width}]"
            )
        runs = None if counts is None else _rle_runs(counts)
        if runs is None or any(r < 0 for r in runs) or sum(runs) != width * height:
            raise ValueError(
                f"record {index}: reference RLE counts are malformed (run lengths must be non-negative "
                f"and add up to {height} x {width})"
            )
        if isinstance(counts, (str, bytes)):
            counts = counts.encode("ascii") if isinstance(counts, str) else counts
            return {"size": [height, width], "counts": counts}
        return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    polygons = [] if reference is None or isinstance(reference, (str, bytes)) else list(reference)
    if not polygons:
        raise ValueError(f"record {index}: reference has no polygon")
    for polygon in polygons:
        if not usable_polygon(polygon):
            raise ValueError(
                f"record {index}: reference polygon {polygon!r} is not a flat list of at least 3 "
                "(x, y) points of finite numbers"
            )
    return polygons_to_rle(polygons, width, height)


def _check_size(size: Any, index: int) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"record {index}: image size {size!r} is not (width, height)") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"record {index}: image size {size!r}: width and height must be positive")
    return width, height


def mask_overlap(prediction: Any, reference: Any, size: ImageSize, index: int = 0) -> dict[str, Any]:
    """Intersection and union (pixels) of one record's predicted polygons with its reference.

    Returns ``{"intersection": int, "union": int, "iou": float, "empty": bool (no usable predicted
    polygon), "invalid_polygons": int (predicted polygons dropped)}``. ``index`` names the record
    in errors.
    """
    width, height = _check_size(size, index)
    ref = _reference_rle(reference, width, height, index)
    ref_area = int(mask_utils.area(ref))
    if isinstance(prediction, Mapping):  # a mask, decoded from codes
        pred, polygons, usable = _reference_rle(prediction, width, height, index), [], []
        empty = int(mask_utils.area(pred)) == 0
    else:
        polygons = [] if prediction is None or isinstance(prediction, (str, bytes)) else list(prediction)
        usable = [p for p in polygons if usable_polygon(p)]
        pred = polygons_to_rle(usable, width, height) if usable else None
        empty = not usable
    if pred is not None and not empty:
        inter = int(mask_utils.area(mask_utils.merge([pred, ref], intersect=True)))
        union = int(mask_utils.area(pred)) + ref_area - inter
    else:
        inter, union = 0, ref_area
    return {
        "intersection": inter,
        "union": union,
        "iou": inter / union if union > 0 else 0.0,
        "empty": empty,
        "invalid_polygons": len(polygons) - len(usable),
    }


def segmentation_metrics(
    predictions: Sequence[Any], references: Sequence[Any], sizes: Sequence[ImageSize]
) -> dict[str, Any]:
    """mIoU, oIoU and precision@X of ``predictions`` (a list of polygons or a COCO RLE per record) against
    ``references`` (a list of polygons or a COCO RLE per record), on images of ``sizes``
    (``(width, height)`` per record).

    Returns ``{"mean_iou": float | None, "overall_iou": float | None, "precision@0.5": ...,
    "precision@0.9": float | None, "num_empty": int, "num_invalid_polygons": int, "num_examples": int,
    "cumulative_intersection": int, "cumulative_union": int, "per_example_iou": [float, ...]}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(sizes) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(sizes)} image sizes")
    rows = [
        mask_overlap(p, r, s, i)
        for i, (p, r, s) in enumerate(zip(predictions, references, sizes, strict=True))
    ]
    ious = [row["iou"] for row in rows]
    n = len(rows)
    inter = sum(row["intersection"] for row in rows)
    union = sum(row["union"] for row in rows)
    out: dict[str, Any] = {
        "mean_iou": sum(ious) / n if n else None,
        "overall_iou": inter / union if union > 0 else None,
    }
    for t in PRECISION_THRESHOLDS:
        out[f"precision@{t}"] = sum(v >= t for v in ious) / n if n else None
    out.update(
        {
            "num_empty": sum(row["empty"] for row in rows),
            "num_invalid_polygons": sum(row["invalid_polygons"] for row in rows),
            "num_examples": n,
            "cumulative_intersection": inter,
            "cumulative_union": union,
            "per_example_iou": ious,
        }
    )
    return out


_DESCRIPTION = "Mask mIoU, oIoU and precision@0.5..0.9 of COCO polygons; see pipeline.metrics.segmentation."
_CITATION = """@inproceedings{yang2022lavt,
  title={LAVT: Language-Aware Vision Transformer for Referring Image Segmentation},
  author={Yang, Zhao and Wang, Jiaqi and Tang, Yansong and Chen, Kai and Zhao, Hengshuang and
          Torr, Philip HS},
  booktitle={CVPR}, year={2022}}"""
_INPUTS = """
Args:
    predictions: list (one per record) of predicted polygons, each a flat [x1, y1, x2, y2, ...] pixel list.
    references: list (one per record) of reference polygons, or a COCO RLE {"size": [h, w], "counts": ...}.
    sizes: list of [width, height], one per record.
Returns: the dict of ``segmentation_metrics``.
"""
_REFERENCE = {
    "polygons": _POLYGONS,
    "rle_size": datasets.List(datasets.Value("int64")),
    "rle_counts": datasets.Value("string"),
    "rle_runs": datasets.List(datasets.Value("int64")),
}


def _polygon_lists(value: Any) -> list[list[Any]]:
    if value is None or isinstance(value, (str, bytes)):
        return []
    return [list(p) if isinstance(p, Sequence) and not isinstance(p, (str, bytes)) else [] for p in value]


def _to_row(reference: Any) -> dict[str, Any]:
    """A reference as one Arrow row: polygons, or an RLE (compressed counts as text, or run lengths)."""
    if isinstance(reference, Mapping):
        counts = reference.get("counts")
        compressed = isinstance(counts, (str, bytes))
        return {
            "polygons": [],
            "rle_size": list(reference.get("size") or []),
            "rle_counts": (counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts)
            if compressed
            else "",
            "rle_runs": [] if compressed or counts is None else list(counts),
        }
    return {"polygons": _polygon_lists(reference), "rle_size": [], "rle_counts": "", "rle_runs": []}


def _from_row(row: Mapping[str, Any]) -> Any:
    if not row["rle_size"]:
        return row["polygons"]
    return {"size": row["rle_size"], "counts": row["rle_counts"] or row["rle_runs"]}


class MaskIoU(evaluate.Metric):
    """``evaluate`` wrapper of :func:`segmentation_metrics`, usable offline:
    ``MaskIoU().compute(predictions=[...], references=[...], sizes=[...])``. A reference is stored
    as polygons or as an RLE (compressed counts as text, or run lengths) and rebuilt in ``_compute``."""

    def _info(self) -> evaluate.MetricInfo:
        sizes = datasets.List(datasets.Value("int64"))
        return metric_info(
            _DESCRIPTION, _CITATION, _INPUTS, predictions=_POLYGONS, references=_REFERENCE, sizes=sizes
        )

    def add_batch(self, *, predictions=None, references=None, sizes=None, **kwargs):
        """Add a batch of records (references turned into Arrow rows)."""
        if predictions is not None:
            predictions = [_polygon_lists(p) for p in predictions]
        if references is not None:
            references = [_to_row(r) for r in references]
        if sizes is not None:
            sizes = [list(s) for s in sizes]
        return super().add_batch(predictions=predictions, references=references, sizes=sizes, **kwargs)

    def add(self, *, prediction=None, reference=None, sizes=None, **kwargs):
        """Add one record (its reference turned into an Arrow row)."""
        prediction = None if prediction is None else _polygon_lists(prediction)
        reference = None if reference is None else _to_row(reference)
        sizes = None if sizes is None else list(sizes)
        return super().add(prediction=prediction, reference=reference, sizes=sizes, **kwargs)

    def _compute(self, predictions, references, sizes) -> dict[str, Any]:
        return segmentation_metrics(predictions, [_from_row(r) for r in references], sizes)
