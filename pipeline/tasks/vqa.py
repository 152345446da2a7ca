"""Visual question answering: a question about the image and its answer; scored by VQAv2
accuracy against every human answer (ten for VQAv2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.errors import UvftError
from pipeline.records import Example
from pipeline.tasks.task import Baseline, CardMetric, Headline, Task, majority, with_language

if TYPE_CHECKING:  # annotations only
    from pipeline.tasks.task import PromptInputs, Row, TrainColumns


class Vqa(Task):
    NAME = "vqa"
    FIELDS = ("question", "answer", "answers", "answer_type", "language")
    COLUMNS = ("question", "answers", "answer", "answer_type", "language")
    HEADLINE = Headline("accuracy", "VQA accuracy")
    BASELINE = Baseline("majority_baseline", "majority-answer baseline")
    HUB_TASK = ("visual-question-answering", "Visual Question Answering")
    CARD_METRICS = (CardMetric("accuracy", "accuracy", "VQAv2 accuracy"),)
    EXAMPLE_INPUTS: ClassVar[dict[str, str]] = {"question": "what is in the image?"}

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return with_language({k: record[k] for k in ("answers", "answer_type", "question")}, record)

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from pipeline.metrics.vqa import vqa_accuracy

        metrics = vqa_accuracy(
            [r["parsed"]["text"] for r in rows],
            [r["references"]["answers"] for r in rows],
            [r["references"]["answer_type"] for r in rows],
        )
        for r, acc in zip(rows, metrics.pop("per_question"), strict=True):
            r["score"] = acc
        return metrics

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The most frequent training answer given to every question (VQAv2 accuracy)."""
        from pipeline.metrics.vqa import vqa_accuracy

        answer = majority(train.values(self.NAME, "target"))
        if answer is None:
            return None
        refs = [r["references"]["answers"] for r in rows]
        return {"answer": answer, "accuracy": vqa_accuracy([answer] * len(refs), refs)["accuracy"]}

    def prompt_example(self, given: PromptInputs) -> Example:
        if not (given.question and given.question.strip()):
            raise UvftError("task vqa needs a question (--question)")
        return self.example(question=given.question.strip(), answer="", language=given.language)

    def template_example(self, language: str | None) -> Example:
        """The prompt with a `{question}` placeholder (uvft.json's template)."""
        return self.example(question="{question}", answer="", language=language)

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"answer": parsed["text"]}

    def describe(self, result: Mapping[str, Any]) -> str:
        return f"answer: {result['answer'] or '(empty)'}"


TASK = Vqa()
