"""The new sources through the build: Visual Genome and COCO instances read for the new tasks,
rendered for Florence-2, and refused for PaliGemma where it has no prompt for the task."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from pipeline.data.build import build, print_stats
from pipeline.errors import DataError
from pipeline.recipe import load_recipe


def _recipe(tmp_path: Path, root: Path, family: str, sources: str) -> Path:
    recipe = tmp_path / f"{family}.yaml"
    recipe.write_text(
        f"name: t\nmodel: {{family: {family}, id: null}}\ndata:\n  root: {root}\n"
        f"  cache_dir: {tmp_path / 'cache'}\n  sources:\n{sources}"
    )
    return recipe


@pytest.fixture
def vg_root(tmp_path: Path) -> Path:
    root = tmp_path / "vg"
    (root / "images" / "VG_100K").mkdir(parents=True)
    Image.new("RGB", (100, 50), (90, 90, 90)).save(root / "images" / "VG_100K" / "1.jpg")
    url = "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg"
    info = {"width": 100, "url": url, "height": 50, "image_id": 1, "coco_id": None, "flickr_id": None}
    (root / "image_data.json").write_text(json.dumps([info]))
    regions = [
        {"region_id": 11, "width": 50, "height": 50, "image_id": 1, "phrase": "a grey wall", "y": 0, "x": 0},
        {"region_id": 12, "width": 20, "height": 10, "image_id": 1, "phrase": "a window ", "y": 5, "x": 60},
    ]
    (root / "region_descriptions.json").write_text(json.dumps([{"regions": regions, "id": 1}]))
    return root


_VG = """    - name: vg
      format: visual_genome
      options: {{region_descriptions: region_descriptions.json, image_data: image_data.json, images: images}}
      splits: {{train: {{task: {task}}}}}
"""


def test_visual_genome_builds_for_florence2(tmp_path: Path, vg_root: Path) -> None:
    sources = _VG.format(task="dense_region_caption") + _VG.replace("name: vg", "name: vg_regions").format(
        task="region_to_description"
    )
    rows = build(load_recipe(_recipe(tmp_path, vg_root, "florence2", sources)), progress=False).load()[
        "train"
    ]
    by_id = {(r["source"], r["id"]): r for r in rows.to_list()}
    dense = by_id[("vg", "1")]
    assert (dense["task"], dense["prompt"]) == ("dense_region_caption", "<DENSE_REGION_CAPTION>")
    assert (
        dense["target"]
        == "a grey wall<loc_0><loc_0><loc_500><loc_999>a window<loc_600><loc_100><loc_800><loc_300>"
    )
    region = by_id[("vg_regions", "1/12")]
    assert region["task"] == "region_to_description" and region["region"] == [60.0, 5.0, 80.0, 15.0]
    assert region["prompt"] == "<REGION_TO_DESCRIPTION><loc_600><loc_100><loc_800><loc_300>"
    assert region["target"] == "a window<loc_600><loc_100><loc_800><loc_300>"
    assert region["captions"] == ["a window"]
    assert sorted(by_id) == [("vg", "1"), ("vg_regions", "1/11"), ("vg_regions", "1/12")]


def test_visual_genome_is_refused_for_paligemma(tmp_path: Path, vg_root: Path) -> None:
    recipe = _recipe(tmp_path, vg_root, "paligemma", _VG.format(task="region_to_description"))
    with pytest.raises(DataError, match="region_to_description is not supported for PaliGemma") as err:
        build(load_recipe(recipe), progress=False)
    assert (err.value.record, err.value.field) == ("1/11", "task")


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (100, 50), (10, 20, 30)).save(root / "images" / "1.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50],
             "segmentation": [[0, 0, 50, 0, 50, 50]]},
            {"id": 8, "image_id": 1, "category_id": 2, "bbox": [60, 5, 20, 10],
             "segmentation": [[60, 5, 80, 5, 80, 15]]},
        ],
    }  # fmt: skip
    (root / "instances.json").write_text(json.dumps(coco))
    return root


_COCO = """    - name: {name}
      format: coco_detection
      options: {{task: {task}{extra}}}
      splits: {{train: {{annotations: instances.json, images: images}}}}
