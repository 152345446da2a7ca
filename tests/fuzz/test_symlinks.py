"""Symlinks in every reader: an image that is a symlink out of its dataset's folder, an image that
is a symlink loop, and an annotation file (or dataset folder) that is a symlink loop are refused,
each as that reader refuses a path outside its root: a DataError naming the file, the record and
the field where an annotation names the path, a counted skip where image_folder found it by
listing a folder. Never read, never an OSError, never a loop read again and again."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.demo import shapes
from pipeline.errors import DataError
from pipeline.sources import SourceContext, get

LOOP = "the path is a symlink loop: it never reaches a file"


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("symlinks") / "shapes"
    shapes.generate(root, n_train=3, n_val=1, max_shapes=1, seed=2, progress=False)
    # a refer-style refs file on the shapes' instances, and JSON rows for `datasets`
    coco = json.loads((root / "annotations/instances_train.json").read_text())
    refs = [
        {"ref_id": a["id"], "ann_id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"],
         "split": "train", "sentences": [{"sent": "the shape"}]}
        for a in coco["annotations"]
    ]  # fmt: skip
    (root / "annotations/refs.json").write_text(json.dumps(refs))
    rows = [{"file": img["file_name"], "caption": "a shape"} for img in coco["images"]]
    (root / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture
def data(shapes_set: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    shutil.copytree(shapes_set, tmp_path / "data")
    shutil.copy(shapes_set / "images/train/000000.png", tmp_path / "secret.png")  # outside every root
    return tmp_path / "data"


@dataclass(frozen=True)
class Reader:
    params: Callable[[Path], dict[str, Any]]  # its parameters on the data folder
    annotation: str  # the parameter naming the file (or dataset folder) it reads
    named_in: str  # the parameter naming the file whose record names the first image
    record: str  # that record, and the field naming the image
    field: str


TRAIN = "images/train"
IMAGE = f"{TRAIN}/000000.png"  # the image the first record of every reader names


def _vqa(d: Path) -> dict[str, Any]:
    return {"questions": d / "annotations/v2_OpenEnded_shapes_train_questions.json",
            "annotations": d / "annotations/v2_shapes_train_annotations.json",
            "images": d / TRAIN, "image_pattern": "{image_id:06d}.png"}  # fmt: skip


READERS = {
    "coco_detection": Reader(
        lambda d: {"annotations": d / "annotations/instances_train.json", "images": d / TRAIN},
        "annotations", "annotations", "image 0", "file_name"),
    "coco_captions": Reader(
        lambda d: {"annotations": d / "annotations/captions_train.json", "images": d / TRAIN},
        "annotations", "annotations", "image 0", "file_name"),
    "vqav2": Reader(_vqa, "questions", "questions", "question 0", "image_id"),
    "vqav2 annotations": Reader(_vqa, "annotations", "questions", "question 0", "image_id"),
    "jsonl": Reader(lambda d: {"path": d / "all.jsonl"}, "path", "path", "line 1", "image"),
    "refcoco": Reader(
        lambda d: {"refs": d / "annotations/refs.json", "instances": d / "annotations/instances_train.json",
                   "images": d / TRAIN, "ref_splits": "train"},
        "refs", "instances", "image 0", "file_name"),
    "hf_dataset": Reader(  # `datasets` reads the rows; the dataset folder is the from_disk one
        lambda d: {"path": "json", "data_files": str(d / "rows.jsonl"), "task": "caption",
                   "columns": {"image": "file"}, "images": d / TRAIN},
        "path", "path", "row 0", "image"),
}  # fmt: skip


def _jsonl(d: Path) -> None:
    names = sorted(p.name for p in (d / TRAIN).iterdir())
    lines = [{"task": "caption", "image": f"{TRAIN}/{name}", "caption": "a shape"} for name in names]
    (d / "all.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def _read(reader: str, params: dict[str, Any]) -> tuple[int, SourceContext]:
    ctx = SourceContext(name="s", split="train", prefetch=False)
    return len(list(get(reader.split()[0])(ctx, **params))), ctx


@pytest.mark.parametrize("case", ["out of the root", "loop"])
@pytest.mark.parametrize("reader", list(READERS))
def test_an_image_that_is_a_symlink_out_or_a_loop_is_refused_by_name(data: Path, reader: str, case: str):
    _jsonl(data)
    spec = READERS[reader]
    params = spec.params(data)
    (data / IMAGE).unlink()
    (data / IMAGE).symlink_to(data.parent / "secret.png" if case == "out of the root" else data / IMAGE)
    with pytest.raises(DataError) as err:
        _read(reader, params)
    relpath = IMAGE if reader == "jsonl" else "000000.png"  # as the record names it
    why = {
        "out of the root": f"escapes the dataset root {params.get('images', data)}",
        "loop": "is a symlink loop: it never reaches a file",
    }[case]
    file = "json [train]" if reader == "hf_dataset" else str(params[spec.named_in])
    assert (err.value.file, err.value.record, err.value.field, err.value.reason) == (
        file,
        spec.record,
        spec.field,
        f"image path {relpath!r} {why}",
    )


@pytest.mark.parametrize("reader", list(READERS))
def test_an_annotation_file_that_is_a_symlink_loop_is_a_data_error(data: Path, reader: str):
    _jsonl(data)
    spec = READERS[reader]
    params = spec.params(data)
    reason = LOOP
    if reader == "hf_dataset":  # a dataset folder written by save_to_disk
        loop = data / "saved"
        params = {"path": str(loop), "from_disk": True, "task": "caption"}
        reason = LOOP.replace("a file", "a folder")
    else:
        loop = params[spec.annotation].with_name("loop" + params[spec.annotation].suffix)
        params[spec.annotation] = loop
    loop.symlink_to(loop)
    with pytest.raises(DataError) as err:
        _read(reader, params)
    assert (err.value.file, err.value.record, err.value.field, err.value.reason) == (
        str(loop),
        None,
        None,
        reason,
    )


def test_image_folder_counts_what_its_symlinks_reach_outside_the_root_or_round_a_loop(data: Path):
    root = data / "imagefolder/train"
    first = sorted(root.glob("*/*.png"))[0]
    n_images = len(list(root.glob("*/*.png")))
    first.unlink()
    first.symlink_to(data.parent / "secret.png")
    (root / "circle" / "out").symlink_to(data.parent, target_is_directory=True)
    (root / "circle" / "up").symlink_to(root, target_is_directory=True)
    (root / "circle" / "self.png").symlink_to(root / "circle" / "self.png")
    n, ctx = _read("image_folder", {"root": root})
    assert n == n_images - 1
    assert ctx.tally.skipped == {"symlink out of the root": 2, "symlink loop": 1, "folder read already": 1}
    label_map = root / "labels.json"
    label_map.symlink_to(label_map)
    with pytest.raises(DataError) as err:
        _read("image_folder", {"root": root, "label_map_file": label_map})
    assert str(err.value) == f"file {label_map}: {LOOP}"
