"""Region to OCR: the text inside a given region (Florence-2's `<REGION_TO_OCR>`); scored by
character and word error rate, ANLS and exact match, as OCR is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.records import Example
from pipeline.tasks.ocr import Ocr

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs


class RegionToOcr(Ocr):
    NAME = "region_to_ocr"
    FIELDS = ("region", "text")
    COLUMNS = ("region", "text")
    HUB_TASK = ("image-to-text", "Region Text Recognition")
    EXAMPLE_INPUTS: ClassVar[dict[str, Any]] = {"region": (0.0, 0.0, 1.0, 1.0)}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"region": record["region"], "text": record["text"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        given.no_language(self.NAME)
        return self.example(given.image_size, region=given.region_for(self.NAME), text="x")

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"text": parsed["text"]}


TASK = RegionToOcr()
