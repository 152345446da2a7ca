"""The training curves: per-task training loss, held-out loss, and the in-training evaluations'
headline metrics on one 0-1 axis; each legend beside its curves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import tasks
from pipeline.evaluation.report.tables import is_number


def curves_figure(
    records: Sequence[Mapping[str, Any]], keys: Iterable[str], title: str, ylabel: str = "loss"
) -> Any | None:
    """A matplotlib Figure of one curve per key over "step" (None: no key has a point), its legend
    beside the axes, never over the curves."""
    # Figure + savefig without pyplot: no global backend state, safe in threads and headless (Agg).
    from matplotlib.figure import Figure

    # wider than tall, so the curves keep their width beside the legend; constrained layout
    # makes room for the legend inside the image
    fig = Figure(figsize=(9, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for key in keys:
        points = [(r["step"], r[key]) for r in records if is_number(r.get(key)) and "step" in r]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        label = key.removeprefix("loss/")
        style = "--" if label in ("loss", "all", "mean") else "-"
        ax.plot(steps, values, style, marker="." if len(points) < 30 else None, label=label)
        drawn = True
    if not drawn:
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize="small")
    return fig


def _plot_curves(
    records: Sequence[Mapping[str, Any]], keys: Iterable[str], title: str, path: Path, ylabel: str = "loss"
) -> bool:
    fig = curves_figure(records, keys, title, ylabel)
    if fig is not None:
        fig.savefig(path, format="png")
    return fig is not None


def write_plots(out_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, Path]:
    """loss.png (per-task training loss), val_loss.png (held-out per-task loss) and val_metrics.png
    (the in-training evaluations' headline metrics), each when the summary has the data."""
    if not summary:
        return {}
    plots: dict[str, Path] = {}
    losses = summary.get("losses") or []
    loss_keys = sorted({k for r in losses for k in r if k.startswith("loss/")})
    if any("loss" in r for r in losses):
        loss_keys.append("loss")
    if losses and _plot_curves(losses, loss_keys, "Training loss per task", out_dir / "loss.png"):
        plots["loss"] = out_dir / "loss.png"
    val = summary.get("val") or []
    val_keys = sorted({k for r in val for k in r if k not in ("step", "all")})
    if any("all" in r for r in val):
        val_keys.append("all")
    if val and _plot_curves(val, val_keys, "Held-out loss per task", out_dir / "val_loss.png"):
        plots["val_loss"] = out_dir / "val_loss.png"
    evals, eval_keys = eval_curves(summary.get("evals") or [])
    title = "Validation metrics during training (fixed subset)"
    if evals and _plot_curves(evals, eval_keys, title, out_dir / "val_metrics.png", ylabel="score"):
        plots["val_metrics"] = out_dir / "val_metrics.png"
    return plots


def _unit_task(key: str) -> tasks.Task | None:
    """The task whose headline `key` ("caption/cider") is drawn on the 0-1 scale, else None."""
    name, _, metric = key.partition("/")
    task = tasks.TABLE.get(name)
    return task if task is not None and metric == task.HEADLINE.key else None


def _scaled_key(key: str) -> str:
    task = _unit_task(key)
    return task.UNIT_LABEL.format(key) if task else key


def _scaled(key: str, value: Any) -> Any:
    # drawn as the headline mean counts it: CIDEr-D / 10, max(0, 1 - CER)
    task = _unit_task(key)
    return task.unit_score(value) if task and is_number(value) else value


def eval_curves(evals: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The in-training evaluations as val_metrics.png draws them: (rows, keys), "mean" last, every
    score on one 0-1 axis (a 0-10 metric divided, its key saying so)."""
    rows = [{_scaled_key(k): _scaled(k, v) for k, v in r.items()} for r in evals]
    keys = sorted({k for r in rows for k in r if k not in ("step", "mean")})
    if any("mean" in r for r in rows):
        keys.append("mean")
    return rows, keys
