"""Grounding, referring segmentation, OCR and caption/VQA languages in both formats: exact prompts and
targets, round trips, and Florence-2 read back as transformers' own post-processor reads it."""

from __future__ import annotations

import pytest

from pipeline.errors import DataError
from pipeline.formats import florence2, pali
from pipeline.records import Example, Object, Region

SIZE = (640, 480)
CIRCLE = Object((320.0, 240.0, 640.0, 480.0), "circle")
SQUARE = Object((0.0, 0.0, 64.0, 48.0), "square")
POLYGON = [100.0, 50.0, 300.0, 50.0, 300.0, 250.0, 100.0, 250.0]
HELLO = Region.from_box("HELLO", (0.0, 0.0, 64.0, 48.0))
WORLD = Region("world", (320.0, 240.0, 480.0, 240.0, 480.0, 288.0, 320.0, 288.0))


def example(task: str, **fields) -> Example:
    return Example(id="ex1", task=task, image="/img.png", image_size=SIZE, **fields)


def within_half_bin(got, want, bins: int) -> bool:
    sides = [SIZE[0], SIZE[1]] * (len(want) // 2)
    return all(abs(g - w) <= side / bins / 2 + 1e-9 for g, w, side in zip(got, want, sides, strict=True))


# ---------------------------------------------------------------------------- grounding


def test_grounding_florence2_exact_and_round_trip():
    ex = example("grounding", phrase="the red circle", objects=[CIRCLE, SQUARE])
    prompt, target = florence2.render(ex)
    assert prompt == "<CAPTION_TO_PHRASE_GROUNDING>the red circle"
    # raster order, every box after the one phrase, as Florence writes several boxes of a phrase
    assert target == "the red circle<loc_0><loc_0><loc_100><loc_100><loc_500><loc_500><loc_999><loc_999>"
    pred = florence2.parse(target + "</s>", "grounding", SIZE)
    assert pred.errors == 0
    assert [o.category for o in pred.objects] == ["the red circle"] * 2
    for got, want in zip(pred.objects, [SQUARE, CIRCLE], strict=True):
        assert within_half_bin(got.bbox, want.bbox, 1000)


def test_grounding_pali_exact_and_round_trip():
    ex = example("grounding", phrase="the red circle", objects=[CIRCLE])
    prompt, target = pali.render(ex)
    assert prompt == "detect the red circle"
    assert target == "<loc0512><loc0512><loc1023><loc1023> the red circle"
    pred = pali.parse(target + "<eos>", "grounding", SIZE)
    assert pred.errors == 0 and [o.category for o in pred.objects] == ["the red circle"]
    assert within_half_bin(pred.objects[0].bbox, CIRCLE.bbox, 1024)


@pytest.mark.parametrize(("fmt", "phrase"), [(florence2, "a <loc_1> box"), (pali, "a ; b"), (pali, " x")])
def test_unwritable_phrase_is_refused_naming_the_record(fmt, phrase):
    with pytest.raises(DataError, match=r"record ex1.*phrase"):
        fmt.render(example("grounding", phrase=phrase, objects=[CIRCLE]))


def test_grounding_reads_as_the_florence2_post_processor(post_processed):
    ex = example("grounding", phrase="the red circle", objects=[CIRCLE, SQUARE])
    reference, ours = post_processed(ex, "<CAPTION_TO_PHRASE_GROUNDING>")
    assert reference["labels"] == ["the red circle"] * 2  # one label per box
    # it truncates the bin centres to integers
    assert [[int(v) for v in o.bbox] for o in ours.objects] == [list(b) for b in reference["bboxes"]]


# ---------------------------------------------------------------------------- segmentation


def test_segmentation_florence2_exact_and_round_trip():
    ex = example("segmentation", phrase="the square", polygons=[POLYGON], objects=[SQUARE])
    prompt, target = florence2.render(ex)
    assert prompt == "<REFERRING_EXPRESSION_SEGMENTATION>the square"
    assert target == (
        "<loc_156><loc_104><loc_468><loc_104><loc_468><loc_520><loc_156><loc_520>"
    )  # floor(100 * 1000 / 640) = 156, floor(50 * 1000 / 480) = 104 ...
    pred = florence2.parse(target + "</s>", "segmentation", SIZE)
    assert pred.errors == 0 and len(pred.polygons) == 1
    assert within_half_bin(pred.polygons[0], POLYGON, 1000)


def test_segmentation_reads_as_the_florence2_post_processor(post_processed):
    ex = example("segmentation", phrase="x", polygons=[POLYGON, POLYGON[:6]])
    reference, ours = post_processed(ex, "<REFERRING_EXPRESSION_SEGMENTATION>")
    assert reference["polygons"] == [[[int(v) for v in poly] for poly in ours.polygons]]


def test_segmentation_bad_polygon_names_the_field():
    with pytest.raises(DataError, match=r"record ex1.*polygons"):
        florence2.render(example("segmentation", phrase="x", polygons=[[1.0, 2.0, 3.0, 4.0]]))


CODES = [7, 0, 127, 3, 12, 99, 5, 5, 64, 1, 2, 3, 100, 101, 102, 8]
SEG = "".join(f"<seg{c:03d}>" for c in CODES)


def test_pali_segmentation_exact_target_and_round_trip():
    ex = example("segmentation", phrase="the square", polygons=[POLYGON], mask_codes=CODES)
    prompt, target = pali.render(ex)
    assert prompt == "segment the square"
    # the mask's extent (100, 50)-(300, 250) in y1 x1 y2 x2 bins of 1024, then its 16 codes, then the phrase
    assert target == f"<loc0106><loc0160><loc0533><loc0480>{SEG} the square"
    window = pali.mask_window([POLYGON], SIZE)
    assert window == (100.3125, 49.921875, 300.3125, 250.078125)  # bin centres: what decoding reads back
    pred = pali.parse(target + "<eos>", "segmentation", SIZE)
    assert pred.errors == 0 and pred.mask_codes == [CODES] and pred.mask is None
    assert [(o.bbox, o.category) for o in pred.objects] == [(window, "the square")]
    two = pali.parse(f"{target} ; {target.replace('square', 'box')}", "segmentation", SIZE)
    assert two.errors == 0 and len(two.objects) == 2 and two.objects[1].category == "the box"


def test_pali_segmentation_needs_its_codes():
    with pytest.raises(DataError, match=r"record ex1.*mask_codes.*16 codes.*has 0"):
        pali.render(example("segmentation", phrase="the square", polygons=[POLYGON]))
    with pytest.raises(DataError, match=r"mask_codes"):
        pali.render(example("segmentation", phrase="x", polygons=[POLYGON], mask_codes=[128] * 16))
    outside = [700.0, 500.0, 800.0, 500.0, 800.0, 600.0]  # no area inside the 640 x 480 image
    with pytest.raises(DataError, match=r"record ex1.*polygons.*no area"):
        pali.render(example("segmentation", phrase="x", polygons=[outside], mask_codes=CODES))


@pytest.mark.parametrize(
    "text, objects, errors",
    [
        ("", 0, 0),  # nothing generated: an empty mask, not a parse error
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG} x", 1, 0),
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG}", 1, 0),  # no label: still a mask
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG[:-8]} x", 0, 1),  # 15 codes
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG}<seg001> x", 0, 1),  # 17 codes
        (f"<loc0106><loc0160><loc0533><loc1024>{SEG} x", 0, 1),  # out-of-range location
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG[:-8]}<seg128> x", 0, 1),  # out-of-range code
        (f"<loc0533><loc0160><loc0106><loc0480>{SEG} x", 0, 1),  # y2 < y1: no area (big_vision: invalid)
        (f"<loc0106><loc0160><loc0533>{SEG} x", 0, 1),  # three locations
        (f"{SEG} x", 0, 1),  # codes without a box
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG} x ; ", 1, 1),  # an empty piece after a separator
        (f"<loc0106><loc0160><loc0533><loc0480>{SEG} x ; junk", 1, 1),
    ],
)
def test_pali_segmentation_parse_counts_what_is_not_a_mask(text, objects, errors):
    pred = pali.parse(text, "segmentation", SIZE)
    assert (len(pred.objects), len(pred.mask_codes), pred.errors) == (objects, objects, errors)


