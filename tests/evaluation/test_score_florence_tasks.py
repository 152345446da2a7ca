"""Scoring Florence-2's other task tokens from generations rows: caption levels apart, open-vocabulary
mAP over the named classes, proposal recall, dense captioning mAP, region -> category / description
/ text / mask, and each task's trivial baseline, with worked values."""

from __future__ import annotations

import shutil

import pytest

from pipeline.evaluation.score import score_tasks, trivial_baselines
from pipeline.metrics.caption import caption_metrics

SIZE = [100, 50]
LEFT = [0.0, 0.0, 50.0, 50.0]  # the left half of the image
RIGHT = [50.0, 0.0, 100.0, 50.0]


def row(rid, task, parsed, references, source="s"):
    base = {"text": "", "objects": [], "polygons": [], "errors": 0}
    return {
        "id": rid,
        "source": source,
        "task": task,
        "image_size": SIZE,
        "parsed": {**base, **parsed},
        "references": references,
    }


def boxes(*items):
    return [{"bbox": list(b), "category": c, "score": s} for b, c, s in items]


def test_caption_levels_are_scored_apart():
    brief = [
        row(f"b{i}", "caption", {"text": t}, {"captions": [r]})
        for i, (t, r) in enumerate([("a red circle", "a red circle"), ("a blue star", "a green square")])
    ]
    detailed = [
        row(f"d{i}", "caption", {"text": t}, {"captions": [r], "level": "detailed"})
        for i, (t, r) in enumerate(
            [("a big red circle on grey", "a big red circle on grey"), ("x", "a small star")]
        )
    ]
    m = score_tasks(brief + detailed, {})["caption"]
    want_brief = caption_metrics(["a red circle", "a blue star"], [["a red circle"], ["a green square"]])
    want_detailed = caption_metrics(
        ["a big red circle on grey", "x"], [["a big red circle on grey"], ["a small star"]]
    )
    assert set(m["by_level"]) == {"brief", "detailed"}
    assert m["by_level"]["brief"]["cider"] == pytest.approx(want_brief["cider"])
    assert m["by_level"]["detailed"]["cider"] == pytest.approx(want_detailed["cider"])
    assert m["cider"] == pytest.approx((want_brief["cider"] * 2 + want_detailed["cider"] * 2) / 4)
    assert m["count"] == 4
    # one level: the figures as before, no by_level
    assert "by_level" not in score_tasks(brief, {})["caption"]


def test_open_vocabulary_map_over_the_named_classes_and_its_baseline():
    circle = {"categories": ["circle"], "objects": [{"bbox": LEFT, "category": "circle", "area": None}]}
    rows = [
        # the named circle found exactly; a square the prompt did not ask for is left out
        row(
            "a",
            "open_vocabulary_detection",
            {"objects": boxes((LEFT, "circle", 0.9), (RIGHT, "square", 0.8))},
            circle,
        ),
        # nothing of the named star in the image, nothing predicted
        row("b", "open_vocabulary_detection", {"objects": []}, {"categories": ["star"], "objects": []}),
    ]
    metrics = score_tasks(rows, {})
    m = metrics["open_vocabulary_detection"]
    assert m["map_50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    assert m["other_class"] == 1 and m["num_predictions"] == 1
    assert [r["score"] for r in rows] == [1.0, 1.0]
    trivial_baselines(metrics, {"task": [], "target": []}, rows)
    # the whole image against the left half: IoU 0.5, a hit at 0.5 and at no stricter threshold
    base = metrics["open_vocabulary_detection"]["whole_image_baseline"]
    assert base["map_50"] == pytest.approx(1.0) and base["map"] == pytest.approx(0.1)


def test_region_proposal_recall_and_the_sliding_window_baseline():
    from pipeline.tasks.region_proposal import grid_boxes

    refs = {
        "objects": [
            {"bbox": LEFT, "category": "circle", "area": None},
            {"bbox": [0.0, 0.0, 10.0, 10.0], "category": "star", "area": None},
        ]
    }
    rows = [row("a", "region_proposal", {"objects": boxes((LEFT, "", 0.9))}, refs)]
    metrics = score_tasks(rows, {})
    m = metrics["region_proposal"]
    assert m["ar_100"] == pytest.approx(0.5)  # one of two found exactly, the other missed
    assert m["ar_1"] == pytest.approx(0.5)
    assert len(grid_boxes(100, 50)) == 91
    trivial_baselines(metrics, {"task": [], "target": []}, rows)
    # LEFT (50 x 50) meets the whole image and the 2 x 2 tiles (50 x 25) at IoU 0.5; the 10 x 10 box
    # a 6 x 6 tile (16.7 x 8.3) at IoU 0.54: each found at the loosest of COCO's ten IoU thresholds
    # only; at one proposal only the whole image (scored first) counts
    base = metrics["region_proposal"]["grid_baseline"]
    assert base == {"ar_100": pytest.approx(0.1), "ar_10": pytest.approx(0.05)}


def test_region_to_category_accuracy_and_majority_baseline():
    rows = [
        row(str(i), "region_to_category", {"text": t}, {"region": LEFT, "label": want})
        for i, (t, want) in enumerate([("circle", "circle"), ("Square", "square"), ("star", "circle")])
    ]
    metrics = score_tasks(rows, {})
    assert metrics["region_to_category"]["accuracy"] == pytest.approx(2 / 3)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0]
    train = {"task": ["region_to_category"] * 3 + ["caption"], "label": ["circle", "circle", "star", None]}
    trivial_baselines(metrics, train, rows)
    assert metrics["region_to_category"]["majority_baseline"] == {
        "label": "circle",
        "accuracy": pytest.approx(2 / 3),
    }


