"""coco_detection's other tasks (region_proposal, region_to_category, region_to_segmentation,
open_vocabulary_detection): exact Examples from a tiny COCO instances file, skips, repairs, errors."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.records import Example, Object
from pipeline.sources import SourceContext
from pipeline.sources.coco_detection import read_coco_detection

RLE = {"size": [24, 32], "counts": "PPYo0"}
COCO: dict[str, Any] = {
    "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 5, "name": "bird"}],
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 32, "height": 24},
        {"id": 20, "file_name": "b.png", "width": 32, "height": 24},  # no annotation
        {"id": 30, "file_name": "c.jpg", "width": 32, "height": 24},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 2, 10, 5], "area": 42.5,
         "segmentation": [[1, 2, 11, 2, 11, 7]]},
        # overhangs the image (clipped); an RLE mask
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 10, 20, 20], "segmentation": RLE},
        {"id": 3, "image_id": 30, "category_id": 3, "bbox": [0, 0, 40, 20], "iscrowd": 1, "area": 500,
         "segmentation": RLE},
        # a degenerate polygon beside a good one
        {"id": 4, "image_id": 30, "category_id": 1, "bbox": [4.5, 3, 2, 2],
         "segmentation": [[4.5, 3, 6.5, 3, 6.5, 5], [1, 1, 2, 2]]},
        # wholly outside the image: no area left
        {"id": 5, "image_id": 30, "category_id": 1, "bbox": [40, 30, 5, 5],
         "segmentation": [[40, 30, 45, 30, 45, 35]]},
    ],
}  # fmt: skip
CAT_10 = (1.0, 2.0, 11.0, 7.0)
DOG_10 = (20.0, 10.0, 32.0, 24.0)  # clipped
CAT_30 = (4.5, 3.0, 6.5, 5.0)


@pytest.fixture
def coco(tmp_path: Path, make_image, write_json):
    images = tmp_path / "images"
    for name in ("a.jpg", "b.png", "c.jpg"):
        make_image(name, root=images)

    def read(ctx: SourceContext, data: dict[str, Any] | None = None, **params: Any) -> list[Example]:
        anns = write_json("anns/instances.json", data if data is not None else COCO)
        return list(read_coco_detection(ctx, annotations=anns, images=images, **params))

    read.images = images
    read.file = tmp_path / "anns/instances.json"
    return read


def _common(task: str) -> dict[str, Any]:
    return {"source": "src", "split": "train", "task": task, "image_size": (32, 24)}


def test_region_proposal_one_example_per_image(ctx: SourceContext, coco) -> None:
    root, c = coco.images, _common("region_proposal")
    assert coco(ctx, task="region_proposal") == [
        Example(
            id="10",
            image=str(root / "a.jpg"),
            objects=[Object(CAT_10, "cat", 42.5), Object(DOG_10, "dog")],
            **c,
        ),
        Example(id="20", image=str(root / "b.png"), **c),
        Example(
            id="30",
            image=str(root / "c.jpg"),
            objects=[Object(CAT_30, "cat")],
            crowd=[Object((0.0, 0.0, 32.0, 20.0), "dog", 500.0)],
            **c,
        ),
    ]
    t = ctx.tally
    assert t.repaired == {"box clipped": 1, "zero-area box dropped": 1, "crowd region excluded": 1}
    assert not t.skipped and t.examples == 3


def test_region_proposal_keeps_negatives_as_detection_does(ctx: SourceContext, coco) -> None:
    assert [e.id for e in coco(ctx, task="region_proposal", keep_negatives=False)] == ["10", "30"]
    assert ctx.tally.repaired["negative image excluded"] == 1


def test_region_to_category_one_example_per_annotation(ctx: SourceContext, coco) -> None:
    root, c = coco.images, _common("region_to_category")
    vocab = ["cat", "dog", "bird"]  # in category id order
    assert coco(ctx, task="region_to_category") == [
        Example(id="10/1", image=str(root / "a.jpg"), region=CAT_10, label="cat", categories=vocab, **c),
        Example(id="10/2", image=str(root / "a.jpg"), region=DOG_10, label="dog", categories=vocab, **c),
        Example(id="30/4", image=str(root / "c.jpg"), region=CAT_30, label="cat", categories=vocab, **c),
    ]
    t = ctx.tally
    assert t.skipped == {"no usable box": 1}  # annotation 5
    assert t.repaired == {
        "box clipped": 1,
        "zero-area box dropped": 1,
        "crowd region excluded": 1,
        "negative image excluded": 1,  # image 20 has no annotation to ask about
    }


def test_region_to_segmentation_needs_polygons(ctx: SourceContext, coco) -> None:
    root, c = coco.images, _common("region_to_segmentation")
    assert coco(ctx, task="region_to_segmentation") == [
        Example(
            id="10/1",
            image=str(root / "a.jpg"),
            region=CAT_10,
            polygons=[[1.0, 2.0, 11.0, 2.0, 11.0, 7.0]],
            objects=[Object(CAT_10, "cat", 42.5)],
            **c,
        ),
        Example(
            id="30/4",
            image=str(root / "c.jpg"),
            region=CAT_30,
            polygons=[[4.5, 3.0, 6.5, 3.0, 6.5, 5.0]],
            objects=[Object(CAT_30, "cat")],
            **c,
        ),
    ]
    t = ctx.tally
    assert t.skipped == {"RLE mask (segmentation needs polygons)": 1, "no usable box": 1}
    assert t.repaired["degenerate polygon dropped"] == 1 and t.read["degenerate polygon dropped"] == 4


def test_region_to_segmentation_without_polygons_is_skipped(ctx: SourceContext, coco) -> None:
    data = copy.deepcopy(COCO)
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]  # only a degenerate one
    del data["annotations"][3]["segmentation"]
    assert [e.id for e in coco(ctx, data, task="region_to_segmentation")] == []
    assert ctx.tally.skipped == {
        "annotation without polygons": 2,
        "RLE mask (segmentation needs polygons)": 1,
        "no usable box": 1,
    }


def test_open_vocabulary_one_example_per_image_and_present_category(ctx: SourceContext, coco) -> None:
    root, c = coco.images, _common("open_vocabulary_detection")
    assert coco(ctx, task="open_vocabulary_detection") == [
        Example(
            id="10/1",
            image=str(root / "a.jpg"),
            categories=["cat"],
            objects=[Object(CAT_10, "cat", 42.5)],
            **c,
        ),
        Example(
            id="10/3", image=str(root / "a.jpg"), categories=["dog"], objects=[Object(DOG_10, "dog")], **c
        ),
        # the dog of image 30 is a crowd: neither named nor a negative
        Example(
            id="30/1", image=str(root / "c.jpg"), categories=["cat"], objects=[Object(CAT_30, "cat")], **c
        ),
    ]
    t = ctx.tally
    assert t.repaired == {
        "box clipped": 1,
        "zero-area box dropped": 1,
        "crowd region excluded": 1,
        "negative image excluded": 1,
    }


def test_open_vocabulary_negatives_are_sampled_with_the_seed(ctx: SourceContext, coco) -> None:
    examples = coco(ctx, task="open_vocabulary_detection", negatives_per_image=1, seed=7)
    # image 20 has no annotation: one class of the three, drawn as the docstring says
    drawn = random.Random("7:20").sample([1, 3, 5], 1)[0]  # category id order
    ids = [e.id for e in examples]
    assert ids == ["10/1", "10/3", "10/5", f"20/{drawn}", "30/1", "30/5"]
    negatives = [e for e in examples if not e.objects]
    assert [(e.id, e.categories) for e in negatives if e.id.startswith("10")] == [("10/5", ["bird"])]
    assert all(len(e.categories) == 1 for e in examples)
    again = coco(
        SourceContext(name="src", split="train"),
        task="open_vocabulary_detection",
        negatives_per_image=1,
        seed=7,
    )
    assert [e.id for e in again] == ids
    # more negatives than absent classes: all of them
    many = coco(
        SourceContext(name="src", split="train"), task="open_vocabulary_detection", negatives_per_image=5
    )
    assert [e.id for e in many if e.id.startswith("20/")] == ["20/1", "20/3", "20/5"]
    # keep_negatives=False: no negative at all
    none = coco(
        SourceContext(name="src", split="train"),
        task="open_vocabulary_detection",
        negatives_per_image=1,
        keep_negatives=False,
    )
    assert [e.id for e in none] == ["10/1", "10/3", "30/1"]


def test_a_category_whose_boxes_all_dropped_is_not_a_negative(ctx: SourceContext, coco) -> None:
    data = copy.deepcopy(COCO)
    data["annotations"][3]["bbox"] = [50, 50, 2, 2]  # both cats of image 30 outside it
    ids = [e.id for e in coco(ctx, data, task="open_vocabulary_detection")]
    assert ids == ["10/1", "10/3"]
    assert ctx.tally.repaired["category without usable boxes excluded"] == 1


def test_unusable_images_are_counted_per_example(ctx: SourceContext, coco, bad_images) -> None:
    bad_images("garbage", "images/a.jpg")
    assert [e.id for e in coco(ctx, task="region_to_category")] == ["30/4"]
    assert ctx.tally.skipped == {"unreadable image": 2, "no usable box": 1}


def test_detection_is_unchanged_by_the_task_parameter(coco) -> None:
    a, b = SourceContext(name="src", split="train"), SourceContext(name="src", split="train")
    assert coco(a) == coco(b, task="detection")
    assert a.tally == b.tally


@pytest.mark.parametrize(
    ("params", "field", "match"),
    [
        (
            {"task": "caption"},
            "task",
            "unknown task 'caption'; coco_detection reads: detection, region_proposal",
        ),
        ({"task": "region_to_category", "negatives_per_image": 2}, "negatives_per_image", "open_vocabulary"),
        ({"task": "open_vocabulary_detection", "negatives_per_image": -1}, "negatives_per_image", ">= 0"),
        ({"task": "open_vocabulary_detection", "negatives_per_image": True}, "negatives_per_image", ">= 0"),
    ],
)
def test_parameter_errors_name_the_file_and_field(ctx, coco, params, field: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        coco(ctx, **params)
    assert err.value.field == field and err.value.file == str(coco.file)


def test_duplicate_annotation_ids_are_an_error_for_per_annotation_tasks(ctx, coco) -> None:
    data = copy.deepcopy(COCO)
    data["annotations"][1]["id"] = 1
    assert len(coco(ctx, data)) == 3  # detection has no use for annotation ids
    with pytest.raises(DataError, match="duplicate annotation id") as err:
        coco(ctx, data, task="region_to_category")
    assert (err.value.record, err.value.field) == ("annotation 1", "id")


def test_a_malformed_segmentation_names_the_annotation(ctx, coco) -> None:
    data = copy.deepcopy(COCO)
    data["annotations"][0]["segmentation"] = [[1, 2, "x", 4, 5, 6]]
    assert len(coco(ctx, data, task="region_to_category")) == 3  # masks are read for segmentation only
    with pytest.raises(DataError, match="polygon 0") as err:
        coco(ctx, data, task="region_to_segmentation")
    assert (err.value.file, err.value.record, err.value.field) == (
        str(coco.file),
        "annotation 1",
        "segmentation",
    )