# ---------------------------------------------------------------------------- ocr


def test_ocr_plain_text_both_families():
    ex = example("ocr", text="HELLO world")
    assert florence2.render(ex) == ("<OCR>", "HELLO world")
    assert pali.render(ex) == ("ocr", "HELLO world")
    assert florence2.parse("</s><s>HELLO world</s>", "ocr", SIZE).text == "HELLO world"
    assert pali.parse("HELLO world<eos>", "ocr", SIZE).text == "HELLO world"


def test_ocr_with_regions_florence2_exact_and_round_trip():
    ex = example("ocr", text="HELLO world", regions=[HELLO, WORLD])
    prompt, target = florence2.render(ex)
    assert prompt == "<OCR_WITH_REGION>"
    assert target == (
        "HELLO<loc_0><loc_0><loc_100><loc_0><loc_100><loc_100><loc_0><loc_100>"
        "world<loc_500><loc_500><loc_750><loc_500><loc_750><loc_600><loc_500><loc_600>"
    )
    pred = florence2.parse(target + "</s>", "ocr", SIZE)
    assert pred.errors == 0 and pred.text == "HELLO world"
    assert [r.text for r in pred.regions] == ["HELLO", "world"]
    for got, want in zip(pred.regions, [HELLO, WORLD], strict=True):
        assert within_half_bin(got.quad, want.quad, 1000)
    # PaliGemma's `ocr` writes text only
    assert pali.render(ex) == ("ocr", "HELLO world")


