"""visual_genome: region_descriptions.json and image_data.json in VG 1.2's exact layout ->
dense_region_caption and region_to_description Examples; duplicates, repairs, skips, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext, get
from pipeline.sources.visual_genome import read_visual_genome

URL = "https://cs.stanford.edu/people/rak248"
# image_data.json: a list, keys as VG 1.2 writes them (image 3 declares another size than its file)
IMAGE_DATA = [
    {
        "width": 32,
        "url": f"{URL}/VG_100K_2/1.jpg",
        "height": 24,
        "image_id": 1,
        "coco_id": None,
        "flickr_id": None,
    },
    {
        "width": 32,
        "url": f"{URL}/VG_100K/2.jpg",
        "height": 24,
        "image_id": 2,
        "coco_id": 139,
        "flickr_id": None,
    },
    {
        "width": 40,
        "url": f"{URL}/VG_100K/3.jpg",
        "height": 30,
        "image_id": 3,
        "coco_id": None,
        "flickr_id": 7,
    },
]
# region_descriptions.json: a list of {"regions": [...], "id": image id}
REGIONS = [
    {"regions": [
        {"region_id": 1382, "width": 10, "height": 5, "image_id": 1, "phrase": "the clock is green in colour",
         "y": 2, "x": 1},
        {"region_id": 1383, "width": 20, "height": 20, "image_id": 1, "phrase": "shade is along the street ",
         "y": 10, "x": 20},  # past the image: clipped
        {"region_id": 1384, "width": 4, "height": 4, "image_id": 1, "phrase": " ", "y": 0, "x": 0},  # blank
        {"region_id": 1385, "width": 10, "height": 5, "image_id": 1,
         "phrase": "The clock is  green in colour", "y": 2, "x": 1},  # the same box and words as 1382
    ], "id": 1},
    {"regions": [
        {"region_id": 5, "width": 5, "height": 5, "image_id": 2, "phrase": "far away", "y": 30, "x": 40},
    ], "id": 2},
    {"regions": [
        {"region_id": 7, "width": 8, "height": 8, "image_id": 3, "phrase": "a man", "y": 0, "x": 0},
    ], "id": 3},
]  # fmt: skip
CLOCK = (1.0, 2.0, 11.0, 7.0)
SHADE = (20.0, 10.0, 32.0, 24.0)
MAN = (0.0, 0.0, 8.0, 8.0)


@pytest.fixture
def vg(tmp_path: Path, make_image):
    """VG's download in tmp_path/vg: the two JSON files and images/VG_100K{,_2}/."""
    root = tmp_path / "vg"
    for rel in ("VG_100K_2/1.jpg", "VG_100K/2.jpg", "VG_100K/3.jpg"):
        make_image(rel, root=root / "images")

    def read(ctx: SourceContext, regions: Any = None, image_data: Any = None, **params: Any) -> list[Example]:
        (root / "region_descriptions.json").write_text(json.dumps(REGIONS if regions is None else regions))
        (root / "image_data.json").write_text(json.dumps(IMAGE_DATA if image_data is None else image_data))
        params.setdefault("images", root / "images")
        return list(
            read_visual_genome(
                ctx,
                region_descriptions=root / "region_descriptions.json",
                image_data=root / "image_data.json",
                **params,
            )
        )

    read.root = root
    return read


def _image(vg, rel: str) -> str:
    return str(vg.root / "images" / rel)


def test_registered_under_its_name() -> None:
    assert get("visual_genome") is read_visual_genome


def test_dense_region_caption_one_example_per_image(ctx: SourceContext, vg) -> None:
    common = {"source": "src", "split": "train", "task": "dense_region_caption", "image_size": (32, 24)}
    assert vg(ctx) == [
        Example(
            id="1",
            image=_image(vg, "VG_100K_2/1.jpg"),
            objects=[
                Object(CLOCK, "the clock is green in colour"),
                Object(SHADE, "shade is along the street"),
                Object(CLOCK, "The clock is  green in colour"),  # near-duplicates are kept by default
            ],
            **common,
        ),
        Example(id="3", image=_image(vg, "VG_100K/3.jpg"), objects=[Object(MAN, "a man")], **common),
    ]
    t = ctx.tally
    assert t.repaired == {
        "empty description dropped": 1,
        "box clipped": 1,
        "zero-area box dropped": 1,
        "image without usable regions excluded": 1,  # image 2: its one region lies outside it
        "image size differs from annotation": 1,  # image 3
    }
    assert t.read["empty description dropped"] == 6 and not t.skipped


def test_duplicates_can_be_dropped(ctx: SourceContext, vg) -> None:
    first = vg(ctx, drop_duplicates=True)[0]
    assert [o.category for o in first.objects] == [
        "the clock is green in colour",
        "shade is along the street",
    ]
    assert ctx.tally.repaired["duplicate region dropped"] == 1


