"""Pinned numbers, in the style of torchtune's recipe tests: the demo recipe on the tiny models, a
fixed seed, a few steps per family (and one with gradient accumulation), whose logged losses and
held-out losses must equal the stored ones (rtol 1e-5), and one `uvft eval --limit` whose metrics
must too. A refactor that changes no behaviour keeps them; a change that moves them must say why
and regenerate them:

    UVFT_UPDATE_PINNED=1 python -m pytest tests/test_pinned.py
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from pipeline.demo import shapes
from pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).with_name("assets") / "pinned.json"
UPDATE = os.environ.get("UVFT_UPDATE_PINNED") == "1"

RUNS = {
    "paligemma": ("model.family=paligemma",),
    "florence2": ("model.family=florence2",),
    "paligemma-accum2": ("model.family=paligemma", "train.grad_accum=2", "train.batch_size=2"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pinned") / "shapes"
    shapes.generate(root, n_train=24, n_val=8, seed=11, progress=False)
    return root


def _recipe(data: Path, out: Path, *overrides: str):
    return load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            f"data.root={data}",
            f"data.cache_dir={out.parent / 'cache'}",
            "data.demo=null",
            f"output_dir={out}",
            "model.tiny.base_steps=0",
            "train.steps=6",
            "train.batch_size=4",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.log_every=1",
            "train.val_every=3",
            "train.val_batches=1",
            "train.save_every=100",
            "train.lr=3e-3",
            "adapter.dropout=0.1",
            "eval.every=0",
            *overrides,
        ],
    )


def _check(key: str, got: dict) -> None:
    pinned = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    if UPDATE:
        pinned[key] = got
        PINNED.parent.mkdir(parents=True, exist_ok=True)
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
        return
    assert key in pinned, f"no pinned values for {key}: regenerate with UVFT_UPDATE_PINNED=1"
    want = pinned[key]
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("run", sorted(RUNS))
def test_pinned_losses(data, tmp_path, run):
    from pipeline.train import loop

    summary = loop.train(_recipe(data, tmp_path / "run", *RUNS[run]), progress=False)
    got = {f"loss@{e['step']}": e["loss"] for e in summary.losses}
    got |= {f"val/{k}@{v['step']}": x for v in summary.val for k, x in v.items() if k != "step"}
    _check(run, got)


def test_pinned_eval_metrics(data, tmp_path):
    from pipeline.evaluation.run import evaluate_run
    from pipeline.train import loop

    recipe = _recipe(data, tmp_path / "run", *RUNS["paligemma"])
    loop.train(recipe, progress=False)
    out, metrics = evaluate_run(recipe, adapter=recipe.run_dir, limit=4, progress=False)
    got = _numbers(metrics)
    # what generation wrote (as a checksum) and the closed-set log-likelihoods of every class
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    texts = "\n".join(r["generated_text"] for r in rows).encode()
    got["generated_texts_crc32"] = float(zlib.crc32(texts))
    for r in rows:
        for label, score in (r["parsed"].get("closed_set") or {}).get("scores", {}).items():
            got[f"closed_set/{r['source']}/{r['id']}/{label}"] = score
    assert {"vqa/accuracy", "classification/accuracy", "caption/cider", "detection/map_50"} <= set(got)
    _check("eval-paligemma", got)


def _numbers(node, prefix: str = "") -> dict[str, float]:
    """Every number of metrics.json by its slash path, timings left out."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            if "second" not in str(k):
                out |= _numbers(v, f"{prefix}{k}/")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix.rstrip("/")] = float(node)
    return out
