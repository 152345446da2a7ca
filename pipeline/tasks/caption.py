"""Captioning: a sentence about the image, in one language per example; scored by CIDEr-D, BLEU
and ROUGE-L against every reference caption, each language apart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.records import DEFAULT_LANGUAGE, Example
from pipeline.tasks.task import CardMetric, Headline, Task, with_language

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row


class Caption(Task):
    NAME = "caption"
    FIELDS = ("caption", "captions", "language")
    COLUMNS = ("captions", "caption", "language")
    HEADLINE = Headline("cider", "CIDEr-D")
    UNIT_LABEL = "{} / 10"
    HUB_TASK = ("image-to-text", "Image Captioning")
    CARD_METRICS = (CardMetric("cider", "cider", "CIDEr-D"),)

    def unit_score(self, value: float) -> float:
        return value / 10.0  # CIDEr-D runs 0-10

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return with_language({"captions": record["captions"]}, record)

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Caption metrics, each language scored apart (its own tokenizer and CIDEr document
        frequencies); with several languages the top-level numbers are their means weighted by
        caption count, and `by_language` holds each. Sets each row's score: its CIDEr-D, unclipped
        (0-10), so the report's best and worst captions are ranked by it rather than tied at a cap."""
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
        total = sum(m["count"] for m in by_language.values())
        first = next(iter(by_language.values()))
        keys = [k for k, v in first.items() if k != "count" and isinstance(v, float)]
        out: dict[str, Any] = {k: sum(m[k] * m["count"] for m in by_language.values()) / total for k in keys}
        out.update(count=total, tokenizer="per language", by_language=by_language)
        return out

    def prompt_example(self, given: PromptInputs) -> Example:
        return self.example(caption="", language=given.language)

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"caption": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"caption: {result['caption'] or '(empty)'}"


TASK = Caption()
