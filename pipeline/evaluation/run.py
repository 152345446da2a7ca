"""`uvft eval`: generate on a split, parse, score each task with its field's metric, and dump the
evidence (generations.jsonl, metrics.json) in <run>/eval/<split>/ (or eval-base/ for the base model).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import models
from pipeline.data.build import build
from pipeline.errors import UvftError
from pipeline.evaluation.generate import generate, label_loglikelihoods
from pipeline.evaluation.metrics.caption import caption_metrics
from pipeline.evaluation.metrics.classification import classification_metrics, normalize_label
from pipeline.evaluation.metrics.detection import detection_metrics, format_validity
from pipeline.evaluation.metrics.vqa import vqa_accuracy
from pipeline.models.spec import weights_folder
from pipeline.recipe import EvalSection, Recipe

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
        closed = [r["parsed"].get("closed_set") for r in rows_]
        if all(c is not None for c in closed):
            metrics["classification"]["closed_set"] = classification_metrics(
                [c["label"] for c in closed], [r["references"]["label"] for r in rows_], labels=labels or None
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


def trivial_baselines(metrics: dict[str, Any], train: Any, rows: list[dict[str, Any]]) -> None:
    """Add the trivial baselines a model must beat: for VQA the most frequent training answer given
    to every question (VQAv2 accuracy), for classification the most frequent training class
    (top-1 accuracy); ties go to the first seen."""
    tasks, targets = train["task"], train["target"]
    for task, name in (("vqa", "answer"), ("classification", "label")):
        counts = Counter(t for k, t in zip(tasks, targets, strict=True) if k == task)
        scored = [r for r in rows if r["task"] == task]
        if not counts or not scored or task not in metrics:
            continue
        majority = counts.most_common(1)[0][0]
        if task == "vqa":
            refs = [r["references"]["answers"] for r in scored]
            acc = vqa_accuracy([majority] * len(scored), refs)["accuracy"]
        else:
            acc = sum(normalize_label(r["references"]["label"]) == normalize_label(majority) for r in scored)
            acc /= len(scored)
        metrics[task]["majority_baseline"] = {name: majority, "accuracy": acc}


def predict(
    model: Any,
    processor: Any,
    family: str,
    rows_in: list[dict[str, Any]],
    cfg: EvalSection,
    *,
    generation_config: Any,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate and parse for every record (and score class names for closed-set classification);
    return the generations.jsonl rows, in input order."""
    outs = generate(
        model,
        processor,
        family,
        rows_in,
        generation_config=generation_config,
        batch_size=cfg.batch_size,
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
    if cfg.closed_set:
        _closed_set(model, processor, family, rows_in, rows, cfg, progress=progress)
    return rows


def _closed_set(model, processor, family, rows_in, rows, cfg: EvalSection, *, progress: bool) -> None:
    """Add parsed["closed_set"] = {"label", "scores"} to the classification rows."""
    chosen = closed_set(
        model, processor, family, rows_in, labels=cfg.labels, batch_size=cfg.batch_size, progress=progress
    )
    for i, result in chosen.items():
        rows[i]["parsed"]["closed_set"] = result


def closed_set(
    model, processor, family: str, records: Sequence[dict[str, Any]], *, labels: Sequence[str] | None = None,
    batch_size: int = 32, progress: bool = True,
) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Closed-set classification of the classification records: index -> {"label", "scores"}, the
    label of highest likelihood (the first of equal scores) among `labels`, else the record's own
    class list (`categories`). Records are scored in groups of the same candidate list."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r["task"] == "classification":
            candidates = tuple(labels) if labels else tuple(r["categories"] or [])
            if not candidates:
                raise UvftError(
                    f"closed-set classification of record {r['source']}/{r['id']}: the record names no "
                    "classes (categories is empty); set eval.labels or eval.closed_set: false"
                )
            groups[candidates].append(i)
    out: dict[int, dict[str, Any]] = {}
    for candidates, idx in groups.items():
        scores = label_loglikelihoods(
            model, processor, family, [records[i] for i in idx], list(candidates),
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
        for i, row_scores in zip(idx, scores, strict=True):
            best = max(range(len(candidates)), key=lambda j: row_scores[j])
            out[i] = {"label": candidates[best], "scores": dict(zip(candidates, row_scores, strict=True))}
    return out


def headline(metrics: dict[str, Any], key: str) -> float:
    """The number the best checkpoint is chosen by (eval.metric): "mean" of the tasks' headline
    scores, each in [0, 1] (CIDEr-D / 10), or a dotted key of the metrics."""
    if key == "mean":
        values = []
        for task, (name, _) in HEADLINE.items():
            if task in metrics and metrics[task].get(name) is not None:
                values.append(metrics[task][name] / (10.0 if task == "caption" else 1.0))
        if not values:
            raise UvftError("eval.metric 'mean': no task was scored")
        return sum(values) / len(values)
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            raise UvftError(f"eval.metric {key!r}: no {part!r} in the metrics; there: {', '.join(known)}")
        node = node[part]
    if not isinstance(node, (int, float)):
        raise UvftError(f"eval.metric {key!r} is not a number (it is {type(node).__name__})")
    return float(node)


def eval_generation_config(model: Any, recipe: Recipe, folder: Path | None = None) -> Any:
    """The run's pinned generation config (from `folder` when saved there), with the recipe's
    eval.num_beams and eval.max_new_tokens applied."""
    from transformers import GenerationConfig

    from pipeline.train.loop import generation_config

    cfg = recipe.eval
    max_new = cfg.max_new_tokens or recipe.train.max_target_tokens or 256
    if folder is not None and (folder / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(folder)
    else:
        gen = generation_config(model, max_new_tokens=max_new)
    gen.update(num_beams=cfg.num_beams, max_new_tokens=max_new)
    return gen


def first_per_task(tasks: Sequence[str], n: int | None) -> list[int]:
    """Indices, in order, of the first `n` records of each task (all when n is None): a fixed
    subset in which every task stays represented."""
    if n is None:
        return list(range(len(tasks)))
    seen: Counter[str] = Counter()
    keep = []
    for i, task in enumerate(tasks):
        if seen[task] < n:
            seen[task] += 1
            keep.append(i)
    return keep


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
    """Evaluate the base model (adapter=None) or base + adapter on a split; return (out dir, metrics)."""
    from peft import PeftModel

    records = build(recipe, progress=progress).load()
    if split not in records:
        raise UvftError(f"split {split!r} is not in the records: {sorted(records)}")
    ds = records[split]
    rows_in = list(ds.select(first_per_task(ds["task"], limit)) if limit is not None else ds)
    run_dir = recipe.run_dir
    summary_path = run_dir / "summary.json"
    if recipe.model.id is not None:
        base = recipe.model.id
    elif summary_path.is_file():
        base = json.loads(summary_path.read_text())["base_model"]
    elif adapter is None:
        # the tiny model (and its base stage) without a run: built, or read from the cache
        from pipeline.train.loop import base_model_path, make_accelerator

        accelerator = make_accelerator(recipe, log=False)
        base = base_model_path(recipe, records, progress=progress, accelerator=accelerator)
    else:
        raise UvftError(
            f"{run_dir} has no summary.json: run `uvft finetune` first (the tiny base comes from it)"
        )
    family = models.get(recipe.model.family)
    weights = weights_folder(adapter) if adapter is not None else None  # a full fine-tune: <run>/model
    if weights is not None and not (weights / "adapter_config.json").is_file():
        if not (weights / "config.json").is_file():
            raise UvftError(f"{adapter} holds no adapter (adapter_config.json) and no model (model/)")
        model, processor = family.load(weights)
    else:
        model, processor = family.load(base, revision=recipe.model.revision)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
    gen = eval_generation_config(model, recipe, weights if weights is not None else run_dir)
    if batch_size is not None:
        recipe = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"batch_size": batch_size})})
    started = time.perf_counter()
    rows = predict(model, processor, recipe.model.family, rows_in, recipe.eval, generation_config=gen,
                   progress=progress)  # fmt: skip
    metrics = score_tasks(rows, {f"{r['source']}/{r['id']}": r for r in rows_in})
    if recipe.data.train_split in records:
        trivial_baselines(metrics, records[recipe.data.train_split], rows)
    metrics["counts"] = {t: sum(1 for r in rows if r["task"] == t) for t in sorted({r["task"] for r in rows})}
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    out = evidence_dir(run_dir, adapter, split)
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

    base_file = evidence_dir(run_dir, None, split) / "metrics.json"
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


