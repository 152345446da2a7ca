"""PaliGemma format: exact prompts and targets, parsing (malformed text included), round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import formats
from pipeline.errors import DataError
from pipeline.formats import Prediction, pali
from pipeline.formats.loc import sort_objects
from pipeline.records import Example, Object

SIZE = (640, 480)
OBJECTS = [
    Object((320, 240, 640, 480), "circle"),
    Object((0, 0, 64, 48), "square"),
    Object((32, 240, 96, 360), "triangle"),
]
TARGET = (
    "<loc0000><loc0000><loc0102><loc0102> square ; "
    "<loc0512><loc0051><loc0768><loc0153> triangle ; "
    "<loc0512><loc0512><loc1023><loc1023> circle"
)


def example(task: str, **fields) -> Example:
    return Example(id="ex1", task=task, image="/img.png", image_size=SIZE, **fields)


def detection(objects: list[Object], size=SIZE, categories=()) -> Example:
    return Example(
        id="d1",
        task="detection",
        image="/img.png",
        image_size=size,
        objects=list(objects),
        categories=list(categories),
    )


def test_family_and_registry():
    assert pali.FAMILY == "paligemma"
    assert formats.get("paligemma") is pali


def test_extra_tokens():
    tokens = pali.extra_tokens()
    assert tokens[0] == "<loc0000>"
    assert tokens[1023] == "<loc1023>"
    assert tokens[1024] == "<seg000>"
    assert tokens[-1] == "<seg127>"
    assert len(tokens) == 1024 + 128 == len(set(tokens))


def test_render_caption():
    ex = example("caption", caption="A red circle.", captions=["A red circle."])
    assert pali.render(ex) == ("caption en", "A red circle.")


def test_render_vqa():
    ex = example("vqa", question="What color is the circle?", answer="red", answers=["red"] * 10)
    assert pali.render(ex) == ("answer en What color is the circle?", "red")


def test_render_classification():
    ex = example("classification", label="tabby cat", categories=["tabby cat", "dog"])
    assert pali.render(ex) == ("answer en what category does this image belong to?", "tabby cat")


def test_render_detection():
    # the prompt keeps the vocabulary's own order, including categories absent from this image
    ex = detection(OBJECTS, categories=["triangle", "circle", "square", "star"])
    assert pali.render(ex) == ("detect triangle ; circle ; square ; star", TARGET)


def test_render_detection_without_vocabulary_uses_sorted_object_categories():
    objs = [
        Object((0, 0, 10, 10), "square"),
        Object((0, 0, 10, 10), "circle"),
        Object((1, 1, 5, 5), "square"),
    ]
    prompt, target = pali.render(detection(objs, size=(1024, 1024)))
    assert prompt == "detect circle ; square"
    assert target == (
        "<loc0000><loc0000><loc0010><loc0010> circle ; "
        "<loc0000><loc0000><loc0010><loc0010> square ; "
        "<loc0001><loc0001><loc0005><loc0005> square"
    )


def test_render_detection_edges():
    objs = [Object((-5, -5, 700, 500), "everything")]  # clamps, never <loc1024>
    assert pali.render(detection(objs)) == (
        "detect everything",
        "<loc0000><loc0000><loc1023><loc1023> everything",
    )


def test_render_empty_detection():
    assert pali.render(detection([], categories=["circle", "square"])) == ("detect circle ; square", "")
    assert pali.render(detection([])) == ("detect", "")


@pytest.mark.parametrize("category", ["", " cat", "a;b", "a<b"])
def test_render_rejects_unreadable_categories(category):
    with pytest.raises(DataError, match="record d1"):
        pali.render(detection([Object((0, 0, 1, 1), category)]))
    with pytest.raises(DataError, match="categories"):
        pali.render(detection([], categories=["ok", category]))


@pytest.mark.parametrize("task", ["caption", "vqa", "classification"])
def test_parse_text(task):
    assert pali.parse("<bos> a red circle<eos><pad>", task, SIZE) == Prediction(
        task=task, text="a red circle"
    )


def test_parse_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task"):
        pali.parse("x", "keypoints", SIZE)


def test_parse_detection():
    text = TARGET + "<eos>"
    pred = pali.parse(text, "detection", SIZE)
    assert pred.task == "detection"
    assert pred.errors == 0
    assert pred.text == text
    assert pred.objects == [
        Object((0.3125, 0.234375, 64.0625, 48.046875), "square"),
        Object((32.1875, 240.234375, 95.9375, 360.234375), "triangle"),
        Object((320.3125, 240.234375, 639.6875, 479.765625), "circle"),
    ]


def test_render_parse_round_trip():
    _, target = pali.render(detection(OBJECTS))
    pred = pali.parse(target, "detection", SIZE)
    expected = sort_objects(OBJECTS, SIZE, 1024)
    assert [o.category for o in pred.objects] == [o.category for o in expected]
    for got, want in zip(pred.objects, expected, strict=True):
        assert got.bbox == pytest.approx(want.bbox, abs=0.625)  # one bin: 640 / 1024 px
    assert pred.errors == 0


A = "<loc0001><loc0002><loc0003><loc0004>"  # y1 x1 y2 x2 -> xyxy (2.5, 1.5, 4.5, 3.5) on 1024x1024
B = "<loc0005><loc0006><loc0007><loc0008>"  # -> (6.5, 5.5, 8.5, 7.5)
BOX_A = (2.5, 1.5, 4.5, 3.5)
BOX_B = (6.5, 5.5, 8.5, 7.5)

MALFORMED = [
    ("", [], 0),
    ("<eos><pad>", [], 0),
    (f"{A} a ; {B} b", [(BOX_A, "a"), (BOX_B, "b")], 0),
    (f"{A}a;{B}b", [(BOX_A, "a"), (BOX_B, "b")], 0),
    (f"{A} traffic light", [(BOX_A, "traffic light")], 0),
    # several boxes, one label
    (f"{A}{B} a", [(BOX_A, "a"), (BOX_B, "a")], 0),
    # segmentation tokens are ignored
    (f"{A} <seg001><seg127> a", [(BOX_A, "a")], 0),
    # a run of five: one box and one truncated box
    (f"{A}<loc0009> a ; {B} b", [(BOX_A, "a"), (BOX_B, "b")], 1),
    (f"<loc0001><loc0002><loc0003> a ; {B} b", [(BOX_B, "b")], 1),
    # out-of-range bins
    (f"<loc1024><loc0002><loc0003><loc0004> a ; {B} b", [(BOX_B, "b")], 1),
    (f"{A}<loc9999><loc0006><loc0007><loc0008> a", [(BOX_A, "a")], 1),
    # boxes with no label: before a ";" or at the end (a generation cut off), one error per box
    (f"{A} ; {B} b", [(BOX_B, "b")], 1),
    (f"{A} a ; {B}", [(BOX_A, "a")], 1),
    (f"{A} a ; {A}{B}", [(BOX_A, "a")], 2),
    # truncated last object
    (f"{A} a ; <loc0005><loc0006>", [(BOX_A, "a")], 1),
    # labels with no box
    (f"a ; {B} b", [(BOX_B, "b")], 1),
    (f"{A} a ; b", [(BOX_A, "a")], 1),
    ("no boxes at all", [], 1),
    (f"a {A}", [], 2),  # Florence's order: a label with no box, then a box with no label
    # reversed box: kept as decoded
    ("<loc0009><loc0009><loc0001><loc0001> a", [((9.5, 9.5, 1.5, 1.5), "a")], 0),
]


@pytest.mark.parametrize(("text", "objects", "errors"), MALFORMED)
def test_parse_malformed(text, objects, errors):
    pred = pali.parse(text, "detection", (1024, 1024))
    assert pred.objects == [Object(box, c) for box, c in objects]
    assert pred.errors == errors


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", ";", "<", ">", "loc", "<loc", "<seg", "0", "1", "9", "<eos>"])))
def test_parse_never_raises(pieces):
    pred = pali.parse("".join(pieces), "detection", SIZE)
    assert pred.errors >= 0


@st.composite
def detection_examples(draw):
    w = draw(st.integers(1, 4000))
    h = draw(st.integers(1, 4000))
    objs = []
    for _ in range(draw(st.integers(0, 6))):
        x1, x2 = sorted(draw(st.floats(0, w, allow_nan=False)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, h, allow_nan=False)) for _ in range(2))
        objs.append(Object((x1, y1, x2, y2), draw(st.sampled_from(["circle", "square", "traffic light"]))))
    return detection(objs, size=(w, h))


@settings(max_examples=100, deadline=None)
@given(ex=detection_examples())
def test_round_trip_property(ex):
    _, target = pali.render(ex)
    pred = pali.parse(target, "detection", ex.image_size)
    assert pred.errors == 0
    expected = sort_objects(ex.objects, ex.image_size, 1024)
    assert [o.category for o in pred.objects] == [o.category for o in expected]
    w, h = ex.image_size
    for got, want in zip(pred.objects, expected, strict=True):
        for g, v, s in zip(got.bbox, want.bbox, (w, h, w, h), strict=True):
            assert abs(g - v) <= s / 1024
