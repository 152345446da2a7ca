"""image_folder: class folders, label maps, deterministic order, ignored files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import SourceContext, get
from pipeline.sources.image_folder import read_image_folder, read_label_map


@pytest.fixture
def tree(tmp_path: Path, make_image) -> Path:
    root = tmp_path / "imagenette" / "train"
    make_image("n02102040/b.JPEG", root=root)
    make_image("n02102040/a.png", root=root, size=(20, 10))
    make_image("n02102040/nested/c.jpeg", root=root)
    make_image("n01440764/z.jpg", root=root, mode="L")
    (root / "n01440764" / "notes.txt").write_text("not an image")
    (root / "n01440764" / ".hidden.jpg").write_bytes(b"ignored")
    (root / "README.md").write_text("files directly under root are not a class")
    (root / ".ipynb_checkpoints").mkdir()
    make_image(".ipynb_checkpoints/x.jpg", root=root)
    return root


def _example(
    root: Path, rel: str, label: str, size=(32, 24), categories=("n01440764", "n02102040")
) -> Example:
    return Example(
        id=rel,
        task="classification",
        image=str(root / rel),
        image_size=size,
        source="src",
        split="train",
        label=label,
        categories=list(categories),
    )


def test_happy_path_exact_examples(ctx: SourceContext, tree: Path) -> None:
    assert list(read_image_folder(ctx, root=tree)) == [
        _example(tree, "n01440764/z.jpg", "n01440764"),
        _example(tree, "n02102040/a.png", "n02102040", size=(20, 10)),
        _example(tree, "n02102040/b.JPEG", "n02102040"),
        _example(tree, "n02102040/nested/c.jpeg", "n02102040"),
    ]
    assert ctx.tally.examples == 4
    assert ctx.tally.repaired == {"L converted to RGB": 1}
    assert get("image_folder") is read_image_folder


def test_label_map_dict(ctx: SourceContext, tree: Path) -> None:
    mapping = {"n01440764": "tench", "n02102040": "English springer", "n99999999": "unused"}
    examples = list(read_image_folder(ctx, root=tree, label_map=mapping))
    assert [e.label for e in examples] == [
        "tench",
        "English springer",
        "English springer",
        "English springer",
    ]
    assert examples[0].categories == ["tench", "English springer"]


@pytest.mark.parametrize("kind", ["json", "txt"])
def test_label_map_file(ctx: SourceContext, tree: Path, tmp_path: Path, kind: str) -> None:
    if kind == "json":
        path = tmp_path / "labels.json"
        path.write_text(json.dumps({"n01440764": "tench", "n02102040": "English springer"}))
    else:
        path = tmp_path / "LOC_synset_mapping.txt"
        path.write_text("# wnid name\nn01440764 tench, Tinca tinca\n\nn02102040\tEnglish springer\n")
    examples = list(read_image_folder(ctx, root=tree, label_map_file=path))
    expected_tench = "tench" if kind == "json" else "tench, Tinca tinca"
    assert examples[0].label == expected_tench
    assert examples[0].categories == [expected_tench, "English springer"]
    # an explicit label_map entry overrides the file's
    examples = list(read_image_folder(ctx, root=tree, label_map_file=path, label_map={"n01440764": "fish"}))
    assert examples[0].label == "fish"


def test_unmapped_class_is_an_error(ctx: SourceContext, tree: Path) -> None:
    with pytest.raises(DataError, match=r"record n02102040, field 'label_map'"):
        list(read_image_folder(ctx, root=tree, label_map={"n01440764": "tench"}))


def test_bad_label_map_text(tmp_path: Path) -> None:
    path = tmp_path / "map.txt"
    path.write_text("n01 tench\nn02\n")
    with pytest.raises(DataError, match=r"map\.txt, record line 2"):
        read_label_map(path)


def test_empty_or_missing_root_is_an_error(ctx: SourceContext, tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        list(read_image_folder(ctx, root=tmp_path / "empty"))
    with pytest.raises(DataError, match="not a directory"):
        list(read_image_folder(ctx, root=tmp_path / "absent"))


def test_broken_images_are_skipped(ctx: SourceContext, tree: Path, bad_images) -> None:
    bad_images("garbage", str((tree / "n02102040" / "b.JPEG").relative_to(tree.parent.parent)))
    assert [e.id for e in read_image_folder(ctx, root=tree)] == [
        "n01440764/z.jpg",
        "n02102040/a.png",
        "n02102040/nested/c.jpeg",
    ]
    assert ctx.tally.skipped == {"unreadable image": 1}


def test_symlinks_are_followed_inside_the_root_once_and_counted_otherwise(
    ctx: SourceContext, tree: Path, make_image, tmp_path: Path
) -> None:
    # os.walk(followlinks=True) read files outside the root, and a link back up the tree read it
    # again and again: 7 images became 326 records, circles labelled "square"
    outside = tmp_path / "outside"
    make_image("a.jpg", root=outside)
    make_image("stash/s.jpg", root=tree / ".stash")  # a hidden folder inside the root
    fish, dog = tree / "n01440764", tree / "n02102040"
    (fish / "out_dir").symlink_to(outside, target_is_directory=True)
    (fish / "out.jpg").symlink_to(outside / "a.jpg")
    (fish / "out.txt").symlink_to(outside / "a.jpg")  # out, but no image: ignored as any .txt is
    (tree / "outcls").symlink_to(outside, target_is_directory=True)  # a class folder out: no class
    (dog / "up").symlink_to(tree, target_is_directory=True)  # a loop through the root
    (dog / "self").symlink_to(dog / "self")  # a loop that resolves to nothing
    (fish / "twin").symlink_to(dog / "nested", target_is_directory=True)  # another class's folder
    (fish / "stash").symlink_to(tree / ".stash" / "stash", target_is_directory=True)  # followed
    (fish / "same.jpg").symlink_to(fish / "z.jpg")  # a file inside the root: kept
    examples = list(read_image_folder(ctx, root=tree))
    assert [(e.id, e.label) for e in examples] == [
        ("n01440764/same.jpg", "n01440764"),
        ("n01440764/stash/s.jpg", "n01440764"),
        ("n01440764/z.jpg", "n01440764"),
        ("n02102040/a.png", "n02102040"),
        ("n02102040/b.JPEG", "n02102040"),
        ("n02102040/nested/c.jpeg", "n02102040"),
    ]
    assert examples[0].categories == ["n01440764", "n02102040"]
    assert ctx.tally.skipped == {"symlink out of the root": 3, "symlink loop": 1, "folder read already": 2}
    assert ctx.tally.examples == 6