def test_region_to_description_cider_and_majority_baseline():
    refs = [["a red circle"], ["a blue star"]]
    rows = [
        row(str(i), "region_to_description", {"text": t}, {"region": LEFT, "captions": r})
        for i, (t, r) in enumerate(zip(["a red circle", "a red star"], refs, strict=True))
    ]
    metrics = score_tasks(rows, {})
    want = caption_metrics(["a red circle", "a red star"], refs)
    assert metrics["region_to_description"]["cider"] == pytest.approx(want["cider"])
    train = {"task": ["region_to_description"] * 3, "captions": [["a red circle"], ["a red circle"], ["x"]]}
    trivial_baselines(metrics, train, rows)
    base = metrics["region_to_description"]["majority_baseline"]
    assert base["text"] == "a red circle"
    assert base["cider"] == pytest.approx(caption_metrics(["a red circle"] * 2, refs)["cider"])


def test_region_to_ocr_character_error_rate():
    rows = [
        row("a", "region_to_ocr", {"text": "HELLO"}, {"region": LEFT, "text": "HELLO"}),
        row("b", "region_to_ocr", {"text": "WORLD"}, {"region": LEFT, "text": "WORD"}),
    ]
    m = score_tasks(rows, {})["region_to_ocr"]
    assert m["cer"] == pytest.approx(1 / 9)  # one inserted character over nine reference characters


def test_region_to_segmentation_iou_and_the_region_box_baseline():
    triangle = [0.0, 0.0, 50.0, 0.0, 0.0, 50.0]  # half of LEFT
    refs = {"region": LEFT, "polygons": [triangle], "objects": []}
    rows = [
        row("a", "region_to_segmentation", {"polygons": [triangle]}, refs),
        row("b", "region_to_segmentation", {"polygons": []}, refs),
    ]
    metrics = score_tasks(rows, {})
    assert metrics["region_to_segmentation"]["mean_iou"] == pytest.approx(0.5)
    trivial_baselines(metrics, {"task": [], "target": []}, rows)
    # the region's box as the mask: the triangle is half of it (pycocotools' rasterisation)
    base = metrics["region_to_segmentation"]["box_baseline"]
    assert base["mean_iou"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs on Java")
def test_dense_region_caption_map_and_its_baseline():
    refs = {"objects": [{"bbox": LEFT, "category": "a red circle", "area": None}]}
    rows = [
        row("a", "dense_region_caption", {"objects": boxes((LEFT, "a red circle", 0.9))}, refs),
        row("b", "dense_region_caption", {"objects": boxes((RIGHT, "a red circle", 0.9))}, refs),
    ]
    metrics = score_tasks(rows, {})
    m = metrics["dense_region_caption"]
    # at every pair of thresholds the exact region is a hit (METEOR 1) and the other a false positive
    # ranked after it: precision 1 up to recall 1/2, which DenseCap's 100 recall points give AP 0.5
    assert m["map"] == pytest.approx(0.5) and m["det_map"] == pytest.approx(0.5)
    assert [r["score"] for r in rows] == [1.0, 0.0]
    train = {"task": ["dense_region_caption"], "objects": [[{"bbox": LEFT, "category": "a red circle"}]]}
    trivial_baselines(metrics, train, rows)
    base = metrics["dense_region_caption"]["whole_image_baseline"]
    # the whole image meets LEFT at IoU 0.5: a hit at IoU 0.3, 0.4 and 0.5 (AP 1), a miss at 0.6, 0.7
    assert base == {"text": "a red circle", "map": pytest.approx(0.6), "det_map": pytest.approx(0.6)}
