"""Detection mAP against pycocotools run directly on hand-written COCO JSON, and the faster-coco-eval
backend against the pycocotools one on generated splits."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.formats import Prediction
from pipeline.metrics.detection import (
    BACKENDS,
    DEFAULT_BACKEND,
    STAT_KEYS,
    DetectionMAP,
    detection_metrics,
    format_validity,
)
from pipeline.records import Object

# Image "a": a small cat, a large cat, a medium dog and a crowd of cats along the bottom.
# Image "b": nothing. Image "c": one medium dog.
GTS = [
    {
        "image_id": "a",
        "width": 200,
        "height": 200,
        "objects": [
            {"bbox": [10, 10, 30, 30], "category": "cat"},
            {"bbox": [50, 50, 150, 150], "category": "cat"},
            {"bbox": [100, 10, 160, 60], "category": "dog"},
            {"bbox": [0, 150, 200, 200], "category": "cat", "iscrowd": 1},
        ],
    },
    {"image_id": "b", "width": 200, "height": 200, "objects": []},
    {"image_id": "c", "width": 100, "height": 80, "objects": [{"bbox": [5, 5, 95, 75], "category": "dog"}]},
]

PREDS = [
    {
        "image_id": "a",
        "objects": [
            {"bbox": [12, 12, 31, 31], "category": "cat", "score": 0.9},
            {"bbox": [55, 50, 150, 150], "category": "cat", "score": 0.8},
            {"bbox": [100, 10, 160, 60], "category": "dog", "score": 0.6},
            {"bbox": [10, 160, 60, 195], "category": "cat", "score": 0.85},  # on the crowd: ignored
            {"bbox": [60, 60, 100, 100], "category": "cat", "score": 0.3},  # a false positive
            {"bbox": [0, 0, 10, 10], "category": "horse", "score": 0.99},  # unknown category
        ],
    },
    {"image_id": "b", "objects": [{"bbox": [20, 20, 80, 80], "category": "dog", "score": 0.95}]},
    {"image_id": "c", "objects": [{"bbox": [10, 10, 90, 70], "category": "dog", "score": 0.5}]},
]

# The same split as COCO JSON, written by hand: xywh boxes, area = w*h, ids from 1, cat=1 dog=2.
COCO_GT = {
    "images": [
        {"id": 1, "width": 200, "height": 200},
        {"id": 2, "width": 200, "height": 200},
        {"id": 3, "width": 100, "height": 80},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 100], "area": 10000, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [100, 10, 60, 50], "area": 3000, "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 150, 200, 50], "area": 10000, "iscrowd": 1},
        {"id": 5, "image_id": 3, "category_id": 2, "bbox": [5, 5, 90, 70], "area": 6300, "iscrowd": 0},
    ],
}
COCO_DT = [
    {"image_id": 1, "category_id": 1, "bbox": [12, 12, 19, 19], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [55, 50, 95, 100], "score": 0.8},
    {"image_id": 1, "category_id": 2, "bbox": [100, 10, 60, 50], "score": 0.6},
    {"image_id": 1, "category_id": 1, "bbox": [10, 160, 50, 35], "score": 0.85},
    {"image_id": 1, "category_id": 1, "bbox": [60, 60, 40, 40], "score": 0.3},
    {"image_id": 2, "category_id": 2, "bbox": [20, 20, 60, 60], "score": 0.95},
    {"image_id": 3, "category_id": 2, "bbox": [10, 10, 80, 60], "score": 0.5},
]


def reference_stats(gt: dict, dt: list[dict]) -> list[float | None]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dt))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [None if v < 0 else float(v) for v in ev.stats]


def assert_matches(ours: dict, ref: list[float | None]) -> None:
    for key, want in zip(STAT_KEYS, ref, strict=True):
        if want is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(want, abs=1e-12), key


def test_matches_pycocotools_on_hand_written_json():
    ours = detection_metrics(GTS, PREDS)
    ref = reference_stats(COCO_GT, COCO_DT)
    assert_matches(ours, ref)
    # the case is not trivial: false positives cost something, and large/small/medium all exist
    assert 0.0 < ours["map"] < 1.0
    assert all(ours[k] is not None for k in STAT_KEYS)
    assert ours["unknown_category"] == 1
    assert ours["num_predictions"] == 7
    assert ours["num_gt_objects"] == 4
    assert ours["num_images"] == 3
    assert set(ours["map_per_class"]) == {"cat", "dog"}


def test_prediction_on_crowd_region_is_ignored_not_a_false_positive():
    without = copy.deepcopy(PREDS)
    del without[0]["objects"][3]
    assert_matches(detection_metrics(GTS, without), reference_stats(COCO_GT, COCO_DT))
    assert detection_metrics(GTS, without)["map"] == detection_metrics(GTS, PREDS)["map"]
    # with the crowd region gone from the ground truth, the same prediction is a false positive
    no_crowd = copy.deepcopy(GTS)
    del no_crowd[0]["objects"][3]
    assert detection_metrics(no_crowd, PREDS)["map"] < detection_metrics(GTS, PREDS)["map"]


def test_crowd_given_as_separate_list_equals_iscrowd_flag():
    separate = copy.deepcopy(GTS)
    crowd = separate[0]["objects"].pop(3)
    separate[0]["crowd"] = [{"bbox": crowd["bbox"], "category": crowd["category"]}]
    assert detection_metrics(separate, PREDS) == detection_metrics(GTS, PREDS)


def test_prediction_on_image_without_objects_is_a_false_positive():
    without = copy.deepcopy(PREDS)
    without[1]["objects"] = []
    ours = detection_metrics(GTS, without)
    ref_dt = [d for d in COCO_DT if d["image_id"] != 2]
    assert_matches(ours, reference_stats(COCO_GT, ref_dt))
    assert ours["map_per_class"]["dog"] > detection_metrics(GTS, PREDS)["map_per_class"]["dog"]


def test_perfect_predictions_give_ap_one():
    perfect = [
        {
            "image_id": g["image_id"],
            "objects": [{**o, "score": 1.0} for o in g["objects"] if not o.get("iscrowd")],
        }
        for g in GTS
    ]
    ours = detection_metrics(GTS, perfect)
    for key in STAT_KEYS:
        if key != "mar_1":  # one detection per image and class cannot recall both cats of image "a"
            assert ours[key] == pytest.approx(1.0), key
    assert ours["mar_1"] == pytest.approx(0.75)  # cat 1/2, dog 1
    assert ours["map_per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}


@pytest.mark.parametrize("preds", [[], [{"image_id": "a", "objects": []}]])
def test_no_predictions_give_zeros_not_an_exception(preds):
    ours = detection_metrics(GTS, preds)
    for key in STAT_KEYS:
        assert ours[key] == 0.0, key
    assert ours["num_predictions"] == 0


def test_only_unknown_categories_give_zeros_and_are_counted():
    preds = [{"image_id": "a", "objects": [{"bbox": [10, 10, 30, 30], "category": "horse", "score": 1.0}]}]
    ours = detection_metrics(GTS, preds)
    assert ours["map"] == 0.0
    assert ours["unknown_category"] == 1


def test_sizes_without_ground_truth_are_none():
    gts = [
        {
            "image_id": 1,
            "width": 200,
            "height": 200,
            "objects": [{"bbox": [0, 0, 150, 150], "category": "cat"}],
        }
    ]
    preds = [{"image_id": 1, "objects": [{"bbox": [0, 0, 150, 150], "category": "cat", "score": 0.5}]}]
    ours = detection_metrics(gts, preds)
    assert ours["map"] == pytest.approx(1.0)
    assert ours["map_small"] is None and ours["map_medium"] is None and ours["mar_small"] is None
    assert ours["map_large"] == pytest.approx(1.0)


def test_vocabulary_category_without_objects_is_defined_by_union():
    gts = [{**g, "categories": ["cat", "dog", "bird"]} for g in GTS]
    preds = copy.deepcopy(PREDS)
    preds[2]["objects"].append({"bbox": [0, 0, 5, 5], "category": "bird", "score": 0.1})
    ours = detection_metrics(gts, preds)
    assert ours["unknown_category"] == 1  # only the horse
    assert ours["map_per_class"]["bird"] is None  # no ground truth: undefined, averaged out
    assert ours["map"] == pytest.approx(detection_metrics(GTS, PREDS)["map"])


def test_objects_may_be_record_objects_and_scores_default_to_one():
    gts = [{"image_id": "x", "width": 50, "height": 50, "objects": [Object((0, 0, 40, 40), "cat")]}]
    preds = [{"image_id": "x", "objects": [Object((0, 0, 40, 40), "cat")]}]
    assert detection_metrics(gts, preds)["map"] == pytest.approx(1.0)


def test_prediction_for_unknown_image_raises():
    with pytest.raises(ValueError, match="zzz"):
        detection_metrics(GTS, [{"image_id": "zzz", "objects": []}])


def test_evaluate_metric_matches_plain_function():
    got = DetectionMAP().compute(predictions=PREDS, references=GTS)
    want = detection_metrics(GTS, PREDS)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_evaluate_metric_in_batches_and_empty():
    metric = DetectionMAP()
    for gt, pred in zip(GTS, PREDS, strict=True):
        metric.add_batch(predictions=[pred], references=[gt])
    assert metric.compute()["map"] == pytest.approx(detection_metrics(GTS, PREDS)["map"])
    empty = [{"image_id": g["image_id"], "objects": []} for g in GTS]
    assert DetectionMAP().compute(predictions=empty, references=GTS)["map"] == 0.0


def test_format_validity_counts():
    preds = [
        Prediction(task="detection", objects=[Object((0, 0, 1, 1), "cat")]),
        Prediction(task="detection"),  # parsed, nothing detected
        Prediction(task="detection", objects=[Object((0, 0, 1, 1), "horse")], errors=2),
        Prediction(task="detection", errors=1),
    ]
    assert format_validity(preds, categories=["cat", "dog"]) == {
        "total": 4,
        "parsed": 2,
        "partial": 1,
        "unparsed": 1,
        "objects": 2,
        "unknown_category": 1,
    }


# --- backends: faster-coco-eval (the default) against pycocotools (the reference) -----------------


def random_split(seed: int, n_images: int = 60) -> tuple[list[dict], list[dict]]:
    """A split with what COCOeval has to get right: random boxes of every size in six categories,
    crowd regions (flagged and listed), images without ground truth or without predictions (an empty
    list, or no entry at all), a vocabulary category without ground truth that is predicted, unknown
    categories, tied scores and missing ones, duplicates and misses."""
    rng = np.random.default_rng(seed)
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]
    gts, preds = [], []

    def box(w: int, h: int) -> list[float]:
        bw, bh = rng.uniform(3, w), rng.uniform(3, h)
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        return [round(x, 1), round(y, 1), round(x + bw, 1), round(y + bh, 1)]

    for i in range(n_images):
        w, h = int(rng.integers(60, 700)), int(rng.integers(60, 500))
        objects = []
        for _ in range(int(rng.choice([0, 0, 1, 3, 6, 10]))):
            o = {"bbox": box(w, h), "category": str(rng.choice(names))}
            if rng.random() < 0.1:
                o["iscrowd"] = 1
            objects.append(o)
        gt = {"image_id": f"im{i}", "width": w, "height": h, "objects": objects}
        if rng.random() < 0.15:
            gt["crowd"] = [{"bbox": box(w, h), "category": str(rng.choice(names))}]
        if i == 0:
            gt["categories"] = [*names, "gnu"]  # "gnu": in the vocabulary, never in the ground truth
        gts.append(gt)

        if rng.random() < 0.1:
            continue  # no entry at all
        found = []
        for o in objects + gt.get("crowd", []):
            for _ in range(int(rng.choice([0, 1, 1, 2]))):  # missed, found, found twice
                x1, y1, x2, y2 = o["bbox"]
                d = rng.normal(0, 0.1, 4) * [x2 - x1, y2 - y1, x2 - x1, y2 - y1]
                category = o["category"] if rng.random() < 0.85 else str(rng.choice(names))
                found.append({"bbox": [x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3]], "category": category})
        for _ in range(int(rng.integers(0, 5))):
            found.append({"bbox": box(w, h), "category": str(rng.choice([*names, "gnu", "yak"]))})
        for o in found:
            if rng.random() < 0.9:  # else no score: 1.0
                o["score"] = round(float(rng.random()), 1)  # one decimal: many ties
        if rng.random() < 0.1:
            found = []
        preds.append({"image_id": f"im{i}", "objects": found})
    return gts, preds


def crowded_ties(seed: int = 3) -> tuple[list[dict], list[dict]]:
    """160 predictions per image of one category (over maxDets=100), half of them tied at 0.5 and half
    without a score (1.0), on integer boxes: truncation and tie order must match pycocotools'."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(3):
        objects = [
            {"bbox": [float(x), float(y), float(x + s), float(y + s)], "category": "c"}
            for x, y, s in rng.integers(5, 300, (40, 3)).tolist()
        ]
        gts.append({"image_id": i, "width": 640, "height": 640, "objects": objects})
        found = []
        for o in objects:
            for _ in range(4):
                x1, y1, x2, y2 = o["bbox"]
                jittered = [x1 + float(rng.integers(-3, 4)), y1, x2, y2 + float(rng.integers(-3, 4))]
                found.append(
                    {"bbox": jittered, "category": "c", **({"score": 0.5} if rng.random() < 0.5 else {})}
                )
        preds.append({"image_id": i, "objects": found})
    return gts, preds


