"""Dense captioning mAP: DenseCap's eval_utils.lua worked by hand on tiny cases, METEOR by
pycocoevalcap's jar (a few tests, one JVM each), the rest with a table standing in for METEOR."""

from __future__ import annotations

import shutil

import pytest

from pipeline.metrics import dense_caption as dc
from pipeline.metrics.dense_caption import (
    RECALL_LEVELS,
    DenseCaptionMAP,
    dense_caption_map,
    densecap_ap,
    merge_boxes,
    meteor_scores,
    normalize_caption,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")


def table(scores: dict[str, float]):
    """A METEOR stand-in: each candidate's score looked up by its text; records what it was asked."""
    asked: list[tuple[str, list[str]]] = []

    def scorer(pairs):
        asked.extend((c, list(refs)) for c, refs in pairs)
        return [scores[c] for c, _ in pairs]

    scorer.asked = asked  # type: ignore[attr-defined]
    return scorer


def region(box, caption, score=None):
    r = {"bbox": box, "description": caption}
    if score is not None:
        r["score"] = score
    return r


def test_recall_levels_are_the_lua_loop():
    # `for t=0,1,0.01`: 100 levels, accumulated in double, so 0.5 is not one of them
    assert len(RECALL_LEVELS) == 100
    assert RECALL_LEVELS[0] == 0.0 and RECALL_LEVELS[49] <= 0.5 < RECALL_LEVELS[50]
    assert RECALL_LEVELS[-1] < 1.0


def test_densecap_ap_by_hand():
    # one of two references found at rank 1: recall 0.5 reaches levels 0..0.49 only -> 50/100
    assert densecap_ap([True], 2) == 0.5
    assert densecap_ap([True, True], 2) == 1.0
    # FP then TP: precision 1/2 at recall 1 -> 0.5 at every level
    assert densecap_ap([False, True], 1) == 0.5
    # TP, FP, TP of 2: levels < 0.5 see max precision 1, the other 50 see 2/3
    assert densecap_ap([True, False, True], 2) == pytest.approx((50 * 1 + 50 * 2 / 3) / 100, abs=1e-15)
    assert densecap_ap([], 3) == 0.0
    assert densecap_ap([False, False], 0) == 0.0


def test_merge_boxes_greedy_from_the_most_connected():
    a, b, c = (0, 0, 10, 10), (1, 0, 11, 10), (2, 0, 12, 10)  # IoU a-b = b-c = 9/11, a-c = 8/12 < 0.7
    far = (50, 50, 60, 60)
    # b has most neighbours (a, b, c): one group of three, then far alone
    assert merge_boxes([a, b, c, far]) == [[0, 1, 2], [3]]
    # a tie on neighbour count goes to the first box: a takes b, c stays alone
    assert merge_boxes([a, b, far]) == [[0, 1], [2]]
    assert merge_boxes([far, a, c]) == [[0], [1], [2]]
    assert merge_boxes([]) == []
    # IoU exactly 0.7 merges (>=): 7/10 of the area, contained
    assert merge_boxes([(0, 0, 10, 10), (0, 0, 7, 10)]) == [[0, 1]]
    # a zero-area box is its own group (the Lua sets the diagonal to 1)
    assert merge_boxes([(5, 5, 5, 5)]) == [[0]]


# One image, two references; p1 finds A exactly, p2 repeats it (A is taken: false positive),
# p3 finds B at IoU 50/100 = 0.5. Ranked: TP, FP, TP(IoU <= 0.5) of 2 references.
WORKED_REFS = [[region((0, 0, 10, 10), "a red car"), region((20, 0, 30, 10), "a blue sky")]]
WORKED_PREDS = [
    [
        region((20, 0, 30, 5), "a blue sky", 0.7),
        region((0, 0, 10, 10), "a red car", 0.9),
        region((0, 0, 10, 10), "a red car", 0.8),
    ]
]
# IoU thresholds 0.3, 0.4, 0.5: AP 5/6 (see test_densecap_ap_by_hand); 0.6, 0.7: TP, FP, FP -> 1/2
WORKED_MAP = (3 * (50 + 50 * 2 / 3) / 100 + 2 * 0.5) / 5  # = 0.7


def test_worked_example_with_a_meteor_table():
    scorer = table({"a red car": 1.0, "a blue sky": 1.0})
    out = dense_caption_map(WORKED_PREDS, WORKED_REFS, scorer=scorer)
    assert out["map"] == pytest.approx(WORKED_MAP, abs=1e-12)
    assert out["det_map"] == pytest.approx(WORKED_MAP, abs=1e-12)
    assert out["ap"]["iou_0.5_meteor_0.25"] == pytest.approx(5 / 6, abs=1e-12)
    assert out["ap"]["iou_0.6_meteor_0.05"] == 0.5
    assert len(out["ap"]) == 25 and len(out["det_ap"]) == 5
    # the duplicate took nothing: only the two that took a reference are scored
    assert scorer.asked == [("a red car", ["a red car"]), ("a blue sky", ["a blue sky"])]
    assert out["num_meteor_pairs"] == 2
    assert (out["num_images"], out["num_predictions"], out["num_references"]) == (1, 3, 2)


@needs_java
def test_worked_example_with_real_meteor():
    # an exact caption scores METEOR 1.0 (DenseCap's own sanity test): the same numbers as above
    out = dense_caption_map(WORKED_PREDS, WORKED_REFS)
    assert out["map"] == pytest.approx(WORKED_MAP, abs=1e-12)
    assert out["det_map"] == pytest.approx(WORKED_MAP, abs=1e-12)


@needs_java
def test_meteor_scores_known_values():
    # exact match 1.0, no word in common 0.0, an empty candidate 0.0, a partial match between
    scores = meteor_scores(
        [
            ("expecting perfect match", ["expecting perfect match", "garbage sent"]),
            ("nothing matches", ["some sentence", "one more for fun"]),
            ("", ["a dog"]),
            ("the cat sat", ["the cat sat on the mat"]),
            ("two\nlines ||| here", ["two lines here"]),  # protocol characters cannot break a line
        ]
    )
    assert scores[:3] == [1.0, 0.0, 0.0]
    assert 0.0 < scores[3] < 1.0
    assert len(scores) == 5


def test_meteor_threshold_is_strict():
    # METEOR exactly 0.1 counts for the 0.05 threshold only (the Lua tests `score > min_score`)
    preds = [[region((0, 0, 10, 10), "a car", 1.0)]]
    refs = [[region((0, 0, 10, 10), "a red car")]]
    out = dense_caption_map(preds, refs, scorer=table({"a car": 0.1}))
    assert out["ap"]["iou_0.7_meteor_0.05"] == 1.0
    assert out["ap"]["iou_0.7_meteor_0.1"] == 0.0
    assert out["map"] == pytest.approx(1 / 5)  # one METEOR threshold in five, at every IoU
    assert out["det_map"] == 1.0  # METEOR ignored
    # the PyTorch port's threshold set (0 added): two of six
    port = dense_caption_map(
        preds, refs, meteor_thresholds=(0, 0.05, 0.1, 0.15, 0.2, 0.25), scorer=table({"a car": 0.1})
    )
    assert len(port["ap"]) == 30 and port["map"] == pytest.approx(2 / 6)


def test_overlapping_references_merge_into_one_with_all_captions():
    # R1 and R2 overlap at IoU 0.9: one reference, box (0, 0, 10, 9.5), two captions; R3 apart
    refs = [
        [
            region((0, 0, 10, 10), "A red car."),
            region((50, 50, 60, 60), "a tree"),
            region((0, 0, 10, 9), "red car, parked"),
        ]
    ]
    # p1 finds the merged one (IoU 95/100); p2 repeats it: with R1 and R2 merged it is a duplicate
    preds = [[region((0, 0, 10, 10), "red car parked", 0.9), region((0, 0, 10, 10), "a red car", 0.8)]]
    scorer = table({"red car parked": 1.0, "a red car": 1.0})
    out = dense_caption_map(preds, refs, scorer=scorer)
    assert scorer.asked == [("red car parked", ["a red car", "red car parked"])]  # normalised, in order
    assert (out["num_references"], out["num_reference_boxes"]) == (2, 3)
    # TP, FP of 2 references: AP 1/2 at every pair
    assert out["map"] == 0.5 and out["det_map"] == 0.5
    assert set(out["ap"].values()) == {0.5}


def test_prediction_goes_to_its_best_reference_even_when_taken():
    # A and B overlap at IoU 1/3 (not merged). p2 overlaps A at 90/110 and B at 60/140: it is
    # assigned A, already taken by p1, and is a false positive; it does not fall back to B
    refs = [[region((0, 0, 10, 10), "a"), region((5, 0, 15, 10), "b")]]
    preds = [[region((0, 0, 10, 10), "a", 0.9), region((1, 0, 11, 10), "b", 0.8)]]
    out = dense_caption_map(preds, refs, scorer=table({"a": 1.0, "b": 1.0}))
    assert out["det_ap"]["iou_0.3"] == 0.5  # TP, FP of 2
    assert out["map"] == 0.5


def test_ranking_is_over_the_whole_split():
    # image 0's correct region scores 0.2; image 1's 0.9 prediction overlaps nothing.
    # Ranked FP, TP of 2 references: precision 1/2 at recall 1/2 -> 50 levels x 0.5 / 100
    refs = [[region((0, 0, 10, 10), "a cat")], [region((0, 0, 10, 10), "a dog")]]
    preds = [[region((0, 0, 10, 10), "a cat", 0.2)], [region((50, 50, 60, 60), "a dog", 0.9)]]
    out = dense_caption_map(preds, refs, scorer=table({"a cat": 1.0}))
    assert out["map"] == 0.25 and out["det_map"] == 0.25
    assert out["num_meteor_pairs"] == 1  # the prediction overlapping nothing is never scored


def test_a_prediction_overlapping_nothing_takes_nothing():
    # the Lua would mark the last reference taken here (used[-1]); it stays free for p2
    refs = [[region((0, 0, 10, 10), "a cat")]]
    preds = [[region((50, 50, 60, 60), "a cat", 0.9), region((0, 0, 10, 10), "a cat", 0.5)]]
    out = dense_caption_map(preds, refs, scorer=table({"a cat": 1.0}))
    assert out["det_map"] == 0.5  # FP, TP of 1


def test_empty_predictions_and_empty_references():
    refs = [[region((0, 0, 10, 10), "a cat")], []]
    out = dense_caption_map([[], []], refs, scorer=table({}))
    assert out["map"] == 0.0 and out["det_map"] == 0.0
    assert set(out["ap"].values()) == {0.0}
    # an image without references: its predictions are false positives
    out = dense_caption_map([[], [region((0, 0, 10, 10), "a cat", 1.0)]], refs, scorer=table({}))
    assert out["map"] == 0.0 and out["num_meteor_pairs"] == 0
    # no reference anywhere: recall is undefined
    none = dense_caption_map([[region((0, 0, 1, 1), "x", 1.0)]], [[]], scorer=table({}))
    assert none["map"] is None and none["det_map"] is None
    assert dense_caption_map([], [], scorer=table({}))["map"] is None


def test_missing_score_ranks_in_input_order():
    refs = [[region((0, 0, 10, 10), "a"), region((20, 0, 30, 10), "b")]]
    # no scores (1.0 each): the wrong region, listed first, ranks first -> FP, TP
    preds = [[region((50, 50, 60, 60), "a"), region((20, 0, 30, 10), "b")]]
    out = dense_caption_map(preds, refs, scorer=table({"b": 1.0}))
    assert out["det_map"] == 0.25


def test_normalize_caption():
    assert normalize_caption("  A Red-Car, parked.\n") == "a redcar parked"
    scorer = table({"A car.": 1.0})
    preds = [[region((0, 0, 10, 10), "A car.", 1.0)]]
    dense_caption_map(preds, [[region((0, 0, 10, 10), "The CAR!")]], normalize=False, scorer=scorer)
    assert scorer.asked == [("A car.", ["The CAR!"])]


@pytest.mark.parametrize(
    ("preds", "refs", "match"),
    [
        ([[region((0, 0, 1), "x", 1.0)]], [[]], r"example 0: predictions\[0\]\.bbox"),
        ([[], [region((0, 0, 1, float("nan")), "x")]], [[], []], r"example 1: predictions\[0\]\.bbox"),
        ([[region((0, 0, 1, 1), None, 1.0)]], [[]], r"example 0: predictions\[0\]\.description"),
        ([[region((0, 0, 1, 1), "x", "high")]], [[]], r"example 0: predictions\[0\]\.score"),
        ([[]], [[region((0, 0, 1, 1), "x"), region((5, 0, 1, 1), "y")]], r"example 0: references\[1\]\.bbox"),
        ([[]], [[region((0, 0, 1, 1), "  ")]], r"example 0: references\[0\]\.description is empty"),
        ([[]], [[{"description": "x"}]], r"example 0: references\[0\] has no bbox"),
        ([["not a region list"]], [[]], r"example 0: predictions\[0\] has no bbox"),
        ([[]], [[], []], "1 prediction lists but 2 reference lists"),
    ],
)
def test_bad_input_names_the_example_and_field(preds, refs, match):
    with pytest.raises(ValueError, match=match):
        dense_caption_map(preds, refs, scorer=table({}))


def test_no_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dc.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="openjdk"):
        dense_caption_map(WORKED_PREDS, WORKED_REFS)
    # nothing to score: no Java needed
    assert dense_caption_map([[]], WORKED_REFS)["map"] == 0.0


def test_evaluate_metric_equals_the_function():
    scorer = table({"a red car": 1.0, "a blue sky": 1.0})
    metric = DenseCaptionMAP()
    metric.add_batch(predictions=WORKED_PREDS, references=WORKED_REFS)
    out = metric.compute(scorer=scorer)
    assert out == dense_caption_map(WORKED_PREDS, WORKED_REFS, scorer=scorer)
    # add() and a missing score (1.0)
    metric = DenseCaptionMAP()
    metric.add(prediction=[region((0, 0, 10, 10), "a red car")], reference=WORKED_REFS[0])
    assert metric.compute(scorer=scorer)["det_ap"]["iou_0.7"] == 0.5


@needs_java
def test_a_failing_jvm_is_a_clear_error(monkeypatch):
    from pycocoevalcap.meteor import meteor

    monkeypatch.setattr(meteor, "METEOR_JAR", "missing.jar")
    with pytest.raises(RuntimeError, match=r"METEOR .*failed: .*missing\.jar"):
        meteor_scores([("a cat", ["a cat"])])
