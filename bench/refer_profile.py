"""What bounds referring segmentation and grounding on the shapes set: a profile of a run's outputs
(`uvft eval` writes them to <run>/eval/<split>/generations.jsonl), not a benchmark of speed.

For each validation expression: which shape of its scene the written box or polygon overlaps most
(it "lands" on the referred one when that is the referred shape), the IoU with the referred shape,
and how many vertices the polygon has; by the referred shape's class and by the kind of phrase
("the red circle", "the circle", "the red shape", "the circle on the left", "the left shape").

    python bench/refer_profile.py runs/demo_all_tasks
    python bench/refer_profile.py runs/demo_all_tasks --eval eval-base   # the base model's outputs

Measured on recipes/demo_all_tasks.yaml (README, "On the unified-task demos").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from common import report
from pycocotools import mask as mask_utils

from pipeline.demo.draw import COLORS, SHAPES
from pipeline.masks import polygons_to_rle, usable_polygon
from pipeline.metrics import box_iou


def phrase_kind(phrase: str) -> str:
    """What a referring phrase names: colour and class, class, colour, or a side (of a class or of
    any shape)."""
    words = phrase.split()[1:]  # after "the"
    if len(words) == 2 and words[0] in COLORS:
        return "colour + class" if words[1] in SHAPES else "colour"
    if len(words) == 1 and words[0] in SHAPES:
        return "class"
    return "side of any shape" if "shape" in words else "side of a class"


def _mask(polygons: list[list[float]], width: int, height: int) -> Any | None:
    """The union of the usable polygons as RLE, as the segmentation metric draws them; None if none."""
    usable = [p for p in polygons if usable_polygon(p)]
    return polygons_to_rle(usable, width, height) if usable else None


def _mask_iou(a: Any, b: Any) -> float:
    return float(mask_utils.iou([a], [b], [0])[0][0])


def scene_objects(instances: Path) -> dict[str, list[dict[str, Any]]]:
    """The COCO instances of every referring image, by its file name (as the annotations write it)."""
    data = json.loads(instances.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        out[names[ann["image_id"]]].append(ann)
    return out


def profile(rows: list[dict[str, Any]], objects: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """{task: {group: [n, landed, mean IoU, IoU where landed]}} and the polygons' vertex counts
    ({class: {vertices: outputs}})."""
    groups: dict[str, dict[str, list[tuple[bool, float]]]] = {
        "grounding": defaultdict(list),
        "segmentation": defaultdict(list),
    }
    vertices: dict[str, Counter] = defaultdict(Counter)  # class -> vertex count -> outputs
    for r in rows:
        if r["task"] not in groups:
            continue
        name = "/".join(Path(r["image"]).parts[-2:])
        scene = objects[name]
        target = r["references"]["objects"][0]
        width, height = r["image_size"]
        if r["task"] == "grounding":
            found = r["parsed"]["objects"]
            boxes = [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in scene
            ]
            iou = box_iou(found[0]["bbox"], target["bbox"]) if found else 0.0
            best = max((box_iou(found[0]["bbox"], b) for b in boxes), default=0.0) if found else 0.0
        else:
            polygons = r["parsed"].get("polygons", [])
            vertices[target["category"]][sum(len(p) // 2 for p in polygons)] += 1
            written = _mask(polygons, width, height)
            truth = _mask(r["references"]["polygons"], width, height)
            shapes = [_mask(a["segmentation"], width, height) for a in scene]
            iou = _mask_iou(written, truth) if written is not None else 0.0
            best = max(_mask_iou(written, m) for m in shapes) if written is not None else 0.0
        landed = iou > 0 and iou >= best - 1e-9
        for group in (
            f"class: {target['category']}",
            f"phrase: {phrase_kind(r['references']['phrase'])}",
            "all",
        ):
            groups[r["task"]][group].append((landed, iou))
    table = {
        task: {
            g: [
                len(v),
                float(np.mean([x[0] for x in v])),
                float(np.mean([x[1] for x in v])),
                float(np.mean([x[1] for x in v if x[0]] or [0.0])),
            ]
            for g, v in sorted(by.items())
        }
        for task, by in groups.items()
    }
    return {
        "table": table,
        "vertices": {kind: dict(sorted(c.items())) for kind, c in sorted(vertices.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a run folder evaluated by `uvft eval`")
    parser.add_argument("--eval", default="eval", help="eval (fine-tuned) or eval-base")
    parser.add_argument("--split", default="val")
    parser.add_argument("--instances", type=Path, default=Path("data/shapes_all/refer/instances.json"))
    args = parser.parse_args()
    path = args.run / args.eval / args.split / "generations.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result = profile(rows, scene_objects(args.instances))
    headers = ["task", "group", "n", "lands on the referred shape", "mean IoU", "IoU where it lands"]
    table_rows = [
        [task, group, n, f"{landed:.3f}", f"{iou:.3f}", f"{where:.3f}"]
        for task, by in result["table"].items()
        for group, (n, landed, iou, where) in by.items()
    ]
    counts = sum((Counter(c) for c in result["vertices"].values()), Counter())
    print(f"{path}; polygon vertices written: " + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
    seg = result["table"]["segmentation"]["all"]
    report(
        "refer_profile",
        headers,
        table_rows,
        f"segmentation mIoU {seg[2]:.3f}: lands on the referred shape {seg[1]:.3f},"
        f" IoU where it lands {seg[3]:.3f}",
        run=str(args.run),
        eval=args.eval,
        vertices=result["vertices"],
    )


if __name__ == "__main__":
    main()
