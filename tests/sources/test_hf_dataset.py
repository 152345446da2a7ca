"""hf_dataset: datasets built in the test and saved locally (save_to_disk, imagefolder, json).

Nothing here touches the hub: every dataset is made from a handful of PIL images in tmp_path.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Json, List, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

from pipeline import tasks
from pipeline.errors import DataError
from pipeline.records import Example, Object, Region
from pipeline.sources import SourceContext, get, hf_dataset
from pipeline.sources.hf_dataset import DEFAULT_COLUMNS, read_hf_dataset


@pytest.fixture(autouse=True)
def _local_cache(tmp_path: Path, monkeypatch) -> None:
    # load_dataset caches Arrow files; keep them inside the test's folder
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()


def _save(tmp_path: Path, columns: dict, features: Features, split: str | None = None) -> str:
    ds = Dataset.from_dict(columns, features=features)
    if split is not None:
        ds = DatasetDict({split: ds})
    folder = tmp_path / "saved"
    ds.save_to_disk(str(folder))
    return str(folder)


def test_classification_from_disk_with_embedded_bytes(ctx: SourceContext, tmp_path: Path) -> None:
    red, jpeg = _png((32, 24)), _jpeg((20, 10))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat", "dog"])})
    path = _save(
        tmp_path,
        {
            "image": [
                {"bytes": red, "path": "one.png"},  # a bare name, not a file: the bytes are used
                {"bytes": jpeg, "path": None},
                {"bytes": red, "path": "same-bytes.png"},  # identical content: one cached file
                {"bytes": red, "path": None},
            ],
            "label": [1, 0, 0, -1],  # -1: ClassLabel's "no label"
        },
        features,
        split="validation",
    )
    cache = tmp_path / "image_cache"
    examples = list(
        read_hf_dataset(
            ctx, path=path, from_disk=True, hf_split="validation", task="classification", image_cache=cache
        )
    )
    cached = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert len(cached) == 2
    assert {Path(c).suffix for c in cached} == {".png", ".jpg"}
    png_file = next(str(cache / c) for c in cached if c.endswith(".png"))
    jpg_file = next(str(cache / c) for c in cached if c.endswith(".jpg"))
    common = {"task": "classification", "source": "src", "split": "train", "categories": ["cat", "dog"]}
    assert examples == [
        Example(id="0", image=png_file, image_size=(32, 24), label="dog", **common),
        Example(id="1", image=jpg_file, image_size=(20, 10), label="cat", **common),
        Example(id="2", image=png_file, image_size=(32, 24), label="cat", **common),
    ]
    assert ctx.tally.skipped == {"missing label": 1}
    assert ctx.tally.examples == 3
    assert get("hf_dataset") is read_hf_dataset


def test_embedded_bytes_need_an_image_cache(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat"])})
    path = _save(tmp_path, {"image": [{"bytes": _png((4, 4)), "path": None}], "label": [0]}, features)
    with pytest.raises(DataError, match="field 'image_cache'"):
        list(read_hf_dataset(ctx, path=path, from_disk=True, task="classification"))


@pytest.mark.parametrize("nesting", ["list_of_dicts", "sequence"])
def test_detection_xywh_with_classlabel_categories(ctx: SourceContext, tmp_path: Path, nesting: str) -> None:
    category = ClassLabel(names=["person", "car"])
    if nesting == "list_of_dicts":
        objects_feature = List({"bbox": List(Value("float32"), length=4), "category": category})
        objects = [[{"bbox": [1, 2, 10, 5], "category": 1}, {"bbox": [20, 10, 20, 20], "category": 0}], []]
    else:  # Sequence({...}) stores a struct of lists
        objects_feature = Sequence({"bbox": Sequence(Value("float32"), length=4), "category": category})
        objects = [
            {"bbox": [[1, 2, 10, 5], [20, 10, 20, 20]], "category": [1, 0]},
            {"bbox": [], "category": []},
        ]
    features = Features({"image": ImageFeature(), "objects": objects_feature, "image_id": Value("int64")})
    image = {"bytes": _png((32, 24)), "path": None}
    path = _save(tmp_path, {"image": [image, image], "objects": objects, "image_id": [501, 502]}, features)
    examples = list(
        read_hf_dataset(
            ctx,
            path=path,
            from_disk=True,
            task="detection",
            bbox_format="xywh",
            columns={"id": "image_id"},
            image_cache=tmp_path / "cache",
        )
    )
    assert [e.id for e in examples] == ["501", "502"]
    assert examples[0].objects == [
        Object((1.0, 2.0, 11.0, 7.0), "car"),
        Object((20.0, 10.0, 32.0, 24.0), "person"),
    ]
    assert examples[1].objects == []
    assert examples[0].categories == ["person", "car"]
    assert ctx.tally.repaired == {"box clipped": 1}


def test_vqa_with_answer_dicts_and_captions(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features(
        {
            "image": ImageFeature(),
            "question": Value("string"),
            "answers": List({"answer": Value("string"), "answer_id": Value("int32")}),
            "answer_type": Value("string"),
            "question_id": Value("int64"),
        }
    )
    image = {"bytes": _png((32, 24), mode="L"), "path": None}
    path = _save(
        tmp_path,
        {
            "image": [image, image],
            "question": ["How many?", "What?"],
            "answers": [
                [
                    {"answer": "two", "answer_id": 3},
                    {"answer": "2", "answer_id": 1},
                    {"answer": "2", "answer_id": 2},
                ],
                [],
            ],
            "answer_type": ["number", "other"],
            "question_id": [11, 12],
        },
        features,
    )
    examples = list(
        read_hf_dataset(
            ctx,
            path=path,
            from_disk=True,
            task="vqa",
            columns={"id": "question_id"},
            image_cache=tmp_path / "c",
        )
    )
    assert len(examples) == 1
    ex = examples[0]
    assert (ex.id, ex.question, ex.answer, ex.answers, ex.answer_type) == (
        "11",
        "How many?",
        "2",
        ["2", "2", "two"],
        "number",
    )
    assert ctx.tally.skipped == {"question without answers": 1}
    assert ctx.tally.repaired == {"L converted to RGB": 1}  # the verdict is cached, counted per record


def test_caption_column_str_or_list(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "text": List(Value("string"))})
    image = {"bytes": _png((8, 6)), "path": None}
    path = _save(tmp_path, {"image": [image, image], "text": [[" A cat. ", "", "Cat."], []]}, features)
    examples = list(
        read_hf_dataset(
            ctx,
            path=path,
            from_disk=True,
            task="caption",
            columns={"captions": "text"},
            image_cache=tmp_path / "c",
        )
    )
    assert [(e.caption, e.captions, e.image_size) for e in examples] == [
        ("A cat.", ["A cat.", "Cat."], (8, 6))
    ]
    assert ctx.tally.skipped == {"image without captions": 1}
    assert ctx.tally.repaired == {"empty caption dropped": 1}


def test_local_imagefolder_references_files_without_copying(
    ctx: SourceContext, tmp_path: Path, make_image
) -> None:
    root = tmp_path / "folder"
    a = make_image("cat/a.png", root=root)
    b = make_image("dog/b.jpg", root=root, size=(20, 10))
    examples = list(read_hf_dataset(ctx, path=str(root), task="classification"))
    assert [(e.image, e.label, e.image_size) for e in examples] == [
        (str(a), "cat", (32, 24)),
        (str(b), "dog", (20, 10)),
    ]
    assert examples[0].categories == ["cat", "dog"]


def test_local_json_with_string_paths(ctx: SourceContext, tmp_path: Path, make_image) -> None:
    make_image("imgs/a.png", root=tmp_path)
    lines = [
        {"file": "a.png", "label": "b"},
        {"file": "a.png", "label": "a"},
        {"file": "gone.png", "label": "a"},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines))
    examples = list(
        read_hf_dataset(
            ctx,
            path="json",
            data_files=str(data),
            task="classification",
            columns={"image": "file"},
            images=tmp_path / "imgs",
        )
    )
    assert [(e.id, e.label, e.categories) for e in examples] == [
        ("0", "b", ["a", "b"]),
        ("1", "a", ["a", "b"]),
    ]
    assert ctx.tally.skipped == {"missing image": 1}


def test_configuration_errors_name_the_field(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat"])})
    path = _save(tmp_path, {"image": [{"bytes": _png((4, 4)), "path": None}], "label": [0]}, features)
    cases = [
        ({"task": "keypoints"}, "task"),
        ({"task": "vqa"}, "question"),
        ({"task": "classification", "columns": {"label": "nope"}}, "label"),
        ({"task": "classification", "columns": {"lable": "label"}}, "columns"),
        ({"task": "detection", "bbox_format": "cxcywh"}, "bbox_format"),
        ({"task": "classification", "hf_split": "test"}, None),  # a plain Dataset: hf_split is ignored
    ]
    for params, field in cases:
        call = read_hf_dataset(ctx, path=path, from_disk=True, image_cache=tmp_path / "c", **params)
        if field is None:
            assert len(list(call)) == 1
            continue
        with pytest.raises(DataError) as err:
            list(call)
        assert err.value.field == field, params


def test_missing_split_and_duplicate_ids(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat"]), "key": Value("string")})
    image = {"bytes": _png((4, 4)), "path": None}
    path = _save(
        tmp_path, {"image": [image, image], "label": [0, 0], "key": ["k", "k"]}, features, split="train"
    )
    with pytest.raises(DataError, match=r"no split 'test'.*\['train'\]"):
        list(read_hf_dataset(ctx, path=path, from_disk=True, hf_split="test", task="classification"))
    reader = read_hf_dataset(
        ctx,
        path=path,
        from_disk=True,
        task="classification",
        columns={"id": "key"},
        image_cache=tmp_path / "c",
    )
    with pytest.raises(DataError, match=r"record row 1 \(id k\), field 'id'"):
        list(reader)


def test_relative_folder_resolves_against_the_data_root(tmp_path: Path):
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat", "dog"])})
    path = Path(_save(tmp_path, {"image": [{"bytes": _png((4, 3)), "path": None}], "label": [1]}, features))
    ctx = SourceContext(name="src", split="train", root=path.parent)
    examples = list(
        read_hf_dataset(ctx, path=path.name, from_disk=True, task="classification", image_cache=tmp_path)
    )
    assert [(e.label, e.image_size) for e in examples] == [("dog", (4, 3))]


# ---------------------------------------------------------------------------- grounding, segmentation, ocr


def _read(ctx: SourceContext, tmp_path: Path, data: dict, features: Features, **params) -> list[Example]:
    """Save `data` with `features` under tmp_path and read it back with the reader's `params`."""
    path = _save(tmp_path, data, features)
    return list(read_hf_dataset(ctx, path=path, from_disk=True, image_cache=tmp_path / "cache", **params))


