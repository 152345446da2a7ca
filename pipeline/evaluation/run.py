"""`uvft eval`: generate on a split, parse, score each task with its field's metric, and dump the
evidence (generations.jsonl, metrics.json) in <run>/eval/<split>/ (or eval-base/ for the base model).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline import models
from pipeline.data.build import build
from pipeline.errors import UvftError
from pipeline.evaluation.generate import generate
from pipeline.evaluation.metrics.caption import caption_metrics
from pipeline.evaluation.metrics.classification import classification_metrics, normalize_label
from pipeline.evaluation.metrics.detection import detection_metrics, format_validity
from pipeline.evaluation.metrics.vqa import vqa_accuracy
from pipeline.recipe import Recipe

logger = logging.getLogger(__name__)


def _references(r: dict[str, Any]) -> dict[str, Any]:
    task = r["task"]
    if task == "classification":
        return {"label": r["label"], "categories": r["categories"]}
    if task == "caption":
        return {"captions": r["captions"]}
    if task == "vqa":
        return {"answers": r["answers"], "answer_type": r["answer_type"], "question": r["question"]}
    return {"objects": r["objects"]}


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detection_f1(pred: list[dict[str, Any]], ref: list[dict[str, Any]], iou: float = 0.5) -> float:
    """Per-image F1 at IoU >= 0.5, greedy by score: the per-example score the report ranks by."""
    if not pred and not ref:
        return 1.0
    used: set[int] = set()
    tp = 0
    for p in sorted(pred, key=lambda o: -o.get("score", 1.0)):
        best, best_j = iou, None
        for j, g in enumerate(ref):
            if j not in used and g["category"] == p["category"] and _iou(p["bbox"], g["bbox"]) >= best:
                best, best_j = _iou(p["bbox"], g["bbox"]), j
        if best_j is not None:
            used.add(best_j)
            tp += 1
    return 2 * tp / (len(pred) + len(ref))


def score_tasks(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Metrics per task from generations; also sets each row's per-example `score`."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    metrics: dict[str, Any] = {}
    if rows_ := by_task.get("vqa"):
        metrics["vqa"] = vqa_accuracy(
            [r["parsed"]["text"] for r in rows_],
            [r["references"]["answers"] for r in rows_],
            [r["references"]["answer_type"] for r in rows_],
        )
        for r, acc in zip(rows_, metrics["vqa"].pop("per_question"), strict=True):
            r["score"] = acc
    if rows_ := by_task.get("caption"):
        metrics["caption"] = caption_metrics(
            [r["parsed"]["text"] for r in rows_], [r["references"]["captions"] for r in rows_]
        )
        for r, cider in zip(rows_, metrics["caption"].pop("per_image")["cider"], strict=True):
            r["score"] = min(float(cider), 1.0)
    if rows_ := by_task.get("classification"):
        labels = sorted({c for r in rows_ for c in r["references"]["categories"]})
        metrics["classification"] = classification_metrics(
            [r["parsed"]["text"] for r in rows_],
            [r["references"]["label"] for r in rows_],
            labels=labels or None,
        )
        for r in rows_:
            r["score"] = float(
                normalize_label(r["parsed"]["text"]) == normalize_label(r["references"]["label"])
            )
    if rows_ := by_task.get("detection"):
        gts = [
            {
                "image_id": f"{r['source']}/{r['id']}",
                "width": r["image_size"][0],
                "height": r["image_size"][1],
                "objects": r["references"]["objects"],
                "categories": records[f"{r['source']}/{r['id']}"]["categories"],
            }
            for r in rows_
        ]
        preds = [{"image_id": f"{r['source']}/{r['id']}", "objects": r["parsed"]["objects"]} for r in rows_]
        metrics["detection"] = detection_metrics(gts, preds)
        vocab = {c for g in gts for c in g["categories"]}
        metrics["detection"]["format_validity"] = format_validity([r["parsed"] for r in rows_], vocab)
        for r in rows_:
            r["score"] = detection_f1(r["parsed"]["objects"], r["references"]["objects"])
    return metrics


def evaluate_run(
    recipe: Recipe,
    *,
    adapter: Path | None,
    split: str = "val",
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the base model (adapter=None) or base + adapter on a split; return (out dir, metrics)."""
    from peft import PeftModel
    from transformers import GenerationConfig

    records = build(recipe, progress=progress).load()
    if split not in records:
        raise UvftError(f"split {split!r} is not in the records: {sorted(records)}")
    ds = records[split]
    rows_in = list(ds)
    if limit is not None:  # the first `limit` of each task: every task stays represented
        per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows_in:
            if len(per_task[r["task"]]) < limit:
                per_task[r["task"]].append(r)
        rows_in = [r for rows in per_task.values() for r in rows]
    run_dir = recipe.run_dir
    summary_path = run_dir / "summary.json"
    if recipe.model.id is not None:
        base = recipe.model.id
    elif summary_path.is_file():
        base = json.loads(summary_path.read_text())["base_model"]
    else:
        raise UvftError(
            f"{run_dir} has no summary.json: run `uvft finetune` first (the tiny base comes from it)"
        )
    family = models.get(recipe.model.family)
    model, processor = family.load(base, revision=recipe.model.revision)
    if adapter is not None:
        if not (adapter / "adapter_config.json").is_file():
            raise UvftError(f"{adapter} holds no adapter (adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter)
    gen_dir = adapter if adapter is not None and (adapter / "generation_config.json").is_file() else run_dir
    gen = (
        GenerationConfig.from_pretrained(gen_dir) if (gen_dir / "generation_config.json").is_file() else None
    )
    if gen is None:
        from pipeline.train.loop import generation_config

        gen = generation_config(model, max_new_tokens=recipe.train.max_target_tokens or 256)
    started = time.perf_counter()
    outs = generate(
        model,
        processor,
        recipe.model.family,
        rows_in,
        generation_config=gen,
        batch_size=batch_size,
        progress=progress,
    )
    rows = [
        {
            "id": r["id"],
            "source": r["source"],
            "task": r["task"],
            "prompt": r["prompt"],
            "generated_text": o["generated_text"],
            "parsed": o["parsed"],
            "references": _references(r),
            "image": r["image"],
            "image_size": r["image_size"],
        }
        for r, o in zip(rows_in, outs, strict=True)
    ]
    metrics = score_tasks(rows, {f"{r['source']}/{r['id']}": r for r in rows_in})
    metrics["counts"] = {t: sum(1 for r in rows if r["task"] == t) for t in sorted({r["task"] for r in rows})}
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    out = run_dir / ("eval" if adapter is not None else "eval-base") / split
    out.mkdir(parents=True, exist_ok=True)
    with (out / "generations.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_report(out, rows, metrics, run_dir=run_dir, split=split, is_base=adapter is None)
    logger.info("evaluation written to %s", out)
    return out, metrics


def _write_report(out: Path, rows, metrics, *, run_dir: Path, split: str, is_base: bool) -> None:
    """report.md / report.html next to the evidence; the fine-tuned report puts the base model's
    metrics beside its own when `--base` was evaluated on the same split."""
    from pipeline.evaluation.report import write_report

    base_file = run_dir / "eval-base" / split / "metrics.json"
    base = json.loads(base_file.read_text()) if (not is_base and base_file.is_file()) else None
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    write_report(out, rows, metrics, base_metrics=base, summary=summary)


# the headline number of each task, for the summary table
HEADLINE = {
    "vqa": ("accuracy", "VQA accuracy"),
    "classification": ("accuracy", "top-1 accuracy"),
    "caption": ("cider", "CIDEr-D"),
    "detection": ("map_50", "mAP@0.5"),
}


def print_metrics(metrics: dict[str, Any]) -> None:
    """The summary table printed at the end of `uvft eval`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation")
    for col in ("task", "metric", "value", "records"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, (key, name) in HEADLINE.items():
        if task in metrics:
            value = metrics[task].get(key)
            shown = "n/a" if value is None else f"{value:.3f}"
            table.add_row(task, name, shown, str(metrics["counts"].get(task, "")))
    if "detection" in metrics:
        d = metrics["detection"]
        table.add_row("detection", "mAP@[.5:.95]", f"{d['map']:.3f}", "")
    Console(width=max(Console().width, 100)).print(table)
