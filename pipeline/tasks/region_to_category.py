"""Region to category: the class of the object in a given region (Florence-2's
`<REGION_TO_CATEGORY>`); scored by top-1 accuracy of the generated class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.task import Baseline, CardMetric, Headline, Task, majority

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class RegionToCategory(Task):
    NAME = "region_to_category"
    FIELDS = ("region", "label")
    COLUMNS = ("region", "label")
    HEADLINE = Headline("accuracy", "top-1 accuracy")
    BASELINE = Baseline("majority_baseline", "majority-class baseline")
    HUB_TASK = ("image-classification", "Region Classification")
    CARD_METRICS = (CardMetric("accuracy", "accuracy", "top-1 accuracy (region to category)"),)
    STRATUM_FIELD = "label"
    EXAMPLE_INPUTS: ClassVar[dict[str, Any]] = {"region": (0.0, 0.0, 1.0, 1.0)}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"region": record["region"], "label": record["label"]}

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.classification import classification_metrics, normalize_label

        truth = [r["references"]["label"] for r in rows]
        metrics = classification_metrics([r["parsed"]["text"] for r in rows], truth)
        for r in rows:
            r["score"] = float(
                normalize_label(r["parsed"]["text"]) == normalize_label(r["references"]["label"])
            )
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training category given to every region (top-1 accuracy)."""
        from pipeline.metrics.classification import normalize_label

        label = majority(train.values(self.NAME, "label"))
        if label is None:
            return None
        hits = sum(normalize_label(r["references"]["label"]) == normalize_label(label) for r in rows)
        return {"label": label, "accuracy": hits / len(rows)}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(given.image_size, region=given.region_for(self.NAME), label="x")

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"label": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"category: {result['label'] or '(empty)'}"


TASK = RegionToCategory()
