"""data.val_fraction: a data set with a training split only gets a seeded validation split carved
from it, by image (no image in both), for the sources that have none."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.build import build
from pipeline.demo import shapes
from pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
TRAIN_ONLY = (  # the captions, the questions and the ImageFolder without their val splits
    "data.sources.1.splits={train: {annotations: annotations/captions_train.json, images: images/train}}",
    "data.sources.2.splits={train: {questions: annotations/v2_OpenEnded_shapes_train_questions.json,"
    " annotations: annotations/v2_shapes_train_annotations.json, images: images/train}}",
    "data.sources.3.splits={train: {root: imagefolder/train}}",
)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    shapes.generate(root, n_train=60, n_val=4, seed=2, progress=False)
    return root


def _build(root: Path, cache: Path, *overrides: str):
    recipe = load_recipe(
        ROOT / "recipes/demo.yaml",
        [f"data.root={root}", f"data.cache_dir={cache}", "data.demo=null", *TRAIN_ONLY, *overrides],
    )
    return build(recipe, progress=False)


def _images(ds, source: str) -> set[str]:
    return {img for img, src in zip(ds["image"], ds["source"], strict=True) if src == source}


def test_sources_without_a_val_split_give_it_a_seeded_share_of_their_images(
    shapes_root: Path, tmp_path: Path
):
    result = _build(shapes_root, tmp_path / "a", "data.val_fraction=0.25")
    dsd = result.load()
    for source in ("shapes_classes", "shapes_captions"):
        train, val = _images(dsd["train"], source), _images(dsd["val"], source)
        assert train and val and not train & val  # by image: none is in both
        assert len(train | val) == 60 and 5 <= len(val) <= 25  # about a quarter of 60
    # sources carve by the image's path under the data root: those naming the same files agree
    assert _images(dsd["val"], "shapes_vqa") == _images(dsd["val"], "shapes_captions")
    # a carved caption image is a validation record: one record with every reference caption
    captions = [
        c for c, s in zip(dsd["val"]["captions"], dsd["val"]["source"], strict=True) if s == "shapes_captions"
    ]
    assert len(captions) == len(_images(dsd["val"], "shapes_captions")) and all(len(c) == 5 for c in captions)
    # sources with their own val split keep it, untouched
    assert len(_images(dsd["val"], "shapes_detection")) == 4
    rows = {(r.source, r.split): r for r in result.stats.rows}
    carved = rows[("shapes_classes", "val")]
    assert carved.carved_from == "train" and carved.examples == len(_images(dsd["val"], "shapes_classes"))
    assert rows[("shapes_classes", "train")].examples == 60 - carved.examples
    # the same seed carves the same images; another seed, others
    again = _build(shapes_root, tmp_path / "b", "data.val_fraction=0.25").load()
    assert _images(again["val"], "shapes_classes") == _images(dsd["val"], "shapes_classes")
    other = _build(shapes_root, tmp_path / "c", "data.val_fraction=0.25", "data.seed=1").load()
    assert _images(other["val"], "shapes_classes") != _images(dsd["val"], "shapes_classes")


def test_without_val_fraction_nothing_is_carved(shapes_root: Path, tmp_path: Path):
    dsd = _build(shapes_root, tmp_path).load()
    assert not _images(dsd["val"], "shapes_classes") and len(_images(dsd["train"], "shapes_classes")) == 60
