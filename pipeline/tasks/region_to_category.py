"""Region to category: the class of the object in a given region (Florence-2's
`<REGION_TO_CATEGORY>`); scored by top-1 accuracy of the generated class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.classification import majority_label, score_labels
from pipeline.tasks.task import Baseline, CardMetric, Headline, Task

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
        from pipeline.metrics.classification import classification_metrics

        truth = [r["references"]["label"] for r in rows]
        metrics = classification_metrics([r["parsed"]["text"] for r in rows], truth)
        score_labels(rows)
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training category given to every region (top-1 accuracy); the
        label column, as the target also holds the region's location tokens."""
        return majority_label(rows, train.values(self.NAME, "label"))

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(given.image_size, region=given.region_for(self.NAME), label="x")

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"label": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"category: {result['label'] or '(empty)'}"


TASK = RegionToCategory()
