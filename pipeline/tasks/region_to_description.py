"""Region to description: a sentence about the object in a given region (Florence-2's
`<REGION_TO_DESCRIPTION>`, Visual Genome's region descriptions); scored by CIDEr-D, BLEU and
ROUGE-L against the region's reference descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.task import Baseline, CardMetric, Headline, Task, majority

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class RegionToDescription(Task):
    NAME = "region_to_description"
    FIELDS = ("region", "caption", "captions")
    COLUMNS = ("region", "captions", "caption")
    HEADLINE = Headline("cider", "CIDEr-D")
    UNIT_LABEL = "{} / 10"
    BASELINE = Baseline("majority_baseline", "majority-description baseline")
    HUB_TASK = ("image-to-text", "Region Description")
    CARD_METRICS = (CardMetric("cider", "cider", "CIDEr-D (region to description)"),)
    EXAMPLE_INPUTS: ClassVar[dict[str, Any]] = {"region": (0.0, 0.0, 1.0, 1.0)}

    def unit_score(self, value: float) -> float:
        return value / 10.0  # CIDEr-D runs 0-10

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"region": record["region"], "captions": record["captions"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.caption import caption_metrics

        m = caption_metrics([r["parsed"]["text"] for r in rows], [r["references"]["captions"] for r in rows])
        for r, cider in zip(rows, m.pop("per_image")["cider"], strict=True):
            r["score"] = float(cider)
        return m

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training description given to every region (CIDEr-D, BLEU-4)."""
        from pipeline.metrics.caption import caption_metrics

        text = majority([c[0] for c in train.values(self.NAME, "captions") if c])
        if text is None:
            return None
        m = caption_metrics([text] * len(rows), [r["references"]["captions"] for r in rows])
        return {"text": text, "cider": m["cider"], "bleu_4": m["bleu_4"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(given.image_size, region=given.region_for(self.NAME), caption="x")

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"description": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"description: {result['description'] or '(empty)'}"


TASK = RegionToDescription()
