"""pipeline.masks: the polygon and RLE geometry that the formats, the codec, the metric and the
report share."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from pipeline import masks


def test_usable_polygon():
    assert masks.usable_polygon([0, 0, 1, 0, 1, 1])
    assert masks.usable_polygon(np.array([0.5, 0, 1, 0, 1, 1]))
    assert not masks.usable_polygon([0, 0, 1, 0])
    assert not masks.usable_polygon([0, 0, 1, 0, 1, 1, 2])
    assert not masks.usable_polygon([0, 0, 1, 0, 1, float("inf")])
    assert not masks.usable_polygon("0,0,1,0,1,1")
    assert not masks.usable_polygon(None)


def test_rasterise_and_rle_round_trip():
    square = [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]]
    mask = masks.rasterise(square, (20, 16))
    assert mask.shape == (16, 20) and mask.sum() == 100 and mask[:10, :10].all()
    rle = masks.to_rle(mask)
    assert rle["size"] == [16, 20] and isinstance(rle["counts"], str)
    assert np.array_equal(masks.from_rle(rle), mask)
    # the polygon rasteriser is the metric's: the same pixels as its RLE
    assert np.array_equal(mask, mask_utils.decode(masks.polygons_to_rle(square, 20, 16)).astype(bool))
    assert not masks.rasterise([[1.0, 2.0, 3.0, 4.0]], (20, 16)).any()  # not a polygon: nothing
    assert not masks.rasterise([], (20, 16)).any()


def test_from_rle_reads_bytes_text_and_run_lengths():
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1:3] = True  # column-major runs: 4 off, 1 on, 2 off, 1 on, 4 off
    compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert np.array_equal(masks.from_rle(compressed), mask)  # bytes counts
    assert np.array_equal(masks.from_rle({"size": [3, 4], "counts": compressed["counts"].decode()}), mask)
    assert np.array_equal(masks.from_rle({"size": [3, 4], "counts": [4, 1, 2, 1, 4]}), mask)