def assert_backends_agree(gts: list[dict], preds: list[dict]) -> dict:
    fast = detection_metrics(gts, preds, backend="faster-coco-eval")
    ref = detection_metrics(gts, preds, backend="pycocotools")
    assert fast.keys() == ref.keys()
    for key, want in ref.items():
        if key in STAT_KEYS:
            assert (fast[key] is None) == (want is None), key
            if want is not None:
                assert fast[key] == pytest.approx(want, abs=1e-6), key
        elif key == "map_per_class":
            assert fast[key].keys() == want.keys()
            for name, ap in want.items():
                assert (fast[key][name] is None) == (ap is None), name
                if ap is not None:
                    assert fast[key][name] == pytest.approx(ap, abs=1e-6), name
        else:
            assert fast[key] == want, key
    return ref


@pytest.mark.parametrize("seed", range(4))
def test_faster_coco_eval_equals_pycocotools_on_random_splits(seed):
    gts, preds = random_split(seed)
    ref = assert_backends_agree(gts, preds)
    # the split exercises what it claims to
    assert all(ref[k] is not None for k in STAT_KEYS) and 0.0 < ref["map"] < 1.0
    assert ref["unknown_category"] > 0 and ref["map_per_class"]["gnu"] is None
    assert any(not g["objects"] for g in gts) and len(preds) < len(gts)
    assert any(p["objects"] == [] for p in preds)


