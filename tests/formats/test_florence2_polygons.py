"""Florence-2 masks as polygons of location tokens: written as the model writes them, and read
back as transformers' own Florence2PostProcessor reads them."""

from __future__ import annotations

import pytest

from pipeline.formats import florence2 as fmt
from pipeline.formats.loc import FLORENCE, PALI
from pipeline.models import florence2

SIZE = (640, 480)
SQUARE = [100.0, 50.0, 300.0, 50.0, 300.0, 250.0, 100.0, 250.0]
TRIANGLE = [400.0, 300.0, 600.0, 300.0, 500.0, 470.0]


def test_points_are_written_x_then_y_per_scheme():
    assert FLORENCE.encode_points([100.0, 50.0], SIZE) == "<loc_156><loc_104>"  # floor(100*1000/640)
    assert PALI.encode_points([100.0, 50.0], SIZE) == "<loc0106><loc0160>"  # y first, 1024 bins
    with pytest.raises(ValueError, match="even number"):
        FLORENCE.encode_points([1.0, 2.0, 3.0], SIZE)


def test_polygons_round_trip_to_bin_centres():
    text = fmt.polygons_text([SQUARE, TRIANGLE], SIZE)
    assert text.count("<sep>") == 1 and text.count("<loc_") == 14
    polygons, errors = fmt.parse_polygons(text + "</s>", SIZE)
    assert errors == 0
    assert [len(p) for p in polygons] == [8, 6]
    for got, want in zip(polygons, [SQUARE, TRIANGLE], strict=True):
        for g, w, side in zip(got, want, [640, 480] * 4, strict=False):
            assert abs(g - w) <= side / 1000 / 2 + 1e-9  # within half a bin
    assert polygons[0][:2] == [(156 + 0.5) * 0.64, (104 + 0.5) * 0.48]


@pytest.mark.parametrize(
    ("text", "polygons", "errors"),
    [
        ("<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>", 1, 0),  # wrapped, as some outputs are
        ("<loc_1><loc_2><loc_3><loc_4><loc_5>", 0, 2),  # a point without its pair, and too few points
        ("<loc_1><loc_2><loc_3><loc_4>", 0, 1),  # two points enclose nothing
        ("car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>", 1, 1),  # text where none belongs
        ("<loc_1><loc_2><loc_3><loc_4><loc_5><loc_1000>", 0, 2),  # an out-of-range token
        ("", 0, 0),
    ],
)
def test_what_cannot_be_read_is_counted(text, polygons, errors):
    got, bad = fmt.parse_polygons(text, SIZE)
    assert (len(got), bad) == (polygons, errors)


def test_reads_as_transformers_florence2_post_processor():
    """The reference: Florence2Processor.post_process_generation on the same text gives the same
    polygons (it truncates the bin centres to integers)."""
    processor = florence2.build_processor(["a"], image_size=64)
    text = fmt.polygons_text([SQUARE, TRIANGLE], SIZE)
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    reference = processor.post_process_generation(text=text, task=task, image_size=SIZE)[task]
    ours, errors = fmt.parse_polygons(text, SIZE)
    assert errors == 0
    assert reference["polygons"] == [[[int(v) for v in poly] for poly in ours]]
