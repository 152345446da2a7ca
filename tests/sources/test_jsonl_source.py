"""jsonl: every task from one file, defaults, repairs and errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import TASKS, Example, Object, Region
from pipeline.sources import SourceContext, get, jsonl
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
        ({"task": "keypoints", "image": "img/a.jpg"}, "task", "unknown task"),
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


# ---------------------------------------------------------------------------- grounding, segmentation, ocr

NEW_TASK_LINES: list[dict[str, Any]] = [
    # one box, clipped to the 32x24 image; the category defaults to the phrase
    {
        "id": "g1",
        "task": "grounding",
        "image": "img/a.jpg",
        "phrase": " the red car ",
        "bbox": [1, 2, 40, 12],
    },
    {
        "id": "g2",
        "task": "grounding",
        "image": "img/b.png",
        "phrase": "both dogs",
        "bboxes": [[1, 2, 10, 12], [12.5, 3, 20, 9.25]],
        "category": "dog",
        "categories": ["cat", "dog"],
    },
    {
        "id": "s1",
        "task": "segmentation",
        "image": "img/a.jpg",
        "phrase": "cat on the left",
        "polygons": [[1, 2, 10, 2, 10, 12.5], [3, 3, 4, 4]],  # the second has two points: dropped
        "bbox": [1, 2, 10, 12.5],
        "category": "cat",
    },
    {
        "id": "s2",
        "task": "segmentation",
        "image": "img/b.png",
        "phrase": "sky",
        "polygons": [[0, 0, 30, 0, 30, 5]],
    },
    {
        "id": "o1",
        "task": "ocr",
        "image": "img/a.jpg",
        "text": " STOP\nAHEAD ",
        "regions": [
            {"text": "STOP", "quad": [1, 2, 10, 2, 10, 8, 1, 8.5]},
            {"text": " AHEAD", "bbox": [2, 10, 20, 16]},
            {"text": "  ", "bbox": [0, 0, 1, 1]},  # blank: dropped
        ],
    },
    {"id": "o2", "task": "ocr", "image": "img/b.png", "text": "exit"},
    {"id": "c1", "task": "caption", "image": "img/a.jpg", "caption": "Eine Katze.", "language": "de"},
    {
        "id": "q1",
        "task": "vqa",
        "image": "img/a.jpg",
        "question": "什么颜色？",
        "answer": "红色",
        "language": "zh-Hant",
    },
    {
        "id": "q2",
        "task": "vqa",
        "image": "img/a.jpg",
        "question": "Color?",
        "answer": "red",
        "language": None,
    },
]


def test_grounding_segmentation_ocr_and_language_exact_examples(ctx: SourceContext, data: Path) -> None:
    path = _write(data / "tasks.jsonl", NEW_TASK_LINES)
    a, b = str(data / "img" / "a.jpg"), str(data / "img" / "b.png")
    common = {"source": "src", "split": "train"}
    assert list(read_jsonl(ctx, path=path)) == [
        Example(
            id="g1",
            task="grounding",
            image=a,
            image_size=(32, 24),
            phrase="the red car",
            objects=[Object((1.0, 2.0, 32.0, 12.0), "the red car")],
            **common,
        ),
        Example(
            id="g2",
            task="grounding",
            image=b,
            image_size=(30, 20),
            phrase="both dogs",
            objects=[Object((1.0, 2.0, 10.0, 12.0), "dog"), Object((12.5, 3.0, 20.0, 9.25), "dog")],
            categories=["cat", "dog"],
            **common,
        ),
        Example(
            id="s1",
            task="segmentation",
            image=a,
            image_size=(32, 24),
            phrase="cat on the left",
            polygons=[[1.0, 2.0, 10.0, 2.0, 10.0, 12.5]],
            objects=[Object((1.0, 2.0, 10.0, 12.5), "cat")],
            **common,
        ),
        Example(
            id="s2",
            task="segmentation",
            image=b,
            image_size=(30, 20),
            phrase="sky",
            polygons=[[0.0, 0.0, 30.0, 0.0, 30.0, 5.0]],
            **common,
        ),
        Example(
            id="o1",
            task="ocr",
            image=a,
            image_size=(32, 24),
            text="STOP\nAHEAD",
            regions=[
                Region("STOP", (1.0, 2.0, 10.0, 2.0, 10.0, 8.0, 1.0, 8.5)),
                Region("AHEAD", (2.0, 10.0, 20.0, 10.0, 20.0, 16.0, 2.0, 16.0)),
            ],
            **common,
        ),
        Example(id="o2", task="ocr", image=b, image_size=(30, 20), text="exit", **common),
        Example(
            id="c1",
            task="caption",
            image=a,
            image_size=(32, 24),
            caption="Eine Katze.",
            captions=["Eine Katze."],
            language="de",
            **common,
        ),
        Example(
            id="q1",
            task="vqa",
            image=a,
            image_size=(32, 24),
            question="什么颜色？",
            answer="红色",
            answers=["红色"],
            language="zh-Hant",
            **common,
        ),
        Example(
            id="q2",
            task="vqa",
            image=a,
            image_size=(32, 24),
            question="Color?",
            answer="red",
            answers=["red"],
            **common,
        ),
    ]
    assert ctx.tally.examples == 9
    assert ctx.tally.repaired == {
        "box clipped": 1,
        "degenerate polygon dropped": 1,
        "empty region dropped": 1,
    }
    assert not ctx.tally.skipped


def test_grounding_without_a_box_inside_the_image_is_skipped(ctx: SourceContext, data: Path) -> None:
    lines = [
        {
            "id": "out",
            "task": "grounding",
            "image": "img/a.jpg",
            "phrase": "far",
            "bboxes": [[40, 0, 50, 10]],
        },
        # segmentation keeps its polygons when its box falls outside: the box is optional there
        {
            "id": "seg",
            "task": "segmentation",
            "image": "img/a.jpg",
            "phrase": "far",
            "polygons": [[0, 0, 5, 0, 5, 5]],
            "bbox": [40, 0, 50, 10],
        },
    ]
    (seg,) = read_jsonl(ctx, path=_write(data / "x.jsonl", lines))
    assert (seg.id, seg.objects, seg.polygons) == ("seg", [], [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]])
    assert ctx.tally.skipped == {"no usable box": 1}
    assert ctx.tally.repaired == {"zero-area box dropped": 2}


_G = {"task": "grounding", "image": "img/a.jpg", "phrase": "a cat"}
_S = {"task": "segmentation", "image": "img/a.jpg", "phrase": "a cat"}
_O = {"task": "ocr", "image": "img/a.jpg", "text": "hi"}
_C = {"task": "caption", "image": "img/a.jpg", "caption": "A cat."}


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({**_G, "phrase": None, "bbox": [1, 2, 3, 4]}, "phrase", "required field is missing"),
        ({**_G, "phrase": "  ", "bbox": [1, 2, 3, 4]}, "phrase", "must be a non-empty string"),
        ({**_G, "phrase": ["a"], "bbox": [1, 2, 3, 4]}, "phrase", "must be a string"),
        (_G, "bbox", "a grounding example needs 'bbox' or 'bboxes'"),
        ({**_G, "bbox": [1, 2, 3, 4], "bboxes": [[1, 2, 3, 4]]}, "bboxes", "not both"),
        ({**_G, "bboxes": []}, "bboxes", "must be a non-empty list of boxes"),
        ({**_G, "bboxes": [1, 2, 3, 4]}, "bboxes", "a box must be four numbers, got 1"),
        ({**_G, "bbox": [5, 2, 3, 4]}, "bbox", "x2 < x1"),
        ({**_G, "bbox": [1, 2, 3]}, "bbox", "four numbers"),
        ({**_G, "bbox": [1, 2, 3, 4], "category": "dog", "categories": ["cat"]}, "category", "not in"),
        ({**_G, "bbox": [1, 2, 3, 4], "category": 3}, "category", "must be a string"),
        (_S, "polygons", "required field is missing"),
        ({**_S, "polygons": "0 0 1 0 1 1"}, "polygons", "must be a list of flat"),
        ({**_S, "polygons": []}, "polygons", "needs a polygon of three or more points"),
        ({**_S, "polygons": [[1, 2, 3, 4]]}, "polygons", "needs a polygon of three or more points"),
        ({**_S, "polygons": [[0, 0, 1, 0, 1]]}, "polygons", "polygon 0 must be an even-length list"),
        ({**_S, "polygons": [[0, 0, 1, 0, 1, "1"]]}, "polygons", "finite numbers"),
        ({**_S, "polygons": [0, 0, 1, 0, 1, 1]}, "polygons", "polygon 0 must be"),
        ({**_S, "polygons": [[0, 0, 1, 0, 1, 1]], "bbox": [2, 2, 1, 1]}, "bbox", "x2 < x1"),
        ({"task": "ocr", "image": "img/a.jpg"}, "text", "required field is missing"),
        ({**_O, "text": " \n"}, "text", "must be a non-empty string"),
        ({**_O, "text": 5}, "text", "must be a string"),
        ({**_O, "regions": {"text": "hi"}}, "regions", "must be a list of regions"),
        ({**_O, "regions": ["hi"]}, "regions", "region 0: must be an object"),
        ({**_O, "regions": [{"text": "hi"}]}, "regions", "region 0: needs a 'quad'"),
        (
            {**_O, "regions": [{"text": "hi", "quad": [0] * 8, "bbox": [0, 0, 1, 1]}]},
            "regions",
            "one of the two",
        ),
        ({**_O, "regions": [{"text": "hi", "quad": [0, 0, 1, 0, 1, 1]}]}, "regions", "8 finite numbers"),
        ({**_O, "regions": [{"text": 3, "bbox": [0, 0, 1, 1]}]}, "regions", "text must be a string"),
        ({**_O, "regions": [{"text": "hi", "bbox": [1, 0, 0, 1]}]}, "regions", "x2 < x1"),
        ({**_O, "language": "de"}, "language", "a language is only for caption and vqa examples"),
        ({**_G, "bbox": [1, 2, 3, 4], "language": "de"}, "language", "only for caption and vqa"),
        ({**_C, "language": "en US"}, "language", "a non-empty string without spaces"),
        ({**_C, "language": ""}, "language", "got ''"),
        ({**_C, "language": 7}, "language", "got 7"),
    ],
)
def test_bad_new_task_lines_name_file_line_and_field(ctx, data: Path, line, field, match) -> None:
    path = _write(data / "bad.jsonl", [LINES[0], line])
    with pytest.raises(DataError, match=match) as err:
        list(read_jsonl(ctx, path=path))
    assert str(err.value).startswith(f"file {path}, record line 2, field {field!r}")


def test_every_task_has_a_field_parser() -> None:
    assert set(jsonl._TASK_FIELDS) == set(TASKS)
