"""Classification by generated label string: top-1 accuracy, per-class accuracy and a confusion matrix.

Both sides are normalised (lowercase, trimmed, whitespace collapsed, trailing punctuation removed)
before comparing. Closed-set likelihood scoring lives elsewhere; this scores label strings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from typing import Any

import evaluate

from pipeline.metrics import TEXT, metric_info

OTHER = "(other)"
_SPACE = re.compile(r"\s+")


def normalize_label(text: str) -> str:
    """Lowercase, collapse whitespace, strip, and drop trailing punctuation ("A  Cat." -> "a cat")."""
    text = _SPACE.sub(" ", str(text).lower()).strip()
    return text.rstrip(string.punctuation + " ").strip()


def classification_metrics(
    predictions: Sequence[str], references: Sequence[str], labels: Iterable[str] | None = None
) -> dict[str, Any]:
    """Top-1 accuracy, per-class accuracy (recall per reference label) and a confusion matrix.

    ``labels`` (the class vocabulary) fixes the order of rows and columns; references outside it are
    appended. ``confusion_matrix["matrix"][i][j]`` counts references ``rows[i]`` predicted as
    ``columns[j]``; the last column, "(other)", holds predictions outside the label set.
    Accuracies are None where undefined (no examples, or no example of that class).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    preds = [normalize_label(p) for p in predictions]
    refs = [normalize_label(r) for r in references]
    rows: list[str] = []
    for name in [normalize_label(x) for x in labels or []] + sorted(set(refs)):
        if name not in rows:
            rows.append(name)
    index = {name: i for i, name in enumerate(rows)}
    matrix = [[0] * (len(rows) + 1) for _ in rows]
    for p, r in zip(preds, refs, strict=True):
        matrix[index[r]][index.get(p, len(rows))] += 1
    support = {name: sum(matrix[i]) for name, i in index.items()}
    per_class = {name: (matrix[i][i] / support[name] if support[name] else None) for name, i in index.items()}
    correct = sum(p == r for p, r in zip(preds, refs, strict=True))
    return {
        "accuracy": correct / len(refs) if refs else None,
        "num_examples": len(refs),
        "num_correct": correct,
        "num_other": sum(row[-1] for row in matrix),
        "per_class_accuracy": per_class,
        "support": support,
        "confusion_matrix": {"rows": rows, "columns": [*rows, OTHER], "matrix": matrix},
    }


class ClassificationAccuracy(evaluate.Metric):
    """``classification_metrics`` as an ``evaluate`` metric, usable offline:
    ``ClassificationAccuracy().compute(predictions=[...], references=[...], labels=[...])``."""

    def _info(self) -> evaluate.MetricInfo:
        description = "Top-1 accuracy of normalised label strings, per-class accuracy, confusion matrix."
        return metric_info(description, "", __doc__ or "", predictions=TEXT, references=TEXT)

    def _compute(self, predictions, references, labels=None) -> dict[str, Any]:
        return classification_metrics(predictions, references, labels)
