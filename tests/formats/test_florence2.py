"""Florence-2 format: exact prompts and targets, parsing (malformed text included), parity with
transformers' Florence2Processor.post_process_generation."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessorPil, Florence2Processor, PreTrainedTokenizerFast

from pipeline import formats
from pipeline.errors import DataError
from pipeline.formats import Prediction, florence2
from pipeline.formats.loc import sort_objects
from pipeline.records import Example, Object

SIZE = (640, 480)
OBJECTS = [
    Object((320, 240, 640, 480), "circle"),
    Object((0, 0, 64, 48), "square"),
    Object((32, 240, 96, 360), "triangle"),
]
TARGET = (
    "square<loc_0><loc_0><loc_100><loc_100>"
    "triangle<loc_50><loc_500><loc_150><loc_750>"
    "circle<loc_500><loc_500><loc_999><loc_999>"
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
    assert florence2.FAMILY == "florence2"
    assert formats.get("florence2") is florence2


def test_extra_tokens():
    tokens = florence2.extra_tokens()
    assert tokens[:2] == ["<loc_0>", "<loc_1>"]
    assert tokens[999] == "<loc_999>"
    assert "<loc_1000>" not in tokens
    assert tokens[1000:] == ["<CAPTION>", "<OD>"]
    assert len(set(tokens)) == len(tokens)


def test_render_caption():
    ex = example("caption", caption="A red circle.", captions=["A red circle.", "a circle"])
    assert florence2.render(ex) == ("<CAPTION>", "A red circle.")


def test_render_vqa():
    ex = example("vqa", question="What color is the circle?", answer="red", answers=["red"] * 10)
    assert florence2.render(ex) == ("Answer the question: What color is the circle?", "red")


def test_render_classification():
    ex = example("classification", label="tabby cat", categories=["tabby cat", "dog"])
    assert florence2.render(ex) == ("What category does the image belong to?", "tabby cat")


def test_render_detection_in_raster_order():
    prompt, target = florence2.render(detection(OBJECTS, categories=["circle", "square", "triangle"]))
    assert prompt == "<OD>"
    assert target == TARGET


def test_render_detection_edges_and_ties():
    objs = [
        Object((10, 10, 20, 20), "b"),
        Object((10, 10, 20, 20), "a"),
        Object((-5, -5, 700, 500), "everything"),  # outside the image: clamps, never <loc_1000>
    ]
    _, target = florence2.render(detection(objs))
    assert target == (
        "everything<loc_0><loc_0><loc_999><loc_999>a<loc_15><loc_20><loc_31><loc_41>b<loc_15><loc_20><loc_31><loc_41>"
    )


def test_render_empty_detection():
    assert florence2.render(detection([])) == ("<OD>", "")


@pytest.mark.parametrize("category", ["", " ", " cat", "a<b"])
def test_render_rejects_unreadable_categories(category):
    with pytest.raises(DataError, match="record d1"):
        florence2.render(detection([Object((0, 0, 1, 1), category)]))


@pytest.mark.parametrize("task", ["caption", "vqa", "classification"])
def test_parse_text(task):
    assert florence2.parse("</s><s> a red circle </s><pad><pad>", task, SIZE) == Prediction(
        task=task, text="a red circle"
    )


def test_parse_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task"):
        florence2.parse("x", "keypoints", SIZE)


def test_parse_detection():
    text = "</s><s>" + TARGET + "</s>"
    pred = florence2.parse(text, "detection", SIZE)
    assert pred.task == "detection"
    assert pred.errors == 0
    assert pred.text == text
    assert pred.objects == [
        Object((0.32, 0.24, 64.32, 48.24), "square"),
        Object((32.32, 240.24, 96.32, 360.24), "triangle"),
        Object((320.32, 240.24, 639.68, 479.76), "circle"),
    ]


def test_render_parse_round_trip():
    _, target = florence2.render(detection(OBJECTS))
    pred = florence2.parse(target, "detection", SIZE)
    expected = sort_objects(OBJECTS, SIZE, 1000)
    assert [o.category for o in pred.objects] == [o.category for o in expected]
    for got, want in zip(pred.objects, expected, strict=True):
        assert got.bbox == pytest.approx(want.bbox, abs=0.64)  # one bin: 640 / 1000 px
    assert pred.errors == 0


# A 1000x1000 image: bin b decodes to b + 0.5, so expected boxes read off the tokens.
MALFORMED = [
    ("", [], 0),
    ("</s><s></s><pad>", [], 0),
    ("a<loc_1><loc_2><loc_3><loc_4>b<loc_5><loc_6><loc_7><loc_8>", [("a", 1, 2, 3, 4), ("b", 5, 6, 7, 8)], 0),
    # one label, several boxes
    ("a<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", [("a", 1, 2, 3, 4), ("a", 5, 6, 7, 8)], 0),
    # spaces between tokens, as some decoders write them
    (
        " a <loc_1> <loc_2> <loc_3> <loc_4> b <loc_5> <loc_6> <loc_7> <loc_8>",
        [("a", 1, 2, 3, 4), ("b", 5, 6, 7, 8)],
        0,
    ),
    # a run of five: one box and one truncated box
    (
        "a<loc_1><loc_2><loc_3><loc_4><loc_5>b<loc_5><loc_6><loc_7><loc_8>",
        [("a", 1, 2, 3, 4), ("b", 5, 6, 7, 8)],
        1,
    ),
    ("a<loc_1><loc_2><loc_3>b<loc_5><loc_6><loc_7><loc_8>", [("b", 5, 6, 7, 8)], 1),
    # out-of-range bins
    ("a<loc_1000><loc_2><loc_3><loc_4>b<loc_5><loc_6><loc_7><loc_8>", [("b", 5, 6, 7, 8)], 1),
    ("a<loc_1><loc_2><loc_3><loc_4><loc_99999><loc_6><loc_7><loc_8>", [("a", 1, 2, 3, 4)], 1),
    # boxes with no label: one error per box
    ("<loc_1><loc_2><loc_3><loc_4>b<loc_5><loc_6><loc_7><loc_8>", [("b", 5, 6, 7, 8)], 1),
    ("<loc_1><loc_2><loc_3><loc_4><loc_1><loc_2><loc_3><loc_4>", [], 2),
    # truncated last object: a partial box, or a label cut off before its box
    ("a<loc_1><loc_2><loc_3><loc_4>b<loc_5><loc_6>", [("a", 1, 2, 3, 4)], 1),
    ("a<loc_1><loc_2><loc_3><loc_4>bo", [("a", 1, 2, 3, 4)], 1),
    ("no boxes at all", [], 1),
    # reversed box: kept as decoded
    ("a<loc_9><loc_9><loc_1><loc_1>", [("a", 9, 9, 1, 1)], 0),
]


@pytest.mark.parametrize(("text", "objects", "errors"), MALFORMED)
def test_parse_malformed(text, objects, errors):
    pred = florence2.parse(text, "detection", (1000, 1000))
    assert pred.objects == [
        Object((x1 + 0.5, y1 + 0.5, x2 + 0.5, y2 + 0.5), c) for c, x1, y1, x2, y2 in objects
    ]
    assert pred.errors == errors


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "<", ">", "_", "loc", "<loc_", "1", "0", "9", "</s>", ";"])))
def test_parse_never_raises(pieces):
    pred = florence2.parse("".join(pieces), "detection", SIZE)
    assert pred.errors >= 0


# -- parity with transformers' own Florence-2 post-processing --------------------------------


@functools.cache
def tiny_processor() -> Florence2Processor:
    """A real Florence2Processor over a word-level tokenizer built on the spot (no hub access)."""
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    words = ["circle", "square", "triangle", "traffic", "light"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_tokens(florence2.extra_tokens(), special_tokens=True)
    image_processor = CLIPImageProcessorPil()
    image_processor.image_seq_length = 577
    # the post-processor only parses the tasks its config names
    return Florence2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        post_processor_config={"description_with_bboxes": {}},
    )


def assert_same_as_transformers(result: dict, pred: Prediction, size) -> None:
    od = result["<OD>"]
    assert od["labels"] == [o.category for o in pred.objects]
    assert len(od["bboxes"]) == len(pred.objects)
    # transformers truncates its bin centres to int pixels: allow one bin or one pixel
    tol = max(size[0] / 1000, size[1] / 1000, 1.0)
    for theirs, obj in zip(od["bboxes"], pred.objects, strict=True):
        assert theirs == pytest.approx(list(obj.bbox), abs=tol)


def test_parity_with_florence2_processor():
    processor = tiny_processor()
    objs = [*OBJECTS, Object((100, 50, 300, 200), "traffic light")]
    _, target = florence2.render(detection(objs))
    result = processor.post_process_generation(text="</s><s>" + target + "</s>", task="<OD>", image_size=SIZE)
    pred = florence2.parse(target, "detection", SIZE)
    assert pred.errors == 0 and len(pred.objects) == 4
    assert_same_as_transformers(result, pred, SIZE)


def test_parity_through_token_ids():
    # what generation gives: ids, decoded with the spaces a word-level decoder puts between tokens
    processor = tiny_processor()
    _, target = florence2.render(detection(OBJECTS))
    ids = processor.tokenizer.encode(target)
    result = processor.post_process_generation(sequence=ids, task="<OD>", image_size=SIZE)
    decoded = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert decoded != target  # the decoder inserted spaces; parse must not care
    pred = florence2.parse(decoded, "detection", SIZE)
    assert pred.errors == 0
    assert_same_as_transformers(result, pred, SIZE)


def test_parity_one_label_several_boxes():
    processor = tiny_processor()
    text = (
        "circle<loc_1><loc_2><loc_3><loc_4><loc_500><loc_500><loc_999><loc_999>"
        "square<loc_0><loc_0><loc_9><loc_9>"
    )
    result = processor.post_process_generation(text=text, task="<OD>", image_size=SIZE)
    pred = florence2.parse(text, "detection", SIZE)
    assert [o.category for o in pred.objects] == ["circle", "circle", "square"]
    assert_same_as_transformers(result, pred, SIZE)


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
def test_round_trip_and_parity_property(ex):
    _, target = florence2.render(ex)
    pred = florence2.parse(target, "detection", ex.image_size)
    assert pred.errors == 0
    expected = sort_objects(ex.objects, ex.image_size, 1000)
    assert [o.category for o in pred.objects] == [o.category for o in expected]
    w, h = ex.image_size
    for got, want in zip(pred.objects, expected, strict=True):
        for g, v, s in zip(got.bbox, want.bbox, (w, h, w, h), strict=True):
            assert abs(g - v) <= s / 1000
    result = tiny_processor().post_process_generation(text=target, task="<OD>", image_size=ex.image_size)
    assert_same_as_transformers(result, pred, ex.image_size)
