"""Polygon targets simplified to data.polygon_tolerance: which vertices stay, and that nothing
else about an outline changes."""

from __future__ import annotations

import math

import pytest
from shapely.geometry import LinearRing, Point

from pipeline.demo.draw import _outline
from pipeline.formats.outline import simplified, simplify_polygon
from pipeline.records import Example


def _points(flat):
    return list(zip(flat[::2], flat[1::2], strict=True))


def test_a_traced_circle_keeps_every_fourth_vertex_within_a_pixel() -> None:
    circle = list(_outline("circle", 20))  # a 32-gon of radius 10
    kept = simplify_polygon(circle, 1.0)
    assert _points(kept) == _points(circle)[::4]  # the octagon, from the same first vertex
    ring = LinearRing(_points(kept))
    assert max(ring.distance(Point(p)) for p in _points(circle)) <= 1.0
    # half a pixel: the 16-gon (an octagon's chords sit 0.76 px from the circle)
    assert _points(simplify_polygon(circle, 0.5)) == _points(circle)[::2]


@pytest.mark.parametrize("kind", ["square", "triangle", "diamond", "star"])
def test_corners_stay(kind: str) -> None:
    outline = list(_outline(kind, 20))
    assert simplify_polygon(outline, 1.0) == outline


def test_collinear_and_wobbling_points_go() -> None:
    traced = [0, 0, 10, 0.3, 20, 0, 30, 0.2, 40, 0, 40, 20, 40, 40, 20, 40, 0, 40, 0, 20]
    assert simplify_polygon(traced, 1.0) == [0, 0, 40, 0, 40, 40, 0, 40]
    assert simplify_polygon(traced, 0.1) == [0, 0, 10, 0.3, 20, 0, 30, 0.2, 40, 0, 40, 40, 0, 40]


@pytest.mark.parametrize(
    "polygon",
    [
        [0, 0, 0.1, 0, 0.2, 0.1],  # would keep two points: left to the renderer, as it is
        [0, 0, 4, 0],  # not a polygon: the renderer names it
        [0, 0, 4, 0, 4],  # an odd count
    ],
)
def test_what_cannot_be_simplified_comes_back_unchanged(polygon) -> None:
    assert simplify_polygon(polygon, 1.0) == [float(v) for v in polygon]


def test_zero_tolerance_is_the_source_outline() -> None:
    circle = list(_outline("circle", 20))
    assert simplify_polygon(circle, 0.0) == circle


def test_simplified_copies_the_example_and_counts_vertices() -> None:
    circle, square = list(_outline("circle", 20)), list(_outline("square", 20))
    ex = Example(
        id="1", source="s", task="segmentation", image="a.png", image_size=(64, 64), phrase="the circle",
        polygons=[circle, square],
    )  # fmt: skip
    shown, before, after = simplified(ex, 1.0)
    assert (before, after) == (32 + 4, 8 + 4)
    assert shown.polygons == [simplify_polygon(circle, 1.0), square]
    assert ex.polygons == [circle, square]  # the record keeps the source's outline
    assert shown.phrase == ex.phrase and shown.id == ex.id
    assert simplified(ex, 0.0) == (ex, 0, 0)
    assert math.isclose(sum(shown.polygons[0][::2]) / 8, 10.0, abs_tol=1e-9)  # centred as before