def test_region_to_description_one_example_per_region(ctx: SourceContext, vg) -> None:
    common = {"source": "src", "split": "train", "task": "region_to_description", "image_size": (32, 24)}
    one = _image(vg, "VG_100K_2/1.jpg")

    def ex(id: str, image: str, region: tuple, phrase: str) -> Example:
        return Example(id=id, image=image, region=region, caption=phrase, captions=[phrase], **common)

    assert vg(ctx, task="region_to_description") == [
        ex("1/1382", one, CLOCK, "the clock is green in colour"),
        ex("1/1383", one, SHADE, "shade is along the street"),
        ex("1/1385", one, CLOCK, "The clock is  green in colour"),
        ex("3/7", _image(vg, "VG_100K/3.jpg"), MAN, "a man"),
    ]
    t = ctx.tally
    assert t.skipped == {"empty description": 1, "no usable box": 1}
    assert t.repaired == {
        "box clipped": 1,
        "zero-area box dropped": 1,
        "image size differs from annotation": 1,
    }
    assert [
        e.id
        for e in vg(
            SourceContext(name="s", split="train"), task="region_to_description", drop_duplicates=True
        )
    ] == [
        "1/1382",
        "1/1383",
        "3/7",
    ]


def test_a_flat_images_folder(ctx: SourceContext, vg, make_image) -> None:
    flat = vg.root / "flat"
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        make_image(name, root=flat)
    assert [e.image for e in vg(ctx, images=flat)] == [str(flat / "1.jpg"), str(flat / "3.jpg")]


def test_a_split_file_picks_the_images(ctx: SourceContext, vg) -> None:
    splits = vg.root / "densecap_splits.json"
    splits.write_text(json.dumps({"train": [3, 2], "val": [1], "test": []}))
    assert [e.id for e in vg(ctx, image_ids=splits)] == ["3"]  # in image_data.json's order
    assert [e.id for e in vg(ctx, image_ids=splits, id_split="val")] == ["1"]
    listed = vg.root / "ids.json"
    listed.write_text(json.dumps([1]))
    assert next(e.id for e in vg(ctx, image_ids=listed, task="region_to_description")) == "1/1382"
    with pytest.raises(DataError, match="no split 'testA'") as err:
        vg(ctx, image_ids=splits, id_split="testA")
    assert (err.value.file, err.value.field) == (str(splits), "id_split")
    splits.write_text(json.dumps({"train": [1, 99]}))
    with pytest.raises(DataError, match=r"1 image id\(s\) not in image_data.json, e.g. \[99\]"):
        vg(ctx, image_ids=splits)


def test_unusable_images_are_skipped_per_example(ctx: SourceContext, vg, bad_images) -> None:
    bad_images("garbage", "vg/images/VG_100K_2/1.jpg")
    assert [e.id for e in vg(ctx, task="region_to_description")] == ["3/7"]
    assert ctx.tally.skipped == {"empty description": 1, "unreadable image": 3, "no usable box": 1}


def _edit(path: str, value: Any) -> list[dict[str, Any]]:
    regions = copy.deepcopy(REGIONS)
    entry, key = path.split(".")
    regions[0]["regions"][int(entry)][key] = value
    return regions


@pytest.mark.parametrize(
    ("regions", "record", "field", "match"),
    [
        (_edit("0.image_id", 2), "region 1382", "image_id", "differs from its entry's id 1"),
        (_edit("0.phrase", None), "region 1382", "phrase", "must be a string"),
        (_edit("0.width", -3), "region 1382", "x, y, width, height", "negative width"),
        (_edit("0.x", "1"), "region 1382", "x, y, width, height", "four numbers"),
        (_edit("1.region_id", 1382), "region 1382", "region_id", "duplicate region id"),
        ([*REGIONS, {"regions": [], "id": 9}], "image 9", "id", "not in image_data.json"),
        ([*REGIONS, {"regions": [], "id": 1}], "image 1", "id", "duplicate image id"),
        ([{"regions": {}, "id": 1}], "image 1", "regions", "must be a list"),
        ([{"id": 1}], "image 1", "regions", "required key 'regions'"),
    ],
)
def test_bad_regions_name_file_record_and_field(
    ctx, vg, regions, record: str, field: str, match: str
) -> None:
    with pytest.raises(DataError, match=match) as err:
        vg(ctx, regions)
    assert (err.value.file, err.value.record, err.value.field) == (
        str(vg.root / "region_descriptions.json"),
        record,
        field,
    )


def test_bad_files_and_parameters(ctx, vg) -> None:
    with pytest.raises(DataError, match="top level must be a list") as err:
        vg(ctx, {"regions": []})
    assert err.value.file == str(vg.root / "region_descriptions.json")
    with pytest.raises(DataError, match="unknown task 'caption'; visual_genome reads") as err:
        vg(ctx, task="caption")
    assert err.value.field == "task"
    escape = copy.deepcopy(IMAGE_DATA)
    escape[0]["url"] = f"{URL}/elsewhere/.."
    with pytest.raises(DataError, match="escapes") as err:
        vg(ctx, image_data=escape)
    assert (err.value.record, err.value.field) == ("image 1", "url")
    (vg.root / "image_data.json").write_text(json.dumps(IMAGE_DATA))
    (vg.root / "region_descriptions.json").write_text("[{")
    with pytest.raises(DataError, match="invalid JSON"):
        list(
            read_visual_genome(
                ctx,
                region_descriptions=vg.root / "region_descriptions.json",
                image_data=vg.root / "image_data.json",
                images=vg.root / "images",
            )
        )
