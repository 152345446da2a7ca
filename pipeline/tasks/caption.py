"""Captioning: a sentence about the image, in one language per example; scored by CIDEr-D, BLEU
and ROUGE-L against every reference caption, each language apart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.records import DEFAULT_LANGUAGE, Example
from pipeline.tasks.task import (
    CardMetric,
    Headline,
    Row,
    TrainColumns,
    blank_example,
    parsed_fields,
    text_rows,
    with_language,
)

NAME = "caption"
FIELDS = ("caption", "captions", "language")
COLUMNS = {"captions": "captions", "caption": "caption", "language": "language"}
HEADLINE = Headline("cider", "CIDEr-D")
LOWER_IS_BETTER = False
UNIT_LABEL = "{} / 10"
BASELINE = None
EXTRAS = ()
HUB_TASK = ("image-to-text", "Image Captioning")
CARD_METRICS = (CardMetric("cider", "cider", "CIDEr-D"),)
VOCABULARY = None
CLOSED_SET = False
ANSWER_IN_TEXT = True
LABELS_DRAWN = False
EXAMPLE_INPUTS: Mapping[str, str] = {}


def unit_score(value: float) -> float:
    return value / 10.0  # CIDEr-D runs 0-10


def references(record: Mapping[str, Any]) -> dict[str, Any]:
    return with_language({"captions": record["captions"]}, record)


def score(rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Caption metrics, each language scored apart (its own tokenizer and CIDEr document
    frequencies); with several languages the top-level numbers are their means weighted by caption
    count, and `by_language` holds each. Sets each row's score (its CIDEr-D, at most 1)."""
    from pipeline.evaluation.metrics.caption import caption_metrics

    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r["references"].get("language") or DEFAULT_LANGUAGE].append(r)
    by_language: dict[str, Any] = {}
    for lang, group in sorted(groups.items()):
        m = caption_metrics(
            [r["parsed"]["text"] for r in group], [r["references"]["captions"] for r in group], language=lang
        )
        for r, cider in zip(group, m.pop("per_image")["cider"], strict=True):
            r["score"] = min(float(cider), 1.0)
        by_language[lang] = m
    if len(by_language) == 1:
        return next(iter(by_language.values()))
    total = sum(m["count"] for m in by_language.values())
    keys = [k for k, v in next(iter(by_language.values())).items() if k != "count" and isinstance(v, float)]
    out: dict[str, Any] = {k: sum(m[k] * m["count"] for m in by_language.values()) / total for k in keys}
    out.update(count=total, tokenizer="per language", by_language=by_language)
    return out


def baseline(rows: list[Row], train: TrainColumns) -> None:
    return None


def prompt_example(
    *, question: str | None, classes: Sequence[str], phrase: str | None, language: str | None
) -> Example:
    return blank_example(NAME, caption="", language=language)


def template_example(language: str | None) -> None:
    return None


def parsed(pred: Any, scores: Sequence[float]) -> dict[str, Any]:
    return parsed_fields(pred, scores, text=True)


def result(parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"caption": parsed["text"]}


def describe(result: Mapping[str, Any]) -> str:
    return f"caption: {result['caption'] or '(empty)'}"


card_rows = text_rows
