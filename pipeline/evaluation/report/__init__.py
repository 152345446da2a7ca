"""Evaluation report: report.md and report.html, which lead with the answer (per task the headline
metric beside the base model and the trivial baseline, a verdict, then the warnings), then per task
its confusions and its best and worst examples, the training curves, and last every metric.

tables.py writes the numbers and the full tables; findings.py concludes (the summary, its verdicts,
the warnings); confusions.py counts confusions; gallery.py picks and draws the examples; plots.py
draws the training curves; pages.py puts them on the two pages. `write_report` writes them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.evaluation.report.confusions import confused_pairs, confusion, detection_confusion
from pipeline.evaluation.report.findings import summarize, summary_table, warnings
from pipeline.evaluation.report.gallery import (
    LINE_WIDTH,
    MASK_ALPHA,
    PRED_COLOR,
    REF_COLOR,
    render_example_image,
    select_examples,
)
from pipeline.evaluation.report.pages import html_page, markdown_page
from pipeline.evaluation.report.plots import curves_figure, eval_curves, write_plots
from pipeline.evaluation.report.tables import Generation, comparable_base, format_table

__all__ = [
    "LINE_WIDTH",
    "MASK_ALPHA",
    "PRED_COLOR",
    "REF_COLOR",
    "comparable_base",
    "confused_pairs",
    "confusion",
    "curves_figure",
    "detection_confusion",
    "eval_curves",
    "format_table",
    "render_example_image",
    "select_examples",
    "summarize",
    "summary_table",
    "warnings",
    "write_report",
]

log = logging.getLogger(__name__)


def write_report(
    out_dir: Path,
    generations: Sequence[Generation],
    metrics: Mapping[str, Any],
    *,
    base_metrics: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    examples_per_task: int = 6,
) -> dict[str, Path]:
    """Write report.md, report.html and the loss plots into out_dir; return name -> path of what was written.

    Names: "markdown", "html", and "loss" / "val_loss" / "val_metrics" when the summary has their data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generations = list(generations)
    plots = write_plots(out_dir, summary)
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_page(metrics, base_metrics, plots, generations), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(
        html_page(generations, metrics, base_metrics, plots, examples_per_task), encoding="utf-8"
    )
    log.info("report written to %s", out_dir)
    return {"markdown": md_path, "html": html_path, **plots}
