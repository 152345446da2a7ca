"""`uvft init` writes a recipe for a user's own data from its paths: each format found by what the
file holds, the validation namesakes paired, image folders found, a tenth carved where no split is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.demo import shapes
from pipeline.errors import UvftError
from pipeline.init_recipe import init_recipe
from pipeline.recipe import load_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shapes set as a user has it (COCO, VQAv2, ImageFolder), and a captions JSONL of their own
    whose image paths are relative to the data folder, not to the JSONL's."""
    root = tmp_path_factory.mktemp("user") / "data"
    shapes.generate(root, n_train=6, n_val=3, seed=4, progress=False)
    (root / "mine").mkdir()
    lines = [
        {"task": "caption", "image": f"images/train/{i:06d}.png", "caption": f"shape {i}"} for i in range(6)
    ]
    (root / "mine" / "captions_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def test_a_recipe_from_coco_vqav2_jsonl_and_an_image_folder(data: Path, tmp_path: Path):
    paths = [
        data / "annotations/instances_train.json",
        data / "annotations/v2_OpenEnded_shapes_train_questions.json",
        data / "mine/captions_train.jsonl",
        data / "imagefolder",
    ]
    out, found = init_recipe(paths, tmp_path / "mine.yaml", family="florence2")
    assert [(s.name, s.format, list(s.splits)) for s in found] == [
        ("instances", "coco_detection", ["train", "val"]),
        ("vqav2_shapes", "vqav2", ["train", "val"]),
        ("captions", "jsonl", ["train"]),
        ("imagefolder", "image_folder", ["train", "val"]),
    ]
    raw = yaml.safe_load(out.read_text())
    assert raw["model"] == {"family": "florence2", "id": "microsoft/Florence-2-base"}
    assert raw["data"]["root"] == str(data) and raw["data"]["val_fraction"] == 0.1  # the JSONL has no val
    splits = {s["name"]: s["splits"] for s in raw["data"]["sources"]}
    assert splits["instances"]["val"] == {
        "annotations": "annotations/instances_val.json",
        "images": "images/val",  # the folder named for the file's split, not the first that fits
    }
    assert splits["vqav2_shapes"]["train"]["image_pattern"] == "{image_id:06d}.png"
    assert splits["captions"]["train"] == {"path": "mine/captions_train.jsonl", "images": "."}
    assert splits["imagefolder"] == {
        "train": {"root": "imagefolder/train"},
        "val": {"root": "imagefolder/val"},
    }
    assert "# A recipe for your own data" in out.read_text()  # commented for the person who edits it
    recipe = load_recipe(out, ["model.id=null"])
    assert recipe.train.epochs == 3 and recipe.data.sources[0].format == "coco_detection"


def test_what_init_cannot_read_is_one_error(data: Path, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(UvftError, match=r"notes\.txt: not a data set uvft knows"):
        init_recipe([notes], tmp_path / "r.yaml")
    with pytest.raises(UvftError, match="no such file or folder"):
        init_recipe([tmp_path / "nothere.json"], tmp_path / "r.yaml")
    with pytest.raises(UvftError, match="holds one folder of images per class"):
        init_recipe([data / "annotations"], tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("kept")
    with pytest.raises(UvftError, match="exists: choose another file, or pass --force"):
        init_recipe([data / "imagefolder"], tmp_path / "r.yaml")
    assert (tmp_path / "r.yaml").read_text() == "kept"


def test_uvft_init_prints_what_it_found(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "r.yaml"
    assert cli.main(["init", str(data / "annotations/captions_train.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "captions: coco_captions (COCO captions, 30 annotations); splits: train, val"
    assert printed[1] == f"wrote {out}: check it with `uvft check {out}`, then `uvft finetune {out}`"


def test_a_json_file_nested_past_the_readers_bound_is_refused_by_name(tmp_path: Path):
    # init read JSON with json.loads, which raised RecursionError (a traceback) past ~1000 levels
    path = tmp_path / "deep.json"
    path.write_text('{"annotations": ' + "[" * 5000 + "]" * 5000 + "}")  # the 64th "[" is at 16 + 63
    with pytest.raises(UvftError) as err:
        init_recipe([path], tmp_path / "deep.yaml")
    assert str(err.value) == (
        f"file {path}: nesting deeper than 64 levels at byte offset 79; an annotation file nests a handful "
        "(COCO's: 5)"
    )
