"""The ceiling of PaliGemma's masks on a recipe: what segmentation would score if the model wrote
every target exactly. Each record's target is parsed back (format round trip), its codes decoded
by the codec the build used (`model.mask_vae`) and pasted into its box, then scored against the
record's polygons by the evaluation's own metric. Not a benchmark of speed: a profile of the codec.

    python bench/mask_codes.py recipes/demo_multilingual.yaml            # the validation split
    python bench/mask_codes.py recipes/demo_multilingual.yaml --split train --limit 2000

Measured on recipes/demo_multilingual.yaml (README, "PaliGemma's masks").
"""

from __future__ import annotations

import argparse
import time

from common import report

from pipeline.data.build import build
from pipeline.formats import pali
from pipeline.metrics.segmentation import segmentation_metrics
from pipeline.models import vqvae
from pipeline.recipe import load_recipe
from pipeline.tasks import SEGMENTATION


def ceiling(records: list[dict], codec: vqvae.MaskVQVAE) -> dict:
    """Segmentation metrics of the records' own targets, decoded, against their polygons."""
    masks, errors = [], 0
    for r in records:
        size = tuple(r["image_size"])
        pred = pali.parse(r["target"], SEGMENTATION, size)
        errors += pred.errors
        masks.append(vqvae.decode_mask(codec, [o.bbox for o in pred.objects], pred.mask_codes, size))
    references, sizes = [r["polygons"] for r in records], [r["image_size"] for r in records]
    metrics = segmentation_metrics(masks, references, sizes)
    metrics["parse_errors"] = errors
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    if recipe.model.family != "paligemma":
        raise SystemExit("masks are written as codes by PaliGemma's format only (model.family: paligemma)")
    built = build(recipe)
    if not built.stats.mask_vae:
        raise SystemExit(f"{args.recipe} has no segmentation source: no mask codes")
    ds = built.load()[args.split]
    records = ds.select([i for i, t in enumerate(ds["task"]) if t == SEGMENTATION])
    records = records.to_list()[: args.limit]
    codec = vqvae.load(built.stats.mask_vae["path"])
    start = time.perf_counter()
    m = ceiling(records, codec)
    seconds = time.perf_counter() - start
    info = built.stats.mask_vae
    rows = [
        [f"{info['name']} ({info['sha256'][:12]})", len(records), m["mean_iou"], m["overall_iou"]]
        + [m[f"precision@{t}"] for t in (0.5, 0.7, 0.9)]
        + [m["parse_errors"]]
    ]
    headers = ["codec", "masks", "mIoU", "oIoU", "P@0.5", "P@0.7", "P@0.9", "parse errors"]
    report(
        "mask_codes",
        headers,
        rows,
        f"{args.split} split of {args.recipe}: targets decoded in {seconds:.1f} s; the mask mIoU a model "
        f"writing every target exactly would score is {m['mean_iou']:.3f}",
        codec=info,
    )


if __name__ == "__main__":
    main()
