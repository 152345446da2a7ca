"""hf_dataset: the dense, open-vocabulary and region tasks and a caption's level, from datasets
saved in the test: exact Examples, regions clipped as boxes are, skips and errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext
from pipeline.sources.hf_dataset import cache_image_bytes, read_hf_dataset


@pytest.fixture(autouse=True)
def _local_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _png(size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
BOX = [1.0, 2.0, 10.0, 12.0]
XYXY = (1.0, 2.0, 10.0, 12.0)


def _read(ctx: SourceContext, tmp_path: Path, data: dict[str, list[Any]], features: dict[str, Any], **params):
    n = len(next(iter(data.values())))
    data = {"image": [{"bytes": PNG, "path": None}] * n, **data}
    folder = tmp_path / "saved"
    Dataset.from_dict(data, features=Features({"image": ImageFeature(), **features})).save_to_disk(
        str(folder)
    )
    cache = tmp_path / "cache"
    return list(read_hf_dataset(ctx, path=str(folder), from_disk=True, image_cache=cache, **params))


def _ex(tmp_path: Path, id: str, task: str, **fields: Any) -> Example:
    image = str(cache_image_bytes(PNG, tmp_path / "cache"))
    return Example(id=id, task=task, image=image, image_size=(32, 24), source="src", split="train", **fields)


def test_caption_level_column(ctx: SourceContext, tmp_path: Path) -> None:
    data = {"caption": ["A cat.", "A cat on a mat.", "Long."], "level": [None, "detailed", "paragraph"]}
    features = {"caption": Value("string"), "level": Value("string")}
    got = _read(ctx, tmp_path, data, features, task="caption")
    assert got == [
        _ex(tmp_path, "0", "caption", caption="A cat.", captions=["A cat."]),
        _ex(
            tmp_path,
            "1",
            "caption",
            caption="A cat on a mat.",
            captions=["A cat on a mat."],
            level="detailed",
        ),
        _ex(tmp_path, "2", "caption", caption="Long.", captions=["Long."], level="paragraph"),
    ]
    with pytest.raises(DataError, match="one of brief, detailed, paragraph") as err:
        _read(ctx, tmp_path, {"caption": ["x"], "level": ["long"]}, features, task="caption")
    assert (err.value.record, err.value.field) == ("row 0", "level")


_OBJECTS = List({"bbox": List(Value("float32")), "category": Value("string")})


def test_dense_region_caption_and_proposals(ctx: SourceContext, tmp_path: Path) -> None:
    objects = [
        [{"bbox": BOX, "category": " a black cat "}, {"bbox": [20, 5, 40, 30], "category": "a red mat"}]
    ]
    got = _read(ctx, tmp_path, {"objects": objects}, {"objects": _OBJECTS}, task="dense_region_caption")
    assert got == [
        _ex(
            tmp_path,
            "0",
            "dense_region_caption",
            objects=[Object(XYXY, "a black cat"), Object((20.0, 5.0, 32.0, 24.0), "a red mat")],
        )
    ]  # no vocabulary: descriptions are free text
    assert ctx.tally.repaired == {"box clipped": 1}
    # a sub-field named "description" is read as the category
    described = List({"bbox": List(Value("float32")), "description": Value("string")})
    (row,) = _read(
        SourceContext(name="src", split="train"),
        tmp_path / "d",
        {"objects": [[{"bbox": BOX, "description": "a cat"}]]},
        {"objects": described},
        task="dense_region_caption",
    )
    assert row.objects == [Object(XYXY, "a cat")]
    # proposals need no category
    boxes_only = List({"bbox": List(Value("float32"))})
    (row,) = _read(
        SourceContext(name="src", split="train"),
        tmp_path / "p",
        {"objects": [[{"bbox": BOX}]]},
        {"objects": boxes_only},
        task="region_proposal",
    )
    assert row == _ex(tmp_path / "p", "0", "region_proposal", objects=[Object(XYXY, "object")])


def test_blank_description_is_an_error(ctx: SourceContext, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="description must be non-empty") as err:
        _read(
            ctx,
            tmp_path,
            {"objects": [[{"bbox": BOX, "category": " "}]]},
            {"objects": _OBJECTS},
            task="dense_region_caption",
        )
    assert (err.value.record, err.value.field) == ("row 0", "category")


def test_open_vocabulary_detection_names_its_classes_per_row(ctx: SourceContext, tmp_path: Path) -> None:
    data = {
        "objects": [[{"bbox": BOX, "category": "cat"}], []],
        "categories": [["cat"], ["dog", "cat"]],
    }
    features = {"objects": _OBJECTS, "categories": List(Value("string"))}
    got = _read(ctx, tmp_path, data, features, task="open_vocabulary_detection")
    assert got == [
        _ex(tmp_path, "0", "open_vocabulary_detection", categories=["cat"], objects=[Object(XYXY, "cat")]),
        _ex(tmp_path, "1", "open_vocabulary_detection", categories=["dog", "cat"]),
    ]
    bad = {"objects": [[{"bbox": BOX, "category": "cat"}]], "categories": [["dog"]]}
    with pytest.raises(DataError, match="'cat' is not among") as err:
        _read(ctx, tmp_path / "b", bad, features, task="open_vocabulary_detection")
    assert (err.value.record, err.value.field) == ("row 0", "category")
    with pytest.raises(DataError, match="non-empty list") as err:
        _read(ctx, tmp_path / "c", {**bad, "categories": [[]]}, features, task="open_vocabulary_detection")
    assert err.value.field == "categories"
    with pytest.raises(DataError, match="no column 'categories'") as err:
        _read(
            ctx,
            tmp_path / "d",
            {"objects": bad["objects"]},
            {"objects": _OBJECTS},
            task="open_vocabulary_detection",
        )


_REGION = List(Value("float32"))


def test_region_to_category_description_and_ocr(ctx: SourceContext, tmp_path: Path) -> None:
    label = ClassLabel(names=["cat", "dog"])
    got = _read(
        ctx,
        tmp_path,
        {"region": [BOX, [0, 0, 50, 10], [40, 0, 50, 5]], "label": [0, 1, 1]},
        {"region": _REGION, "label": label},
        task="region_to_category",
    )
    assert got == [
        _ex(tmp_path, "0", "region_to_category", region=XYXY, label="cat"),
        _ex(tmp_path, "1", "region_to_category", region=(0.0, 0.0, 32.0, 10.0), label="dog"),
    ]
    assert ctx.tally.skipped == {"no usable region": 1}
    assert ctx.tally.repaired == {"box clipped": 1, "zero-area box dropped": 1}

    ctx = SourceContext(name="src", split="train")
    got = _read(
        ctx,
        tmp_path / "d",
        {"region": [BOX, BOX], "captions": [["a cat", " ", "the cat"], [" "]]},
        {"region": _REGION, "captions": List(Value("string"))},
        task="region_to_description",
    )
    assert got == [
        _ex(
            tmp_path / "d",
            "0",
            "region_to_description",
            region=XYXY,
            caption="a cat",
            captions=["a cat", "the cat"],
        )
    ]
    assert ctx.tally.skipped == {"image without captions": 1}

    ctx = SourceContext(name="src", split="train")
    got = _read(
        ctx,
        tmp_path / "o",
        {"region": [BOX, BOX], "text": [" EXIT ", ""]},
        {"region": _REGION, "text": Value("string")},
        task="region_to_ocr",
    )
    assert got == [_ex(tmp_path / "o", "0", "region_to_ocr", region=XYXY, text="EXIT")]
    assert ctx.tally.skipped == {"region without text": 1}


def test_region_to_segmentation_xywh(ctx: SourceContext, tmp_path: Path) -> None:
    got = _read(
        ctx,
        tmp_path,
        {
            "region": [[1, 2, 9, 10], [1, 2, 9, 10]],
            "polygons": [[[1, 2, 10, 2, 10, 12]], [[1, 2, 3, 4]]],
            "category": ["cat", None],
        },
        {"region": _REGION, "polygons": List(List(Value("float32"))), "category": Value("string")},
        task="region_to_segmentation",
        bbox_format="xywh",
    )
    assert got == [
        _ex(
            tmp_path,
            "0",
            "region_to_segmentation",
            region=XYXY,
            polygons=[[1.0, 2.0, 10.0, 2.0, 10.0, 12.0]],
            objects=[Object(XYXY, "cat")],
        )
    ]
    assert ctx.tally.skipped == {"missing polygons": 1}
    assert ctx.tally.boxes.xywh == 1


@pytest.mark.parametrize(
    ("region", "match"),
    [([1, 2, 3], "four numbers"), ([5, 2, 3, 4], "x2 < x1"), (None, "expected the region")],
)
def test_a_bad_region_names_the_row_and_field(ctx: SourceContext, tmp_path: Path, region, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        _read(
            ctx,
            tmp_path,
            {"region": [region], "text": ["x"]},
            {"region": _REGION, "text": Value("string")},
            task="region_to_ocr",
        )
    assert (err.value.record, err.value.field) == ("row 0", "region")
    assert err.value.file.endswith("saved [train]")


def test_a_region_task_needs_a_region_column(ctx: SourceContext, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no column 'region'") as err:
        _read(ctx, tmp_path, {"text": ["x"]}, {"text": Value("string")}, task="region_to_ocr")
    assert err.value.field == "region"
