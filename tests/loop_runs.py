"""Helpers of the training and fault tests (imported as `loop_runs`): the short run's recipe, and a
way to interrupt a step in the middle."""

from __future__ import annotations

from pathlib import Path

from pipeline.recipe import load_recipe
from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[1]


def recipe_for(shapes_root: Path, cache: Path, out: Path, *overrides: str):
    """The 6-step run of the loop tests (save every 3, no workers, dropout off unless overridden)."""
    return load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            f"data.root={shapes_root}",
            f"data.cache_dir={cache}",
            "data.demo=null",
            f"output_dir={out}",
            "model.tiny.base_steps=0",
            "train.steps=6",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.log_every=1",
            "train.save_every=3",
            "train.val_batches=1",
            "train.warmup_steps=0",
            "adapter.dropout=0.0",
            *overrides,
        ],
    )


def losses(summary: loop.RunSummary) -> list[float]:
    return [e["loss"] for e in summary.losses]


def interrupt_after_forward(monkeypatch, at: int, action):
    """Patch token_losses so that the `at`-th training forward runs (drawing its dropout masks)
    and then `action()` fires: a signal or a KeyboardInterrupt in the middle of the step."""
    real, calls = loop.token_losses, {"n": 0}

    def patched(model, batch, *, shift):
        out = real(model, batch, shift=shift)
        calls["n"] += model.training
        if model.training and calls["n"] == at:
            action()
        return out

    monkeypatch.setattr(loop, "token_losses", patched)
    return real
