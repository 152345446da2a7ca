"""Polygon targets as the model is trained to write them: a mask's outline simplified to within a
tolerance of the source's (`data.polygon_tolerance`), before any family renders it.

Every vertex costs two location tokens. A COCO outline traces the mask pixel by pixel (a circle of
20 px as a 32-gon: 64 tokens), and most of its vertices sit within a pixel of the chord between
their neighbours: the model's loss goes to sub-pixel steps it cannot see, and long outlines pass
`train.max_target_tokens` and are dropped. Douglas-Peucker (shapely) keeps the vertices that
shape the outline, in the source's order from its first vertex. Only the target changes: a record
keeps the source's polygons, and evaluation scores against them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pipeline.records import Box, Example


def simplify_polygon(polygon: Sequence[float], tolerance: float) -> list[float]:
    """A flat [x1, y1, x2, y2, ...] outline with every removed vertex within `tolerance` pixels of
    what is kept (Douglas-Peucker, no self-intersection introduced). An outline that would keep
    fewer than three vertices, or that is not a list of at least three points, comes back as it
    is: the renderer judges it, and nothing is dropped here."""
    flat = [float(v) for v in polygon]
    if tolerance <= 0 or len(flat) < 6 or len(flat) % 2:
        return flat
    from shapely.geometry import LineString

    points = list(zip(flat[::2], flat[1::2], strict=True))
    # the ring as a line from the first vertex back to it: the first vertex stays first
    kept = list(LineString([*points, points[0]]).simplify(tolerance, preserve_topology=True).coords)
    if kept and kept[-1] == kept[0]:
        kept = kept[:-1]
    if len(kept) < 3:
        return flat
    return [float(v) for point in kept for v in point]


def simplified(ex: Example, tolerance: float) -> tuple[Example, int, int]:
    """(the Example to render, vertices before, vertices after): `ex` itself when it has no
    polygons or the tolerance is 0, else a copy whose polygons are simplified."""
    if tolerance <= 0 or not ex.polygons:
        return ex, 0, 0
    polygons = [simplify_polygon(p, tolerance) for p in ex.polygons]
    item = copy.copy(ex)  # ex was validated; only the polygons change
    item.polygons = polygons
    return item, sum(len(p) // 2 for p in ex.polygons), sum(len(p) // 2 for p in polygons)


def extent(polygons: Sequence[Sequence[float]], size: tuple[int, int]) -> Box | None:
    """The xyxy box around every vertex of `polygons`, clipped to an image of `size` (width,
    height); None when no point lies in the image or the box has no area."""
    xs = [float(v) for p in polygons for v in p[0::2]]
    ys = [float(v) for p in polygons for v in p[1::2]]
    if not xs or not ys:
        return None
    w, h = size
    x1, y1 = max(min(xs), 0.0), max(min(ys), 0.0)
    x2, y2 = min(max(xs), float(w)), min(max(ys), float(h))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
