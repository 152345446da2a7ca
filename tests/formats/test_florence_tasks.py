"""Florence-2's other nine task tokens (caption levels, dense region captions, region proposals,
open-vocabulary detection, region -> category / description / text / mask) in both formats: exact
prompts and targets, round trips, Florence-2 read back as transformers' own post-processor reads
the same strings, and PaliGemma's refusals with their reasons."""

from __future__ import annotations

import pytest

from pipeline.errors import DataError
from pipeline.formats import florence2, pali
from pipeline.records import Example, Object, Record, RecordColumns

SIZE = (640, 480)
CIRCLE = Object((320.0, 240.0, 640.0, 480.0), "circle")
SQUARE = Object((0.0, 0.0, 64.0, 48.0), "square")
REGION = (320.0, 240.0, 640.0, 480.0)  # <loc_500><loc_500><loc_999><loc_999>
REGION_TOKENS = "<loc_500><loc_500><loc_999><loc_999>"
TRIANGLE = [320.0, 240.0, 640.0, 240.0, 640.0, 480.0]


def example(task: str, **fields) -> Example:
    return Example(id="ex1", task=task, image="/img.png", image_size=SIZE, **fields)


def truncated(objects) -> list[list[int]]:
    return [[int(v) for v in o.bbox] for o in objects]  # the post-processor truncates bin centres


# ---------------------------------------------------------------------------- caption levels


@pytest.mark.parametrize(
    ("level", "florence_prompt", "pali_prompt"),
    [
        (None, "<CAPTION>", "caption en"),
        ("brief", "<CAPTION>", "caption en"),
        ("detailed", "<DETAILED_CAPTION>", "describe en"),
        ("paragraph", "<MORE_DETAILED_CAPTION>", None),
    ],
)
def test_a_captions_level_chooses_its_prompt(level, florence_prompt, pali_prompt):
    ex = example("caption", caption="A red circle.", level=level)
    assert ex.level == (None if level == "brief" else level)  # brief is the default, written None
    assert florence2.render(ex) == (florence_prompt, "A red circle.")
    if pali_prompt is None:
        with pytest.raises(DataError, match=r"record ex1, field 'level'.*describe \{lang\}.*level: detailed"):
            pali.render(ex)
    else:
        assert pali.render(ex) == (pali_prompt, "A red circle.")


def test_pali_describe_names_the_language():
    assert pali.render(example("caption", caption="Ein Kreis.", level="detailed", language="de")) == (
        "describe de",
        "Ein Kreis.",
    )


def test_a_level_is_checked():
    with pytest.raises(ValueError, match="a level is one of brief, detailed, paragraph"):
        example("caption", caption="x", level="long")
    with pytest.raises(ValueError, match="for caption examples"):
        example("vqa", question="q", answer="a", level="detailed")


# ---------------------------------------------------------------------------- dense region captions


def test_dense_region_caption_exact_round_trip_and_post_processor(post_processed):
    ex = example(
        "dense_region_caption", objects=[Object(CIRCLE.bbox, "a big circle"), Object(SQUARE.bbox, "a square")]
    )
    prompt, target = florence2.render(ex)
    assert prompt == "<DENSE_REGION_CAPTION>"
    assert target == "a square<loc_0><loc_0><loc_100><loc_100>a big circle" + REGION_TOKENS  # raster order
    reference, ours = post_processed(ex, "<DENSE_REGION_CAPTION>")
    assert ours.errors == 0
    assert [o.category for o in ours.objects] == reference["labels"] == ["a square", "a big circle"]
    assert truncated(ours.objects) == reference["bboxes"]
    with pytest.raises(
        DataError, match=r"record ex1, field 'task': dense_region_caption is not supported for PaliGemma"
    ):
        pali.render(ex)


# ---------------------------------------------------------------------------- region proposals


def test_region_proposal_exact_round_trip_and_post_processor(post_processed):
    ex = example("region_proposal", objects=[CIRCLE, SQUARE])
    prompt, target = florence2.render(ex)
    assert prompt == "<REGION_PROPOSAL>"
    assert target == "<loc_0><loc_0><loc_100><loc_100>" + REGION_TOKENS  # boxes alone, raster order
    reference, ours = post_processed(ex, "<REGION_PROPOSAL>")
    assert ours.errors == 0 and [o.category for o in ours.objects] == reference["labels"] == ["", ""]
    assert truncated(ours.objects) == reference["bboxes"]
    # a truncated box and stray text are one error each
    assert florence2.parse("<loc_1><loc_2>x" + REGION_TOKENS + "</s>", "region_proposal", SIZE).errors == 2
    assert florence2.render(example("region_proposal")) == ("<REGION_PROPOSAL>", "")


# ---------------------------------------------------------------------------- open-vocabulary detection


def test_open_vocabulary_detection_florence2(post_processed):
    ex = example(
        "open_vocabulary_detection",
        categories=["circle"],
        objects=[CIRCLE, Object((0.0, 0.0, 64.0, 48.0), "circle")],
    )
    prompt, target = florence2.render(ex)
    assert prompt == "<OPEN_VOCABULARY_DETECTION>circle"
    assert target == "circle<loc_0><loc_0><loc_100><loc_100>circle" + REGION_TOKENS
    reference, ours = post_processed(ex, "<OPEN_VOCABULARY_DETECTION>")
    assert ours.errors == 0
    assert [o.category for o in ours.objects] == reference["bboxes_labels"] == ["circle", "circle"]
    assert truncated(ours.objects) == reference["bboxes"]
    # no box of the class: the empty target, as for detection
    assert florence2.render(example("open_vocabulary_detection", categories=["star"])) == (
        "<OPEN_VOCABULARY_DETECTION>star",
        "",
    )


