"""Location tokens: quantization edges, token spelling, round trips, object order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.florence2.processing_florence2 import Florence2PostProcessor

from pipeline.formats.loc import (
    FLORENCE,
    PALI,
    bins_to_box,
    box_to_bins,
    quantize,
    sort_objects,
    strip_markers,
)
from pipeline.records import Object

SCHEMES = [FLORENCE, PALI]


def test_quantize_edges():
    assert quantize(0, 640, 1000) == 0
    assert quantize(64, 640, 1000) == 100  # exactly on a bin boundary: the bin to the right
    assert quantize(63.99, 640, 1000) == 99
    assert quantize(639.99, 640, 1000) == 999
    assert quantize(640, 640, 1000) == 999  # the right edge stays in the last bin
    assert quantize(-5, 640, 1000) == 0
    assert quantize(1e9, 640, 1000) == 999
    assert quantize(5, 10, 1024) == 512
    assert quantize(10, 10, 1024) == 1023
    assert quantize(-0.1, 10, 1024) == 0
    assert quantize(1, 1, 1000) == 999  # one-pixel image
    assert quantize(0.5, 1, 1000) == 500


def test_box_to_bins_and_back():
    assert box_to_bins((0, 0, 640, 480), (640, 480), 1000) == (0, 0, 999, 999)
    assert box_to_bins((-10, -10, 700, 500), (640, 480), 1000) == (0, 0, 999, 999)
    assert box_to_bins((64, 96, 320, 240), (640, 480), 1000) == (100, 200, 500, 500)
    assert box_to_bins((320, 240, 640, 480), (640, 480), 1024) == (512, 512, 1023, 1023)
    assert bins_to_box((0, 0, 999, 999), (1000, 2000), 1000) == (0.5, 1.0, 999.5, 1999.0)
    assert bins_to_box((512, 0, 1023, 1023), (1024, 512), 1024) == (512.5, 0.25, 1023.5, 511.75)


def test_token_spelling():
    assert FLORENCE.encode((64, 96, 320, 480), (640, 480)) == "<loc_100><loc_200><loc_500><loc_999>"
    # PaliGemma writes y before x, four digits
    assert PALI.encode((32, 240, 96, 360), (640, 480)) == "<loc0512><loc0051><loc0768><loc0153>"
    assert PALI.encode((0, 0, 640, 480), (640, 480)) == "<loc0000><loc0000><loc1023><loc1023>"
    assert FLORENCE.tokens()[0] == "<loc_0>" and FLORENCE.tokens()[-1] == "<loc_999>"
    assert len(FLORENCE.tokens()) == 1000
    assert PALI.tokens()[0] == "<loc0000>" and PALI.tokens()[-1] == "<loc1023>"
    assert len(PALI.tokens()) == 1024


def test_split_marks_out_of_range_tokens():
    assert FLORENCE.split("a<loc_1><loc_1000>b") == ["a", 1, "", None, "b"]
    assert PALI.split("<loc0001><loc1024> a") == ["", 1, "", None, " a"]
    assert FLORENCE.split("<loc_" + "9" * 5000 + ">") == ["", None, ""]  # no int() overflow error


def test_decode_reads_the_scheme_order():
    assert PALI.decode([1, 2, 3, 4], (1024, 1024)) == (2.5, 1.5, 4.5, 3.5)
    assert FLORENCE.decode([1, 2, 3, 4], (1000, 1000)) == (1.5, 2.5, 3.5, 4.5)


def test_strip_markers():
    assert strip_markers("</s><s> a red circle</s><pad><pad>") == "a red circle"
    assert strip_markers("<bos>yes<eos>") == "yes"


def test_sort_objects_raster_order():
    size = (1000, 1000)
    objs = [
        Object((500, 500, 600, 600), "circle"),
        Object((0, 0, 10, 10), "square"),
        Object((50, 500, 60, 510), "triangle"),
        Object((500, 500, 600, 600), "ball"),  # same box: category breaks the tie
        Object((10, 500.9, 20, 520), "left"),  # lower by a sub-bin amount, but the same y1 bin: x1 decides
    ]
    assert [o.category for o in sort_objects(objs, size, 1000)] == [
        "square",
        "left",
        "triangle",
        "ball",
        "circle",
    ]


def test_quantize_matches_transformers_on_every_pixel():
    # transformers' Florence2PostProcessor.quantize: floor(x / (W / 1000)), clamp 999 (float64 here)
    post = Florence2PostProcessor.__new__(Florence2PostProcessor)  # quantize needs no tokenizer
    post.quantize_bins = (1000, 1000)
    for w, h in [(640, 480), (1000, 1000), (333, 777), (1, 2), (4032, 3024)]:
        boxes = [(x, min(x, h), w - x, max(h - x, 0)) for x in range(w + 1)]
        theirs = post.quantize(torch.tensor(boxes, dtype=torch.float64), (w, h)).tolist()
        assert [list(box_to_bins(b, (w, h), 1000)) for b in boxes] == theirs


@st.composite
def size_and_box(draw):
    w = draw(st.integers(1, 5000))
    h = draw(st.integers(1, 5000))
    x = st.floats(0, w, allow_nan=False)
    y = st.floats(0, h, allow_nan=False)
    return (w, h), (draw(x), draw(y), draw(x), draw(y))


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@settings(max_examples=200, deadline=None)
@given(case=size_and_box())
def test_round_trip_within_one_bin(scheme, case):
    size, box = case
    pieces = scheme.split(scheme.encode(box, size))
    run = [p for p in pieces if not isinstance(p, str)]
    assert len(run) == 4 and None not in run
    boxes, errors = scheme.boxes(run, size)
    assert errors == 0
    (decoded,) = boxes
    for v, d, s in zip(box, decoded, (*size, *size), strict=True):
        bin_width = s / scheme.bins
        assert abs(v - d) <= bin_width
        assert abs(v - d) <= bin_width / 2 + 1e-9 * s  # bin centres: half a bin at most
        assert 0 < d < s  # decoded coordinates are always inside the image


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(1, 5000),
    h=st.integers(1, 5000),
    box=st.tuples(*[st.floats(-1e7, 1e7, allow_nan=False)] * 4),
)
def test_any_box_gives_in_range_tokens(scheme, w, h, box):
    run = [p for p in scheme.split(scheme.encode(box, (w, h))) if not isinstance(p, str)]
    assert len(run) == 4
    assert all(b is not None and 0 <= b < scheme.bins for b in run)
