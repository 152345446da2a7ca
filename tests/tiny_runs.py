"""Tiny trained runs for the tests of what comes after training (inference, export, push): a small
shapes set, the tiny model without a base stage, a few LoRA steps, then `uvft eval` of the base and
of the fine-tuned model, so a run folder looks as a user's does after `make finetune` and `make eval`.

(A module of its own, imported as `tiny_runs`: tests/ and tests/sources/ both have a conftest.py, so
`from conftest import ...` would be ambiguous.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainedRun:
    """A tiny LoRA run on a small shapes set, trained and evaluated (base and fine-tuned)."""

    recipe: Any
    run_dir: Path
    base: str  # the local base model folder
    data: Path


def train_tiny_run(folder: Path, family: str, *overrides: str) -> TrainedRun:
    from pipeline.demo import shapes
    from pipeline.evaluation.run import evaluate_run
    from pipeline.recipe import load_recipe
    from pipeline.train import loop

    data = folder / "shapes"
    shapes.generate(data, n_train=24, n_val=3, seed=5, progress=False)
    recipe = load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            f"model.family={family}",
            f"data.root={data}",
            f"data.cache_dir={folder / 'cache'}",
            "data.demo=null",
            f"output_dir={folder / 'run'}",
            "model.tiny.base_steps=0",
            "train.steps=6",
            "train.lr=3.0e-3",  # a few steps that move the adapter far enough to change outputs
            "train.batch_size=4",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.val_batches=1",
            "train.max_target_tokens=24",
            "eval.every=0",
            "eval.batch_size=8",
            *overrides,
        ],
    )
    summary = loop.train(recipe, progress=False)
    for adapter in (None, recipe.run_dir):
        evaluate_run(recipe, adapter=adapter, progress=False)
    return TrainedRun(recipe=recipe, run_dir=recipe.run_dir, base=summary.base_model, data=data)
