"""jsonl: the dense, open-vocabulary and region tasks and a caption's level: exact Examples,
regions clipped as boxes are, and errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext
from pipeline.sources.jsonl import read_jsonl

LINES: list[dict[str, Any]] = [
    {"id": "cap", "task": "caption", "image": "a.jpg", "caption": "A cat on a mat.", "level": "detailed"},
    {"id": "brief", "task": "caption", "image": "a.jpg", "caption": "A cat.", "level": "brief"},
    {"id": "drc", "task": "dense_region_caption", "image": "a.jpg",
     "objects": [{"bbox": [1, 2, 10, 12], "category": " a black cat "},
                 {"bbox": [20, 5, 40, 30], "description": "a red mat"}]},
    {"id": "rp", "task": "region_proposal", "image": "a.jpg",
     "objects": [{"bbox": [1, 2, 10, 12]}, {"bbox": [3, 3, 5, 5], "category": "cat"}]},
    {"id": "ovd", "task": "open_vocabulary_detection", "image": "a.jpg", "categories": ["cat"],
     "objects": [{"bbox": [1, 2, 10, 12], "category": "cat"}]},
    {"id": "ovd0", "task": "open_vocabulary_detection", "image": "a.jpg", "categories": ["dog", "cat"]},
    {"id": "rc", "task": "region_to_category", "image": "a.jpg", "region": [1, 2, 10, 12], "label": " cat "},
    {"id": "rd", "task": "region_to_description", "image": "a.jpg", "region": [0, 0, 50, 10],
     "captions": ["a black cat", " ", "a cat"]},
    {"id": "ro", "task": "region_to_ocr", "image": "a.jpg", "region": [1.5, 2, 10, 12], "text": "EXIT"},
    {"id": "rs", "task": "region_to_segmentation", "image": "a.jpg", "region": [1, 2, 10, 12],
     "polygons": [[1, 2, 10, 2, 10, 12], [0, 0, 1, 1]], "category": "cat"},
    {"id": "rs0", "task": "region_to_segmentation", "image": "a.jpg", "region": [1, 2, 10, 12],
     "polygons": [[1, 2, 10, 2, 10, 12]]},
]  # fmt: skip


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def data(tmp_path: Path, make_image) -> Path:
    make_image("data/a.jpg")  # 32 x 24
    return tmp_path / "data"


def test_new_tasks_exact_examples(ctx: SourceContext, data: Path) -> None:
    examples = list(read_jsonl(ctx, path=_write(data / "x.jsonl", LINES)))
    image = str(data / "a.jpg")

    def ex(id: str, task: str, **fields: Any) -> Example:
        return Example(
            id=id, task=task, image=image, image_size=(32, 24), source="src", split="train", **fields
        )

    box = (1.0, 2.0, 10.0, 12.0)
    assert examples == [
        ex("cap", "caption", caption="A cat on a mat.", captions=["A cat on a mat."], level="detailed"),
        ex("brief", "caption", caption="A cat.", captions=["A cat."]),  # brief: level None
        ex(
            "drc",
            "dense_region_caption",
            objects=[Object(box, "a black cat"), Object((20.0, 5.0, 32.0, 24.0), "a red mat")],
        ),
        ex("rp", "region_proposal", objects=[Object(box, "object"), Object((3.0, 3.0, 5.0, 5.0), "cat")]),
        ex("ovd", "open_vocabulary_detection", categories=["cat"], objects=[Object(box, "cat")]),
        ex("ovd0", "open_vocabulary_detection", categories=["dog", "cat"]),  # a negative
        ex("rc", "region_to_category", region=box, label="cat"),
        ex(
            "rd",
            "region_to_description",
            region=(0.0, 0.0, 32.0, 10.0),  # clipped to the image
            caption="a black cat",
            captions=["a black cat", "a cat"],
        ),
        ex("ro", "region_to_ocr", region=(1.5, 2.0, 10.0, 12.0), text="EXIT"),
        ex(
            "rs",
            "region_to_segmentation",
            region=box,
            polygons=[[1.0, 2.0, 10.0, 2.0, 10.0, 12.0]],
            objects=[Object(box, "cat")],
        ),
        ex("rs0", "region_to_segmentation", region=box, polygons=[[1.0, 2.0, 10.0, 2.0, 10.0, 12.0]]),
    ]
    t = ctx.tally
    assert t.repaired == {"box clipped": 2, "empty caption dropped": 1, "degenerate polygon dropped": 1}
    assert t.boxes.boxes == 10  # every object box and every region, in the clues of the layout check


def test_a_region_without_area_in_the_image_is_skipped(ctx: SourceContext, data: Path) -> None:
    lines = [
        {"id": "out", "task": "region_to_ocr", "image": "a.jpg", "region": [40, 0, 50, 10], "text": "x"},
        {"id": "flat", "task": "region_to_category", "image": "a.jpg", "region": [4, 4, 4, 9], "label": "x"},
        {"id": "ok", "task": "region_to_category", "image": "a.jpg", "region": [0, 0, 4, 9], "label": "x"},
    ]
    assert [e.id for e in read_jsonl(ctx, path=_write(data / "x.jsonl", lines))] == ["ok"]
    assert ctx.tally.skipped == {"no usable region": 2}
    assert ctx.tally.repaired == {"zero-area box dropped": 2}


_RC = {"task": "region_to_category", "image": "a.jpg", "region": [1, 2, 10, 12], "label": "cat"}
_RD = {"task": "region_to_description", "image": "a.jpg", "region": [1, 2, 10, 12], "caption": "a cat"}
_RS = {"task": "region_to_segmentation", "image": "a.jpg", "region": [1, 2, 10, 12]}
_DRC = {"task": "dense_region_caption", "image": "a.jpg"}
_OVD = {"task": "open_vocabulary_detection", "image": "a.jpg"}
_CAP = {"task": "caption", "image": "a.jpg", "caption": "A cat."}


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({**_CAP, "level": "long"}, "level", "one of brief, detailed, paragraph"),
        ({**_CAP, "level": 2}, "level", "got 2"),
        ({**_RD, "level": "detailed"}, "level", "a level is only for caption examples"),
        ({**_RC, "region": None}, "region", "required field is missing"),
        ({**_RC, "region": [1, 2, 3]}, "region", "four numbers"),
        ({**_RC, "region": [1, 2, "3", 4]}, "region", "four numbers"),
        ({**_RC, "region": [5, 2, 3, 4]}, "region", "x2 < x1"),
        ({**_RC, "label": " "}, "label", "non-empty"),
        ({**_RC, "label": "cat", "categories": ["dog"]}, "label", "not in 'categories'"),
        ({**_CAP, "region": [1, 2, 3, 4]}, "region", "a region is only for region_to_category"),
        ({**_RD, "caption": None}, "caption", "a region_to_description example needs 'caption'"),
        ({**_RD, "captions": [" "], "caption": None}, "caption", "needs 'caption' or a non-empty"),
        ({"task": "region_to_ocr", "image": "a.jpg", "region": [1, 2, 10, 12]}, "text", "required"),
        (_RS, "polygons", "required field is missing"),
        ({**_RS, "polygons": [[1, 1, 2, 2]]}, "polygons", "a region_to_segmentation example needs a polygon"),
        ({**_RS, "polygons": [[0, 0, 1, 0, 1, 1]], "category": 4}, "category", "must be a string"),
        ({**_DRC, "objects": [{"bbox": [1, 2, 3, 4]}]}, "category", "category must be a non-empty string"),
        ({**_DRC, "objects": [{"bbox": [1, 2, 3, 4], "description": " "}]}, "description", "non-empty"),
        (
            {**_DRC, "objects": [{"bbox": [1, 2, 3, 4], "description": "a", "category": "b"}]},
            "description",
            "not both",
        ),
        ({**_DRC, "objects": [{"description": "a"}]}, "bbox", "object 0 has no bbox"),
        (_OVD, "categories", "needs 'categories'"),
        ({**_OVD, "categories": []}, "categories", "needs 'categories'"),
        (
            {**_OVD, "categories": ["cat"], "objects": [{"bbox": [1, 2, 3, 4], "category": "dog"}]},
            "category",
            "'dog' is not in 'categories'",
        ),
        (
            {"task": "region_proposal", "image": "a.jpg", "objects": [{"bbox": [1, 2]}]},
            "bbox",
            "four numbers",
        ),
    ],
)
def test_bad_lines_name_file_line_and_field(ctx, data: Path, line, field, match) -> None:
    path = _write(data / "bad.jsonl", [_CAP, line])
    with pytest.raises(DataError, match=match) as err:
        list(read_jsonl(ctx, path=path))
    assert str(err.value).startswith(f"file {path}, record line 2, field {field!r}")
