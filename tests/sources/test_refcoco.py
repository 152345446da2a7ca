"""refcoco: exact Refs from a tiny distributed-layout folder, the safe pickle reader, errors, and the
registered source's exact grounding and segmentation Examples."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shlex
import struct
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DataError
from pipeline.recipe import reader_params
from pipeline.records import Example, Object, Tally
from pipeline.sources import SourceContext, get
from pipeline.sources.paths import Paths
from pipeline.sources.refcoco import Ref, load_refs, read_refcoco, read_refcoco_source

INSTANCES: dict[str, Any] = {
    "images": [
        {"id": 101, "file_name": "COCO_train2014_000000000101.jpg", "width": 640, "height": 480},
        {"id": 202, "file_name": "COCO_train2014_000000000202.jpg", "width": 500, "height": 375},
    ],
    "annotations": [
        {
            "id": 1001,
            "image_id": 101,
            "category_id": 1,
            "bbox": [10, 20, 100, 200],
            "segmentation": [[10, 20, 110, 20, 110, 220, 10, 220], [0, 0, 5, 0, 5, 5]],
            "iscrowd": 0,
        },
        {
            "id": 1002,
            "image_id": 101,
            "category_id": 18,
            "bbox": [300.5, 40, 50.25, 60],
            "segmentation": [[300.5, 40, 350.75, 40, 350.75, 100]],
            "iscrowd": 0,
        },
        {
            "id": 2001,
            "image_id": 202,
            "category_id": 1,
            "bbox": [0, 0, 500, 375],
            "segmentation": {"counts": "0`0f;0", "size": [375, 500]},  # RLE, as crowds have it
            "iscrowd": 1,
        },
    ],
    "categories": [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 18, "name": "dog", "supercategory": "animal"},
    ],
}


def _sentence(sent_id: int, raw: str, sent: str) -> dict[str, Any]:
    return {"tokens": sent.split(), "raw": raw, "sent_id": sent_id, "sent": sent}


# not in ref_id order: the reader sorts by ref_id
REFS: list[dict[str, Any]] = [
    {
        "ref_id": 7,
        "ann_id": 1002,
        "image_id": 101,
        "split": "testA",
        "category_id": 18,
        "sent_ids": [70, 71],
        "sentences": [
            _sentence(70, "Dog on the right ", "dog on right"),
            _sentence(71, "brown dog", "  brown dog  "),
        ],
        "file_name": "COCO_train2014_000000000101_1002.jpg",  # not an image file: never used
    },
    {
        "ref_id": 3,
        "ann_id": 1001,
        "image_id": 101,
        "split": "train",
        "category_id": 1,
        "sent_ids": [30, 31, 32],
        "sentences": [
            _sentence(30, "Man, left", "man left"),
            _sentence(31, "  ", ""),  # blank: dropped and counted
            _sentence(32, "Woman?", " "),  # blank `sent`: `raw` stands in
        ],
        "file_name": "COCO_train2014_000000000101_1001.jpg",
    },
    {
        "ref_id": 12,
        "ann_id": 2001,
        "image_id": 202,
        "split": "val",
        "category_id": 1,
        "sent_ids": [120],
        "sentences": [_sentence(120, "everyone", "everyone")],
        "file_name": "COCO_train2014_000000000202_2001.jpg",
    },
]


@pytest.fixture
def layout(tmp_path: Path):
    """The refer layout in tmp_path: refcoco/instances.json and images/train2014 (no image files:
    the reader must not open any). Returns a writer for refs files and instance edits."""
    folder = tmp_path / "refcoco"
    folder.mkdir()
    images = tmp_path / "images" / "train2014"

    def write(
        refs: Any = REFS, name: str = "refs(unc).p", instances: dict[str, Any] | None = None
    ) -> tuple[Path, Path]:
        refs_file = folder / name
        if name.endswith(".json"):
            refs_file.write_text(json.dumps(refs))
        elif isinstance(refs, bytes):
            refs_file.write_bytes(refs)
        else:
            with refs_file.open("wb") as f:
                pickle.dump(refs, f, protocol=2)
        inst_file = folder / "instances.json"
        inst_file.write_text(json.dumps(INSTANCES if instances is None else instances))
        return refs_file, inst_file

    write.images = images
    write.tmp = tmp_path
    return write


def _expected(images: Path) -> list[Ref]:
    a, b = str(images / "COCO_train2014_000000000101.jpg"), str(images / "COCO_train2014_000000000202.jpg")
    return [
        Ref(
            ref_id=3,
            split="train",
            image_path=a,
            image_id=101,
            width=640,
            height=480,
            phrases=["man left", "Woman?"],
            bbox=(10.0, 20.0, 110.0, 220.0),
            polygons=[[10.0, 20.0, 110.0, 20.0, 110.0, 220.0, 10.0, 220.0], [0.0, 0.0, 5.0, 0.0, 5.0, 5.0]],
            category="person",
            rle=None,
        ),
        Ref(
            ref_id=7,
            split="testA",
            image_path=a,
            image_id=101,
            width=640,
            height=480,
            phrases=["dog on right", "brown dog"],
            bbox=(300.5, 40.0, 350.75, 100.0),
            polygons=[[300.5, 40.0, 350.75, 40.0, 350.75, 100.0]],
            category="dog",
            rle=None,
        ),
        Ref(
            ref_id=12,
            split="val",
            image_path=b,
            image_id=202,
            width=500,
            height=375,
            phrases=["everyone"],
            bbox=(0.0, 0.0, 500.0, 375.0),
            polygons=[],
            category="person",
            rle={"counts": "0`0f;0", "size": [375, 500]},
        ),
    ]


# ---------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", ["refs(unc).p", "refs(unc).json"])
def test_pickle_and_json_give_the_exact_refs(layout, name: str) -> None:
    refs_file, inst_file = layout(name=name)
    tally = Tally()
    refs = read_refcoco(refs_file, inst_file, layout.images, tally=tally)
    assert refs == _expected(layout.images)
    assert all(type(v) is float for r in refs for v in r.bbox)
    assert all(type(v) is float for r in refs for p in r.polygons for v in p)
    assert tally.repaired == {"empty phrase dropped": 1}
    assert tally.skipped == {}
    assert not layout.images.exists()  # nothing was opened: there is nothing to open


def test_load_refs_returns_the_list_as_written(layout) -> None:
    refs_file, _ = layout()
    assert load_refs(refs_file) == REFS
    json_file, _ = layout(name="refs.json")
    assert load_refs(json_file) == REFS


def test_shared_paths_are_used(layout) -> None:
    class Recording(Paths):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[str] = []

        def confine(self, root, relpath, **where) -> str:
            self.asked.append(relpath)
            return super().confine(root, relpath, **where)

    refs_file, inst_file = layout()
    paths = Recording()
    read_refcoco(refs_file, inst_file, layout.images, paths=paths)
    # the build's Paths, once per image (two refs share image 101)
    assert paths.asked == ["COCO_train2014_000000000101.jpg", "COCO_train2014_000000000202.jpg"]


def _py2_pickle(obj: Any) -> bytes:
    """What Python 2's cPickle.dump(obj, f, 2) writes: `bytes` stand for Python 2 `str`
    (SHORT_BINSTRING/BINSTRING), `str` for `unicode` (BINUNICODE)."""
    out = bytearray(b"\x80\x02")

    def put(value: Any) -> None:
        if isinstance(value, bytes):
            out.extend(
                b"U" + bytes([len(value)]) if len(value) < 256 else b"T" + struct.pack("<i", len(value))
            )
            out.extend(value)
        elif isinstance(value, str):
            data = value.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(value, bool) or value is None:
            out.extend({True: b"\x88", False: b"\x89", None: b"N"}[value])
        elif isinstance(value, int):
            out.extend(b"J" + struct.pack("<i", value))
        elif isinstance(value, float):
            out.extend(b"G" + struct.pack(">d", value))
        elif isinstance(value, list):
            out.extend(b"](")
            for item in value:
                put(item)
            out.extend(b"e")
        elif isinstance(value, dict):
            out.extend(b"}(")
            for key, item in value.items():
                put(key)
                put(item)
            out.extend(b"u")
        else:
            raise TypeError(value)

    put(obj)
    out.extend(b".")
    return bytes(out)


def _as_py2_str(obj: Any, encoding: str) -> Any:
    """REFS with every str a Python 2 `str` (bytes in `encoding`), except `raw`, kept `unicode`."""
    if isinstance(obj, dict):
        return {k.encode(): (v if k == "raw" else _as_py2_str(v, encoding)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_as_py2_str(v, encoding) for v in obj]
    return obj.encode(encoding) if isinstance(obj, str) else obj


@pytest.mark.parametrize("encoding", ["utf-8", "latin1"])
def test_python2_pickle_strings_are_decoded(layout, encoding: str) -> None:
    refs = copy.deepcopy(REFS)
    refs[2]["sentences"][0]["sent"] = "man in café"
    refs[2]["sentences"][0]["raw"] = "Man in café"
    refs_file, inst_file = layout(_py2_pickle(_as_py2_str(refs, encoding)))
    assert load_refs(refs_file) == refs  # keys and values are str again, é included either way
    got = read_refcoco(refs_file, inst_file, layout.images, splits={"val"})
    assert got[0].phrases == ["man in café"]


def test_splits_filter(layout) -> None:
    refs_file, inst_file = layout()
    assert [r.ref_id for r in read_refcoco(refs_file, inst_file, layout.images, splits={"val"})] == [12]
    both = read_refcoco(refs_file, inst_file, layout.images, splits=["testA", "train"])
    assert [r.ref_id for r in both] == [3, 7]
    assert [r.ref_id for r in read_refcoco(refs_file, inst_file, layout.images, splits="testA")] == [7]


def test_a_split_no_ref_has_is_an_error(layout) -> None:
    refs_file, inst_file = layout()
    with pytest.raises(
        DataError, match=r"no ref has split testB; splits in the file: testA, train, val"
    ) as err:
        read_refcoco(refs_file, inst_file, layout.images, splits={"val", "testB"})
    assert err.value.file == str(refs_file)
    assert err.value.field == "split"


def test_blank_refs_are_skipped_and_degenerate_polygons_dropped(layout) -> None:
    refs = copy.deepcopy(REFS)
    refs[0]["sentences"] = [_sentence(70, " ", "")]
    refs[2]["sentences"] = []
    refs_file, inst_file = layout(refs)
    tally = Tally()
    got = read_refcoco(refs_file, inst_file, layout.images, tally=tally)
    assert [r.ref_id for r in got] == [3]
    assert got[0].polygons == [
        [10.0, 20.0, 110.0, 20.0, 110.0, 220.0, 10.0, 220.0],
        [0.0, 0.0, 5.0, 0.0, 5.0, 5.0],
    ]
    assert tally.skipped == {"ref without phrases": 2}
    assert tally.repaired == {"empty phrase dropped": 2}

    instances = copy.deepcopy(INSTANCES)
    instances["annotations"][0]["segmentation"] = [[1, 2, 3, 4], [10, 20, 110, 20, 110, 220]]
    refs_file, inst_file = layout(instances=instances)
    tally = Tally()
    got = read_refcoco(refs_file, inst_file, layout.images, splits={"train"}, tally=tally)
    assert got[0].polygons == [[10.0, 20.0, 110.0, 20.0, 110.0, 220.0]]
    assert tally.repaired["degenerate polygon dropped"] == 1


# ---------------------------------------------------------------------------- the pickle is never run


class Sneaky:
    """An ordinary class: its instances pickle as a reference to this module's global."""

    def __init__(self) -> None:
        self.x = 1


