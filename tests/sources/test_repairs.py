"""Repairs that say the data is laid out wrong: the clues clip_objects keeps, what each reader counts
as read, and the findings (with their likely cause) past the fraction and the minimum of hits.
The build's error for each cause is tested end to end in tests/data/test_build.py."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from pipeline.records import BoxClues, Object, Tally
from pipeline.sources import SourceContext, repairs
from pipeline.sources.images import clip_objects, parse_polygons, parse_regions
from pipeline.sources.jsonl import read_jsonl


def test_clip_objects_keeps_the_clues_of_every_box():
    tally = Tally()
    boxes = [
        (10, 10, 20, 20),  # inside
        (60, 10, 64.5, 20),  # half a pixel past: clipped, but rounding, not moved
        (60, 10, 70, 20),  # 6 px past: moved
        (70, 10, 80, 20),  # outside: dropped (moved); reaches 80 / 64 = 1.25x
        (25, 10, 70, 30),  # moved; as written (25, 10, 45, 20), read as x1 y1 x2 y2, it fits
        (0.1, 0.1, 0.5, 0.5),  # inside the unit square
    ]
    kept = clip_objects([Object(b, "x") for b in boxes], (64, 48), tally, record="r", written="xywh")
    assert len(kept) == 5
    assert tally.repaired == {"box clipped": 3, "zero-area box dropped": 1}
    assert tally.boxes == BoxClues(boxes=6, moved=3, unit=1, xywh=6, moved_fit_as_xyxy=1, overflow=1.25)
    # boxes written as x1 y1 x2 y2 give no xyxy clue; evaluation-only boxes (no tally) none at all
    xyxy = Tally()
    clip_objects([Object(boxes[4], "x")], (64, 48), xyxy, record="r")
    assert (xyxy.boxes.moved, xyxy.boxes.xywh, xyxy.boxes.moved_fit_as_xyxy) == (1, 0, 0)


def test_a_unit_box_in_a_unit_image_is_no_clue():
    tally = Tally()
    clip_objects([Object((0, 0, 1, 1), "x")], (2, 2), tally, record="r")
    assert tally.boxes.unit == 0


def test_findings_need_the_fraction_and_three_hits():
    tally = Tally()
    tally.count_read(repairs.EMPTY_CAPTION, 2)
    tally.repair(repairs.EMPTY_CAPTION, n=2)
    assert repairs.findings(tally, 0.05) == []  # 2 of 2: two bad records, however small the set
    tally.count_read(repairs.EMPTY_CAPTION, 38)
    tally.repair(repairs.EMPTY_CAPTION)
    assert repairs.findings(tally, 0.05) == [
        "empty caption dropped for 3 of 40 captions (8%): is the caption text in another field?"
    ]
    assert repairs.findings(tally, 0.1) == []  # 7.5% is under 10%
    assert repairs.findings(tally, 0.075) == []  # "more than" the fraction


def test_ordinary_repairs_are_never_systematic():
    tally = Tally()
    for reason in ("negative image excluded", "crowd region excluded", "L converted to RGB"):
        tally.count_read(reason, 10)
        tally.repair(reason, n=10)
    assert repairs.findings(tally, 0.0) == []


def test_polygons_and_regions_count_what_they_read():
    tally = Tally()
    polygons = [[0, 0, 4, 0, 4, 4], [1, 2, 3, 4], [0, 0, 1, 1], [5, 5, 6, 5, 6, 6, 5, 6]]
    assert len(parse_polygons(polygons, tally, file="f", record="r", field="polygons")) == 2
    regions = [{"text": " ", "bbox": [0, 0, 1, 1]}, {"text": "a", "bbox": [0, 0, 1, 1]}]
    assert len(parse_regions(regions, tally, file="f", record="r")) == 1
    assert tally.read == {"degenerate polygon dropped": 4, "empty region dropped": 2}
    assert repairs.findings(tally, 0.05) == []  # 2 and 1 hits: under three
    parse_polygons([[1, 2, 3, 4]], tally, file="f", record="r", field="polygons")
    assert repairs.findings(tally, 0.05) == [
        "degenerate polygon dropped for 3 of 5 polygons (60%): a polygon is a flat [x1, y1, x2, y2, x3, y3, "
        "...] list of 3 or more points; are they boxes, or nested one list too deep?"
    ]


def test_jsonl_counts_the_answers_it_reads(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    lines = [
        {"task": "vqa", "image": "a.png", "question": f"q{i}?", "answer": "yes", "answers": ["yes", ""]}
        for i in range(4)
    ]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ctx = SourceContext(name="v", split="train")
    assert len(list(read_jsonl(ctx, path=tmp_path / "v.jsonl"))) == 4
    assert (ctx.tally.read["empty answer dropped"], ctx.tally.repaired["empty answer dropped"]) == (8, 4)
    assert repairs.findings(ctx.tally, 0.05) == [
        "empty answer dropped for 4 of 8 answers (50%): is the answer text in another field?"
    ]
