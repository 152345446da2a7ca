"""In-training evaluation (recipe `eval`): generation on a fixed validation sample, every process
generating its share, scored on the main process. The trainer calls `run(model, step)` and gets
metrics.json's dict on the main process (None on the others); what to keep (best/) it decides.
Imports nothing of training."""

from __future__ import annotations

from typing import Any

from pipeline import tasks
from pipeline.evaluation.predict import eval_generation_config, predict
from pipeline.evaluation.score import headline, metric_at, sample_split, score_tasks
from pipeline.failpoints import failpoint
from pipeline.recipe import Recipe


class GenerationEvaluator:
    def __init__(
        self, recipe: Recipe, split_ds: Any, processor: Any, accelerator: Any, mask_vae: Any = None
    ) -> None:
        self.recipe, self.processor, self.accelerator = recipe, processor, accelerator
        self.mask_vae = mask_vae  # the records' mask codec, when masks are written as codes
        # a seeded sample that spreads over every class and source (the first records of a task
        # may all be one class: an ImageFolder split is sorted by class)
        self.sample = sample_split(split_ds, recipe.eval.per_task, recipe.eval.seed)
        rows = list(split_ds.select(self.sample.indices))
        self.lookup = {f"{r['source']}/{r['id']}": r for r in rows}
        self.rows = rows[accelerator.process_index :: accelerator.num_processes]
        self.gen = None  # the run's pinned generation config with eval's settings, made on first use

    def run(self, model: Any, step: int) -> dict[str, Any] | None:
        from accelerate.utils import gather_object

        acc = self.accelerator
        unwrapped = acc.unwrap_model(model)
        if self.gen is None:
            self.gen = eval_generation_config(unwrapped, self.recipe)
        family, cfg = self.recipe.model.family, self.recipe.eval
        rows = predict(
            unwrapped,
            self.processor,
            family,
            self.rows,
            cfg,
            generation_config=self.gen,
            mask_vae=self.mask_vae,
            progress=False,
        )
        failpoint("eval.generate")
        model.train()
        rows = gather_object(rows) if acc.num_processes > 1 else rows
        if not acc.is_main_process:
            return None
        return {**score_tasks(rows, self.lookup), "sample": self.sample.describe()}


def headline_entry(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers tracked over training: each task's headline metric and the extras it tracks
    (closed-set accuracy), and their mean."""
    entry: dict[str, float] = {}
    for t in tasks.all_tasks():
        if t.NAME in metrics and metrics[t.NAME].get(t.HEADLINE.key) is not None:
            entry[f"{t.NAME}/{t.HEADLINE.key}"] = metrics[t.NAME][t.HEADLINE.key]
    for t in tasks.all_tasks():
        for extra in t.EXTRAS:
            value = metric_at(metrics.get(t.NAME), extra.key) if extra.tracked else None
            if value is not None:
                entry[f"{t.NAME}/{extra.tracked}"] = value
    entry["mean"] = headline(metrics, "mean")
    return entry
