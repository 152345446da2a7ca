"""The shapes generator: deterministic bytes, real formats, and labels that agree with the pixels."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import shapes
from pipeline.data.cards import load_card
from pipeline.errors import DataError

SMALL = {"n_train": 24, "n_val": 8, "image_size": 64, "max_shapes": 3, "seed": 3, "progress": False}
CARDS = Path(__file__).resolve().parents[2] / "data_cards"
PALETTE = {name: np.array(rgb, dtype=np.uint8) for name, rgb in shapes.COLORS.items()}


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def load(root: Path, name: str) -> dict:
    return json.loads((root / "annotations" / name).read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    return out, shapes.generate(out, **SMALL)


def pixels(root: Path, split: str, image_id: int) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / split / f"{image_id:06d}.png").convert("RGB"))


def color_mask(img: np.ndarray, color: str) -> np.ndarray:
    return np.all(img == PALETTE[color], axis=-1)


def object_colors(root: Path, split: str) -> dict[int, list[tuple[str, str, list[int]]]]:
    """image_id -> [(colour read from the pixels, category name, bbox)] per annotation."""
    inst = load(root, f"instances_{split}.json")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    found: dict[int, list[tuple[str, str, list[int]]]] = {im["id"]: [] for im in inst["images"]}
    cache: dict[int, np.ndarray] = {}
    for a in inst["annotations"]:
        img = cache.setdefault(a["image_id"], pixels(root, split, a["image_id"]))
        x, y, w, h = a["bbox"]
        crop = img[y : y + h, x : x + w]
        counts = {c: int(color_mask(crop, c).sum()) for c in PALETTE}
        found[a["image_id"]].append((max(counts, key=counts.get), names[a["category_id"]], a["bbox"]))
    return found


def test_same_arguments_give_identical_bytes(tmp_path: Path, demo: tuple[Path, dict]) -> None:
    out, _ = demo
    again = tmp_path / "again"
    shapes.generate(again, **SMALL)
    assert tree_hash(again) == tree_hash(out)
    other = tmp_path / "other"
    shapes.generate(other, **{**SMALL, "seed": 4})
    assert tree_hash(other) != tree_hash(out)


def test_layout_counts_and_ids(demo: tuple[Path, dict]) -> None:
    out, summary = demo
    n = {"train": SMALL["n_train"], "val": SMALL["n_val"]}
    ids = {"train": list(range(24)), "val": list(range(24, 32))}  # val ids continue after train
    ann_ids, cap_ids, qids = [], [], []
    for split in ("train", "val"):
        inst = load(out, f"instances_{split}.json")
        assert [im["id"] for im in inst["images"]] == ids[split]
        assert sorted(p.name for p in (out / "images" / split).iterdir()) == [
            f"{i:06d}.png" for i in ids[split]
        ]
        assert [c["id"] for c in inst["categories"]] == [1, 2, 3, 4, 5]
        assert all(c["supercategory"] == "shape" for c in inst["categories"])
        per_image = Counter(a["image_id"] for a in inst["annotations"])
        assert all(1 <= per_image[i] <= SMALL["max_shapes"] for i in ids[split])
        ann_ids += [a["id"] for a in inst["annotations"]]

        caps = load(out, f"captions_{split}.json")
        assert caps["images"] == inst["images"]
        assert Counter(a["image_id"] for a in caps["annotations"]) == dict.fromkeys(ids[split], 5)
        cap_ids += [a["id"] for a in caps["annotations"]]

        qs = load(out, f"v2_OpenEnded_shapes_{split}_questions.json")
        assert (qs["task_type"], qs["data_type"], qs["data_subtype"]) == ("Open-Ended", "shapes", split)
        ans = load(out, f"v2_shapes_{split}_annotations.json")["annotations"]
        assert [q["question_id"] for q in qs["questions"]] == [a["question_id"] for a in ans]
        assert all(2 <= k <= 3 for k in Counter(q["image_id"] for q in qs["questions"]).values())
        qids += [q["question_id"] for q in qs["questions"]]

        folder = sorted((out / "imagefolder" / split).rglob("*.png"))
        assert len(folder) == n[split]
        assert sorted(p.name for p in (out / "imagefolder" / split).iterdir()) == sorted(shapes.SHAPES)
        for p in folder:  # a byte-identical copy of the image
            assert p.read_bytes() == (out / "images" / split / p.name).read_bytes()

        assert summary["counts"]["coco_detection"][split] == n[split]
        assert summary["counts"]["coco_captions"][split] == n[split]
        assert summary["counts"]["image_folder"][split] == n[split]
        assert summary["counts"]["vqav2"][split] == len(qs["questions"])
        assert summary["objects"][split] == len(inst["annotations"])
    for used in (ann_ids, cap_ids, qids):
        assert len(used) == len(set(used))
    assert (out / "README.md").read_text().startswith(shapes.README_TITLE)


def test_files_load_in_pycocotools(demo: tuple[Path, dict]) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out, _ = demo
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "annotations" / "instances_val.json"))
        caps = COCO(str(out / "annotations" / "captions_val.json"))
        # The ground truth scored against itself is perfect: boxes and ids are well formed.
        dets = [{**a, "score": 1.0} for a in gt.dataset["annotations"]]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(gt.getImgIds()) == SMALL["n_val"]
    assert len(caps.getAnnIds()) == 5 * SMALL["n_val"]
    assert ev.stats[0] == pytest.approx(1.0)


def test_boxes_are_tight(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    for split in ("train", "val"):
        inst = load(out, f"instances_{split}.json")
        for a in inst["annotations"]:
            img = pixels(out, split, a["image_id"])
            x, y, w, h = a["bbox"]
            crop = img[y : y + h, x : x + w]
            color = max(PALETTE, key=lambda c: int(color_mask(crop, c).sum()))
            mask = color_mask(img, color)
            inside = mask[y : y + h, x : x + w]
            # the shape reaches all four edges of its box ...
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            # ... and nothing of its colour lies in the one-pixel ring around it
            ring = mask[max(y - 1, 0) : y + h + 1, max(x - 1, 0) : x + w + 1].sum() - inside.sum()
            assert ring == 0, (split, a["id"])
            assert int(inside.sum()) == a["area"]


def test_imagefolder_class_is_the_largest_shape(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    for split in ("train", "val"):
        inst = load(out, f"instances_{split}.json")
        names = {c["id"]: c["name"] for c in inst["categories"]}
        by_image: dict[int, list[dict]] = {}
        for a in inst["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for image_id, anns in by_image.items():
            largest = names[max(anns, key=lambda a: a["area"])["category_id"]]
            assert (out / "imagefolder" / split / largest / f"{image_id:06d}.png").is_file()


def test_vqa_answers_agree_with_the_image(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    seen_types = Counter()
    for split in ("train", "val"):
        objects = object_colors(out, split)
        qs = {
            q["question_id"]: q for q in load(out, f"v2_OpenEnded_shapes_{split}_questions.json")["questions"]
        }
        for a in load(out, f"v2_shapes_{split}_annotations.json")["annotations"]:
            q = qs[a["question_id"]]["question"]
            objs = objects[a["image_id"]]
            kinds = Counter(k for _, k, _ in objs)
            colors = Counter(c for c, _, _ in objs)
            if a["question_type"] == "how many":
                truth = str(len(objs))
            elif a["question_type"] == "is there a":
                truth = "yes" if re.fullmatch(r"is there a (\w+)\?", q)[1] in kinds else "no"
            elif a["question_type"] == "what color is the":
                kind = re.fullmatch(r"what color is the (\w+)\?", q)[1]
                assert kinds[kind] == 1  # only asked when unambiguous
                truth = next(c for c, k, _ in objs if k == kind)
            else:
                color = re.fullmatch(r"what shape is the (\w+) object\?", q)[1]
                assert colors[color] == 1
                truth = next(k for c, k, _ in objs if c == color)
            answers = [x["answer"] for x in a["answers"]]
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert a["multiple_choice_answer"] == truth
            assert answers.count(truth) >= 7
            seen_types[a["answer_type"]] += 1
    assert set(seen_types) == {"yes/no", "number", "other"}


def test_answers_vary_like_people(tmp_path: Path) -> None:
    out = tmp_path / "s"
    shapes.generate(out, **{**SMALL, "n_train": 60, "n_val": 0})
    anns = load(out, "v2_shapes_train_annotations.json")["annotations"]
    varied = [a for a in anns if len({x["answer"] for x in a["answers"]}) > 1]
    assert 0.2 < len(varied) / len(anns) < 0.95  # enough disagreement for the VQA formula to matter
    yes_no = Counter(a["multiple_choice_answer"] for a in anns if a["answer_type"] == "yes/no")
    assert yes_no["yes"] > 0 and yes_no["no"] > 0


def test_captions_name_every_shape_and_colour(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    for split in ("train", "val"):
        objects = object_colors(out, split)
        for c in load(out, f"captions_{split}.json")["annotations"]:
            words = set(re.findall(r"[a-z]+", c["caption"].lower()))
            objs = objects[c["image_id"]]
            named_colors = {col for col in shapes.COLORS if col in words}
            named_kinds = {k for k in shapes.SHAPES if k in words or shapes.PLURALS[k] in words}
            assert named_colors == {col for col, _, _ in objs}, c
            assert named_kinds == {k for _, k, _ in objs}, c


def test_defaults_match_the_data_card(tmp_path: Path) -> None:
    summary = shapes.generate(tmp_path / "shapes", progress=False)
    card = load_card(CARDS / "shapes.md")
    assert summary["counts"] == card.counts
    assert summary["seconds"] < 15  # "a few seconds" for 1000 images


def test_replaces_an_earlier_set_but_not_other_folders(tmp_path: Path) -> None:
    out = tmp_path / "s"
    shapes.generate(out, **{**SMALL, "n_train": 2, "n_val": 1})
    shapes.generate(out, **{**SMALL, "n_train": 3, "n_val": 1})  # regenerable: replaced
    assert len(list((out / "images" / "train").iterdir())) == 3
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="does not hold a shapes set"):
        shapes.generate(other, **SMALL)
    assert (other / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "s"]  # no temp folders left


def test_an_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_write_readme", boom)
    with pytest.raises(KeyboardInterrupt):
        shapes.generate(tmp_path / "s", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_shape_size_sets_the_drawn_side(tmp_path: Path) -> None:
    out = tmp_path / "s"
    shapes.generate(out, **{**SMALL, "max_shapes": 1, "shape_size": (0.5, 0.5)})
    boxes = [
        a["bbox"] for a in json.loads((out / "annotations/instances_train.json").read_text())["annotations"]
    ]
    # every shape is drawn in a 32 x 32 square; its tight box spans (nearly) all of it on one side
    assert boxes and all(28 <= max(w, h) <= 32 for _, _, w, h in boxes)
    assert shapes.written_params(out) == {
        "n_train": 24, "n_val": 8, "image_size": 64, "max_shapes": 1, "shape_size": [0.5, 0.5], "seed": 3
    }  # fmt: skip
    for bad in ((0.0, 0.5), (0.6, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match="shape_size"):
            shapes.generate(tmp_path / "t", **{**SMALL, "shape_size": bad})
