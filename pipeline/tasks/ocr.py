"""OCR: all the text of the image in reading order, optionally with each word's quad (Florence-2's
`<OCR_WITH_REGION>`); scored by character and word error rate, ANLS and exact match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.tasks.task import Baseline, CardMetric, Headline, Task, majority, object_rows

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class Ocr(Task):
    NAME = "ocr"
    FIELDS = ("text", "regions")
    COLUMNS = ("text", "regions")
    HEADLINE = Headline("cer", "CER (lower is better)")
    LOWER_IS_BETTER = True
    UNIT_LABEL = "1 - {}"
    BASELINE = Baseline("majority_baseline", "majority-text baseline")
    HUB_TASK = ("image-to-text", "Optical Character Recognition")  # a task type shared with captioning
    CARD_METRICS = (
        CardMetric("cer", "cer", "character error rate"),
        CardMetric("wer", "wer", "word error rate"),
    )

    def unit_score(self, value: float) -> float:
        return max(0.0, 1.0 - value)  # CER is lower-is-better and may pass 1

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": record["text"], "regions": record.get("regions") or []}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.ocr import ocr_metrics

        metrics = ocr_metrics([r["parsed"]["text"] for r in rows], [r["references"]["text"] for r in rows])
        per_anls = metrics.pop("per_example_anls")
        for r, cer, anls in zip(rows, metrics.pop("per_example_cer"), per_anls, strict=True):
            r["score"] = anls if cer is None else max(0.0, 1.0 - cer)
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training text given to every image (CER, WER, ANLS, exact match)."""
        from pipeline.metrics.ocr import ocr_metrics

        text = majority(train.values(self.NAME, "text"))
        if text is None:
            return None
        m = ocr_metrics([text] * len(rows), [r["references"]["text"] for r in rows])
        return {"text": text, **{k: m[k] for k in ("cer", "wer", "anls", "exact_match")}}

    def prompt_example(self, given: PromptInputs) -> None:
        return None  # OCR predicts with the prompt it was trained with (Florence-2: with or without regions)

    def parsed(self, pred: Any, scores: Sequence[float]) -> dict[str, Any]:
        regions = [{"text": g.text, "quad": list(g.quad)} for g in pred.regions]
        return {**super().parsed(pred, scores), "regions": regions}

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"text": parsed["text"], "regions": parsed["regions"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"ocr: {result['text'] or '(empty)'}"

    def card_rows(self, parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
        # shown even when empty: nothing recognised is the answer to judge
        return [("recognised", str(parsed.get("text") or "")), *object_rows(parsed)]


TASK = Ocr()
