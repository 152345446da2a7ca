"""Hand-made COCO detection sets for the tests of what a build catches (imported as `coco_sets`)."""

from __future__ import annotations

import json
from pathlib import Path


def coco_set(root: Path, boxes: str, *, image_size: tuple[int, int] = (64, 48)) -> Path:
    """30 images (64 x 48 as the JSON declares them; the files `image_size`), 24 with one box
    x1 20..29, y1 8..15, 30 x 20, written as COCO's xywh ("xywh"), as x1 y1 x2 y2 ("xyxy") or
    normalised xywh ("normalised"); returns the recipe."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(30):
        Image.new("RGB", image_size, (8 * i, 40, 90)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 48})
        if i < 24:
            x, y = 20 + i % 10, 8 + i % 8
            bbox = {
                "xywh": [x, y, 30, 20],
                "xyxy": [x, y, x + 30, y + 20],
                "normalised": [x / 64, y / 48, 30 / 64, 20 / 48],
            }[boxes]
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": bbox})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (root / "instances.json").write_text(json.dumps(coco))
    recipe = tiny_recipe(
        root / "r.yaml",
        root,
        """\
    - name: my_boxes
      format: coco_detection
      splits: {train: {annotations: instances.json, images: images}}
""",
        cache=root / "cache",
    )
    return recipe


def tiny_recipe(path: Path, root: Path, sources: str, *, cache: Path | None = None) -> Path:
    """Write a recipe to `path`: PaliGemma's tiny model, data under `root` (records cached in
    `cache`), reading `sources` (the YAML list under data.sources, indented by four)."""
    cache_dir = f"  cache_dir: {cache}\n" if cache is not None else ""
    head = f"name: t\nmodel: {{family: paligemma, id: null}}\ndata:\n  root: {root}\n{cache_dir}  sources:\n"
    path.write_text(head + sources)
    return path