def test_open_vocabulary_detection_pali_names_every_class():
    ex = example("open_vocabulary_detection", categories=["square", "circle"], objects=[CIRCLE, SQUARE])
    assert pali.render(ex) == (
        "detect square ; circle",
        "<loc0000><loc0000><loc0102><loc0102> square ; <loc0512><loc0512><loc1023><loc1023> circle",
    )
    pred = pali.parse(pali.render(ex)[1] + "<eos>", "open_vocabulary_detection", SIZE)
    assert pred.errors == 0 and [o.category for o in pred.objects] == ["square", "circle"]


def test_open_vocabulary_detection_refusals_name_the_field():
    with pytest.raises(ValueError, match="lacks its target field"):
        example("open_vocabulary_detection", objects=[CIRCLE])  # no class named
    two = example("open_vocabulary_detection", categories=["circle", "square"], objects=[CIRCLE])
    with pytest.raises(DataError, match=r"record ex1, field 'categories'.*names one class, not 2"):
        florence2.render(two)
    other = example("open_vocabulary_detection", categories=["star"], objects=[CIRCLE])
    for fmt in (florence2, pali):
        with pytest.raises(
            DataError, match=r"record ex1, field 'objects\[0\].category'.*'circle' is not among"
        ):
            fmt.render(other)


# ---------------------------------------------------------------------------- region -> text


@pytest.mark.parametrize(
    ("task", "field", "answer", "token"),
    [
        ("region_to_category", "label", "circle", "<REGION_TO_CATEGORY>"),
        ("region_to_description", "caption", "a big red circle", "<REGION_TO_DESCRIPTION>"),
        ("region_to_ocr", "text", "HELLO", "<REGION_TO_OCR>"),
    ],
)
def test_region_to_text_exact_round_trip_and_post_processor(post_processed, task, field, answer, token):
    ex = example(task, region=REGION, **{field: answer})
    prompt, target = florence2.render(ex)
    assert prompt == token + REGION_TOKENS
    assert target == answer + REGION_TOKENS  # as Florence-2 answers: `car<loc_52><loc_332>...`
    reference, ours = post_processed(ex, token)
    assert reference == target  # the post-processor's pure text keeps the tokens
    assert (ours.text, ours.errors) == (answer, 0)
    assert florence2.parse(answer + "</s>", task, SIZE).errors == 0  # the tokens may be left out
    assert florence2.parse(REGION_TOKENS, task, SIZE).errors == 1  # no answer
    assert florence2.parse(answer + "<loc_1><loc_2>", task, SIZE).errors == 1  # not four tokens
    assert florence2.parse(answer + REGION_TOKENS + "more", task, SIZE).errors == 1  # text after them
    with pytest.raises(
        DataError, match=rf"record ex1, field 'task': {task} is not supported for PaliGemma.*{token}"
    ):
        pali.render(ex)


def test_a_region_task_needs_its_region_and_only_they_take_one():
    with pytest.raises(ValueError, match="lacks its target field"):
        example("region_to_category", label="circle")
    with pytest.raises(ValueError, match="a region is only for region_to_category"):
        example("caption", caption="x", region=REGION)


def test_region_answer_that_cannot_be_read_back_is_refused():
    with pytest.raises(DataError, match=r"record ex1, field 'label'"):
        florence2.render(example("region_to_category", region=REGION, label="a <b>"))


# ---------------------------------------------------------------------------- region -> mask


def test_region_to_segmentation_exact_and_post_processor(post_processed):
    ex = example("region_to_segmentation", region=REGION, polygons=[TRIANGLE])
    prompt, target = florence2.render(ex)
    assert prompt == "<REGION_TO_SEGMENTATION>" + REGION_TOKENS
    assert target == "<loc_500><loc_500><loc_999><loc_500><loc_999><loc_999>"
    reference, ours = post_processed(ex, "<REGION_TO_SEGMENTATION>")
    assert ours.errors == 0
    assert reference["polygons"] == [[[int(v) for v in poly] for poly in ours.polygons]]
    with pytest.raises(DataError, match=r"record ex1, field 'task': region_to_segmentation is not supported"):
        pali.render(ex)


# ---------------------------------------------------------------------------- records


def test_record_columns_hold_level_and_region_as_records_do():
    examples = [
        example("caption", caption="A circle.", level="paragraph"),
        example("caption", caption="A circle."),
        example("region_to_category", region=REGION, label="circle"),
        example("region_to_segmentation", region=REGION, polygons=[TRIANGLE]),
        example("open_vocabulary_detection", categories=["circle"], objects=[CIRCLE]),
    ]
    columns = RecordColumns()
    for ex in examples:
        columns.append(ex, "florence2", *florence2.render(ex))
    want = [Record.from_example(ex, "florence2", *florence2.render(ex)).to_dict() for ex in examples]
    assert columns.to_table().to_pylist() == want
    assert [w["level"] for w in want] == ["paragraph", None, None, None, None]
    assert [w["region"] for w in want] == [[], [], list(REGION), list(REGION), []]
