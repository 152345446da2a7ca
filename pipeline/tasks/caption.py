"""Captioning: a sentence about the image (or, by its level, a detailed caption or a paragraph), in
one language per example; scored by CIDEr-D, BLEU and ROUGE-L against every reference caption,
each level and each language apart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import CAPTION_LEVELS, DEFAULT_LANGUAGE, Example
from pipeline.tasks.task import CardMetric, Headline, Task, with_language

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row


class Caption(Task):
    NAME = "caption"
    FIELDS = ("caption", "captions", "language", "level")
    COLUMNS = ("captions", "caption", "language", "level")
    HEADLINE = Headline("cider", "CIDEr-D")
    UNIT_LABEL = "{} / 10"
    HUB_TASK = ("image-to-text", "Image Captioning")
    CARD_METRICS = (CardMetric("cider", "cider", "CIDEr-D"),)

    def unit_score(self, value: float) -> float:
        return value / 10.0  # CIDEr-D runs 0-10

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        refs = with_language({"captions": record["captions"]}, record)
        if record.get("level"):
            refs["level"] = record["level"]
        return refs

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Caption metrics, each level scored apart (a paragraph is not judged against brief
        captions) and within it each language (its own tokenizer and CIDEr document frequencies).
        With several groups the top-level numbers are their means weighted by caption count, and
        `by_level` / `by_language` hold each. Sets each row's score: its CIDEr-D, unclipped (0-10),
        so the report's best and worst captions are ranked by it rather than tied at a cap."""
        levels: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            levels[r["references"].get("level") or CAPTION_LEVELS[0]].append(r)
        if len(levels) == 1:
            return _by_language(rows)
        by_level = {level: _by_language(levels[level]) for level in CAPTION_LEVELS if level in levels}
        return {**_weighted(by_level), "by_level": by_level}

    def prompt_example(self, given: PromptInputs) -> Example:
        return self.example(caption="", language=given.language, level=given.level)

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"caption": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"caption: {result['caption'] or '(empty)'}"


def _by_language(rows: list[Row]) -> dict[str, Any]:
    from pipeline.metrics.caption import caption_metrics

    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r["references"].get("language") or DEFAULT_LANGUAGE].append(r)
    by_language: dict[str, Any] = {}
    for lang, group in sorted(groups.items()):
        texts, refs = [r["parsed"]["text"] for r in group], [r["references"]["captions"] for r in group]
        m = caption_metrics(texts, refs, language=lang)
        for r, cider in zip(group, m.pop("per_image")["cider"], strict=True):
            r["score"] = float(cider)
        by_language[lang] = m
    if len(by_language) == 1:
        return next(iter(by_language.values()))
    return {**_weighted(by_language), "tokenizer": "per language", "by_language": by_language}


def _weighted(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The groups' numbers, each the mean over groups weighted by caption count; and the count."""
    total = sum(m["count"] for m in groups.values())
    first = next(iter(groups.values()))
    keys = [k for k, v in first.items() if k != "count" and isinstance(v, float)]
    return {**{k: sum(m[k] * m["count"] for m in groups.values()) / total for k in keys}, "count": total}


TASK = Caption()
