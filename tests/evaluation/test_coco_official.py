"""COCO evaluation as the official scorer sees it: a hand-made instances file with crowd regions
and polygon areas goes through uvft's reader, records and detection metric, and every one of the
12 stats equals pycocotools' COCOeval run on the original file with the same detections."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline import tasks
from pipeline.metrics.detection import BACKENDS, STAT_KEYS, detection_metrics
from pipeline.records import Record
from pipeline.sources import SourceContext
from pipeline.sources.coco_detection import read_coco_detection


def _poly_area(xs: list[float]) -> float:
    pts = list(zip(xs[::2], xs[1::2], strict=True))
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True))) / 2


# Image 1 (200x200): a thin diagonal cat whose box is medium (60x60 = 3600) but whose polygon is small
# (area 575), a large dog, and a crowd of cats along the bottom. Image 2 (120x90): a medium cat and a
# small dog, with a crowd of dogs. Image 3 (100x100): one large-box dog with a medium polygon.
DIAGONAL = [20.0, 20.0, 25.0, 20.0, 80.0, 75.0, 80.0, 80.0, 75.0, 80.0, 20.0, 25.0]
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}]
IMAGES = [
    {"id": 1, "file_name": "1.jpg", "width": 200, "height": 200},
    {"id": 2, "file_name": "2.jpg", "width": 120, "height": 90},
    {"id": 3, "file_name": "3.jpg", "width": 100, "height": 100},
]


def _ann(i: int, image: int, cat: int, bbox: list[float], poly: list[float], crowd: int = 0) -> dict:
    return {
        "id": i,
        "image_id": image,
        "category_id": cat,
        "bbox": bbox,
        "segmentation": [poly],
        "area": _poly_area(poly),
        "iscrowd": crowd,
    }


ANNOTATIONS = [
    _ann(1, 1, 1, [20, 20, 60, 60], DIAGONAL),
    _ann(2, 1, 5, [100, 30, 90, 100], [100, 30, 190, 30, 190, 130, 100, 130]),
    _ann(3, 1, 1, [0, 150, 200, 50], [0, 150, 200, 150, 200, 200, 0, 200], crowd=1),
    _ann(4, 2, 1, [10, 10, 50, 40], [10, 10, 60, 10, 60, 50, 10, 50]),
    _ann(5, 2, 5, [80, 10, 20, 20], [80, 10, 100, 10, 100, 30]),  # a triangle: half its box
    _ann(6, 2, 5, [70, 50, 50, 40], [70, 50, 120, 50, 120, 90, 70, 90], crowd=1),
    _ann(7, 3, 5, [5, 5, 90, 90], [5, 5, 95, 5, 50, 40]),
]

# (image, category, xywh, score): hits, near misses, false positives, and detections inside crowds
DETECTIONS = [
    (1, 1, [21, 19, 58, 62], 0.9),
    (1, 1, [22, 22, 50, 50], 0.4),
    (1, 5, [98, 32, 92, 96], 0.8),
    (1, 1, [10, 155, 60, 40], 0.97),  # inside the crowd of cats: ignored by COCOeval
    (1, 1, [120, 160, 70, 35], 0.96),  # inside the crowd too
    (1, 5, [0, 0, 15, 15], 0.3),  # a false positive
    (2, 1, [12, 9, 47, 42], 0.95),
    (2, 5, [80, 11, 19, 19], 0.85),
    (2, 5, [75, 55, 40, 30], 0.5),  # in the crowd of dogs
    (2, 1, [60, 60, 20, 20], 0.2),  # a false positive outside any crowd
    (3, 5, [6, 4, 88, 92], 0.75),
    (3, 1, [40, 40, 20, 20], 0.65),
]


def _official(annotations: Path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        dt = gt.loadRes(
            [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in DETECTIONS]
        )
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.fixture
def coco_files(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for info in IMAGES:
        Image.new("RGB", (info["width"], info["height"]), (90, 90, 90)).save(images / info["file_name"])
    data = {"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_records_scored_by_uvft_equal_cocoeval_on_the_original_file(coco_files, backend):
    ctx = SourceContext(name="coco", split="val")
    examples = list(
        read_coco_detection(ctx, annotations=coco_files / "instances.json", images=coco_files / "images")
    )
    records = [Record.from_example(ex, "florence2", "<OD>", "").to_dict() for ex in examples]
    # the references the evaluation writes for each record (predictions.jsonl), and its ground truth
    gts = []
    for r in records:
        refs = tasks.get(r["task"]).references(r)
        gts.append({"image_id": r["id"], "width": r["image_size"][0], "height": r["image_size"][1]} | refs)
    names = {c["id"]: c["name"] for c in CATEGORIES}
    preds = {r["id"]: [] for r in records}
    for image, cat, (x, y, w, h), score in DETECTIONS:
        preds[str(image)].append({"bbox": [x, y, x + w, y + h], "category": names[cat], "score": score})
    got = detection_metrics(gts, [{"image_id": k, "objects": v} for k, v in preds.items()], backend=backend)

    official = _official(coco_files / "instances.json")
    for key, value in zip(STAT_KEYS, official, strict=True):
        assert (got[key] if got[key] is not None else -1.0) == pytest.approx(value, abs=1e-12), key
    # the file exercises what this is about: the diagonal cat is small by its polygon, medium by its box
    assert records[0]["objects"][0]["area"] == 575.0 and records[0]["crowd"] != []
    assert ctx.tally.repaired == {"crowd region excluded": 2}


def test_without_crowds_and_areas_the_numbers_differ(coco_files):
    """What records without crowd regions and areas scored (uvft before): not COCOeval's numbers."""
    ctx = SourceContext(name="coco", split="val")
    examples = list(
        read_coco_detection(ctx, annotations=coco_files / "instances.json", images=coco_files / "images")
    )
    gts = [
        {
            "image_id": ex.id,
            "width": ex.image_size[0],
            "height": ex.image_size[1],
            "objects": [{"bbox": list(o.bbox), "category": o.category} for o in ex.objects],
        }
        for ex in examples
    ]
    names = {c["id"]: c["name"] for c in CATEGORIES}
    preds = {ex.id: [] for ex in examples}
    for image, cat, (x, y, w, h), score in DETECTIONS:
        preds[str(image)].append({"bbox": [x, y, x + w, y + h], "category": names[cat], "score": score})
    got = detection_metrics(gts, [{"image_id": k, "objects": v} for k, v in preds.items()])
    official = dict(zip(STAT_KEYS, _official(coco_files / "instances.json"), strict=True))
    assert got["map"] < official["map"]  # detections in crowds counted as false positives
    assert got["map_small"] != official["map_small"]  # the diagonal cat moved to medium
