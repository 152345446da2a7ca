"""Visual question answering: a question about the image and its answer; scored by VQAv2
accuracy against every human answer (ten for VQAv2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.errors import UvftError
from pipeline.records import Example
from pipeline.tasks.task import (
    Baseline,
    CardMetric,
    Headline,
    Row,
    TrainColumns,
    blank_example,
    identity,
    majority,
    parsed_fields,
    text_rows,
    with_language,
)

NAME = "vqa"
FIELDS = ("question", "answer", "answers", "answer_type", "language")
COLUMNS = {
    "question": "question",
    "answers": "answers",
    "answer": "answer",
    "answer_type": "answer_type",
    "language": "language",
}
HEADLINE = Headline("accuracy", "VQA accuracy")
LOWER_IS_BETTER = False
UNIT_LABEL = "{}"
BASELINE = Baseline("majority_baseline", "majority-answer baseline")
EXTRAS = ()
HUB_TASK = ("visual-question-answering", "Visual Question Answering")
CARD_METRICS = (CardMetric("accuracy", "accuracy", "VQAv2 accuracy"),)
VOCABULARY = None
CLOSED_SET = False
ANSWER_IN_TEXT = True
LABELS_DRAWN = False
EXAMPLE_INPUTS: Mapping[str, str] = {"question": "what is in the image?"}

unit_score = identity


def references(record: Mapping[str, Any]) -> dict[str, Any]:
    refs = {
        "answers": record["answers"],
        "answer_type": record["answer_type"],
        "question": record["question"],
    }
    return with_language(refs, record)


def score(rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from pipeline.evaluation.metrics.vqa import vqa_accuracy

    metrics = vqa_accuracy(
        [r["parsed"]["text"] for r in rows],
        [r["references"]["answers"] for r in rows],
        [r["references"]["answer_type"] for r in rows],
    )
    for r, acc in zip(rows, metrics.pop("per_question"), strict=True):
        r["score"] = acc
    return metrics


def baseline(rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
    """The most frequent training answer given to every question (VQAv2 accuracy)."""
    from pipeline.evaluation.metrics.vqa import vqa_accuracy

    answer = majority(train.values(NAME, "target"))
    if answer is None:
        return None
    refs = [r["references"]["answers"] for r in rows]
    return {"answer": answer, "accuracy": vqa_accuracy([answer] * len(refs), refs)["accuracy"]}


def prompt_example(
    *, question: str | None, classes: Sequence[str], phrase: str | None, language: str | None
) -> Example:
    if not (question and question.strip()):
        raise UvftError("task vqa needs a question (--question)")
    return blank_example(NAME, question=question.strip(), answer="", language=language)


def template_example(language: str | None) -> Example:
    """The prompt with a `{question}` placeholder (uvft.json's template)."""
    return Example(
        id="t", task=NAME, image="", image_size=(1, 1), question="{question}", answer="", language=language
    )


def parsed(pred: Any, scores: Sequence[float]) -> dict[str, Any]:
    return parsed_fields(pred, scores, text=True)


def result(parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"answer": parsed["text"]}


def describe(result: Mapping[str, Any]) -> str:
    return f"answer: {result['answer'] or '(empty)'}"


card_rows = text_rows
