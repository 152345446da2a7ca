"""Mask IoU of COCO polygons: hand-worked squares (areas checked against pycocotools' rasteriser),
an independent pycocotools.mask.iou, unions of parts, RLE references, mIoU vs oIoU."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from pipeline.masks import polygons_to_rle
from pipeline.metrics.segmentation import (
    PRECISION_THRESHOLDS,
    MaskIoU,
    mask_overlap,
    segmentation_metrics,
)


def rect(x: float, y: float, w: float, h: float) -> list[float]:
    """A rectangle as a COCO polygon (x1, y1, x2, y2, ... clockwise from the top left)."""
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def area(polygons: list[list[float]], width: int, height: int) -> int:
    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))


def test_pixel_convention_of_pycocotools():
    # an integer-cornered w x h rectangle covers exactly w * h pixels: the convention the
    # hand-worked values below rely on
    assert area([rect(0, 0, 10, 10)], 20, 20) == 100
    assert area([rect(5, 0, 5, 10)], 20, 20) == 50
    assert area([rect(0, 0, 1, 10)], 20, 20) == 10
    assert area([rect(-5, -5, 40, 40)], 20, 20) == 400  # clipped to the image


def test_half_overlapping_squares():
    # two 10x10 squares overlapping by half: I = 5x10, U = 100 + 100 - 50
    inter = area([rect(5, 0, 5, 10)], 20, 20)
    union = area([rect(0, 0, 10, 10)], 20, 20) + area([rect(5, 0, 10, 10)], 20, 20) - inter
    out = mask_overlap([rect(0, 0, 10, 10)], [rect(5, 0, 10, 10)], (20, 20))
    assert (out["intersection"], out["union"]) == (inter, union) == (50, 150)
    assert out["iou"] == pytest.approx(50 / 150)
    assert not out["empty"] and out["invalid_polygons"] == 0


def test_against_pycocotools_iou_directly():
    # a triangle against an off-centre rectangle on a non-square image: no hand count, so
    # pycocotools.mask.iou on the two RLEs is the independent reference
    width, height = 37, 23
    pred = [[1.5, 2.0, 30.2, 4.7, 8.3, 21.9]]
    ref = [rect(4.4, 3.3, 20.1, 15.6)]
    rle_pred = mask_utils.merge(mask_utils.frPyObjects(pred, height, width))
    rle_ref = mask_utils.merge(mask_utils.frPyObjects(ref, height, width))
    want = float(mask_utils.iou([rle_pred], [rle_ref], [0])[0][0])
    assert 0.2 < want < 0.8  # a real partial overlap
    assert mask_overlap(pred, ref, (width, height))["iou"] == pytest.approx(want)
    # and with an RLE reference (compressed counts, as pycocotools writes them)
    assert mask_overlap(pred, rle_ref, (width, height))["iou"] == pytest.approx(want)


def test_union_of_polygons():
    # disjoint parts: I = 100 (first squares) + 50 (second pair); U = 200 + 200 - 150
    pred = [rect(0, 0, 10, 10), rect(20, 0, 10, 10)]
    ref = [rect(0, 0, 10, 10), rect(25, 0, 10, 10)]
    out = mask_overlap(pred, ref, (40, 20))
    assert (out["intersection"], out["union"]) == (150, 250)
    assert out["iou"] == pytest.approx(0.6)
    # overlapping parts are merged, not summed: two 10x10 squares sharing 50 pixels = one 15x10
    out = mask_overlap([rect(0, 0, 10, 10), rect(5, 0, 10, 10)], [rect(0, 0, 15, 10)], (20, 20))
    assert (out["intersection"], out["union"], out["iou"]) == (150, 150, 1.0)
    assert int(mask_utils.area(polygons_to_rle([rect(0, 0, 10, 10), rect(5, 0, 10, 10)], 20, 20))) == 150


def test_rle_references():
    width, height = 20, 20
    pixels = np.zeros((height, width), dtype=np.uint8, order="F")
    pixels[0:10, 0] = 1  # the first column's top ten pixels: x = 0, y = 0..9
    compressed = mask_utils.encode(pixels)
    pred = [rect(0, 0, 1, 10)]
    # the same mask as compressed bytes, as text (COCO JSON), and uncompressed run lengths
    # (column-major: 0 background, 10 foreground, 390 background), as in COCO crowd annotations
    for ref in (
        compressed,
        {"size": [height, width], "counts": compressed["counts"].decode("ascii")},
        {"size": [height, width], "counts": [0, 10, 390]},
    ):
        out = mask_overlap(pred, ref, (width, height))
        assert (out["intersection"], out["union"], out["iou"]) == (10, 10, 1.0)
    half = mask_overlap(
        [rect(0, 0, 1, 5)], {"size": [height, width], "counts": [0, 10, 390]}, (width, height)
    )
    assert half["iou"] == 0.5


def test_rle_predictions_decoded_masks():
    # PaliGemma's masks are decoded from codes into pixels: the prediction is an RLE
    width, height = 20, 20
    pixels = np.zeros((height, width), dtype=np.uint8, order="F")
    pixels[0:10, 5:15] = 1  # x 5..14, y 0..9: half over the reference square below
    pred = mask_utils.encode(pixels)
    as_text = {"size": [height, width], "counts": pred["counts"].decode("ascii")}
    out = mask_overlap(as_text, [rect(0, 0, 10, 10)], (width, height))
    assert (out["intersection"], out["union"], out["empty"], out["invalid_polygons"]) == (50, 150, False, 0)
    empty = mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    got = segmentation_metrics([as_text, empty], [[rect(0, 0, 10, 10)], [rect(0, 0, 10, 10)]], [(20, 20)] * 2)
    assert got["per_example_iou"] == [pytest.approx(1 / 3), 0.0] and got["num_empty"] == 1
    with pytest.raises(ValueError, match=r"record 0: reference RLE size \[10, 10\] is not the image's"):
        mask_overlap({"size": [10, 10], "counts": [100]}, [rect(0, 0, 10, 10)], (width, height))


@pytest.mark.parametrize(
    "prediction",
    [
        [],
        None,
        [[1, 2, 3, 4]],  # two points (pycocotools would read four numbers as a box)
        [[0, 0, 10, 0, 10]],  # odd coordinate count
        [[0, 0, 10, 0, 10, float("nan")]],
        [[]],
    ],
)
def test_empty_or_degenerate_prediction_is_an_empty_mask(prediction):
    out = segmentation_metrics([prediction], [[rect(0, 0, 10, 10)]], [(20, 20)])
    assert out["per_example_iou"] == [0.0]
    assert out["num_empty"] == 1
    assert out["num_invalid_polygons"] == len(prediction or [])
    assert (out["cumulative_intersection"], out["cumulative_union"]) == (0, 100)


def test_degenerate_part_is_dropped_not_the_prediction():
    out = segmentation_metrics([[[1, 2, 3, 4], rect(0, 0, 10, 10)]], [[rect(0, 0, 10, 10)]], [(20, 20)])
    assert out["per_example_iou"] == [1.0]
    assert (out["num_empty"], out["num_invalid_polygons"]) == (0, 1)


def test_mean_and_overall_iou_differ():
    # a large object segmented perfectly (I = U = 400) and a small one half-missed (I = 50, U = 150)
    preds = [[rect(0, 0, 20, 20)], [rect(5, 0, 10, 10)]]
    refs = [[rect(0, 0, 20, 20)], [rect(0, 0, 10, 10)]]
    out = segmentation_metrics(preds, refs, [(40, 40), (40, 40)])
    assert out["per_example_iou"] == pytest.approx([1.0, 1 / 3])
    assert out["mean_iou"] == pytest.approx((1 + 1 / 3) / 2)  # 2/3
    assert out["overall_iou"] == pytest.approx(450 / 550)  # 9/11: the large object weighs more
    assert (out["cumulative_intersection"], out["cumulative_union"]) == (450, 550)
    assert [out[f"precision@{t}"] for t in PRECISION_THRESHOLDS] == [0.5] * 5
    assert out["num_examples"] == 2 and out["num_empty"] == 0


def test_precision_counts_at_exactly_the_threshold():
    out = segmentation_metrics([[rect(0, 0, 10, 10)]], [[rect(0, 0, 10, 5)]], [(20, 20)])
    assert out["per_example_iou"] == [0.5]
    assert out["precision@0.5"] == 1.0
    assert out["precision@0.6"] == out["precision@0.7"] == out["precision@0.9"] == 0.0


def test_zero_union_and_empty_input():
    # a reference polygon of three collinear points rasterises to no pixel: with an empty
    # prediction, U = 0 and the IoU is 0 (LAVT's rule); the cumulative union is 0 too
    out = segmentation_metrics([[]], [[[0, 0, 5, 0, 10, 0]]], [(20, 20)])
    assert out["per_example_iou"] == [0.0]
    assert out["overall_iou"] is None
    empty = segmentation_metrics([], [], [])
    assert empty["mean_iou"] is None and empty["overall_iou"] is None and empty["precision@0.5"] is None
    assert empty["num_examples"] == 0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ([], "record 1: reference has no polygon"),
        (None, "record 1: reference has no polygon"),
        ([[0, 0, 10, 0, 10]], "record 1: reference polygon"),
        ([rect(0, 0, 5, 5), [1, 2, 3, 4]], "record 1: reference polygon"),
        ({"size": [20, 30], "counts": [600]}, r"record 1: reference RLE size \[20, 30\]"),
        ({"counts": [400]}, "record 1: reference RLE size None"),
        ({"size": [20, 20], "counts": [0, 10, 389]}, "record 1: reference RLE counts are malformed"),
        ({"size": [20, 20], "counts": [0, -10, 410]}, "record 1: reference RLE counts are malformed"),
        # a truncated compressed string: pycocotools would loop forever on it
        ({"size": [20, 20], "counts": b"0::0"}, "record 1: reference RLE counts are malformed"),
        ({"size": [20, 20], "counts": "0::00000000000000000X6X6"}, "record 1: reference RLE counts"),
        ({"size": [20, 20], "counts": "0:\u00e9"}, "record 1: reference RLE counts are malformed"),
        ({"size": [20, 20]}, "record 1: reference RLE counts are malformed"),
    ],
)
def test_malformed_reference_names_the_record(reference, message):
    with pytest.raises(ValueError, match=message):
        segmentation_metrics([[], []], [[rect(0, 0, 5, 5)], reference], [(20, 20), (20, 20)])


def test_bad_sizes_and_lengths():
    ref = [rect(0, 0, 5, 5)]
    with pytest.raises(ValueError, match="record 0: image size"):
        segmentation_metrics([[]], [ref], [(0, 20)])
    with pytest.raises(ValueError, match="record 0: image size"):
        segmentation_metrics([[]], [ref], [(20,)])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        segmentation_metrics([[], []], [ref], [(20, 20)] * 2)
    with pytest.raises(ValueError, match="1 predictions but 2 image sizes"):
        segmentation_metrics([[]], [ref], [(20, 20)] * 2)


def test_evaluate_metric_matches_plain_function():
    preds = [[rect(0, 0, 20, 20)], [rect(5, 0, 10, 10), [1, 2, 3, 4]], []]
    compressed = polygons_to_rle([rect(0, 0, 10, 10)], 40, 40)
    refs = [
        [rect(0, 0, 20, 20)],
        compressed,
        {"size": [20, 20], "counts": [0, 10, 390]},
    ]
    sizes = [(40, 40), (40, 40), (20, 20)]
    want = segmentation_metrics(preds, refs, sizes)
    assert want["per_example_iou"] == pytest.approx([1.0, 1 / 3, 0.0])
    assert MaskIoU().compute(predictions=preds, references=refs, sizes=sizes) == want
    text = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
    metric = MaskIoU()
    metric.add_batch(predictions=preds[:1], references=refs[:1], sizes=sizes[:1])
    metric.add(prediction=preds[1], reference=text, sizes=sizes[1])
    metric.add(prediction=preds[2], reference=refs[2], sizes=sizes[2])
    assert metric.compute() == want
    # malformed references still fail with the record named after the Arrow round trip
    with pytest.raises(ValueError, match="record 1: reference RLE counts are malformed"):
        MaskIoU().compute(
            predictions=preds[:2],
            references=[refs[0], {"size": [40, 40], "counts": b"0::0"}],
            sizes=sizes[:2],
        )
