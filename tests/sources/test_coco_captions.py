"""coco_captions: one Example per image with every reference caption, skips and errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import SourceContext, get
from pipeline.sources.coco_captions import read_coco_captions

CAPTIONS: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "one.jpg", "width": 32, "height": 24},
        {"id": 2, "file_name": "two.jpg", "width": 32, "height": 24},
        {"id": 3, "file_name": "three.jpg", "width": 32, "height": 24},  # no captions
    ],
    "annotations": [
        {"id": 12, "image_id": 1, "caption": "A cat on a mat.\n"},
        {"id": 5, "image_id": 1, "caption": " A small cat."},  # lower id: comes first
        {"id": 7, "image_id": 2, "caption": "Two dogs."},
        {"id": 8, "image_id": 2, "caption": "   "},  # blank: dropped
    ],
}


@pytest.fixture
def captions(tmp_path: Path, make_image, write_json):
    images = tmp_path / "val2017"
    for name in ("one.jpg", "two.jpg", "three.jpg"):
        make_image(name, root=images)

    def read(ctx: SourceContext, data: dict[str, Any] | None = None) -> list[Example]:
        anns = write_json("captions_val2017.json", data if data is not None else CAPTIONS)
        return list(read_coco_captions(ctx, annotations=anns, images=images))

    read.images = images
    return read


def test_happy_path_exact_examples(ctx: SourceContext, captions) -> None:
    root = captions.images
    assert captions(ctx) == [
        Example(
            id="1",
            task="caption",
            image=str(root / "one.jpg"),
            image_size=(32, 24),
            source="src",
            split="train",
            caption="A small cat.",
            captions=["A small cat.", "A cat on a mat."],
        ),
        Example(
            id="2",
            task="caption",
            image=str(root / "two.jpg"),
            image_size=(32, 24),
            source="src",
            split="train",
            caption="Two dogs.",
            captions=["Two dogs."],
        ),
    ]
    assert ctx.tally.examples == 2
    assert ctx.tally.skipped == {"image without captions": 1}
    assert ctx.tally.repaired == {"empty caption dropped": 1}
    assert get("coco_captions") is read_coco_captions


def test_missing_image_is_skipped(ctx: SourceContext, captions) -> None:
    (captions.images / "two.jpg").unlink()
    assert [e.id for e in captions(ctx)] == ["1"]
    assert ctx.tally.skipped == {"image without captions": 1, "missing image": 1}


def _edit(section: str, index: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(CAPTIONS)
    data[section][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "record", "field"),
    [
        (_edit("images", 1, id=1), "image 1", "id"),
        (_edit("annotations", 2, image_id=42), "annotation 7", "image_id"),
        (_edit("annotations", 2, caption=["not", "a", "string"]), "annotation 7", "caption"),
        (_edit("images", 0, file_name="../../etc/passwd"), "image 1", "file_name"),
        ({"images": CAPTIONS["images"]}, None, "annotations"),
    ],
)
def test_bad_files_raise_with_file_record_field(ctx, captions, data, record, field) -> None:
    with pytest.raises(DataError) as err:
        captions(ctx, data)
    message = str(err.value)
    assert "captions_val2017.json" in message and f"field {field!r}" in message
    if record:
        assert record in message


def test_json_that_does_not_parse(ctx, tmp_path: Path) -> None:
    anns = tmp_path / "captions.json"
    anns.write_text('{"images": [{"id": 1 "file_name": "x.jpg"}]}')
    with pytest.raises(DataError, match=r"captions\.json.*line 1 column 22"):
        list(read_coco_captions(ctx, annotations=anns, images=tmp_path))


def test_language_is_set_on_every_example(ctx: SourceContext, tmp_path: Path, make_image, write_json) -> None:
    images = tmp_path / "val2017"
    for name in ("one.jpg", "two.jpg"):
        make_image(name, root=images)
    anns = write_json("captions_ja.json", CAPTIONS)
    examples = list(read_coco_captions(ctx, annotations=anns, images=images, language="ja"))
    assert [(e.id, e.language) for e in examples] == [("1", "ja"), ("2", "ja")]
    assert [e.language for e in read_coco_captions(ctx, annotations=anns, images=images)] == [None, None]


@pytest.mark.parametrize(
    ("language", "match"),
    [
        ("", r"got ''$"),
        ("pt BR", r"\(a non-empty string without spaces\), got 'pt BR'$"),
        (False, r"got False \(YAML reads no, yes, on and off as booleans: quote the code\)$"),
        (["de"], r"got \['de'\]$"),
    ],
)
def test_a_language_that_is_not_a_code_is_an_error(ctx, tmp_path: Path, write_json, language, match) -> None:
    anns = write_json("captions.json", CAPTIONS)
    with pytest.raises(DataError, match=match) as err:
        list(read_coco_captions(ctx, annotations=anns, images=tmp_path, language=language))
    assert str(err.value).startswith(f"file {anns}, field 'language': language must be a code such as 'de'")
