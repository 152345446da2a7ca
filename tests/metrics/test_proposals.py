"""Proposal recall: class-agnostic AR against pycocotools' COCOeval run directly, and worked by hand."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.metrics.proposals import STAT_KEYS, ProposalRecall, proposal_recall

BACKENDS = ("pycocotools", "faster-coco-eval")

# two 10x10 references (small); the first found exactly, the second at IoU 62/100
REFS = [[(0, 0, 10, 10), (20, 0, 30, 10)]]
PREDS = [[{"bbox": (0, 0, 10, 10), "score": 0.9}, {"bbox": (20, 0, 30, 6.2), "score": 0.8}]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_worked_example(backend):
    out = proposal_recall(PREDS, REFS, backend=backend)
    # AR@1: the top box finds the first reference at all ten IoU thresholds -> 1/2
    assert out["ar_1"] == pytest.approx(0.5, abs=1e-12)
    # AR@10: the second reference is also found at thresholds 0.5, 0.55, 0.6 -> (3 + 7/2) / 10
    assert out["ar_10"] == pytest.approx(0.65, abs=1e-12)
    assert out["ar_100"] == pytest.approx(0.65, abs=1e-12)
    assert out["ar_small"] == pytest.approx(0.65, abs=1e-12)
    assert out["ar_medium"] is None and out["ar_large"] is None  # no reference of those sizes
    assert (out["num_images"], out["num_references"], out["num_predictions"]) == (1, 2, 2)


def test_classes_play_no_part_and_a_duplicate_finds_a_neighbour():
    # both boxes sit on the first reference; the second may take any free reference, but its only
    # free neighbour overlaps it at IoU 1/3, under every threshold: recall 1/2
    refs = [[(0, 0, 10, 10), (5, 0, 15, 10)]]
    out = proposal_recall(
        [[{"bbox": (0, 0, 10, 10), "score": 0.9}, {"bbox": (0, 0, 10, 10), "score": 0.8}]], refs
    )
    assert out["ar_100"] == pytest.approx(0.5)
    # the same box shifted onto the second reference: both found
    out = proposal_recall([[{"bbox": (0, 0, 10, 10), "score": 0.9}, {"bbox": (5, 0, 15, 10)}]], refs)
    assert out["ar_100"] == pytest.approx(1.0)


def test_only_the_top_boxes_count():
    # 100 useless high-scored boxes push the one good box out of AR@100; scores decide, not order
    junk = [{"bbox": (500, 500, 510, 510), "score": 0.5} for _ in range(100)]
    good = {"bbox": (0, 0, 10, 10), "score": 0.1}
    assert proposal_recall([[good, *junk]], [[(0, 0, 10, 10)]])["ar_100"] == 0.0
    good["score"] = 0.9
    out = proposal_recall([[*junk, good]], [[(0, 0, 10, 10)]])
    assert out["ar_1"] == 1.0 and out["ar_100"] == 1.0


def test_area_decides_size():
    # a 40x40 box is medium by its box area (1600 > 32^2); a given area of 900 makes it small
    preds = [[{"bbox": (0, 0, 40, 40), "score": 1.0}]]
    assert proposal_recall(preds, [[(0, 0, 40, 40)]])["ar_medium"] == 1.0
    out = proposal_recall(preds, [[{"bbox": (0, 0, 40, 40), "area": 900.0}]])
    assert out["ar_small"] == 1.0 and out["ar_medium"] is None


def test_empty():
    out = proposal_recall([[], []], [REFS[0], []])
    assert [out[k] for k in ("ar_1", "ar_10", "ar_100", "ar_small")] == [0.0] * 4
    assert out["num_predictions"] == 0
    # nothing to recall anywhere: undefined
    out = proposal_recall([[{"bbox": (0, 0, 1, 1), "score": 1.0}]], [[]])
    assert all(out[k] is None for k in STAT_KEYS)
    assert all(proposal_recall([], [])[k] is None for k in STAT_KEYS)


def _direct(preds, refs):
    """The independent path: COCO dicts written here, COCOeval with useCats=0 run by hand."""
    images = [{"id": i + 1, "width": 640, "height": 480} for i in range(len(refs))]
    anns = []
    for i, boxes in enumerate(refs):
        for x1, y1, x2, y2 in boxes:
            w, h = x2 - x1, y2 - y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                }
            )
            anns[-1]["iscrowd"] = 0
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    results = [
        {
            "image_id": i + 1,
            "category_id": 1,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": p["score"],
        }
        for i, ps in enumerate(preds)
        for p in ps
        for b in [p["bbox"]]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[6:12]


def _random_split(seed):
    rng = np.random.default_rng(seed)
    refs, preds = [], []
    for _ in range(25):
        boxes = []
        for _ in range(rng.integers(0, 9)):
            x1, y1 = rng.uniform(0, 400, 2)
            w, h = rng.choice([rng.uniform(2, 30, 2), rng.uniform(30, 90, 2), rng.uniform(100, 230, 2)])
            boxes.append((float(x1), float(y1), float(x1 + w), float(y1 + h)))
        refs.append(boxes)
        ps = []
        for _ in range(rng.integers(0, 130)):  # some images over 100: the cut matters
            if boxes and rng.random() < 0.4:  # a jittered reference
                x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
                d = rng.normal(0, 0.15 * max(x2 - x1, y2 - y1), 4)
                box = (x1 + d[0], y1 + d[1], max(x1 + d[0] + 1, x2 + d[2]), max(y1 + d[1] + 1, y2 + d[3]))
            else:
                x1, y1 = rng.uniform(0, 500, 2)
                box = (x1, y1, x1 + rng.uniform(2, 200), y1 + rng.uniform(2, 200))
            ps.append({"bbox": tuple(float(v) for v in box), "score": float(rng.random())})
        preds.append(ps)
    return preds, refs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_cocoeval_with_use_cats_0(seed, backend):
    preds, refs = _random_split(seed)
    want = _direct(preds, refs)
    assert min(want) > 0  # every size present: a real comparison
    out = proposal_recall(preds, refs, image_sizes=[(640, 480)] * len(refs), backend=backend)
    for key, value in zip(STAT_KEYS, want, strict=True):
        assert out[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize(
    ("preds", "refs", "sizes", "match"),
    [
        ([[{"bbox": (0, 0, 1), "score": 1.0}]], [[]], None, r"example 0: predictions\[0\]\.bbox"),
        ([[], [{"score": 1.0}]], [[], []], None, r"example 1: predictions\[0\]\.bbox None"),
        (
            [[{"bbox": (0, 0, 1, 1), "score": float("inf")}]],
            [[]],
            None,
            r"example 0: predictions\[0\]\.score",
        ),
        ([[]], [[(0, 0, 1, 1), (3, 0, 1, 1)]], None, r"example 0: references\[1\] box .* x2 < x1"),
        ([[]], [[(0, 0, "a", 1)]], None, r"example 0: references\[0\]"),
        ([[]], [[{"bbox": (0, 0, 1, 1), "area": -1}]], None, r"example 0: references\[0\]\.area"),
        ([[]], [{"bbox": (0, 0, 1, 1)}], None, "example 0: references must be a list of boxes"),
        ([[]], [[], []], None, "1 prediction lists but 2 reference lists"),
        ([[]], [[]], [(1, 1), (2, 2)], "2 image sizes but 1 reference lists"),
    ],
)
def test_bad_input_names_the_example_and_field(preds, refs, sizes, match):
    with pytest.raises(ValueError, match=match):
        proposal_recall(preds, refs, sizes)


def test_evaluate_metric_equals_the_function():
    preds, refs = _random_split(3)
    metric = ProposalRecall()
    metric.add_batch(predictions=preds[:10], references=refs[:10])
    for p, r in zip(preds[10:], refs[10:], strict=True):
        metric.add(prediction=p, reference=r)
    assert metric.compute() == pytest.approx(proposal_recall(preds, refs), abs=1e-12)
    metric = ProposalRecall()
    metric.add(prediction=[{"bbox": (0, 0, 10, 10)}], reference=[{"bbox": (0, 0, 10, 10)}])
    assert metric.compute()["ar_100"] == 1.0
