"""The unified tasks end to end on the tiny models: the all-tasks recipes (Florence-2: grounding,
segmentation, OCR with regions; PaliGemma: German and English captions, grounding, segmentation as
mask codes, OCR) build,
train, evaluate in training and after, score every task with its baseline, report it, and predict
through the published-model path (`load_model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import load_model, masks, tasks
from pipeline.demo import shapes
from pipeline.evaluation.run import evaluate_run
from pipeline.recipe import load_recipe
from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unified") / "shapes"
    shapes.generate(root, n_train=16, n_val=6, seed=5, progress=False, extra_tasks=shapes.EXTRA_TASKS)
    return root


def _run(recipe_file: str, data: Path, tmp_path: Path, *extra: str):
    recipe = load_recipe(
        ROOT / "recipes" / recipe_file,
        [
            f"data.root={data}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.demo=null",
            f"output_dir={tmp_path / 'run'}",
            "model.tiny.base_steps=0",
            "model.tiny.base_stages=null",  # demo_all_tasks.yaml's base stage comes in two parts
            "train.steps=2",
            "train.batch_size=4",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.val_batches=1",
            "eval.every=2",
            "eval.per_task=2",
            *extra,
        ],
    )
    summary = loop.train(recipe, progress=False)
    return recipe, summary


def test_florence2_grounding_segmentation_ocr_end_to_end(data, tmp_path):
    recipe, summary = _run("demo_all_tasks.yaml", data, tmp_path)
    # the held-out loss and the in-training evaluation cover every task
    assert {"grounding", "segmentation", "ocr", "caption", "detection"} <= set(summary.val[-1])
    assert {"grounding/accuracy", "segmentation/mean_iou", "ocr/cer", "mean"} <= set(summary.evals[-1])
    out, metrics = evaluate_run(recipe, adapter=recipe.run_dir, limit=3, batch_size=4, progress=False)
    # every task of Florence-2's vocabulary, each scored with its baseline beside it
    assert metrics["counts"] == {t: 3 for t in tasks.names() if t not in ("classification", "vqa")}
    for task in metrics["counts"]:
        baseline = tasks.get(task).BASELINE
        assert baseline is None or metrics[task][baseline.key], task
    g, s, o = metrics["grounding"], metrics["segmentation"], metrics["ocr"]
    assert g["num_examples"] == 3 and set(g["per_source"]) == {"shapes_grounding"}
    assert set(g["whole_image_baseline"]) == {"accuracy", "mean_iou"}
    assert s["num_examples"] == 3 and "mean_iou" in s["whole_image_baseline"]
    assert o["num_examples"] == 3 and o["majority_baseline"]["text"]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    by_task = {r["task"]: r for r in rows}
    assert by_task["grounding"]["prompt"].startswith("<CAPTION_TO_PHRASE_GROUNDING>")
    assert by_task["grounding"]["references"]["phrase"]
    assert (
        "polygons" in by_task["segmentation"]["parsed"] and by_task["segmentation"]["references"]["polygons"]
    )
    assert {r["prompt"] for r in rows if r["task"] == "ocr"} <= {"<OCR_WITH_REGION>", "<OCR>"}
    assert by_task["region_to_category"]["prompt"].startswith("<REGION_TO_CATEGORY><loc_")
    assert len(by_task["region_to_category"]["references"]["region"]) == 4
    assert by_task["open_vocabulary_detection"]["prompt"].startswith("<OPEN_VOCABULARY_DETECTION>")
    assert by_task["dense_region_caption"]["prompt"] == "<DENSE_REGION_CAPTION>"
    assert all(isinstance(r["score"], float) for r in rows)
    html = (out / "report.html").read_text()
    for task in ("grounding", "segmentation", "ocr"):
        assert f'<h2 id="task-{task}">{task} (n = 3)</h2>' in html

    model = load_model(recipe.run_dir)
    assert {"grounding", "segmentation", "ocr"} <= set(model.tasks)
    image = data / "images" / "refer_val" / "000016.png"
    items = [
        {"image": str(image), "task": "grounding", "phrase": "the red circle"},
        {"image": str(image), "task": "segmentation", "phrase": "the red circle"},
        {"image": str(data / "images" / "ocr_val" / "000016.png"), "task": "ocr"},
        {"image": str(image), "task": "region_to_category", "region": [0, 0, 32, 32]},
        {"image": str(image), "task": "caption", "level": "paragraph"},
    ]
    got = model.predict_many(items, progress=False)
    assert got[3]["prompt"] == "<REGION_TO_CATEGORY><loc_0><loc_0><loc_500><loc_500>" and "label" in got[3]
    assert got[4]["prompt"] == "<MORE_DETAILED_CAPTION>" and "caption" in got[4]
    assert got[0]["prompt"] == "<CAPTION_TO_PHRASE_GROUNDING>the red circle" and "objects" in got[0]
    assert got[1]["prompt"] == "<REFERRING_EXPRESSION_SEGMENTATION>the red circle" and "polygons" in got[1]
    assert got[2]["prompt"] == "<OCR_WITH_REGION>" and "regions" in got[2]


def test_paligemma_captions_in_two_languages_grounding_segmentation_ocr(data, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from pipeline.models import vqvae

    codec_model = vqvae.new(seed=4)
    codec = vqvae.save(codec_model, tmp_path / "codec.safetensors")  # no stand-in fit in a unit test
    recipe, summary = _run("demo_multilingual.yaml", data, tmp_path, f"model.mask_vae={codec}")
    assert "segmentation/mean_iou" in summary.evals[-1]  # the in-training evaluation decodes masks too
    # the codec travels with the model: whoever loads it decodes with the codes' own codebook
    assert (recipe.run_dir / vqvae.MASK_VAE_FILE).read_bytes() == codec.read_bytes()
    out, metrics = evaluate_run(
        recipe, adapter=recipe.run_dir, batch_size=8, progress=False
    )  # all: --limit would keep English only
    assert metrics["counts"]["caption"] == 12 and metrics["counts"]["ocr"] == 6  # six images in each language
    caption = metrics["caption"]
    assert set(caption["by_language"]) == {"de", "en"} and caption["count"] == 12
    assert caption["by_language"]["de"]["tokenizer"] == "fallback"
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    prompts = {r["prompt"] for r in rows if r["task"] == "caption"}
    assert prompts == {"caption en", "caption de"}
    assert {r["prompt"] for r in rows if r["task"] == "ocr"} == {"ocr"}
    assert all(r["prompt"].startswith("detect ") for r in rows if r["task"] == "grounding")
    segmentation = [r for r in rows if r["task"] == "segmentation"]
    assert segmentation and all(r["prompt"].startswith("segment ") for r in segmentation)
    assert metrics["segmentation"]["num_examples"] == len(segmentation)
    assert "whole_image_baseline" in metrics["segmentation"]
    for r in segmentation:  # every piece with a box and 16 codes was decoded into the scored mask
        if r["parsed"]["objects"]:
            mask = masks.from_rle(r["parsed"]["mask"])
            assert mask.shape == tuple(reversed(r["image_size"]))
    # records rebuilt with another codec (a changed model.mask_vae, or a refitted stand-in): the
    # trained model is still decoded with the codebook its codes came from, the one saved with it
    import pipeline.evaluation.run as run_module

    other = vqvae.save(vqvae.new(seed=5), tmp_path / "other.safetensors")
    seen = []
    real_predict = run_module.predict
    monkeypatch.setattr(
        run_module, "predict", lambda *a, **kw: seen.append(kw["mask_vae"]) or real_predict(*a, **kw)
    )
    changed = recipe.model_copy(update={"model": recipe.model.model_copy(update={"mask_vae": str(other)})})
    evaluate_run(changed, adapter=recipe.run_dir, limit=1, batch_size=8, progress=False)
    assert torch.equal(seen[0].codebook, codec_model.codebook)

    model = load_model(recipe.run_dir)
    image = str(data / "images" / "val" / "000016.png")
    got = model.predict_many(
        [
            {"image": image, "task": "caption", "language": "de"},
            {"image": image, "task": "grounding", "phrase": "the circle"},
            {"image": image, "task": "segmentation", "phrase": "the circle"},
        ],
        progress=False,
    )
    assert got[0]["prompt"] == "caption de" and "caption" in got[0]
    assert got[1]["prompt"] == "detect the circle" and "objects" in got[1]
    assert got[2]["prompt"] == "segment the circle"
    # the saved codec decodes what the model writes (an untrained model may write no whole mask)
    probe = np.zeros((64, 64), dtype=np.float32)
    probe[10:50, 20:40] = 1
    codes = codec_model.encode(torch.as_tensor(probe)[None])
    assert torch.equal(model.mask_vae.encode(torch.as_tensor(probe)[None]), codes)
    assert ("mask" in got[2]) == (got[2]["parse_errors"] == 0 and "<seg" in got[2]["generated_text"])
