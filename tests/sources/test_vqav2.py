"""vqav2: most_frequent_answer, exact Examples from the official format, skips and errors."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import SourceContext, get, vqav2
from pipeline.sources.vqav2 import most_frequent_answer, read_vqav2


def test_most_frequent_answer_counts_after_light_normalisation() -> None:
    assert most_frequent_answer(["no", "Yes", "yes ", "YES", "no"]) == "Yes"  # 3 x yes, first spelling kept
    assert most_frequent_answer(["2"]) == "2"


def test_most_frequent_answer_ties_go_to_the_first_occurrence() -> None:
    assert most_frequent_answer(["red", "blue", "blue", "red"]) == "red"
    assert most_frequent_answer(["blue", "red", "red", "blue"]) == "blue"
    assert most_frequent_answer(["a", "b", "c"]) == "a"


def test_most_frequent_answer_needs_answers() -> None:
    with pytest.raises(ValueError):
        most_frequent_answer([])


def _answers(*texts: str) -> list[dict[str, Any]]:
    # answer_ids reversed relative to list order: the reader must sort by answer_id
    n = len(texts)
    return [{"answer": t, "answer_confidence": "yes", "answer_id": n - i} for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([{"answer": "a", "answer_id": 1}, {"answer": "b", "answer_id": 2}], ["a", "b"]),  # as VQAv2 has them
        ([{"answer": "a", "answer_id": 2}, {"answer": "b", "answer_id": 1}], ["b", "a"]),
        # a tie keeps the file's order
        ([{"answer": "a", "answer_id": 1}, {"answer": "b", "answer_id": 1}], ["a", "b"]),
        ([{"answer": "a"}, {"answer": "b"}], ["a", "b"]),  # no ids: the file's order
        ([{"answer": "a", "answer_id": "2"}, {"answer": "b", "answer_id": 1}], ["b", "a"]),  # numbers first
        ([{"answer": "a", "answer_id": 2.5}, {"answer": "b", "answer_id": 1}], ["b", "a"]),
        # a bool is no number
        ([{"answer": "a", "answer_id": True}, {"answer": "b", "answer_id": 0}], ["b", "a"]),
    ],
)
def test_answers_come_in_answer_id_order(answers, expected) -> None:
    assert vqav2._answers({"answers": answers}, file=Path("a.json"), record="question 1") == expected


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        ([{"answer": 3, "answer_id": 1}], "answer must be a string, got 3"),
        ([{"answer_id": 1}], "answer"),
        (["yes"], "answer"),
    ],
)
def test_malformed_answers_are_named(answers, match) -> None:
    with pytest.raises(DataError, match=match) as e:
        vqav2._answers({"answers": answers}, file=Path("a.json"), record="question 1")
    assert e.value.record == "question 1"


QUESTIONS: dict[str, Any] = {
    "data_subtype": "val2014",
    "data_type": "mscoco",
    "questions": [
        {"image_id": 42, "question": "What color is the cat?", "question_id": 42000},
        {"image_id": 42, "question": "How many cats?", "question_id": 42001},
        {"image_id": 7, "question": "Is it raining?", "question_id": 7000},  # no annotation
    ],
}
ANNOTATIONS: dict[str, Any] = {
    "annotations": [
        {
            "question_id": 42001,
            "image_id": 42,
            "answers": _answers("2", "two", "2", "1"),  # sorted: 1, 2, two, 2
            "multiple_choice_answer": "2",
            "answer_type": "number",
            "question_type": "how many",
        },
        {
            "question_id": 42000,
            "image_id": 42,
            "answers": _answers("black", "white", "White", "black"),  # tie: first after sorting wins
            "multiple_choice_answer": "black",
            "answer_type": "other",
            "question_type": "what color is the",
        },
    ]
}


@pytest.fixture
def vqa(tmp_path: Path, make_image, write_json):
    images = tmp_path / "val2014"
    make_image("COCO_val2014_000000000042.jpg", root=images)
    make_image("COCO_val2014_000000000007.jpg", root=images, size=(20, 10))

    def read(ctx: SourceContext, questions=None, annotations=None, with_annotations=True, **params):
        q = write_json("v2_OpenEnded_mscoco_val2014_questions.json", questions or QUESTIONS)
        a = write_json("v2_mscoco_val2014_annotations.json", annotations or ANNOTATIONS)
        return list(
            read_vqav2(ctx, questions=q, images=images, annotations=a if with_annotations else None, **params)
        )

    read.images = images
    return read


def test_happy_path_exact_examples(ctx: SourceContext, vqa) -> None:
    image = str(vqa.images / "COCO_val2014_000000000042.jpg")
    common = {"task": "vqa", "image": image, "image_size": (32, 24), "source": "src", "split": "train"}
    assert vqa(ctx) == [
        Example(
            id="42000",
            question="What color is the cat?",
            answer="black",
            answers=["black", "White", "white", "black"],
            answer_type="other",
            **common,
        ),
        Example(
            id="42001",
            question="How many cats?",
            answer="2",
            answers=["1", "2", "two", "2"],
            answer_type="number",
            **common,
        ),
    ]
    assert ctx.tally.examples == 2
    assert ctx.tally.skipped == {"question without answers": 1}
    assert get("vqav2") is read_vqav2


def test_questions_only_file_skips_everything(ctx: SourceContext, vqa) -> None:
    assert vqa(ctx, with_annotations=False) == []
    assert ctx.tally.skipped == {"question without answers": 3}


def test_custom_image_pattern(ctx: SourceContext, vqa, make_image) -> None:
    make_image("42.png", root=vqa.images)
    examples = vqa(ctx, image_pattern="{image_id}.png")
    assert [e.image for e in examples] == [str(vqa.images / "42.png")] * 2


def test_missing_image_skips_each_question(ctx: SourceContext, vqa) -> None:
    (vqa.images / "COCO_val2014_000000000042.jpg").unlink()
    assert vqa(ctx) == []
    assert ctx.tally.skipped == {"question without answers": 1, "missing image": 2}


def test_unknown_question_id_in_annotations(ctx, vqa) -> None:
    anns = copy.deepcopy(ANNOTATIONS)
    anns["annotations"][0]["question_id"] = 99
    with pytest.raises(DataError) as err:
        vqa(ctx, annotations=anns)
    assert "v2_mscoco_val2014_annotations.json" in str(err.value)
    assert "question 99" in str(err.value) and err.value.field == "question_id"


@pytest.mark.parametrize("which", ["questions", "annotations"])
def test_duplicate_question_id(ctx, vqa, which) -> None:
    questions, anns = copy.deepcopy(QUESTIONS), copy.deepcopy(ANNOTATIONS)
    if which == "questions":
        questions["questions"][1]["question_id"] = 42000
    else:
        anns["annotations"][1]["question_id"] = 42001
    with pytest.raises(DataError, match=r"record question 4200\d, field 'question_id'.*duplicate"):
        vqa(ctx, questions=questions, annotations=anns)


def test_image_id_disagreement_and_missing_subtype(ctx, vqa) -> None:
    anns = copy.deepcopy(ANNOTATIONS)
    anns["annotations"][0]["image_id"] = 7
    with pytest.raises(DataError, match="field 'image_id'"):
        vqa(ctx, annotations=anns)
    questions = {k: v for k, v in QUESTIONS.items() if k != "data_subtype"}
    with pytest.raises(DataError, match="field 'data_subtype'"):
        vqa(ctx, questions=questions)


def test_image_pattern_cannot_escape(ctx, vqa) -> None:
    with pytest.raises(DataError, match="escapes"):
        vqa(ctx, image_pattern="../{image_id}.jpg")


def test_bad_json(ctx, tmp_path: Path) -> None:
    q = tmp_path / "q.json"
    q.write_text("{'questions': []}")
    with pytest.raises(DataError, match=r"q\.json.*line 1 column 2"):
        list(read_vqav2(ctx, questions=q, images=tmp_path))


def test_annotations_are_streamed_not_read_whole(ctx, vqa, monkeypatch) -> None:
    import pipeline.sources.vqav2 as mod

    real = mod.read_json

    def questions_only(path, *a, **kw):  # the annotations file must never be parsed whole
        assert "annotations" not in Path(path).name, f"{path} was read whole"
        return real(path, *a, **kw)

    monkeypatch.setattr(mod, "read_json", questions_only)
    assert [e.answers for e in vqa(ctx)] == [["black", "White", "white", "black"], ["1", "2", "two", "2"]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"annotations": [{"question_id": 42000, "answers": []}, ', r"invalid JSON at line 1"),  # cut short
        ('{"annotations": [NaN]}', r"invalid JSON at line 1"),
        ('{"annotations": {"question_id": 42000}}', r"'annotations' must be a list"),
        ('{"other": []}', r"required key 'annotations' is missing"),
        ("[1, 2]", r"must be a JSON object"),
    ],
)
def test_annotations_that_cannot_stream_give_the_whole_file_error(ctx, vqa, tmp_path, text, match) -> None:
    # what streaming stops on, or finds no item in, is read whole: the error read_json always gave
    q = tmp_path / "q.json"
    q.write_text(json.dumps(QUESTIONS))
    a = tmp_path / "a.json"
    a.write_text(text)
    with pytest.raises(DataError, match=match):
        list(read_vqav2(ctx, questions=q, images=vqa.images, annotations=a))


def test_language_is_set_on_every_example(ctx: SourceContext, vqa) -> None:
    assert [(e.id, e.language) for e in vqa(ctx, language="de")] == [("42000", "de"), ("42001", "de")]
    assert [e.language for e in vqa(ctx)] == [None, None]


@pytest.mark.parametrize("language", ["", "zh Hant", "de\n", True, 3])
def test_a_language_that_is_not_a_code_is_an_error(ctx: SourceContext, vqa, language) -> None:
    with pytest.raises(
        DataError, match=f"language must be a code .*, got {re.escape(repr(language))}"
    ) as err:
        vqa(ctx, language=language)
    assert err.value.file == str(vqa.images.parent / "v2_OpenEnded_mscoco_val2014_questions.json")
    assert (err.value.record, err.value.field) == (None, "language")
