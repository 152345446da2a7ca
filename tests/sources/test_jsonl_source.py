"""jsonl: every task from one file, defaults, repairs and errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext, get
from pipeline.sources.jsonl import read_jsonl

LINES: list[dict[str, Any]] = [
    {
        "id": "c1",
        "task": "classification",
        "image": "img/a.jpg",
        "label": "cat",
        "categories": ["cat", "dog"],
    },
    {"task": "caption", "image": "img/a.jpg", "captions": ["A cat.", "A small cat."]},  # id: line number
    {"id": 7, "task": "caption", "image": "img/b.png", "caption": "A dog."},
    {
        "id": "q1",
        "task": "vqa",
        "image": "img/a.jpg",
        "question": "Color?",
        "answers": ["red", "blue", "blue"],
    },
    {
        "id": "q2",
        "task": "vqa",
        "image": "img/a.jpg",
        "question": "Cat?",
        "answer": "yes",
        "answer_type": "yes/no",
    },
    {
        "id": "d1",
        "task": "detection",
        "image": "img/b.png",
        "objects": [
            {"bbox": [1, 2, 10, 12], "category": "dog"},
            {"bbox": [20, 5, 40, 30], "category": "cat"},
        ],
        "categories": ["cat", "dog"],
        "extra": "ignored",
    },
    {"id": "d2", "task": "detection", "image": "img/a.jpg"},  # a negative
]


def _write(path: Path, lines: list[Any], blank_after: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [json.dumps(x) if not isinstance(x, str) else x for x in lines]
    if blank_after is not None:
        text.insert(blank_after, "   ")
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.fixture
def data(tmp_path: Path, make_image) -> Path:
    make_image("data/img/a.jpg")
    make_image("data/img/b.png", size=(30, 20))
    return tmp_path / "data"


def test_happy_path_exact_examples(ctx: SourceContext, data: Path) -> None:
    path = _write(data / "train.jsonl", LINES, blank_after=1)  # the blank line shifts later line numbers
    a, b = str(data / "img" / "a.jpg"), str(data / "img" / "b.png")
    common = {"source": "src", "split": "train"}
    assert list(read_jsonl(ctx, path=path)) == [
        Example(
            id="c1",
            task="classification",
            image=a,
            image_size=(32, 24),
            label="cat",
            categories=["cat", "dog"],
            **common,
        ),
        Example(
            id="3",
            task="caption",
            image=a,
            image_size=(32, 24),
            caption="A cat.",
            captions=["A cat.", "A small cat."],
            **common,
        ),
        Example(
            id="7",
            task="caption",
            image=b,
            image_size=(30, 20),
            caption="A dog.",
            captions=["A dog."],
            **common,
        ),
        Example(
            id="q1",
            task="vqa",
            image=a,
            image_size=(32, 24),
            question="Color?",
            answer="blue",
            answers=["red", "blue", "blue"],
            **common,
        ),
        Example(
            id="q2",
            task="vqa",
            image=a,
            image_size=(32, 24),
            question="Cat?",
            answer="yes",
            answers=["yes"],
            answer_type="yes/no",
            **common,
        ),
        Example(
            id="d1",
            task="detection",
            image=b,
            image_size=(30, 20),
            objects=[Object((1.0, 2.0, 10.0, 12.0), "dog"), Object((20.0, 5.0, 30.0, 20.0), "cat")],
            categories=["cat", "dog"],
            **common,
        ),
        Example(id="d2", task="detection", image=a, image_size=(32, 24), **common),
    ]
    assert ctx.tally.examples == 7
    assert ctx.tally.repaired == {"box clipped": 1}
    assert get("jsonl") is read_jsonl


def test_images_root_parameter(ctx: SourceContext, data: Path, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "elsewhere" / "x.jsonl", [{"task": "classification", "image": "a.jpg", "label": "l"}]
    )
    (ex,) = read_jsonl(ctx, path=path, images=data / "img")
    assert ex.image == str(data / "img" / "a.jpg")


def test_missing_image_is_skipped(ctx: SourceContext, data: Path) -> None:
    path = _write(data / "x.jsonl", [{"task": "classification", "image": "img/none.jpg", "label": "l"}])
    assert list(read_jsonl(ctx, path=path)) == []
    assert ctx.tally.skipped == {"missing image": 1}


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({"task": "classification", "image": "img/a.jpg"}, "label", "missing"),
        ({"image": "img/a.jpg", "label": "x"}, "task", "missing"),
        ({"task": "segmentation", "image": "img/a.jpg"}, "task", "unknown task"),
        ({"task": "caption", "label": "x"}, "image", "missing"),
        ({"task": "caption", "image": "img/a.jpg", "captions": []}, "caption", "needs"),
        ({"task": "vqa", "image": "img/a.jpg", "question": "q?"}, "answers", "needs"),
        (
            {"task": "vqa", "image": "img/a.jpg", "question": "q?", "answers": "yes"},
            "answers",
            "list of strings",
        ),
        (
            {
                "task": "detection",
                "image": "img/a.jpg",
                "objects": [{"bbox": [10, 2, 5, 8], "category": "c"}],
            },
            "bbox",
            "x2 < x1",
        ),
        (
            {
                "task": "detection",
                "image": "img/a.jpg",
                "objects": [{"bbox": [1, 2, 5, 8], "category": "c"}],
                "categories": ["a"],
            },
            "category",
            "not in 'categories'",
        ),
        ({"task": "classification", "image": "img/a.jpg", "label": ""}, "label", "non-empty"),
        ({"task": "classification", "image": "img/a.jpg", "label": "  "}, "label", "non-empty"),
        ({"task": "vqa", "image": "img/a.jpg", "question": " ", "answer": "yes"}, "question", "non-empty"),
        ({"task": "vqa", "image": "img/a.jpg", "question": "q?", "answer": ""}, "answers", "needs"),
        ({"task": "vqa", "image": "img/a.jpg", "question": "q?", "answers": ["", " "]}, "answers", "needs"),
        ({"task": "caption", "image": "img/a.jpg", "caption": "   "}, "caption", "needs"),
        ({"task": "caption", "image": "img/a.jpg", "captions": ["", "\t"]}, "caption", "needs"),
        ({"task": "classification", "image": "../a.jpg", "label": "x"}, "image", "escapes"),
        ({"task": "classification", "image": "/abs/a.jpg", "label": "x"}, "image", "absolute"),
    ],
)
def test_bad_lines_name_file_line_and_field(ctx, data: Path, line, field, match) -> None:
    path = _write(data / "bad.jsonl", [LINES[0], line])
    with pytest.raises(DataError, match=match) as err:
        list(read_jsonl(ctx, path=path))
    assert str(err.value).startswith(f"file {path}, record line 2, field {field!r}")


def test_line_that_is_not_json(ctx, data: Path) -> None:
    path = _write(data / "bad.jsonl", [LINES[0], LINES[2], '{"task": "caption", image: 3}'])
    with pytest.raises(DataError, match=r"bad\.jsonl, record line 3: invalid JSON at line 1 column 21"):
        list(read_jsonl(ctx, path=path))
    path = _write(data / "bad.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match="record line 1: a line must be a JSON object"):
        list(read_jsonl(ctx, path=path))


def test_duplicate_ids(ctx, data: Path) -> None:
    # an explicit id "2" collides with line 2's default id
    path = _write(
        data / "dup.jsonl", [{**LINES[0], "id": "2"}, {k: v for k, v in LINES[0].items() if k != "id"}]
    )
    with pytest.raises(DataError, match=r"record line 2, field 'id'.*duplicate"):
        list(read_jsonl(ctx, path=path))


def test_texts_are_stripped_and_blank_items_dropped_and_counted(ctx, data: Path) -> None:
    lines = [
        {"id": "c", "task": "caption", "image": "img/a.jpg", "captions": [" A cat. ", "", "  "]},
        {
            "id": "q",
            "task": "vqa",
            "image": "img/a.jpg",
            "question": " Cat? ",
            "answers": ["yes", "", "yes "],
        },
        {"id": "k", "task": "classification", "image": "img/a.jpg", "label": " cat\n"},
        {
            "id": "a",
            "task": "vqa",
            "image": "img/a.jpg",
            "question": "Dog?",
            "answer": " ",
            "answers": ["no"],
        },
    ]
    cap, vqa, cls, blank_answer = read_jsonl(ctx, path=_write(data / "x.jsonl", lines))
    assert (cap.caption, cap.captions) == ("A cat.", ["A cat."])
    assert (vqa.question, vqa.answer, vqa.answers) == ("Cat?", "yes", ["yes", "yes"])
    assert cls.label == "cat"
    assert (blank_answer.answer, blank_answer.answers) == ("no", ["no"])  # a blank answer counts as absent
    assert ctx.tally.repaired == {"empty caption dropped": 2, "empty answer dropped": 1}
    assert not ctx.tally.skipped