class _Call:
    """Pickles as a call: `fn(*args)` when loaded by an ordinary unpickler."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _payload(kind: str, marker: Path) -> tuple[Any, str]:
    """(an object to hide in a ref, the global its pickle names)."""
    if kind == "system":
        return _Call(os.system, f"touch {shlex.quote(str(marker))}"), "posix.system"
    if kind == "eval":
        return _Call(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"
    return Sneaky(), f"{__name__}.Sneaky"


@pytest.mark.parametrize("kind", ["system", "eval", "instance"])
@pytest.mark.parametrize("where", ["top", "nested"])
def test_pickles_naming_globals_are_refused_and_never_run(layout, kind: str, where: str) -> None:
    if kind == "system" and os.name != "posix":
        pytest.skip("os.system pickles as posix.system on POSIX only")
    marker = layout.tmp / "pwned"
    payload, name = _payload(kind, marker)
    refs = copy.deepcopy(REFS)
    if where == "top":
        refs.insert(0, payload)
    else:  # deep inside a sentence, after plenty of good data
        refs[2]["sentences"][0]["sent"] = payload
    data = pickle.dumps(refs, protocol=2, fix_imports=False)
    refs_file, inst_file = layout(data)

    with pytest.raises(DataError) as err:
        load_refs(refs_file)
    assert str(err.value) == (
        f"file {refs_file}: refs pickle references {name}; "
        "only plain lists, dicts, strings and numbers are read"
    )
    with pytest.raises(DataError, match="refs pickle references"):
        read_refcoco(refs_file, inst_file, layout.images)
    assert not marker.exists()

    if kind != "instance":  # the control: an ordinary unpickler does run it, so the test is not vacuous
        pickle.loads(data)
        assert marker.exists()


def test_python2_style_global_names_are_refused(layout) -> None:
    # pickle.dump(protocol=2) as Python 2 would name it: __builtin__.eval
    refs_file, _ = layout(pickle.dumps([_Call(eval, "1")], protocol=2))
    with pytest.raises(DataError, match=r"refs pickle references __builtin__\.eval;"):
        load_refs(refs_file)


def test_persistent_ids_and_broken_pickles_are_refused(layout) -> None:
    refs_file, _ = layout(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID
    with pytest.raises(DataError, match="refs pickle holds a persistent id 'a'"):
        load_refs(refs_file)
    refs_file, _ = layout(pickle.dumps(REFS, protocol=2)[:-40])
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: not a readable pickle"):
        load_refs(refs_file)
    refs_file, _ = layout({"refs": REFS}, name="refs.json")
    with pytest.raises(DataError, match="refs must be a list of dicts, got dict"):
        load_refs(refs_file)


# ---------------------------------------------------------------------------- errors name file, record, field


def _ref_edit(index: int, key: str, value: Any = None, *, delete: bool = False) -> list[dict[str, Any]]:
    refs = copy.deepcopy(REFS)
    if delete:
        del refs[index][key]
    else:
        refs[index][key] = value
    return refs


@pytest.mark.parametrize(
    ("refs", "record", "field"),
    [
        (_ref_edit(0, "ann_id", 9999), "ref 7", "ann_id"),  # not in the annotations
        (_ref_edit(0, "image_id", 202), "ref 7", "image_id"),  # the annotation is on image 101
        (_ref_edit(0, "category_id", 1), "ref 7", "category_id"),  # the annotation says dog (18)
        (_ref_edit(1, "sentences", delete=True), "ref 3", "sentences"),
        (_ref_edit(1, "sentences", "man left"), "ref 3", "sentences"),
        (_ref_edit(1, "sentences", [{"tokens": [], "sent_id": 1}]), "ref 3", "sentences[0]"),
        (_ref_edit(1, "sentences", [{"sent": 5}]), "ref 3", "sentences[0].sent"),
        (_ref_edit(1, "ref_id", delete=True), "ref #1", "ref_id"),
        (_ref_edit(1, "ref_id", [3]), "ref #1", "ref_id"),
        (_ref_edit(1, "ref_id", 7), "ref 7", "ref_id"),  # duplicate
        (_ref_edit(2, "ann_id", delete=True), "ref 12", "ann_id"),
        (_ref_edit(2, "split", None), "ref 12", "split"),
    ],
)
@pytest.mark.parametrize("name", ["refs(unc).p", "refs(unc).json"])
def test_bad_refs_raise_with_file_record_field(layout, refs, record: str, field: str, name: str) -> None:
    refs_file, inst_file = layout(refs, name=name)
    with pytest.raises(DataError) as err:
        read_refcoco(refs_file, inst_file, layout.images)
    message = str(err.value)
    assert err.value.file == str(refs_file)
    assert name in message
    assert f"record {record}," in message
    assert err.value.field == field


def test_an_image_missing_from_instances_is_an_error(layout) -> None:
    instances = copy.deepcopy(INSTANCES)
    instances["annotations"][2]["image_id"] = 303
    refs_file, inst_file = layout(_ref_edit(2, "image_id", 303), instances=instances)
    with pytest.raises(DataError, match="image_id 303 is not in the images") as err:
        read_refcoco(refs_file, inst_file, layout.images)
    assert (err.value.file, err.value.record, err.value.field) == (str(refs_file), "ref 12", "image_id")


def _inst_edit(path: tuple, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(INSTANCES)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("instances", "record", "field"),
    [
        (_inst_edit(("images", 0, "file_name"), "../../outside.jpg"), "image 101", "file_name"),
        (_inst_edit(("images", 0, "file_name"), "/etc/passwd"), "image 101", "file_name"),
        (_inst_edit(("images", 1, "width"), "500"), "image 202", "width"),
        (_inst_edit(("images", 1, "id"), 101), "image 101", "id"),  # duplicate
        (_inst_edit(("annotations", 1, "bbox"), [300, 40, -5, 60]), "annotation 1002", "bbox"),
        (_inst_edit(("annotations", 1, "category_id"), 99), "annotation 1002", "category_id"),
        (_inst_edit(("annotations", 1, "segmentation"), [[1, 2, 3]]), "annotation 1002", "segmentation"),
        (_inst_edit(("annotations", 2, "segmentation"), {"counts": "x"}), "annotation 2001", "segmentation"),
        (_inst_edit(("annotations", 2, "id"), 1001), "annotation 1001", "id"),  # duplicate
    ],
)
def test_bad_instances_raise_with_file_record_field(layout, instances, record: str, field: str) -> None:
    refs_file, inst_file = layout(instances=instances)
    with pytest.raises(DataError) as err:
        read_refcoco(refs_file, inst_file, layout.images)
    assert (err.value.file, err.value.record, err.value.field) == (str(inst_file), record, field)
    assert f"file {inst_file}, record {record}, field {field!r}" in str(err.value)


def test_a_symlink_out_of_the_images_folder_is_refused(layout) -> None:
    layout.images.mkdir(parents=True)
    secret = layout.tmp / "secret.jpg"
    secret.write_bytes(b"not yours")
    (layout.images / "COCO_train2014_000000000202.jpg").symlink_to(secret)
    refs_file, inst_file = layout()
    with pytest.raises(DataError, match="escapes the dataset root") as err:
        read_refcoco(refs_file, inst_file, layout.images)
    assert (err.value.record, err.value.field) == ("image 202", "file_name")


# ---------------------------------------------------------------------------- the registered source


@pytest.fixture
def source(layout, make_image):
    """The refer layout with real images at their declared sizes; source(ctx, **params) reads it
    through the registered reader. source.image(name, size) rewrites one image."""

    def image(name: str, size: tuple[int, int]) -> str:
        return str(make_image(name, size=size, root=layout.images))

    image("COCO_train2014_000000000101.jpg", (640, 480))
    image("COCO_train2014_000000000202.jpg", (500, 375))

    def read(ctx, *, refs: Any = REFS, instances: dict[str, Any] | None = None, **params) -> list:
        refs_file, inst_file = layout(refs, instances=instances)
        return list(
            read_refcoco_source(ctx, refs=refs_file, instances=inst_file, images=layout.images, **params)
        )

    read.image = image
    read.layout = layout
    return read


IMAGE_A = "COCO_train2014_000000000101.jpg"
IMAGE_B = "COCO_train2014_000000000202.jpg"


def test_source_yields_one_grounding_example_per_phrase(source) -> None:
    ctx = SourceContext(name="refcoco", split="train")
    examples = source(ctx, ref_splits=["train", "testA"])
    a = str(source.layout.images / IMAGE_A)
    common = {
        "task": "grounding",
        "image": a,
        "image_size": (640, 480),
        "source": "refcoco",
        "split": "train",
    }
    person = [Object((10.0, 20.0, 110.0, 220.0), "person")]
    dog = [Object((300.5, 40.0, 350.75, 100.0), "dog")]
    assert examples == [
        Example(id="3/0", phrase="man left", objects=person, **common),
        Example(id="3/1", phrase="Woman?", objects=person, **common),
        Example(id="7/0", phrase="dog on right", objects=dog, **common),
        Example(id="7/1", phrase="brown dog", objects=dog, **common),
    ]
    assert ctx.tally.examples == 4
    assert ctx.tally.repaired == {"empty phrase dropped": 1}
    assert ctx.tally.skipped == {}
    assert get("refcoco") is read_refcoco_source


def test_source_ref_splits_default_to_the_recipe_split(source) -> None:
    ctx = SourceContext(name="refcoco", split="val")
    assert source(ctx) == [
        Example(
            id="12/0",
            task="grounding",
            image=str(source.layout.images / IMAGE_B),
            image_size=(500, 375),
            source="refcoco",
            split="val",
            phrase="everyone",
            objects=[Object((0.0, 0.0, 500.0, 375.0), "person")],
        )
    ]
    # a string is one split; the Examples keep the recipe's split name
    ctx = SourceContext(name="refcoco", split="test")
    assert [(e.id, e.split) for e in source(ctx, ref_splits="testA")] == [("7/0", "test"), ("7/1", "test")]


def test_source_segmentation_skips_rle_masks(source) -> None:
    ctx = SourceContext(name="refcoco", split="train")
    examples = source(ctx, task="segmentation", ref_splits=["train", "testA", "val"])
    assert [(e.id, e.task, e.phrase, e.polygons, e.objects) for e in examples] == [
        (
            "3/0",
            "segmentation",
            "man left",
            [[10.0, 20.0, 110.0, 20.0, 110.0, 220.0, 10.0, 220.0], [0.0, 0.0, 5.0, 0.0, 5.0, 5.0]],
            [Object((10.0, 20.0, 110.0, 220.0), "person")],
        ),
        (
            "3/1",
            "segmentation",
            "Woman?",
            [[10.0, 20.0, 110.0, 20.0, 110.0, 220.0, 10.0, 220.0], [0.0, 0.0, 5.0, 0.0, 5.0, 5.0]],
            [Object((10.0, 20.0, 110.0, 220.0), "person")],
        ),
        (
            "7/0",
            "segmentation",
            "dog on right",
            [[300.5, 40.0, 350.75, 40.0, 350.75, 100.0]],
            [Object((300.5, 40.0, 350.75, 100.0), "dog")],
        ),
        (
            "7/1",
            "segmentation",
            "brown dog",
            [[300.5, 40.0, 350.75, 40.0, 350.75, 100.0]],
            [Object((300.5, 40.0, 350.75, 100.0), "dog")],
        ),
    ]
    assert ctx.tally.skipped == {"RLE mask (segmentation needs polygons)": 1}  # ref 12's one phrase
    assert ctx.tally.examples == 4


def test_source_segmentation_skips_refs_left_without_polygons(source) -> None:
    instances = _inst_edit(("annotations", 0, "segmentation"), [[1, 2, 3, 4]])  # ref 3: only a degenerate one
    ctx = SourceContext(name="refcoco", split="train")
    assert source(ctx, task="segmentation", instances=instances) == []
    assert ctx.tally.skipped == {"ref without polygons": 2}  # one per phrase
    assert ctx.tally.repaired == {"degenerate polygon dropped": 1, "empty phrase dropped": 1}
    # grounding does not need the polygons
    ctx = SourceContext(name="refcoco", split="train")
    assert [e.id for e in source(ctx, instances=instances)] == ["3/0", "3/1"]


def test_source_clips_boxes_to_the_real_image(source) -> None:
    source.image(IMAGE_A, (320, 240))  # the instances say 640x480
    ctx = SourceContext(name="refcoco", split="train")
    examples = source(ctx, ref_splits=["train", "testA"])
    assert [(e.id, e.image_size, e.objects) for e in examples] == [
        ("3/0", (320, 240), [Object((10.0, 20.0, 110.0, 220.0), "person")]),
        ("3/1", (320, 240), [Object((10.0, 20.0, 110.0, 220.0), "person")]),
        ("7/0", (320, 240), [Object((300.5, 40.0, 320.0, 100.0), "dog")]),
        ("7/1", (320, 240), [Object((300.5, 40.0, 320.0, 100.0), "dog")]),
    ]
    assert ctx.tally.repaired == {
        "empty phrase dropped": 1,
        "image size differs from annotation": 4,
        "box clipped": 2,
    }

    source.image(IMAGE_A, (200, 100))  # ref 7's box now lies wholly outside
    ctx = SourceContext(name="refcoco", split="train")
    examples = source(ctx, ref_splits=["train", "testA"])
    assert [(e.id, e.objects) for e in examples] == [
        ("3/0", [Object((10.0, 20.0, 110.0, 100.0), "person")]),
        ("3/1", [Object((10.0, 20.0, 110.0, 100.0), "person")]),
    ]
    assert ctx.tally.skipped == {"no usable box": 2}
    assert ctx.tally.repaired == {
        "empty phrase dropped": 1,
        "image size differs from annotation": 4,
        "box clipped": 2,
        "zero-area box dropped": 2,
    }


def test_source_checks_each_image_once_and_skips_unusable_ones(source, monkeypatch) -> None:
    from pipeline.sources import images as images_module

    opened: list[str] = []
    real = images_module.inspect_image

    def counting(path, **kw):
        opened.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(images_module, "inspect_image", counting)
    (source.layout.images / IMAGE_B).unlink()
    ctx = SourceContext(name="refcoco", split="train")
    examples = source(ctx, ref_splits=["train", "testA", "val"])
    assert [e.id for e in examples] == ["3/0", "3/1", "7/0", "7/1"]
    assert opened == [IMAGE_A, IMAGE_B]  # four Examples on image 101, opened once
    assert ctx.tally.skipped == {"missing image": 1}


@pytest.mark.parametrize(
    ("params", "field", "match"),
    [
        ({"task": "detection"}, "task", "unknown task 'detection'; refcoco reads: grounding, segmentation"),
        ({"ref_splits": []}, "ref_splits", "a non-empty list"),
        ({"ref_splits": ["train", ""]}, "ref_splits", "a split name or a non-empty list"),
        ({"ref_splits": 3}, "ref_splits", "got 3"),
        ({"ref_splits": ["testC"]}, "split", "no ref has split testC"),
    ],
)
def test_source_parameter_errors_name_the_file_and_field(source, params, field: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        source(SourceContext(name="refcoco", split="train"), **params)
    assert err.value.file == str(source.layout.tmp / "refcoco" / "refs(unc).p")
    assert err.value.field == field


def test_recipe_paths_resolve_against_the_data_root(tmp_path: Path) -> None:
    params = {
        "refs": "refcoco/refs(unc).p",
        "instances": "refcoco/instances.json",
        "images": "coco/train2014",
        "task": "segmentation",
        "ref_splits": ["testA", "testB"],
    }
    assert reader_params(get("refcoco"), params, tmp_path) == {
        "refs": tmp_path / "refcoco" / "refs(unc).p",
        "instances": tmp_path / "refcoco" / "instances.json",
        "images": tmp_path / "coco" / "train2014",
        "task": "segmentation",
        "ref_splits": ["testA", "testB"],
    }
