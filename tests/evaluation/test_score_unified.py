"""Scoring the unified tasks from generations rows: grounding, segmentation, OCR, captions per
language, their trivial baselines and the headline mean, with worked values."""

from __future__ import annotations

import pytest

from pipeline.evaluation.score import headline, score_tasks, trivial_baselines
from pipeline.metrics.caption import caption_metrics

SIZE = [100, 50]
SQUARE = [0.0, 0.0, 50.0, 0.0, 50.0, 50.0, 0.0, 50.0]  # the left half of the image


def grounding_row(rid, source, predicted, reference):
    return {
        "id": rid,
        "source": source,
        "task": "grounding",
        "image_size": SIZE,
        "parsed": {"text": "", "objects": [{"bbox": b, "category": "x", "score": 1.0} for b in predicted]},
        "references": {"phrase": "x", "objects": [{"bbox": reference, "category": "x", "area": None}]},
    }


def test_grounding_top_box_accuracy_per_source():
    rows = [
        grounding_row("a", "refcoco", [[0, 0, 50, 50], [50, 0, 100, 50]], [0, 0, 50, 50]),  # top box exact
        grounding_row("b", "refcoco", [[50, 0, 100, 50], [0, 0, 50, 50]], [0, 0, 50, 50]),  # only 2nd right
        grounding_row("c", "mine", [[0, 0, 50, 25]], [0, 0, 50, 50]),  # IoU 0.5 counts
        grounding_row("d", "mine", [], [0, 0, 50, 50]),  # no box
    ]
    m = score_tasks(rows, {})["grounding"]
    assert m["accuracy"] == 0.5 and m["mean_iou"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert m["num_no_box"] == 1 and m["num_examples"] == 4
    assert m["per_source"]["refcoco"]["accuracy"] == 0.5 and m["per_source"]["mine"]["mean_iou"] == 0.25
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.5, 0.0]
    assert "per_example_iou" not in m  # moved onto the rows


def test_segmentation_mask_iou_and_whole_image_baseline():
    half = [0.0, 0.0, 25.0, 0.0, 25.0, 50.0, 0.0, 50.0]  # a quarter of the image, inside SQUARE
    rows = [
        {
            "id": str(i),
            "source": "s",
            "task": "segmentation",
            "image_size": SIZE,
            "parsed": {"text": "", "objects": [], "polygons": pred, "errors": 0},
            "references": {"phrase": "the square", "polygons": [SQUARE], "objects": []},
        }
        for i, pred in enumerate([[SQUARE], [half], []])
    ]
    metrics = score_tasks(rows, {})
    m = metrics["segmentation"]
    assert [r["score"] for r in rows] == [1.0, 0.5, 0.0]
    assert m["mean_iou"] == pytest.approx(0.5) and m["precision@0.5"] == pytest.approx(2 / 3)
    assert m["num_empty"] == 1
    trivial_baselines(metrics, {"task": [], "target": []}, rows)
    # the whole image against the left half: IoU 0.5 for every record
    assert metrics["segmentation"]["whole_image_baseline"]["mean_iou"] == pytest.approx(0.5)


def test_grounding_whole_image_baseline():
    rows = [grounding_row("a", "s", [], [0, 0, 50, 50]), grounding_row("b", "s", [], [0, 0, 100, 50])]
    metrics = score_tasks(rows, {})
    trivial_baselines(metrics, {"task": [], "target": []}, rows)
    # IoU 0.5 (counts: >= 0.5) and 1.0
    assert metrics["grounding"]["whole_image_baseline"] == {"accuracy": 1.0, "mean_iou": 0.75}


def ocr_row(rid, predicted, reference):
    return {
        "id": rid,
        "source": "o",
        "task": "ocr",
        "image_size": SIZE,
        "parsed": {"text": predicted, "objects": [], "regions": [], "errors": 0},
        "references": {"text": reference, "regions": []},
    }


def test_ocr_cer_and_majority_text_baseline():
    rows = [ocr_row("a", "red star", "red star"), ocr_row("b", "blue", "blue moon")]
    metrics = score_tasks(rows, {})
    m = metrics["ocr"]
    # 5 deletions over 8 + 9 reference characters; one of two words wrong in "blue moon"
    assert m["cer"] == pytest.approx(5 / 17) and m["wer"] == pytest.approx(1 / 4)
    assert m["exact_match"] == 0.5
    assert [r["score"] for r in rows] == [1.0, pytest.approx(1 - 5 / 9)]
    train = {
        "task": ["ocr", "ocr", "ocr", "caption"],
        "target": ["red star", "red star", "blue", "a"],
        "text": ["red star", "red star", "blue", None],
    }
    trivial_baselines(metrics, train, rows)
    base = metrics["ocr"]["majority_baseline"]
    assert base["text"] == "red star"
    # "red star" vs "blue moon": Levenshtein 8 over 9; exact on the first
    assert base["cer"] == pytest.approx(8 / 17)


def test_headline_mean_counts_cer_as_one_minus():
    metrics = {"ocr": {"cer": 0.25}, "grounding": {"accuracy": 0.5}, "caption": {"cider": 5.0}}
    assert headline(metrics, "mean") == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert headline({"ocr": {"cer": 1.7}}, "mean") == 0.0  # a CER over 1 floors at 0


def caption_row(rid, predicted, refs, language=None):
    references = {"captions": refs}
    if language:
        references["language"] = language
    return {
        "id": rid,
        "source": "c",
        "task": "caption",
        "parsed": {"text": predicted},
        "references": references,
    }


def test_captions_scored_per_language():
    en = [
        caption_row("1", "a red circle", ["a red circle", "one red circle"]),
        caption_row("2", "a cat", ["a dog"]),
    ]
    zh = [caption_row("3", "红色圆", ["红色的圆"], "zh"), caption_row("4", "蓝色", ["绿色"], "zh")]
    m = score_tasks(en + zh, {})["caption"]
    want_en = caption_metrics([r["parsed"]["text"] for r in en], [r["references"]["captions"] for r in en])
    want_zh = caption_metrics(["红色圆", "蓝色"], [["红色的圆"], ["绿色"]], language="zh")
    assert m["by_language"]["zh"]["tokenizer"] == "characters"
    assert m["by_language"]["zh"]["cider"] == pytest.approx(want_zh["cider"])
    assert m["by_language"]["en"]["bleu_1"] == pytest.approx(want_en["bleu_1"])
    assert m["count"] == 4 and m["tokenizer"] == "per language"
    assert m["cider"] == pytest.approx((want_en["cider"] * 2 + want_zh["cider"] * 2) / 4)
    # one language: the plain metrics, as before languages existed
    single = score_tasks(list(en), {})["caption"]
    assert "by_language" not in single and single["cider"] == pytest.approx(want_en["cider"])
    # each row's score is its own CIDEr-D, unclipped: the report ranks captions by it
    assert [r["score"] for r in en] == want_en["per_image"]["cider"]
    assert en[0]["score"] == pytest.approx(5.3956, abs=1e-4) and en[1]["score"] == 0.0
