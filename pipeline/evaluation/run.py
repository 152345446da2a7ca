"""`uvft eval`: generate on a split, parse, score each task with its field's metric, and dump the
evidence (generations.jsonl, metrics.json, the report) in <run>/eval/<split>/ (or eval-base/ for the
base model). The folder is written whole beside the old one and swapped in (pipeline.folders), so
metrics never sit beside another evaluation's report, and metrics.json names the weights it was
computed from (`weights.sha256`), which `uvft push` checks against the weights it publishes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline import folders, loader, runfolder, tasks
from pipeline.data.build import build
from pipeline.errors import UvftError
from pipeline.evaluation.predict import eval_generation_config, predict
from pipeline.evaluation.score import same_records, sample_split, score_tasks, trivial_baselines
from pipeline.models import vqvae
from pipeline.recipe import Recipe

logger = logging.getLogger(__name__)


def evidence_dir(run_dir: Path, adapter: Path | None, split: str) -> Path:
    """Where `uvft eval` writes its evidence: <run>/eval-base/<split> for the base model, and next
    to the adapter evaluated otherwise: <run>/eval, <run>/best/eval, <run>/checkpoints/.../eval."""
    if adapter is None:
        return run_dir / "eval-base" / split
    return (run_dir if adapter.resolve() == run_dir.resolve() else adapter) / "eval" / split


def evaluate_run(
    recipe: Recipe,
    *,
    adapter: Path | None,
    split: str = "val",
    limit: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the base model (adapter=None) or a trained model (base + adapter, or a full
    fine-tune's folder) on a split; return (out dir, metrics)."""
    if limit is not None and limit < 1:
        raise UvftError(f"--limit {limit}: evaluate at least one record per task (or no --limit for all)")
    built = build(recipe, progress=progress)
    records = built.load()
    if split not in records:
        raise UvftError(f"split {split!r} is not in the records: {sorted(records)}")
    ds = records[split]
    sample = sample_split(ds, limit, recipe.eval.seed)
    rows_in = list(ds.select(sample.indices) if limit is not None else ds)
    if not rows_in:
        raise UvftError(f"split {split!r} has no records to evaluate")
    run_dir = recipe.run_dir
    if recipe.model.id is not None:
        base_model = recipe.model.id
    elif (recorded := runfolder.summary_base(run_dir)) is not None:
        base_model = loader.resolve_base(recorded, run_dir)
    elif adapter is None:
        # the tiny model (and its base stage) without a run: built, or read from the cache
        from pipeline.runtime import make_accelerator
        from pipeline.train.loop import base_model_path

        accelerator = make_accelerator(recipe, log=False)
        base_model = base_model_path(recipe, records, progress=progress, accelerator=accelerator)
    else:
        raise UvftError(
            f"{run_dir} has no summary.json: run `uvft finetune` first (the tiny base comes from it)"
        )
    family = recipe.model.family
    if adapter is None:
        m = loader.load_base(base_model, family, revision=recipe.model.revision)
    else:
        m = loader.load(adapter, family=family, base=base_model, base_revision=recipe.model.revision)
    model, processor = m.model, m.processor
    gen = eval_generation_config(model, recipe, m.folder if adapter is not None else run_dir)
    if batch_size is not None:
        recipe = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"batch_size": batch_size})})
    started = time.perf_counter()
    # masks written as codes are decoded with the codec the model was trained with (saved beside
    # it), else the one the records' codes were made with
    mask_vae = m.mask_vae
    if mask_vae is None and built.stats.mask_vae:
        mask_vae = vqvae.load(built.stats.mask_vae["path"])
    rows = predict(
        model,
        processor,
        recipe.model.family,
        rows_in,
        recipe.eval,
        generation_config=gen,
        mask_vae=mask_vae,
        progress=progress,
    )
    metrics = score_tasks(rows, {f"{r['source']}/{r['id']}": r for r in rows_in})
    if recipe.data.train_split in records:
        trivial_baselines(metrics, records[recipe.data.train_split], rows)
    metrics["counts"] = {t: sum(1 for r in rows if r["task"] == t) for t in sorted({r["task"] for r in rows})}
    metrics["sample"] = sample.describe()
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["weights"] = {"model": str(adapter if adapter is not None else base_model), "sha256": m.digest}
    out = evidence_dir(run_dir, adapter, split)
    with folders.writing(out, "uvft eval", owned=_written_by_eval) as tmp:
        with (tmp / "generations.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _write_report(tmp, rows, metrics, run_dir=run_dir, split=split, is_base=adapter is None)
    logger.info("evaluation written to %s", out)
    return out, metrics


def _written_by_eval(folder: Path) -> bool:
    # evaluation folders written before the marker existed
    return (folder / "metrics.json").is_file() or (folder / "generations.jsonl").is_file()


def _write_report(out: Path, rows, metrics, *, run_dir: Path, split: str, is_base: bool) -> None:
    """report.md / report.html next to the evidence; the fine-tuned report puts the base model's
    metrics beside its own when `--base` was evaluated on the same split."""
    from pipeline.evaluation.report import write_report

    base_file = evidence_dir(run_dir, None, split) / "metrics.json"
    base_metrics = json.loads(base_file.read_text()) if (not is_base and base_file.is_file()) else None
    write_report(out, rows, metrics, base_metrics=base_metrics, summary=runfolder.read_summary(run_dir))


def print_metrics(metrics: dict[str, Any], base_metrics: dict[str, Any] | None = None) -> None:
    """The summary table printed at the end of `uvft eval`, with the base model's numbers beside
    when they are given (from `uvft eval --base`) and scored the same records; then what a sample
    covers."""
    from rich.console import Console
    from rich.table import Table

    notes = []
    if base_metrics is not None and not same_records(metrics, base_metrics):
        notes.append(
            "base: not shown, `uvft eval --base` scored other records "
            "(evaluate it with the same --limit, eval.seed and split)"
        )
        base_metrics = None
    notes += sample_notes(metrics)

    def get(m: dict[str, Any] | None, path: tuple[str, ...]) -> str:
        for part in path:
            if not isinstance(m, dict) or part not in m:
                return ""
            m = m[part]
        return "n/a" if m is None else f"{m:.3f}"

    rows: list[tuple[str, str, tuple[str, ...], str]] = []
    for t in tasks.all_tasks():
        if t.NAME not in metrics:
            continue
        key = t.HEADLINE.key
        rows.append((t.NAME, t.HEADLINE.name, (t.NAME, key), str(metrics["counts"].get(t.NAME, ""))))
        extras = [(t.NAME, e.name, (t.NAME, *e.key.split(".")), "") for e in t.EXTRAS]
        rows += [row for row in extras if get(metrics, row[2])]  # closed-set only where it was scored
        if t.BASELINE is not None and t.BASELINE.key in metrics[t.NAME]:
            rows.append((t.NAME, t.BASELINE.name, (t.NAME, t.BASELINE.key, key), ""))

    table = Table(title="evaluation")
    columns = ["task", "metric", *(["base"] if base_metrics else []), "value", "records"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, name, path, count in rows:
        table.add_row(
            task, name, *([get(base_metrics, path)] if base_metrics else []), get(metrics, path), count
        )
    console = Console(width=max(Console().width, 100))
    console.print(table)
    for note in notes:
        console.print(note)


def sample_notes(metrics: dict[str, Any]) -> list[str]:
    """What a limited evaluation covers, for the people reading its numbers (none for a whole split)."""
    sample = metrics.get("sample") or {}
    if sample.get("limit") is None:
        return []
    parts = [f"{n} of {sample['of'].get(t, n)} {t}" for t, n in sample["records"].items()]
    return [
        f"a sample, not the whole split: {', '.join(parts)} records (--limit {sample['limit']}, seed "
        f"{sample['seed']}, stratified by source and class)"
    ]
