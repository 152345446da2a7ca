"""The shapes generator: deterministic bytes, real formats, and labels that agree with the pixels."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.cards import load_card
from pipeline.demo import layout, shapes
from pipeline.errors import DataError
from pipeline.records import Tally
from pipeline.sources.refcoco import load_refs, read_refcoco

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

    monkeypatch.setattr(shapes, "write_readme", boom)
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


# --- extra tasks: referring scenes, OCR, German captions ------------------------------------------

EXTENDED = {**SMALL, "extra_tasks": shapes.EXTRA_TASKS}


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shapes_extended") / "shapes"
    return out, shapes.generate(out, **EXTENDED)


def test_extra_tasks_off_writes_what_it_always_wrote(tmp_path: Path, demo: tuple[Path, dict]) -> None:
    out, _ = demo
    shapes.generate(tmp_path / "none", **{**SMALL, "extra_tasks": []})
    assert tree_hash(tmp_path / "none") == tree_hash(out)
    assert "extra_tasks" not in shapes.written_params(out)  # sets written before the option compare equal
    assert not any((out / p).exists() for p in ("refer", "ocr", "images/refer_train", "images/ocr_train"))
    assert not list((out / "annotations").glob("*_de.json"))
    # what a recipe asks for compares equal to what the set holds, whatever the spelling
    wanted = {**shapes.written_params(out), "shape_size": (0.3, 0.6), "extra_tasks": []}
    assert shapes.canonical_params(wanted) == shapes.written_params(out)
    mixed = shapes.canonical_params({"extra_tasks": ("captions_de", "refer", "refer")})
    assert mixed == {"extra_tasks": ["refer", "captions_de"]}
    with pytest.raises(ValueError, match="unknown extra task"):
        shapes.generate(tmp_path / "bad", **{**SMALL, "extra_tasks": ["refer", "depth"]})
    with pytest.raises(ValueError, match="list of names"):
        shapes.generate(tmp_path / "bad", **{**SMALL, "extra_tasks": "ocr"})


def test_extended_set_is_deterministic_and_leaves_the_main_set_alone(
    tmp_path: Path, demo: tuple[Path, dict], extended: tuple[Path, dict]
) -> None:
    out, summary = extended
    again = tmp_path / "again"
    shapes.generate(again, **{**EXTENDED, "extra_tasks": ["regions", "captions_de", "ocr", "refer"]})
    assert tree_hash(again) == tree_hash(out)
    assert shapes.written_params(out)["extra_tasks"] == ["refer", "ocr", "captions_de", "regions"]
    # every file of the default set is there, byte for byte: the extra streams are separate
    plain, _ = demo
    for p in plain.rglob("*"):
        if p.is_file() and p.name not in ("README.md", "shapes.json"):
            assert p.read_bytes() == (out / p.relative_to(plain)).read_bytes(), p
    readme = (out / "README.md").read_text()
    table = (plain / "README.md").read_text().split("| split |")[1].split("License:")[0]
    assert table in readme and "extra_tasks=('refer', 'ocr', 'captions_de', 'regions')" in readme
    for section in ("## Referring expressions", "## OCR", "## German captions", "## Regions"):
        assert section in readme
    refs = load_refs(out / shapes.REFER_REFS)
    assert summary["counts"]["refcoco"] == dict(Counter(r["split"] for r in refs))
    assert summary["counts"]["jsonl"] == {"train": 24, "val": 8}
    assert summary["counts"]["coco_captions_de"] == {"train": 24, "val": 8}


def refer_objects(root: Path) -> tuple[dict, dict[int, list[dict]]]:
    """The refer instances file and, per image, its annotations with the colour read from pixels."""
    inst = json.loads((root / shapes.REFER_INSTANCES).read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    files = {im["id"]: im["file_name"] for im in inst["images"]}
    by_image: dict[int, list[dict]] = {i: [] for i in files}
    for a in inst["annotations"]:
        img = np.asarray(Image.open(root / "images" / files[a["image_id"]]).convert("RGB"))
        x, y, w, h = a["bbox"]
        crop = img[y : y + h, x : x + w]
        color = max(PALETTE, key=lambda c: int(color_mask(crop, c).sum()))
        by_image[a["image_id"]].append(
            {**a, "color": color, "kind": names[a["category_id"]], "box": (x, y, x + w, y + h), "pixels": img}
        )
    return inst, by_image


SIDES = {  # "box a lies entirely on this side of box b"
    "left": lambda a, b: a[2] <= b[0],
    "right": lambda a, b: a[0] >= b[2],
    "top": lambda a, b: a[3] <= b[1],
    "bottom": lambda a, b: a[1] >= b[3],
}
AFTER = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom"}


def resolve(phrase: str, objects: list[dict]) -> tuple[str, list[dict]]:
    """(template, the objects `phrase` describes), read as a person would."""
    kinds, colors = "|".join(shapes.SHAPES), "|".join(shapes.COLORS)
    if m := re.fullmatch(rf"the ({colors}) ({kinds})", phrase):
        return "colour shape", [o for o in objects if (o["color"], o["kind"]) == m.groups()]
    if m := re.fullmatch(rf"the ({kinds})", phrase):
        return "shape", [o for o in objects if o["kind"] == m[1]]
    if m := re.fullmatch(rf"the ({colors}) shape", phrase):
        return "colour", [o for o in objects if o["color"] == m[1]]
    if m := re.fullmatch(rf"the (left|right|top|bottom) ({kinds}|shape)", phrase):
        side, noun = m.groups()
    elif m := re.fullmatch(rf"the ({kinds}|shape) ({'|'.join(AFTER)})", phrase):
        noun, side = m[1], AFTER[m[2]]
    else:
        raise AssertionError(f"no template reads {phrase!r}")
    group = [o for o in objects if noun in ("shape", o["kind"])]
    beyond = SIDES[side]
    return "where", [o for o in group if all(beyond(o["box"], p["box"]) for p in group if p is not o)]


def test_referring_phrases_pick_out_one_object(extended: tuple[Path, dict]) -> None:
    out, _ = extended
    data = (out / shapes.REFER_REFS).read_bytes()
    assert data[:2] == b"\x80\x02"  # pickle protocol 2, as lichengunc/refer's files
    refs = pickle.loads(data)
    inst, by_image = refer_objects(out)
    anns = {a["id"]: a for objs in by_image.values() for a in objs}
    assert sorted(anns) == [r["ann_id"] for r in refs]  # one ref per object
    assert [r["ref_id"] for r in refs] == list(range(len(refs)))
    for objs in by_image.values():
        assert 2 <= len(objs) <= 3
        assert len({(o["color"], o["kind"]) for o in objs}) == len(objs)
    templates = Counter()
    sent_ids = []
    for r in refs:
        assert list(r) == [
            "ref_id", "ann_id", "image_id", "split", "category_id", "sent_ids", "file_name", "sentences"
        ]  # fmt: skip
        target = anns[r["ann_id"]]
        assert (r["image_id"], r["category_id"]) == (target["image_id"], target["category_id"])
        assert r["split"] == ("train" if r["image_id"] < SMALL["n_train"] else "val")
        assert r["file_name"] == f"{r['image_id']:06d}_{r['ann_id']}.jpg"
        assert 1 <= len(r["sentences"]) <= 3
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        sent_ids += r["sent_ids"]
        phrases = [s["sent"] for s in r["sentences"]]
        assert len(set(phrases)) == len(phrases)
        for s in r["sentences"]:
            assert s["raw"] == s["sent"] and s["tokens"] == s["sent"].split()
            template, found = resolve(s["sent"], by_image[r["image_id"]])
            assert [o["id"] for o in found] == [r["ann_id"]], (s["sent"], r)
            templates[template] += 1
    assert sent_ids == list(range(len(sent_ids)))
    assert set(templates) == {"colour shape", "shape", "colour", "where"}
    assert inst["categories"] == load(out, "instances_train.json")["categories"]


def test_referring_phrases_of_a_fixed_scene() -> None:
    red_circle = shapes.Shape("circle", "red", (2, 2, 20, 20), 250)
    blue_circle = shapes.Shape("circle", "blue", (30, 30, 50, 50), 300)
    red_star = shapes.Shape("star", "red", (30, 2, 50, 22), 120)  # right of the red circle, above the blue
    scene = [red_circle, blue_circle, red_star]
    assert shapes.referring_phrases(red_circle, scene) == [
        "the red circle", "the left circle", "the circle on the left", "the top circle",
        "the circle at the top", "the left shape", "the shape on the left",
    ]  # fmt: skip
    assert shapes.referring_phrases(blue_circle, scene) == [
        "the blue circle", "the blue shape", "the right circle", "the circle on the right",
        "the bottom circle", "the circle at the bottom", "the bottom shape", "the shape at the bottom",
    ]  # fmt: skip
    assert shapes.referring_phrases(red_star, scene) == ["the red star", "the star"]


def test_polygons_match_the_drawn_pixels(extended: tuple[Path, dict]) -> None:
    from pycocotools import mask as mask_utils

    out, _ = extended
    inst, by_image = refer_objects(out)
    size = SMALL["image_size"]
    assert all((im["width"], im["height"]) == (size, size) for im in inst["images"])
    ious = []
    for objs in by_image.values():
        for o in objs:
            (polygon,) = o["segmentation"]
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            assert len(polygon) >= 2 * 16 or o["kind"] != "circle"  # a circle is at least a 16-gon
            x1, y1, x2, y2 = o["box"]
            # only this object has its colour within one pixel of its box (shapes keep 2 px apart)
            drawn = np.zeros((size, size), dtype=bool)
            near = (slice(max(y1 - 1, 0), y2 + 1), slice(max(x1 - 1, 0), x2 + 1))
            drawn[near] = color_mask(o["pixels"][near], o["color"])
            assert int(drawn.sum()) == o["area"]
            ys, xs = np.nonzero(drawn)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == o["box"]  # tight
            rle = mask_utils.merge(mask_utils.frPyObjects(o["segmentation"], size, size))
            raster = mask_utils.decode(rle).astype(bool)
            iou = (raster & drawn).sum() / (raster | drawn).sum()
            assert iou >= 0.9, (o["id"], o["kind"], iou)
            ious.append(iou)
    assert np.mean(ious) >= 0.95


def test_refs_read_with_the_refcoco_reader(extended: tuple[Path, dict]) -> None:
    out, _ = extended
    raw = load_refs(out / shapes.REFER_REFS)
    inst = json.loads((out / shapes.REFER_INSTANCES).read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    names = {c["id"]: c["name"] for c in inst["categories"]}
    tally = Tally()
    refs = read_refcoco(out / shapes.REFER_REFS, out / shapes.REFER_INSTANCES, out / "images", tally=tally)
    assert [r.ref_id for r in refs] == [r["ref_id"] for r in raw]
    for ref, r in zip(refs, raw, strict=True):
        a = anns[r["ann_id"]]
        x, y, w, h = a["bbox"]
        assert ref.split == r["split"] and ref.image_id == r["image_id"]
        assert ref.phrases == [s["sent"] for s in r["sentences"]]
        assert ref.bbox == (x, y, x + w, y + h)
        assert ref.polygons == a["segmentation"]
        assert ref.category == names[a["category_id"]]
        assert (ref.width, ref.height) == (SMALL["image_size"], SMALL["image_size"])
        assert Path(ref.image_path) == out / "images" / f"refer_{ref.split}" / f"{ref.image_id:06d}.png"
        assert Path(ref.image_path).is_file()
    assert not tally.skipped and not tally.repaired
    val = read_refcoco(out / shapes.REFER_REFS, out / shapes.REFER_INSTANCES, out / "images", splits=["val"])
    assert val and {r.split for r in val} == {"val"}
    assert len(val) == sum(r["split"] == "val" for r in raw)


def test_ocr_boxes_hold_the_text(extended: tuple[Path, dict]) -> None:
    out, _ = extended
    words = Counter()
    for split, ids in (("train", range(24)), ("val", range(24, 32))):
        path = out / shapes.OCR_JSONL.format(split=split)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [x["id"] for x in lines] == list(ids)
        for x in lines:
            assert list(x) == ["id", "task", "image", "text", "regions"] and x["task"] == "ocr"
            assert x["image"] == f"ocr_{split}/{x['id']:06d}.png"
            img = np.asarray(Image.open(out / "images" / x["image"]).convert("RGB"))
            dark = np.all(img <= 60, axis=-1)  # the text: no shape colour or background is that dark
            regions = x["regions"]
            assert 1 <= len(regions) <= shapes.OCR_MAX_WORDS
            assert x["text"] == " ".join(r["text"] for r in regions)
            covered = np.zeros_like(dark)
            for k, r in enumerate(regions):
                assert r["text"] in shapes.OCR_WORDS
                words[r["text"]] += 1
                x1, y1, x2, y2 = r["bbox"]
                inside = dark[y1:y2, x1:x2]
                # the box is the word's drawn extent: ink on all four edges ...
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
                covered[y1:y2, x1:x2] = True
                if k:  # ... one word per line, top to bottom: the reading order
                    assert regions[k - 1]["bbox"][3] < y1
            assert dark.any() and not (dark & ~covered).any()  # ... and every text pixel in a box
    assert len(words) > 10


def test_german_captions_translate_the_english_ones(extended: tuple[Path, dict]) -> None:
    out, _ = extended
    de_colors = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett"}
    de_nouns = {
        "circle": "Kreis",
        "square": "Quadrat",
        "triangle": "Dreieck",
        "star": "Stern",
        "diamond": "Raute",
    }
    ids = []
    for split in ("train", "val"):
        en = load(out, f"captions_{split}.json")
        de = json.loads((out / shapes.CAPTIONS_DE.format(split=split)).read_text())
        assert de["images"] == en["images"]
        assert [a["image_id"] for a in de["annotations"]] == [a["image_id"] for a in en["annotations"]]
        ids += [a["id"] for a in de["annotations"]]
        objects = object_colors(out, split)
        for c in de["annotations"]:
            text = c["caption"]
            for color, kind, _ in objects[c["image_id"]]:
                assert re.search(rf"\b{de_colors[color]}(e|er|es|en)? {de_nouns[kind]}", text), text
    assert len(ids) == len(set(ids))


def test_german_captions_of_fixed_scenes() -> None:
    one = [shapes.Shape("diamond", "purple", (0, 0, 20, 20), 200)]
    plan = shapes.CaptionPlan(first=[0], counted=[0], beside=[0], tone=0, scene=[0])
    assert shapes.render_captions_de(one, plan) == [
        "Eine violette Raute.",
        "eine Form: eine violette Raute",
        "eine violette Raute auf einem schlichten Hintergrund",
        "eine einzelne violette Raute im Bild",
        "eine einfache Zeichnung von einer violetten Raute auf einem hellen Hintergrund",
    ]
    several = [
        shapes.Shape("square", "green", (40, 0, 60, 20), 400),
        shapes.Shape("circle", "red", (0, 0, 20, 20), 300),
        shapes.Shape("square", "green", (20, 30, 40, 50), 400),
        shapes.Shape("star", "yellow", (0, 40, 15, 55), 90),
    ]
    plan = shapes.CaptionPlan(first=[1, 0, 2], counted=[0, 2, 1], beside=[2, 1, 0], tone=1, scene=[0, 1, 2])
    assert shapes.render_captions_de(several, plan) == [
        "Ein roter Kreis, zwei grüne Quadrate und ein gelber Stern.",
        "vier Formen: zwei grüne Quadrate, ein gelber Stern und ein roter Kreis",
        "ein gelber Stern neben einem roten Kreis und zwei grünen Quadraten",
        "von links nach rechts: ein gelber Stern, ein roter Kreis, ein grünes Quadrat und ein grünes Quadrat",
        "eine einfache Zeichnung von zwei grünen Quadraten, einem roten Kreis und einem gelben Stern auf "
        "einem blassen Hintergrund",
    ]
    assert (
        shapes.render_captions(several, plan)[2] == "a yellow star next to a red circle and two green squares"
    )
    # captions(rng, ..., "de") draws the plan as the English captions do: a translation, line for line
    en = shapes.captions(np.random.default_rng(5), several)
    de = shapes.captions(np.random.default_rng(5), several, "de")
    plan = shapes.caption_plan(np.random.default_rng(5), several)
    assert en == shapes.render_captions(several, plan) and de == shapes.render_captions_de(several, plan)


def test_the_regions_set_describes_the_refer_scenes_and_the_ocr_words(extended: tuple[Path, dict]) -> None:
    out, summary = extended
    inst = json.loads((out / shapes.REFER_INSTANCES).read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    for split in shapes.SPLITS:
        regions = json.loads((out / layout.VG_REGIONS.format(split=split)).read_text())
        images = json.loads((out / layout.VG_IMAGES.format(split=split)).read_text())
        assert [r["id"] for r in regions] == [i["image_id"] for i in images]
        files = {i["image_id"]: i["url"].rsplit("/", 1)[1] for i in images}
        refer = {im["id"]: im for im in inst["images"] if im["file_name"].startswith(f"refer_{split}/")}
        assert set(files) == set(refer)
        for image in regions:
            assert refer[image["id"]]["file_name"] == f"refer_{split}/{files[image['id']]}"
            anns = sorted(
                (a for a in inst["annotations"] if a["image_id"] == image["id"]), key=lambda a: a["id"]
            )
            # one region per shape, its box the annotation's, its phrase naming the shape
            assert [[r["x"], r["y"], r["width"], r["height"]] for r in image["regions"]] == [
                a["bbox"] for a in anns
            ]
            for r, a in zip(image["regions"], anns, strict=True):
                assert names[a["category_id"]] in r["phrase"].split()
        assert summary["regions"]["regions"][split] == sum(len(r["regions"]) for r in regions)
        lines = [
            json.loads(x)
            for x in (out / layout.DETAILED_CAPTIONS.format(split=split)).read_text().splitlines()
        ]
        assert [x["level"] for x in lines] == ["detailed", "paragraph"] * len(refer)
        assert all(x["task"] == "caption" and len(x["captions"]) == 1 for x in lines)
        # one region_to_ocr line per word of the OCR set, its box the word's
        ocr = [json.loads(x) for x in (out / shapes.OCR_JSONL.format(split=split)).read_text().splitlines()]
        words = [
            json.loads(x)
            for x in (out / layout.REGION_OCR_JSONL.format(split=split)).read_text().splitlines()
        ]
        want = [(o["image"], w["bbox"], w["text"]) for o in ocr for w in o["regions"]]
        assert [(w["image"], w["region"], w["text"]) for w in words] == want
        assert {w["task"] for w in words} == {"region_to_ocr"}
        texts = [json.loads(x) for x in read_lines(out / layout.OCR_TEXT_JSONL.format(split=split))]
        assert [{**o, "regions": []} for o in ocr] == [{**t, "regions": []} for t in texts]


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_regions_set_needs_the_images_it_describes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="regions describes the images of refer and ocr"):
        shapes.generate(tmp_path / "s", **{**SMALL, "extra_tasks": ["regions", "refer"]})


def test_region_descriptions_and_leveled_captions_worded() -> None:
    from pipeline.demo.draw import Shape
    from pipeline.demo.texts import detailed_caption, paragraph, region_description

    circle = Shape("circle", "red", (0, 20, 10, 30), 80)
    star = Shape("star", "blue", (30, 0, 40, 10), 50)
    square = Shape("square", "red", (30, 30, 40, 40), 100)
    scene = [star, circle, square]
    assert region_description(circle, scene) == "red circle on the left"
    assert region_description(star, scene) == "blue star at the top"
    assert region_description(square, scene) == "red square at the bottom"
    assert detailed_caption(scene) == (
        "A drawing of three shapes: a red circle on the left, a blue star at the top "
        "and a red square at the bottom."
    )
    assert paragraph([circle, square]) == (
        "The image shows two shapes on a light background. The red circle is on the left. "
        "The red square is on the right. They are all red."
    )


def test_the_regions_set_writes_the_refer_scenes_per_split_as_coco_instances(
    extended: tuple[Path, dict],
) -> None:
    out, _ = extended
    everything = json.loads((out / shapes.REFER_INSTANCES).read_text())
    for split in shapes.SPLITS:
        inst = json.loads((out / layout.REGIONS_INSTANCES.format(split=split)).read_text())
        images = [im for im in everything["images"] if im["file_name"].startswith(f"refer_{split}/")]
        assert inst["images"] == images and inst["categories"] == everything["categories"]
        ids = {im["id"] for im in images}
        want = [a for a in everything["annotations"] if a["image_id"] in ids]
        strip = ("id",)  # annotation ids run over both splits in refer/instances.json
        assert [{k: v for k, v in a.items() if k not in strip} for a in inst["annotations"]] == [
            {k: v for k, v in a.items() if k not in strip} for a in want
        ]
