"""coco_detection: exact Examples from a tiny COCO file, repairs, skips and errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext, get
from pipeline.sources.coco_detection import read_coco_detection

COCO: dict[str, Any] = {
    # categories deliberately not in id order: Example.categories follows the ids
    "categories": [{"id": 3, "name": "dog", "supercategory": "animal"}, {"id": 1, "name": "cat"}],
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 32, "height": 24},
        {"id": 20, "file_name": "sub/b.png", "width": 32, "height": 24},
        {"id": 30, "file_name": "c.jpg"},
    ],
    "annotations": [
        # areas (evaluation only): kept where a positive number, else None (the box's stands in)
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0, "area": 42.5},
        {
            "id": 2,
            "image_id": 10,
            "category_id": 3,
            "bbox": [20, 10, 20, 20],
            "iscrowd": 0,
            "area": "x",
        },  # overhangs
        {
            "id": 3,
            "image_id": 30,
            "category_id": 3,
            "bbox": [0, 0, 40, 20],
            "iscrowd": 1,
            "area": 500,
        },  # crowd
        {"id": 4, "image_id": 30, "category_id": 1, "bbox": [4.5, 3, 2, 2]},
    ],
}


@pytest.fixture
def coco(tmp_path: Path, make_image, write_json):
    """Write images and a COCO file; return a function reading it (with optional JSON edits)."""
    images = tmp_path / "images"
    make_image("a.jpg", root=images)
    make_image("sub/b.png", root=images)
    make_image("c.jpg", root=images)

    def read(ctx: SourceContext, data: dict[str, Any] | None = None, **params: Any) -> list[Example]:
        anns = write_json("anns/instances.json", data if data is not None else COCO)
        return list(read_coco_detection(ctx, annotations=anns, images=images, **params))

    read.images = images
    return read


def test_happy_path_exact_examples(ctx: SourceContext, coco) -> None:
    examples = coco(ctx)
    root = coco.images
    common = {"source": "src", "split": "train", "task": "detection", "categories": ["cat", "dog"]}
    assert examples == [
        Example(
            id="10",
            image=str(root / "a.jpg"),
            image_size=(32, 24),
            objects=[Object((1.0, 2.0, 11.0, 7.0), "cat", 42.5), Object((20.0, 10.0, 32.0, 24.0), "dog")],
            **common,
        ),
        Example(id="20", image=str(root / "sub" / "b.png"), image_size=(32, 24), objects=[], **common),
        Example(
            id="30",
            image=str(root / "c.jpg"),
            image_size=(32, 24),
            objects=[Object((4.5, 3.0, 6.5, 5.0), "cat")],
            crowd=[Object((0.0, 0.0, 32.0, 20.0), "dog", 500.0)],  # clipped, not counted as a repair
            **common,
        ),
    ]
    assert ctx.tally.examples == 3
    assert ctx.tally.skipped == {}
    assert ctx.tally.repaired == {"box clipped": 1, "crowd region excluded": 1}


def test_registered_under_its_name() -> None:
    assert get("coco_detection") is read_coco_detection


def test_negatives_can_be_excluded(ctx: SourceContext, coco) -> None:
    assert [e.id for e in coco(ctx, keep_negatives=False)] == ["10", "30"]
    assert ctx.tally.repaired["negative image excluded"] == 1
    assert ctx.tally.skipped == {}  # a choice, not bad data: never counts against the skip threshold


def test_crowd_only_and_zero_area_only_images_are_excluded(ctx: SourceContext, coco) -> None:
    data = copy.deepcopy(COCO)
    data["annotations"] = [
        {"id": 3, "image_id": 30, "category_id": 3, "bbox": [0, 0, 30, 20], "iscrowd": 1},
        {"id": 5, "image_id": 10, "category_id": 3, "bbox": [40, 5, 3, 3]},  # entirely right of the image
        {"id": 6, "image_id": 10, "category_id": 3, "bbox": [5, 5, 0, 3]},  # zero width
    ]
    assert [e.id for e in coco(ctx, data)] == ["20"]
    assert ctx.tally.repaired == {
        "crowd region excluded": 1,
        "zero-area box dropped": 2,
        "image without usable boxes excluded": 2,
    }


def test_declared_size_mismatch_trusts_the_real_image(ctx: SourceContext, coco) -> None:
    data = copy.deepcopy(COCO)
    data["images"][0].update(width=64, height=48)
    data["annotations"][0]["bbox"] = [30, 20, 20, 20]  # valid in the declared size, clipped in the real one
    ex = coco(ctx, data)[0]
    assert ex.image_size == (32, 24)
    assert ex.objects[0] == Object((30.0, 20.0, 32.0, 24.0), "cat", 42.5)  # the annotation's area stays
    assert ctx.tally.repaired["image size differs from annotation"] == 1


def test_exif_rotation_applies_before_clipping(ctx: SourceContext, coco, make_image) -> None:
    make_image("a.jpg", root=coco.images, orientation=6)  # stored 32x24, shown 24x32
    data = copy.deepcopy(COCO)
    data["images"][0].update(width=24, height=32)
    data["annotations"] = [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [2, 20, 10, 8]}]  # y2=28 > 24
    ex = coco(ctx, data)[0]
    assert ex.image_size == (24, 32)
    assert ex.objects == [Object((2.0, 20.0, 12.0, 28.0), "cat")]
    assert "box clipped" not in ctx.tally.repaired
    assert "image size differs from annotation" not in ctx.tally.repaired
    assert ctx.tally.repaired["EXIF orientation applied"] == 1


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "missing image"),
        ("garbage", "unreadable image"),
        ("truncated", "truncated image"),
        ("big", "decompression bomb"),
    ],
)
def test_bad_image_files_are_skipped_and_counted(ctx: SourceContext, coco, bad_images, kind, reason) -> None:
    ctx.max_image_pixels = 100 * 100
    if kind == "missing":
        (coco.images / "a.jpg").unlink()
    else:
        bad_images(kind, "images/a.jpg")
    assert [e.id for e in coco(ctx)] == ["20", "30"]
    assert ctx.tally.skipped == {reason: 1}
    assert ctx.tally.examples == 2


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_non_rgb_images_are_kept_and_counted(ctx: SourceContext, coco, make_image, mode) -> None:
    make_image("a.jpg" if mode in ("L", "CMYK") else "a.png", root=coco.images, mode=mode)
    data = copy.deepcopy(COCO)
    data["images"][0]["file_name"] = "a.jpg" if mode in ("L", "CMYK") else "a.png"
    assert len(coco(ctx, data)) == 3
    assert ctx.tally.repaired[f"{mode} converted to RGB"] == 1


def _edit(path: tuple, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(COCO)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "record", "field"),
    [
        (_edit(("annotations", 1, "bbox"), [20, 10, -5, 20]), "annotation 2", "bbox"),  # negative width
        (_edit(("annotations", 1, "bbox"), [20, 10, 5, -1]), "annotation 2", "bbox"),  # negative height
        (_edit(("annotations", 0, "category_id"), 99), "annotation 1", "category_id"),
        (_edit(("annotations", 0, "image_id"), 999), "annotation 1", "image_id"),
        (_edit(("images", 1, "id"), 10), "image 10", "id"),  # duplicate image id
        (_edit(("categories", 1, "id"), 3), "category 3", "id"),  # duplicate category id
        (_edit(("images", 0, "file_name"), "../outside.jpg"), "image 10", "file_name"),
        (_edit(("images", 0, "file_name"), "/etc/passwd"), "image 10", "file_name"),
        ({k: v for k, v in COCO.items() if k != "categories"}, None, "categories"),
        (_edit(("annotations", 0), {"id": 1, "image_id": 10, "category_id": 1}), "annotation 1", "bbox"),
    ],
)
def test_bad_annotations_raise_with_file_record_field(ctx, coco, data, record, field) -> None:
    with pytest.raises(DataError) as err:
        coco(ctx, data)
    message = str(err.value)
    assert "instances.json" in message
    assert f"field {field!r}" in message
    if record is not None:
        assert record in message
    assert err.value.field == field


def test_json_that_does_not_parse_names_line_and_column(ctx, tmp_path: Path) -> None:
    anns = tmp_path / "instances.json"
    anns.write_text('{"images": [],\n "annotations": [}')
    with pytest.raises(DataError, match=r"instances\.json.*line 2 column 18"):
        list(read_coco_detection(ctx, annotations=anns, images=tmp_path))