def test_ocr_regions_read_as_the_florence2_post_processor(post_processed):
    reference, ours = post_processed(
        example("ocr", text="HELLO world", regions=[HELLO, WORLD]), "<OCR_WITH_REGION>"
    )
    assert reference["labels"] == ["HELLO", "world"]
    assert [[int(v) for v in r.quad] for r in ours.regions] == [list(q) for q in reference["quad_boxes"]]


@pytest.mark.parametrize(
    ("text", "regions", "errors"),
    [
        ("a<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>b", 1, 1),  # b: cut off before its quad
        ("a<loc_1><loc_2><loc_3><loc_4>b<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", 1, 1),
        ("<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", 0, 1),  # a quad without text
        ("a b<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_1000>", 0, 1),  # out-of-range token
    ],
)
def test_ocr_regions_what_cannot_be_read_is_counted(text, regions, errors):
    pred = florence2.parse(text, "ocr", SIZE)
    assert (len(pred.regions), pred.errors) == (regions, errors)


def test_ocr_region_text_with_a_location_marker_is_refused():
    ex = example("ocr", text="x", regions=[Region.from_box("<loc_1>", (0, 0, 1, 1))])
    with pytest.raises(DataError, match=r"record ex1.*regions\[0\]\.text"):
        florence2.render(ex)


# ---------------------------------------------------------------------------- languages


def test_language_in_pali_prompts_only():
    cap = example("caption", caption="ein roter Kreis", captions=["ein roter Kreis"], language="de")
    vqa = example("vqa", question="welche Farbe?", answer="rot", answers=["rot"], language="de")
    assert pali.render(cap) == ("caption de", "ein roter Kreis")
    assert pali.render(vqa) == ("answer de welche Farbe?", "rot")
    # English by default, as before
    assert pali.render(example("caption", caption="a", captions=["a"]))[0] == "caption en"
    # Florence-2 was pretrained in English only: the prompt does not change
    assert florence2.render(cap) == ("<CAPTION>", "ein roter Kreis")
    assert florence2.render(vqa) == ("Answer the question: welche Farbe?", "rot")


def test_language_only_on_caption_and_vqa():
    with pytest.raises(ValueError, match="only for caption and vqa"):
        example("ocr", text="x", language="de")
