"""`uvft eval`: generation -> parse -> per-task metrics, and the evidence written to disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.demo import shapes
from pipeline.errors import UvftError
from pipeline.evaluation.predict import box_scores
from pipeline.evaluation.run import evaluate_run
from pipeline.evaluation.score import headline, trivial_baselines
from pipeline.formats.loc import PALI
from pipeline.metrics.detection import detection_f1
from pipeline.recipe import load_recipe
from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[2]


def test_box_scores_follow_the_location_quadruples():
    toks = [
        "<loc0001>",
        "<loc0002>",
        "<loc0003>",
        "<loc0004>",
        "▁a",
        "<loc0005>",
        "<loc0006>",
        "<loc0007>",
        "<loc0008>",
    ]
    lps = [-1.0, -1.0, -1.0, -1.0, -5.0, -2.0, -2.0, -2.0, -2.0]
    assert box_scores(toks, lps, 2, 0, PALI) == pytest.approx([math.exp(-1.0), math.exp(-2.0)])
    # a parse that reported errors: every box gets the mean over all location tokens
    assert box_scores(toks, lps, 1, 1, PALI) == pytest.approx([math.exp(-1.5)])
    assert box_scores([], [], 2, 0, PALI) == [0.0, 0.0]


def test_detection_f1_per_image():
    ref = [{"bbox": [0, 0, 10, 10], "category": "a"}, {"bbox": [20, 20, 30, 30], "category": "b"}]
    hit = {"bbox": [0, 0, 10, 9], "category": "a", "score": 0.9}
    wrong_class = {"bbox": [20, 20, 30, 30], "category": "a", "score": 0.8}
    assert detection_f1([hit], ref) == pytest.approx(2 / 3)
    assert detection_f1([hit, wrong_class], ref) == pytest.approx(0.5)
    assert detection_f1([], []) == 1.0
    assert detection_f1([], ref) == 0.0


def test_eval_writes_generations_and_metrics_for_every_task(tmp_path: Path):
    data = tmp_path / "shapes"
    shapes.generate(data, n_train=16, n_val=6, seed=5, progress=False)
    recipe = load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            f"data.root={data}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.demo=null",
            f"output_dir={tmp_path / 'run'}",
            "model.tiny.base_steps=0",
            "train.steps=2",
            "train.batch_size=4",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.val_batches=1",
            "train.max_target_tokens=24",
            "eval.every=1",
            "eval.per_task=2",
            "eval.metric=vqa.accuracy",
        ],
    )
    summary = loop.train(recipe, progress=False)
    # in-training evaluation at every step, the best adapter kept by eval.metric
    assert [e["step"] for e in summary.evals] == [1, 2]
    best_step = max(summary.evals, key=lambda e: (e["vqa/accuracy"], -e["step"]))["step"]
    assert summary.best["step"] == best_step and summary.best["metric"] == "vqa.accuracy"
    best = json.loads((recipe.run_dir / "best" / "best.json").read_text())
    assert best["step"] == best_step and best["value"] == summary.best["value"]
    assert best["value"] == best["metrics"]["vqa"]["accuracy"]
    # the in-training subset is a seeded sample of eval.per_task records per task
    assert best["metrics"]["sample"]["limit"] == 2 and set(best["metrics"]["sample"]["records"].values()) == {
        2
    }
    assert (recipe.run_dir / "best" / "adapter_model.safetensors").is_file()
    assert {"vqa/accuracy", "classification/accuracy", "caption/cider", "detection/map_50", "mean"} <= set(
        summary.evals[0]
    )
    out, _ = evaluate_run(recipe, adapter=recipe.run_dir / "best", limit=2, progress=False)
    assert out == recipe.run_dir / "best" / "eval" / "val"
    fingerprints = set()
    for adapter, folder in ((recipe.run_dir, "eval"), (None, "eval-base")):
        out, metrics = evaluate_run(recipe, adapter=adapter, limit=3, batch_size=4, progress=False)
        assert out == recipe.run_dir / folder / "val"
        assert set(metrics["counts"]) == {"classification", "caption", "vqa", "detection"}
        assert metrics["sample"]["limit"] == 3 and metrics["sample"]["records"] == metrics["counts"]
        assert metrics["sample"]["of"]["classification"] == 6  # n_val images
        fingerprints.add(metrics["sample"]["fingerprint"])
        rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
        assert len(rows) == sum(metrics["counts"].values())
        for r in rows:
            assert {
                "id",
                "task",
                "prompt",
                "generated_text",
                "parsed",
                "references",
                "image",
                "image_size",
            } <= set(r)
            # a caption's score is its CIDEr-D (0-10), every other task's a 0-1 score
            assert 0.0 <= r["score"] <= (10.0 if r["task"] == "caption" else 1.0)
        assert all(len(r["references"]["answers"]) == 10 for r in rows if r["task"] == "vqa")
        saved = json.loads((out / "metrics.json").read_text())
        assert 0.0 <= saved["vqa"]["accuracy"] <= 1.0 and 0.0 <= saved["detection"]["map_50"] <= 1.0
        assert saved["detection"]["format_validity"]["total"] == metrics["counts"]["detection"]
        # closed-set classification: always one of the classes, with every class scored
        classes = sorted(shapes.SHAPES)
        cls_rows = [r for r in rows if r["task"] == "classification"]
        for r in cls_rows:
            assert r["parsed"]["closed_set"]["label"] in classes
            assert sorted(r["parsed"]["closed_set"]["scores"]) == classes
        closed = saved["classification"]["closed_set"]
        assert closed["num_other"] == 0 and closed["num_examples"] == len(cls_rows)
        assert closed["num_correct"] == sum(
            r["parsed"]["closed_set"]["label"] == r["references"]["label"] for r in cls_rows
        )
    assert len(fingerprints) == 1  # base and fine-tuned scored the same records


def test_headline_metric_for_best_checkpoint_selection():
    metrics = {
        "vqa": {"accuracy": 0.5},
        "classification": {"accuracy": 0.25, "closed_set": {"accuracy": 0.75}},
        "caption": {"cider": 2.0},  # CIDEr-D is on [0, 10]: 0.2 in the mean
        "detection": {"map_50": 0.15, "per_class": [1, 2]},
    }
    assert headline(metrics, "mean") == pytest.approx((0.5 + 0.25 + 0.2 + 0.15) / 4)
    assert headline(metrics, "classification.closed_set.accuracy") == 0.75
    assert headline(metrics, "detection.map_50") == 0.15
    with pytest.raises(UvftError, match=r"no 'map_75'.*there: map_50, per_class"):
        headline(metrics, "detection.map_75")
    with pytest.raises(UvftError, match="not a number"):
        headline(metrics, "detection.per_class")
    with pytest.raises(UvftError, match="no task was scored"):
        headline({"counts": {}}, "mean")


def test_trivial_baselines_use_the_training_majority():
    train = {
        "task": ["vqa", "vqa", "vqa", "classification", "classification"],
        "target": ["yes", "no", "yes", "circle", "square"],
    }
    rows = [
        {"task": "vqa", "references": {"answers": ["yes"] * 10}},
        {"task": "vqa", "references": {"answers": ["no"] * 10}},
        {"task": "vqa", "references": {"answers": ["yes"] * 3 + ["no"] * 7}},  # 3 of 10 agree: 0.9
        {"task": "classification", "references": {"label": "circle"}},
        {"task": "classification", "references": {"label": "square"}},
        {"task": "classification", "references": {"label": "Circle"}},
    ]
    metrics = {"vqa": {}, "classification": {}}
    trivial_baselines(metrics, train, rows)
    assert metrics["vqa"]["majority_baseline"]["answer"] == "yes"
    assert metrics["vqa"]["majority_baseline"]["accuracy"] == pytest.approx((1.0 + 0.0 + 0.9) / 3)
    # a tie (one circle, one square) goes to the first seen
    assert metrics["classification"]["majority_baseline"] == {"label": "circle", "accuracy": 2 / 3}
