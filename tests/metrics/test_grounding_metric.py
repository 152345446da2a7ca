"""Grounding: top-1 box accuracy at IoU >= 0.5 and mean IoU, on hand-worked IoUs."""

from __future__ import annotations

import pytest

from pipeline.metrics.grounding import (
    GroundingAccuracy,
    box_iou,
    grounding_metrics,
    top_box_iou,
    whole_image_box,
)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap: I = 5x10, U = 100 + 100 - 50
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (0, 0, 20, 20), 100 / 400),  # contained
        ((0, 0, 10, 10), (0, 0, 10, 5), 50 / 100),  # exactly 0.5
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (50, 50, 60, 60), 0.0),  # disjoint
        ((2.5, 0, 7.5, 4), (0, 0, 10, 10), 20 / 100),  # fractional pixels, no +1
        ((0, 0, 0, 10), (0, 0, 10, 10), 0.0),  # zero width
        ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),  # two identical points: union 0, defined as 0
        ((10, 0, 0, 10), (0, 0, 10, 10), 0.0),  # corners swapped: no area
    ],
)
def test_box_iou(a, b, want):
    assert box_iou(a, b) == pytest.approx(want)
    assert box_iou(b, a) == pytest.approx(want)


def test_whole_image_box():
    assert whole_image_box(640, 480) == (0.0, 0.0, 640.0, 480.0)
    # the baseline against a quarter-image and a 0.64-image reference: IoUs 0.25 and 0.64
    refs = [[0, 0, 50, 50], [0, 0, 80, 80]]
    out = grounding_metrics([whole_image_box(100, 100)] * 2, refs)
    assert out["per_example_iou"] == pytest.approx([0.25, 0.64])
    assert out["accuracy"] == 0.5
    with pytest.raises(ValueError, match="positive"):
        whole_image_box(0, 480)


def test_threshold_counts_at_exactly_one_half():
    assert top_box_iou([[0, 0, 10, 10]], [[0, 0, 10, 5]]) == 0.5
    assert grounding_metrics([[0, 0, 10, 10]], [[0, 0, 10, 5]])["accuracy"] == 1.0  # >= counts
    below = grounding_metrics([[0, 0, 10, 10]], [[0, 0, 10, 4.9]])
    assert below["per_example_iou"] == pytest.approx([0.49])
    assert below["accuracy"] == 0.0
    assert grounding_metrics([[0, 0, 10, 10]], [[0, 0, 10, 5]], threshold=0.6)["accuracy"] == 0.0


def test_top_box_only_and_several_references():
    # the first generated box is the answer: a perfect second box does not help
    assert top_box_iou([[50, 50, 60, 60], [0, 0, 10, 10]], [[0, 0, 10, 10]]) == 0.0
    # several references: the best-matching one
    refs = [[100, 100, 120, 120], [0, 0, 20, 16], [0, 0, 10, 10]]
    assert top_box_iou([[0, 0, 20, 20]], refs) == pytest.approx(320 / 400)
    # a single flat box on either side is one box
    assert top_box_iou([0, 0, 20, 20], [0, 0, 20, 16]) == pytest.approx(0.8)


def test_no_prediction():
    out = grounding_metrics([[], None], [[0, 0, 10, 10], [[0, 0, 5, 5]]])
    assert out == {
        "accuracy": 0.0,
        "mean_iou": 0.0,
        "num_no_box": 2,
        "num_examples": 2,
        "per_example_iou": [None, None],
    }


PREDS = [
    [[0, 0, 10, 10]],  # IoU 1/3: miss
    [[0, 0, 10, 10], [100, 100, 110, 110]],  # IoU 0.5 exactly: hit
    [],  # no box: 0, miss
    [[0, 0, 20, 20]],  # best of two references: 320/400 = 0.8, hit
]
REFS = [
    [[5, 0, 15, 10]],
    [[0, 0, 10, 5]],
    [[0, 0, 10, 10]],
    [[100, 100, 120, 120], [0, 0, 20, 16]],
]
SPLITS = ["val", "testA", "testA", "testB"]


