"""Reserved text: each family's pattern of special tokens, and the one check of an Example's user
text (skips with their reasons, the vocabulary's repair, line breaks as spaces). The pattern is
tied to the tiny tokenizers in tests/models (test_florence2.py, test_paligemma.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.errors import DataError
from pipeline.formats import florence2, pali, reserved
from pipeline.formats.loc import SPECIAL_MARKERS
from pipeline.records import Example, Object, Region, Tally
from pipeline.sources import repairs

FLO, PALI = florence2.RESERVED, pali.RESERVED


def test_every_token_a_format_writes_or_states_is_reserved():
    for fmt in (florence2, pali):
        for token in [*fmt.extra_tokens(), *SPECIAL_MARKERS, "<image>"]:
            assert fmt.RESERVED.fullmatch(token), (fmt.FAMILY, token)
    for token in [*florence2.TAG_TOKENS, *florence2.BART_SPECIALS, *florence2.PROCESSOR_TASK_TOKENS]:
        assert FLO.fullmatch(token), token
    for prompt in (florence2.CAPTION_PROMPT, florence2.DETECTION_PROMPT, florence2.GROUNDING_PROMPT):
        assert FLO.fullmatch(prompt)  # uvft's own task tokens: prompts are rendered after the check
    for token in [*pali.GEMMA_CONTROL_TOKENS, "<unused0>", "<unused98>"]:
        assert PALI.fullmatch(token), token


@pytest.mark.parametrize(
    ("pattern", "text", "want"),
    [
        (PALI, "what is <image>?", ("image", "<image>")),
        (PALI, "x<loc0005>", ("location", "<loc0005>")),
        (PALI, "x <loc12345> y", ("location", "<loc12345>")),  # parse reads any digits
        (PALI, "<seg001>", ("segmentation", "<seg001>")),
        (PALI, "red<eos>", ("special", "<eos>")),
        (PALI, "a <start_of_turn>user", ("special", "<start_of_turn>")),
        (PALI, "a </s>", ("special", "</s>")),  # parse strips it from every generation
        (FLO, "the <OCR_WITH_REGION> text", ("task", "<OCR_WITH_REGION>")),  # not <OCR> plus text
        (FLO, "<OD>", ("task", "<OD>")),
        (FLO, "x<loc_5>", ("location", "<loc_5>")),
        (FLO, "a <poly> b", ("special", "<poly>")),
        (FLO, "a<sep>", ("special", "<sep>")),
        (FLO, "<s>hi", ("special", "<s>")),
        (FLO, "the <image>", ("image", "<image>")),
    ],
)
def test_find_names_the_kind_and_the_token(pattern, text, want):
    assert reserved.find(text, pattern) == want


@pytest.mark.parametrize(
    "text",
    ["a < b > c", "<b>bold</b>", "x<3", "<loc>", "<loc_>", "<images>", "<Image>", "<eos", "IMAGE", "<od"],
)
def test_ordinary_text_is_not_reserved_in_either_family(text):
    assert reserved.find(text, FLO) is None and reserved.find(text, PALI) is None


def test_each_family_reserves_its_own_tokens_only():
    assert reserved.find("<loc0005> <seg001> <unused3>", FLO) is None  # text to Florence-2
    assert reserved.find("<loc_5> <OD> <poly> <sep>", PALI) is None  # text to PaliGemma


def test_one_line_folds_each_run_of_breaks_and_tabs_into_one_space():
    assert reserved.one_line("a\nb") == "a b"
    assert reserved.one_line("a \r\n\t b") == "a b"
    assert reserved.one_line("a\u2028b\x85c\vd\fe") == "a b c d e"
    assert reserved.one_line("a\n") == "a"
    assert reserved.one_line("a  b") == "a  b"  # spaces alone are not breaks


def _ex(task: str, **fields) -> Example:
    return Example(
        id="7", task=task, image="/i.png", image_size=(10, 10), source="s", split="train", **fields
    )


def _screen(ex: Example, pattern=PALI) -> tuple[bool, Tally]:
    tally = Tally(examples=1)
    return reserved.screen(ex, pattern, tally), tally


@pytest.mark.parametrize(
    ("ex", "reason"),
    [
        (_ex("classification", label="a <loc0005>"), "location token in label"),
        (_ex("caption", caption="ok", captions=["ok", "b<eos>"]), "special token in captions"),
        (_ex("vqa", question="what <image>?", answer="a"), "image token in question"),
        (_ex("vqa", question="q", answer="a<seg001>", answers=["a<seg001>"]), "segmentation token in answer"),
        (_ex("vqa", question="q", answer="a", answers=["a", "<image>"]), "image token in answers"),
        (_ex("detection", objects=[Object((1, 1, 5, 5), "<bos>")]), "special token in objects.category"),
        (_ex("detection", crowd=[Object((1, 1, 5, 5), "<image>")]), "image token in crowd.category"),
        (
            _ex("grounding", phrase="<loc0001>", objects=[Object((1, 1, 5, 5), "x")]),
            "location token in phrase",
        ),
        (_ex("ocr", text="a <pad> b"), "special token in text"),
        (
            _ex("ocr", text="t", regions=[Region.from_box("<eos>", (1, 1, 5, 5))]),
            "special token in regions.text",
        ),
    ],
)
def test_a_field_holding_a_special_token_skips_the_example_naming_kind_and_field(ex, reason):
    kept, tally = _screen(ex)
    assert not kept
    assert tally.skipped == Counter({reason: 1}) and tally.examples == 0 and tally.repaired == Counter()


def test_a_vocabulary_entry_holding_a_special_token_is_dropped_and_counted():
    vocabulary = ["cat", "<image>", "dog"]
    ex = _ex("detection", objects=[Object((1, 1, 5, 5), "cat")], categories=vocabulary)
    kept, tally = _screen(ex)
    assert kept and ex.categories == ["cat", "dog"] and tally.examples == 1
    assert tally.repaired == Counter({repairs.RESERVED_CATEGORY: 1}) and tally.skipped == Counter()
    assert vocabulary == ["cat", "<image>", "dog"]  # shared by the source's other examples: not mutated


def test_line_breaks_in_single_line_fields_become_spaces_once_counted():
    vocabulary = ["red\ncat", "dog"]
    ex = _ex(
        "detection",
        objects=[Object((1, 1, 5, 5), "red\ncat"), Object((2, 2, 5, 5), "dog")],
        crowd=[Object((1, 1, 2, 2), "red\ncat", 3.0)],
        categories=vocabulary,
    )
    kept, tally = _screen(ex, FLO)
    assert kept and tally.repaired == Counter({repairs.LINE_BREAK: 1})  # one per example
    assert ex.categories == ["red cat", "dog"] and vocabulary == ["red\ncat", "dog"]
    assert ex.objects == [Object((1, 1, 5, 5), "red cat"), Object((2, 2, 5, 5), "dog")]
    assert ex.crowd == [Object((1, 1, 2, 2), "red cat", 3.0)]

    vqa = _ex("vqa", question="what\tcolour?", answer="dark\r\nred", answers=["dark\r\nred", "red"])
    assert _screen(vqa)[0] and (vqa.question, vqa.answer, vqa.answers) == (
        "what colour?",
        "dark red",
        ["dark red", "red"],
    )
    quad = (1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0)
    ocr = _ex("ocr", text="line one\nline two", regions=[Region("line\none", quad)])
    kept, tally = _screen(ocr)
    assert kept and ocr.text == "line one\nline two"  # OCR's text keeps its lines: they are content
    assert ocr.regions == [Region("line one", quad)] and tally.repaired == Counter({repairs.LINE_BREAK: 1})


@pytest.mark.parametrize(
    "ex",
    [
        _ex("vqa", question="what is < 3?", answer="<b>", answers=["<b>", "[x]"]),  # leads, no token
        _ex(
            "caption", caption="a\u200bb 👩\u200d💻", captions=["a\u200bb 👩\u200d💻"]
        ),  # unprintable, no break
        _ex(
            "detection", objects=[Object((1, 1, 5, 5), "<"), Object((1, 1, 5, 5), "x")], categories=["<", "x"]
        ),
    ],
)
def test_a_clean_example_is_kept_unchanged_and_uncounted(ex):
    before = repr(ex)
    kept, tally = _screen(ex)
    assert kept and repr(ex) == before
    assert (tally.examples, tally.skipped, tally.repaired) == (1, Counter(), Counter())


def test_checked_refuses_what_predict_is_asked_naming_the_field():
    with pytest.raises(DataError) as e:
        reserved.checked(_ex("vqa", question="what is <image>?", answer=""), PALI, "paligemma")
    assert str(e.value) == (
        "field 'question': 'what is <image>?' holds <image>, an image token of paligemma: the model would "
        "read it as that token, not as text; leave it out"
    )
    with pytest.raises(DataError, match=r"^field 'classes': '<OD>' holds <OD>, a task token of florence2"):
        reserved.checked(_ex("detection", categories=["cat", "<OD>"]), FLO, "florence2")
    ex = reserved.checked(_ex("vqa", question="what\ncolour?", answer=""), FLO, "florence2")
    assert ex.question == "what colour?"


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown kinds of token"):
        reserved.pattern(picture="<image>")


def test_every_field_of_an_example_is_checked_or_named_as_no_user_text():
    """A field added to Example later must be placed: user text (checked) or not."""
    import dataclasses

    checked = {*reserved._TEXT_FIELDS, "text", *reserved._LIST_FIELDS, *reserved._OBJECT_FIELDS}
    checked |= {"categories", "regions"}
    not_text = {"id", "task", "image", "image_size", "source", "split", "answer_type", "polygons", "language"}
    not_text |= {"level", "region", "mask_codes"}  # one of CAPTION_LEVELS; four numbers; integers
    assert {f.name for f in dataclasses.fields(Example)} == checked | not_text
    assert not checked & not_text