def test_grounding_one_box_per_row_xywh_with_classlabel_category(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features(
        {
            "image": ImageFeature(),
            "phrase": Value("string"),
            "bbox": List(Value("float32"), length=4),
            "category": ClassLabel(names=["person", "car"]),
        }
    )
    image = {"bytes": _png((32, 24)), "path": None}
    examples = _read(
        ctx,
        tmp_path,
        {
            "image": [image] * 4,
            "phrase": [" the red car ", "man on the left", "nobody", "far away"],
            "bbox": [[1, 2, 10, 5], [20, 10, 20, 20.5], None, [40, 0, 5, 5]],
            "category": [1, 0, 0, 1],
        },
        features,
        task="grounding",
        bbox_format="xywh",
    )
    image_file = examples[0].image
    common = {
        "task": "grounding",
        "image": image_file,
        "image_size": (32, 24),
        "source": "src",
        "split": "train",
    }
    assert examples == [
        Example(id="0", phrase="the red car", objects=[Object((1.0, 2.0, 11.0, 7.0), "car")], **common),
        Example(
            id="1", phrase="man on the left", objects=[Object((20.0, 10.0, 32.0, 24.0), "person")], **common
        ),
    ]
    assert ctx.tally.skipped == {"missing box": 1, "no usable box": 1}
    assert ctx.tally.repaired == {"box clipped": 1, "zero-area box dropped": 1}


def test_grounding_box_lists_from_mapped_columns(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features(
        {
            "image": ImageFeature(),
            "expr": Value("string"),
            "boxes": List(List(Value("float32"), length=4)),
            "cls": Value("string"),
            "bbox": List(Value("float32"), length=4),  # a default column: the explicit mapping wins
        }
    )
    image = {"bytes": _png((32, 24)), "path": None}
    examples = _read(
        ctx,
        tmp_path,
        {
            "image": [image, image],
            "expr": ["two dogs", "cat"],
            "boxes": [[[1, 2, 3, 4], [5, 6, 7.5, 8]], [[0, 0, 4, 4]]],
            "cls": ["dog", " "],  # blank: the phrase names the box
            "bbox": [[0, 0, 1, 1], [0, 0, 1, 1]],
        },
        features,
        task="grounding",
        columns={"phrase": "expr", "bboxes": "boxes", "category": "cls"},
    )
    assert [(e.phrase, e.objects) for e in examples] == [
        ("two dogs", [Object((1.0, 2.0, 3.0, 4.0), "dog"), Object((5.0, 6.0, 7.5, 8.0), "dog")]),
        ("cat", [Object((0.0, 0.0, 4.0, 4.0), "cat")]),
    ]
    assert not ctx.tally.skipped and not ctx.tally.repaired


def test_segmentation_polygons_with_and_without_a_box(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features(
        {
            "image": ImageFeature(),
            "phrase": Value("string"),
            "polygons": List(List(Value("float32"))),
            "bbox": List(Value("float32"), length=4),
        }
    )
    image = {"bytes": _png((32, 24)), "path": None}
    examples = _read(
        ctx,
        tmp_path,
        {
            "image": [image] * 4,
            "phrase": ["left cat", "sky", "nothing", "dots"],
            "polygons": [
                [[1, 2, 10, 2, 10, 12.5], [1, 2, 3, 4]],  # the second is degenerate: dropped
                [[0, 0, 32, 0, 32, 5]],
                [],
                [[1, 1, 2, 2]],  # only a degenerate one: nothing left
            ],
            "bbox": [[1, 2, 10, 12.5], None, None, None],
        },
        features,
        task="segmentation",
    )
    image_file = examples[0].image
    common = {
        "task": "segmentation",
        "image": image_file,
        "image_size": (32, 24),
        "source": "src",
        "split": "train",
    }
    assert examples == [
        Example(
            id="0",
            phrase="left cat",
            polygons=[[1.0, 2.0, 10.0, 2.0, 10.0, 12.5]],
            objects=[Object((1.0, 2.0, 10.0, 12.5), "left cat")],
            **common,
        ),
        Example(id="1", phrase="sky", polygons=[[0.0, 0.0, 32.0, 0.0, 32.0, 5.0]], **common),
    ]
    assert ctx.tally.skipped == {"missing polygons": 2}
    assert ctx.tally.repaired == {"degenerate polygon dropped": 2}


@pytest.mark.parametrize("nesting", ["list_of_dicts", "sequence"])
def test_ocr_text_and_regions(ctx: SourceContext, tmp_path: Path, nesting: str) -> None:
    region = {"text": Value("string"), "quad": List(Value("float32")), "bbox": List(Value("float32"))}
    rows = [
        [
            {"text": "STOP", "quad": [1, 2, 10, 2, 10, 8, 1, 8.5], "bbox": None},
            {"text": " AHEAD ", "quad": None, "bbox": [2, 10, 18, 6]},  # xywh
            {"text": "", "quad": None, "bbox": [0, 0, 1, 1]},  # blank: dropped
        ],
        [],
        [],
    ]
    if nesting == "list_of_dicts":
        regions_feature, regions = List(region), rows
    else:  # Sequence({...}) stores a struct of lists
        regions_feature = Sequence(region)
        regions = [{k: [r[k] for r in row] for k in ("text", "quad", "bbox")} for row in rows]
    features = Features({"image": ImageFeature(), "text": Value("string"), "regions": regions_feature})
    image = {"bytes": _png((32, 24)), "path": None}
    examples = _read(
        ctx,
        tmp_path,
        {"image": [image] * 3, "text": [" STOP\nAHEAD ", "exit", "  "], "regions": regions},
        features,
        task="ocr",
        bbox_format="xywh",
    )
    assert [(e.id, e.task, e.text, e.regions) for e in examples] == [
        (
            "0",
            "ocr",
            "STOP\nAHEAD",
            [
                Region("STOP", (1.0, 2.0, 10.0, 2.0, 10.0, 8.0, 1.0, 8.5)),
                Region("AHEAD", (2.0, 10.0, 20.0, 10.0, 20.0, 16.0, 2.0, 16.0)),
            ],
        ),
        ("1", "ocr", "exit", []),
    ]
    assert ctx.tally.skipped == {"image without text": 1}
    assert ctx.tally.repaired == {"empty region dropped": 1}


def test_language_column_for_captions_and_vqa(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features(
        {
            "image": ImageFeature(),
            "caption": Value("string"),
            "lang": Value("string"),
            "language": Value("string"),
        }
    )
    image = {"bytes": _png((8, 6)), "path": None}
    columns = {"image": [image] * 2, "caption": ["Eine Katze.", "A cat."], "lang": ["de", None]}
    examples = _read(
        ctx,
        tmp_path,
        {**columns, "language": ["xx", "xx"]},
        features,
        task="caption",
        columns={"language": "lang"},
    )
    assert [(e.caption, e.language) for e in examples] == [("Eine Katze.", "de"), ("A cat.", None)]

    vqa_features = Features(
        {
            "image": ImageFeature(),
            "question": Value("string"),
            "answer": Value("string"),
            "language": Value("string"),
        }
    )
    vqa = {"image": [image], "question": ["Farbe?"], "answer": ["rot"], "language": ["de"]}
    (ex,) = _read(ctx, tmp_path / "vqa", vqa, vqa_features, task="vqa")
    assert (ex.question, ex.answer, ex.language) == ("Farbe?", "rot", "de")

    with pytest.raises(DataError, match="a non-empty string without spaces") as err:
        _read(ctx, tmp_path / "bad", {**vqa, "language": ["en US"]}, vqa_features, task="vqa")
    assert (err.value.record, err.value.field) == ("row 0", "language")


def test_a_language_column_is_only_read_for_captions_and_vqa(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "text": Value("string"), "language": Value("string")})
    rows = {"image": [{"bytes": _png((8, 6)), "path": None}], "text": ["Ausfahrt"], "language": ["de"]}
    (ex,) = _read(ctx, tmp_path, rows, features, task="ocr")  # a default column: not used
    assert (ex.text, ex.language) == ("Ausfahrt", None)
    with pytest.raises(DataError, match="a language is only for caption and vqa examples, not ocr") as err:
        _read(ctx, tmp_path / "x", rows, features, task="ocr", columns={"language": "language"})
    assert err.value.field == "language"


def test_new_task_configuration_errors_name_the_field(ctx: SourceContext, tmp_path: Path) -> None:
    features = Features({"image": ImageFeature(), "phrase": Value("string"), "bbox": List(Value("float32"))})
    path = _save(
        tmp_path,
        {"image": [{"bytes": _png((4, 4)), "path": None}], "phrase": ["x"], "bbox": [None]},
        features,
    )
    cases = [
        ({"task": "ocr"}, "text"),
        ({"task": "segmentation"}, "polygons"),
        ({"task": "grounding", "columns": {"phrase": "expr"}}, "phrase"),
        ({"task": "grounding", "columns": {"bboxes": "boxes"}}, "bboxes"),
        ({"task": "grounding", "columns": {"bbox": "bbox", "bboxes": "bbox"}}, "columns"),
        ({"task": "grounding", "columns": {"bbox": "phrase"}}, "bbox"),  # a phrase is no box
    ]
    for params, field in cases:
        call = read_hf_dataset(ctx, path=path, from_disk=True, image_cache=tmp_path / "c", **params)
        with pytest.raises(DataError) as err:
            list(call)
        assert err.value.field == field, params
    no_box = _save(
        tmp_path / "nobox",
        {"image": [{"bytes": _png((4, 4)), "path": None}], "phrase": ["x"]},
        Features({"image": ImageFeature(), "phrase": Value("string")}),
    )
    with pytest.raises(DataError, match="dataset has no box column \\('bboxes' or 'bbox'\\)") as err:
        list(read_hf_dataset(ctx, path=no_box, from_disk=True, task="grounding"))
    assert err.value.field == "bbox"


@pytest.mark.parametrize(
    ("task", "column", "feature", "value", "field", "match"),
    [
        ("grounding", "phrase", Value("string"), " ", "phrase", "expected a non-empty phrase"),
        ("grounding", "bbox", List(Value("float32")), [3, 0, 1, 1], "bbox", "x2 < x1"),
        ("grounding", "bboxes", List(List(Value("float32"))), [[0, 0, 1]], "bboxes", "four numbers"),
        (
            "segmentation",
            "polygons",
            List(List(Value("float32"))),
            [[0, 0, 1, 0, 1]],
            "polygons",
            "even-length",
        ),
        (
            "ocr",
            "regions",
            List({"text": Value("string"), "quad": List(Value("float32"))}),
            [{"text": "a", "quad": [0, 0, 1, 1]}],
            "regions",
            "8 finite numbers",
        ),
    ],
)
def test_bad_new_task_rows_name_row_and_field(
    ctx, tmp_path: Path, task, column, feature, value, field, match
) -> None:
    base = {
        "grounding": {"phrase": (Value("string"), "a cat"), "bbox": (List(Value("float32")), [0, 0, 1, 1])},
        "segmentation": {"phrase": (Value("string"), "a cat")},
        "ocr": {"text": (Value("string"), "hi")},
    }[task]
    spec = {**base, column: (feature, value)}
    if column == "bboxes":
        del spec["bbox"]
    features = Features({"image": ImageFeature(), **{k: f for k, (f, _) in spec.items()}})
    rows = {"image": [{"bytes": _png((4, 4)), "path": None}], **{k: [v] for k, (_, v) in spec.items()}}
    with pytest.raises(DataError, match=match) as err:
        _read(ctx, tmp_path, rows, features, task=task)
    assert (err.value.record, err.value.field) == ("row 0", field)


# ---------------------------------------------------------------------------- the tables


def test_default_columns_are_the_image_and_every_tasks_columns() -> None:
    """DEFAULT_COLUMNS is built from the task table: the same columns as when it was written out."""
    assert DEFAULT_COLUMNS == {
        "image": "image",
        "label": "label",
        "captions": "captions",
        "caption": "caption",
        "question": "question",
        "answers": "answers",
        "answer": "answer",
        "answer_type": "answer_type",
        "objects": "objects",
        "bbox": "bbox",
        "category": "category",
        "bboxes": "bboxes",
        "phrase": "phrase",
        "polygons": "polygons",
        "text": "text",
        "regions": "regions",
        "language": "language",
        "level": "level",
        "categories": "categories",
        "region": "region",
    }


def test_every_task_has_a_row_reader() -> None:
    assert set(hf_dataset._ROWS) == set(tasks.names())
    assert hf_dataset.CAPTION_FIELD == "caption"  # Example.caption: a JSONL key and a default column


def test_json_values_nested_past_the_bound_are_refused(ctx: SourceContext, tmp_path: Path) -> None:
    # a Json column holds any JSON: a value of a thousand levels made the error message's repr a
    # RecursionError, and seventy levels printed every bracket
    deep: object = "a shape"
    for _ in range(70):
        deep = [deep]
    image = {"bytes": _png((4, 4)), "path": None}
    features = Features({"image": ImageFeature(), "caption": Json()})
    path = _save(tmp_path / "json", {"image": [image, image], "caption": ["a shape", deep]}, features)
    with pytest.raises(DataError) as err:
        list(read_hf_dataset(ctx, path=path, from_disk=True, task="caption", image_cache=tmp_path / "c"))
    assert str(err.value) == (
        f"file {path} [train], record row 1: nesting deeper than 64 levels; an annotation nests a handful"
    )