def test_hand_worked_case_with_splits():
    out = grounding_metrics(PREDS, REFS, SPLITS)
    assert out["per_example_iou"] == pytest.approx([1 / 3, 0.5, None, 0.8])
    assert out["accuracy"] == 0.5
    assert out["mean_iou"] == pytest.approx((1 / 3 + 0.5 + 0.0 + 0.8) / 4)
    assert out["num_no_box"] == 1
    assert out["num_examples"] == 4
    assert list(out["per_split"]) == ["val", "testA", "testB"]  # order of first appearance
    assert out["per_split"]["val"] == {
        "accuracy": 0.0,
        "mean_iou": pytest.approx(1 / 3),
        "num_no_box": 0,
        "num_examples": 1,
    }
    assert out["per_split"]["testA"] == {
        "accuracy": 0.5,
        "mean_iou": 0.25,
        "num_no_box": 1,
        "num_examples": 2,
    }
    assert out["per_split"]["testB"] == {
        "accuracy": 1.0,
        "mean_iou": pytest.approx(0.8),
        "num_no_box": 0,
        "num_examples": 1,
    }
    assert "per_split" not in grounding_metrics(PREDS, REFS)
    # a record without a split counts toward the overall numbers only
    partial = grounding_metrics(PREDS, REFS, ["val", None, None, "val"])
    assert partial["accuracy"] == 0.5
    assert partial["per_split"] == {
        "val": {
            "accuracy": 0.5,
            "mean_iou": pytest.approx((1 / 3 + 0.8) / 2),
            "num_no_box": 0,
            "num_examples": 2,
        }
    }


def test_empty_input():
    assert grounding_metrics([], []) == {
        "accuracy": None,
        "mean_iou": None,
        "num_no_box": 0,
        "num_examples": 0,
        "per_example_iou": [],
    }


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([[0, 0, 1, 1], [0, 0, 1]], [[0, 0, 1, 1]] * 2, "record 1: predicted box"),
        ([[0, 0, 1, 1], [0, 0, 1, float("nan")]], [[0, 0, 1, 1]] * 2, "record 1: predicted box"),
        ([[0, 0, 1, 1], ["abcd"]], [[0, 0, 1, 1]] * 2, "record 1: predicted box"),
        ([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1], [0, 0, 1, 1, 1]], "record 1: reference box"),
        ([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1], [5, 0, 1, 1]], r"record 1: reference box .* x2 < x1"),
        ([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1], []], "record 1: no reference box"),
    ],
)
def test_malformed_boxes_name_the_record(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        grounding_metrics(predictions, references)


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        grounding_metrics([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="2 predictions but 3 split names"):
        grounding_metrics([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]] * 2, ["val"] * 3)


def test_evaluate_metric_matches_plain_function():
    assert GroundingAccuracy().compute(
        predictions=PREDS, references=REFS, splits=SPLITS
    ) == grounding_metrics(PREDS, REFS, SPLITS)
    assert GroundingAccuracy().compute(predictions=PREDS, references=REFS) == grounding_metrics(PREDS, REFS)
    # batch by batch and record by record, flat boxes included, a threshold passed at compute
    metric = GroundingAccuracy()
    metric.add_batch(predictions=PREDS[:2], references=REFS[:2], splits=SPLITS[:2])
    metric.add(prediction=[], reference=[0, 0, 10, 10], splits="testA")
    metric.add(prediction=[0, 0, 20, 20], reference=REFS[3], splits="testB")
    assert metric.compute(threshold=0.6) == grounding_metrics(PREDS, REFS, SPLITS, threshold=0.6)


def test_evaluate_metric_with_some_records_unsplit():
    # Arrow holds "" for a missing split; it comes back as None, as the plain function takes it
    splits = ["val", None, None, "val"]
    got = GroundingAccuracy().compute(predictions=PREDS, references=REFS, splits=splits)
    assert got == grounding_metrics(PREDS, REFS, splits)
    assert list(got["per_split"]) == ["val"]