def test_default_backend_is_faster_coco_eval():
    assert DEFAULT_BACKEND == "faster-coco-eval" and set(BACKENDS) == {"faster-coco-eval", "pycocotools"}
    gts, preds = random_split(7)
    assert detection_metrics(gts, preds) == detection_metrics(gts, preds, backend="faster-coco-eval")


@pytest.mark.parametrize(
    ("gts", "preds"),
    [
        (GTS, PREDS),
        (GTS, []),
        (GTS, [{"image_id": "a", "objects": [{"bbox": [10, 10, 30, 30], "category": "horse"}]}]),
        ([{"image_id": "b", "width": 20, "height": 20, "objects": []}], []),
        ([{"image_id": "b", "width": 20, "height": 20, "objects": [], "categories": ["cat"]}], []),
        ([], []),
        (
            [
                {
                    "image_id": 1,
                    "width": 200,
                    "height": 200,
                    "objects": [{"bbox": [0, 0, 150, 150], "category": "c"}],
                }
            ],
            [{"image_id": 1, "objects": [{"bbox": [0, 0, 150, 150], "category": "c", "score": 0.5}]}],
        ),
        crowded_ties(),
    ],
    ids=[
        "hand-written",
        "no-predictions",
        "only-unknown",
        "no-objects",
        "vocabulary-only",
        "empty",
        "large-only",
        "over-100-tied",
    ],
)
def test_backends_agree_on_edge_cases(gts, preds):
    assert_backends_agree(gts, preds)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_print_and_log_nothing(backend, capsys, caplog):
    caplog.set_level(logging.INFO)
    detection_metrics(GTS, PREDS, backend=backend)
    assert capsys.readouterr().out == ""
    assert caplog.records == []


def test_evaluate_metric_takes_the_backend_and_unknown_backend_raises():
    got = DetectionMAP().compute(predictions=PREDS, references=GTS, backend="pycocotools")
    assert got == detection_metrics(GTS, PREDS, backend="pycocotools")
    with pytest.raises(ValueError, match="backend"):
        detection_metrics(GTS, PREDS, backend="detectron2")
