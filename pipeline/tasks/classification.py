"""Classification: one label per image from the source's class list; scored by top-1 accuracy of
the generated label and of the closed-set choice (every class scored by likelihood)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import Example
from pipeline.tasks.task import Baseline, CardMetric, Extra, Headline, Task, majority

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class Classification(Task):
    NAME = "classification"
    FIELDS = ("label", "categories")
    COLUMNS = ("label",)
    HEADLINE = Headline("accuracy", "top-1 accuracy")
    BASELINE = Baseline("majority_baseline", "majority-class baseline")
    EXTRAS = (Extra("closed_set.accuracy", "top-1 accuracy (closed-set)", tracked="closed_set_accuracy"),)
    HUB_TASK = ("image-classification", "Image Classification")
    CARD_METRICS = (
        CardMetric("accuracy", "accuracy", "top-1 accuracy (generated label)"),
        CardMetric("closed_set.accuracy", "accuracy", "top-1 accuracy (closed-set)"),
    )
    VOCABULARY = "classes"
    CLOSED_SET = True
    STRATUM_FIELD = "label"

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"label": record["label"], "categories": record["categories"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.classification import classification_metrics

        labels = sorted({c for r in rows for c in r["references"]["categories"]}) or None
        truth = [r["references"]["label"] for r in rows]
        metrics = classification_metrics([r["parsed"]["text"] for r in rows], truth, labels=labels)
        closed = [r["parsed"].get("closed_set") for r in rows]
        if all(c is not None for c in closed):
            metrics["closed_set"] = classification_metrics([c["label"] for c in closed], truth, labels=labels)
        score_labels(rows)
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training class given to every image (top-1 accuracy)."""
        return majority_label(rows, train.values(self.NAME, "target"))

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(label="")

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        """The closed-set label (over the given or the training classes) when there was one, else
        the generated text; with each class's log-likelihood."""
        text = parsed["text"]
        label, scores = (closed["label"], closed["scores"]) if closed else (text, {})
        return {"generated_label": text, "label": label, "scores": scores}

    def describe(self, result: Mapping[str, Any]) -> str:
        scores = result.get("scores") or {}
        text = f"label: {result['label']}"
        if scores:
            top = sorted(scores.items(), key=lambda kv: -kv[1])[:5]
            text += f" (closed-set over {len(scores)} classes; generated: {result['generated_label']!r})\n"
            text += "\n".join(f"  {name:<20} log-likelihood {score:.3f}" for name, score in top)
        return text


def score_labels(rows: list[Row]) -> None:
    """Each row's score: 1.0 when its generated label is the reference's (normalised), else 0.0."""
    from pipeline.metrics.classification import normalize_label

    for r in rows:
        r["score"] = float(normalize_label(r["parsed"]["text"]) == normalize_label(r["references"]["label"]))


def majority_label(rows: list[Row], train_labels: list[Any]) -> dict[str, Any] | None:
    """The most frequent training label given to every row, and its top-1 accuracy."""
    from pipeline.metrics.classification import normalize_label

    label = majority(train_labels)
    if label is None:
        return None
    hits = sum(normalize_label(r["references"]["label"]) == normalize_label(label) for r in rows)
    return {"label": label, "accuracy": hits / len(rows)}


TASK = Classification()