"""


def test_coco_instances_build_the_new_tasks_for_florence2(tmp_path: Path, coco_root: Path) -> None:
    sources = "".join(
        _COCO.format(name=task, task=task, extra=extra)
        for task, extra in (
            ("open_vocabulary_detection", ", negatives_per_image: 1, seed: 3"),
            ("region_to_category", ""),
            ("region_to_segmentation", ""),
            ("region_proposal", ""),
        )
    )
    rows = build(load_recipe(_recipe(tmp_path, coco_root, "florence2", sources)), progress=False).load()[
        "train"
    ]
    got = {(r["source"], r["id"]): (r["prompt"], r["target"]) for r in rows.to_list()}
    cat, dog = "<loc_0><loc_0><loc_500><loc_999>", "<loc_600><loc_100><loc_800><loc_300>"
    ovd = "<OPEN_VOCABULARY_DETECTION>"
    assert got == {
        ("open_vocabulary_detection", "1/1"): (f"{ovd}cat", f"cat{cat}"),
        ("open_vocabulary_detection", "1/2"): (f"{ovd}dog", f"dog{dog}"),
        ("open_vocabulary_detection", "1/3"): (f"{ovd}bird", ""),  # the sampled negative
        ("region_to_category", "1/7"): (f"<REGION_TO_CATEGORY>{cat}", f"cat{cat}"),
        ("region_to_category", "1/8"): (f"<REGION_TO_CATEGORY>{dog}", f"dog{dog}"),
        ("region_to_segmentation", "1/7"): (
            f"<REGION_TO_SEGMENTATION>{cat}",
            "<loc_0><loc_0><loc_500><loc_0><loc_500><loc_999>",
        ),
        ("region_to_segmentation", "1/8"): (
            f"<REGION_TO_SEGMENTATION>{dog}",
            "<loc_600><loc_100><loc_800><loc_100><loc_800><loc_300>",
        ),
        ("region_proposal", "1"): ("<REGION_PROPOSAL>", cat + dog),
    }


def test_coco_region_to_category_is_refused_for_paligemma(tmp_path: Path, coco_root: Path) -> None:
    recipe = _recipe(
        tmp_path, coco_root, "paligemma", _COCO.format(name="c", task="region_to_category", extra="")
    )
    with pytest.raises(DataError, match="region_to_category is not supported for PaliGemma") as err:
        build(load_recipe(recipe), progress=False)
    assert (err.value.record, err.value.field) == ("1/7", "task")


def test_a_card_counts_a_readers_default_task_unless_it_names_the_other(tmp_path):
    from types import SimpleNamespace

    from pipeline.data.build import _card_key

    def src(fmt, **options):
        return SimpleNamespace(format=fmt, params=lambda split: options)

    assert _card_key(src("coco_detection"), "train") == "coco_detection"
    assert _card_key(src("coco_detection", task="detection"), "train") == "coco_detection"
    assert (
        _card_key(src("coco_detection", task="region_to_category"), "train")
        == "coco_detection:region_to_category"
    )
    assert _card_key(src("refcoco", task="grounding"), "train") == "refcoco"  # refcoco's default
    assert _card_key(src("jsonl"), "train") == "jsonl"


def test_polygon_tolerance_simplifies_the_target_and_keeps_the_outline(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (100, 50), (10, 20, 30)).save(root / "images" / "1.jpg")
    # a square traced point by point, as annotation tools write outlines, wobbling under a pixel
    traced = [0, 0, 10, 0.3, 20, 0, 30, 0.2, 40, 0, 40, 20, 40, 40, 20, 40, 0, 40, 0, 20]
    coco = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "tile"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "segmentation": [traced]}
        ],
    }  # fmt: skip
    (root / "instances.json").write_text(json.dumps(coco))
    source = _COCO.format(name="masks", task="region_to_segmentation", extra="")
    recipe = _recipe(tmp_path, root, "florence2", source)
    corners = "<loc_0><loc_0><loc_400><loc_0><loc_400><loc_800><loc_0><loc_800>"
    for tolerance, target, vertices in (
        (1.0, corners, {"tolerance": 1.0, "outline": 10, "target": 4}),
        (0.0, "<loc_0><loc_0><loc_100><loc_6><loc_200><loc_0><loc_300><loc_4><loc_400><loc_0>"
              "<loc_400><loc_400><loc_400><loc_800><loc_200><loc_800><loc_0><loc_800><loc_0><loc_400>", {}),
    ):  # fmt: skip
        result = build(load_recipe(recipe, [f"data.polygon_tolerance={tolerance}"]), progress=False)
        (row,) = result.load()["train"].to_list()
        assert row["target"] == target
        assert row["polygons"] == [[float(v) for v in traced]]  # scored against the source's outline
        assert result.stats.polygon_vertices == vertices
        out = io.StringIO()
        print_stats(result, Console(file=out, width=200))
        said = "polygon targets within 1 px of their outlines (data.polygon_tolerance): 10 vertices -> 4"
        assert (said in out.getvalue()) == bool(vertices)