def print_metrics(metrics: dict[str, Any], base: dict[str, Any] | None = None) -> None:
    """The summary table printed at the end of `uvft eval`, with the base model's numbers beside
    when they are given (from `uvft eval --base` on the same split)."""
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, Any, str]] = []
    for task, (key, name) in HEADLINE.items():
        if task in metrics:
            rows.append((task, name, (task, key), str(metrics["counts"].get(task, ""))))
            if task == "classification" and "closed_set" in metrics[task]:
                rows.append((task, "top-1 accuracy (closed-set)", (task, "closed_set", "accuracy"), ""))
            if "majority_baseline" in metrics[task]:
                what = "answer" if task == "vqa" else "class"
                rows.append((task, f"majority-{what} baseline", (task, "majority_baseline", "accuracy"), ""))
            if task == "detection":
                rows.append((task, "mAP@[.5:.95]", (task, "map"), ""))

    def get(m: dict[str, Any] | None, path: tuple[str, ...]) -> str:
        for part in path:
            if not isinstance(m, dict) or part not in m:
                return ""
            m = m[part]
        return "n/a" if m is None else f"{m:.3f}"

    table = Table(title="evaluation")
    columns = ["task", "metric", *(["base"] if base else []), "value", "records"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, name, path, count in rows:
        table.add_row(task, name, *([get(base, path)] if base else []), get(metrics, path), count)
    Console(width=max(Console().width, 100)).print(table)
