"""The data path alone (DataLoader + collate, no model) on COCO-like images at the real models' input
sizes: uvft's loader (its Collator, in 0 and 2 workers) against the guide-style baseline (a
collate_fn that opens each image with PIL and calls the processor, no workers), in one process,
on the same records, processor and batch size. Throughput per core used is the figure the target
is set on.

uvft runs two ways: the Collator as evaluation uses it (float pixel values, each image resized
once and mapped through the processor's own table: models/pixels.py), and the training loader
(Collator(defer_pixels=True): uint8 pixels, finished by the table on the model's device). With
no GPU here, the training loader is timed twice: finished on this CPU inside the timing (the whole
cost of a CPU run), and with the uint8 batches as the workers hand them over (what the CPU cores
do when a GPU finishes them; that lookup is not timed here).

Images: 640x480 JPEGs (quality 90) with photo-like content: smooth gradients, blurred shapes and
sensor noise, so they compress and decode like photographs rather than flat synthetic drawings.
Processors: each family's processor at the released input size (Florence-2 768 px, PaliGemma 224
and 448 px) with a tokenizer built on the spot. The batches of the two loaders are compared
tensor by tensor (the pixels must be identical where the work is the same).

    python bench/data_path.py [--images 192] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import report
from PIL import Image, ImageDraw, ImageFilter

from pipeline.data.collate import Collator
from pipeline.models import florence2, paligemma, pixels
from pipeline.models.common import IMAGE_TOKEN

CAPTIONS = [
    "a man riding a bike down a street",
    "two dogs playing with a frisbee in a park",
    "a plate of food",
]


def photo(rng: np.random.Generator, w: int = 640, h: int = 480) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [(x / w) * rng.uniform(80, 200), (y / h) * rng.uniform(80, 200), np.full_like(x, 120)], -1
    )
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        box = [x0, y0, x0 + rng.integers(30, 300), y0 + rng.integers(30, 200)]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(3))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:06d}.jpg"
        photo(rng).save(p, quality=90)
        paths.append(p)
    return paths


def processors(texts: list[str]) -> dict[str, Any]:
    big = florence2.Size(
        vision_dims=(32, 64, 128, 256), vision_depths=(1, 1, 1, 1), vision_heads=(1, 2, 4, 8)
    )
    return {
        "florence2 768": ("florence2", florence2.build_processor(texts, image_size=768, size=big)),
        "paligemma 224": (
            "paligemma",
            paligemma.build_processor(texts, image_size=224, size=paligemma.Size(patch_size=14)),
        ),
        "paligemma 448": (
            "paligemma",
            paligemma.build_processor(texts, image_size=448, size=paligemma.Size(patch_size=14)),
        ),
    }


def guide_collate(processor: Any, family: str):
    """What the fine-tuning guides write: PIL open + convert in the collate_fn, the processor on the batch."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        images = [Image.open(r["image"]).convert("RGB") for r in rows]
        prompts, targets = [r["prompt"] for r in rows], [r["target"] for r in rows]
        if family == "paligemma":
            text = [IMAGE_TOKEN + p for p in prompts]
            return processor(text=text, images=images, suffix=targets, padding="longest", return_tensors="pt")
        enc = processor(text=prompts, images=images, padding="longest", return_tensors="pt")
        enc["labels"] = processor.tokenizer(targets, padding="longest", return_tensors="pt")["input_ids"]
        return enc

    return collate


def throughput(records, batch: int, collate, workers: int, finish=None) -> tuple[float, Any]:
    """Samples/s after the first batch (workers started and warm), and that first batch, finished
    by `finish` where given (inside the timing: the main process's share of the work)."""
    loader = torch.utils.data.DataLoader(
        records, batch_size=batch, collate_fn=collate, num_workers=workers, shuffle=False
    )
    it = iter(loader)
    first = next(it)
    if finish is not None:
        first = finish(first)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        if finish is not None:
            b = finish(b)
        n += len(b["pixel_values"])
    return n / (time.perf_counter() - t0), first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images)
        records = [
            {"image": str(p), "prompt": "", "target": CAPTIONS[i % 3], "task": "caption", "id": str(i)}
            for i, p in enumerate(paths)
        ]
        for name, (family, processor) in processors([*CAPTIONS, "caption en", "<CAPTION>"]).items():
            for r in records:
                r["prompt"] = "caption en" if family == "paligemma" else "<CAPTION>"
            base, reference = throughput(records, args.batch, guide_collate(processor, family), 0)
            ref = reference["pixel_values"]
            plain = Collator(processor, family)
            training = Collator(processor, family, defer_pixels=True)
            runs = [
                ("uvft Collator (float pixels), 0 workers", plain, 0, None, 1),
                ("uvft training loader, 0 workers, finished on this CPU", training, 0, pixels.finish, 1),
                ("uvft Collator (float pixels), 2 workers", plain, 2, None, 2),
                ("uvft training loader, 2 workers, uint8 out (finished on the device)", training, 2, None, 2),
            ]
            rows.append([name, "guide collate_fn, 0 workers (baseline)", base, 1, base, 1.0, "reference"])
            best = 0.0
            for label, collate, workers, finish, cores in runs:
                rate, first = throughput(records, args.batch, collate, workers, finish)
                values = pixels.finish(first)["pixel_values"]  # a uint8 batch finished here to compare
                same = "yes" if torch.equal(values, ref) else "NO"
                rows.append([name, label, rate, cores, rate / cores, rate / cores / base, same])
                best = max(best, rate / cores / base)
            ratios[name] = best
    headers = [
        "input size",
        "loader",
        "samples/s",
        "cores",
        "samples/s per core",
        "per core vs baseline",
        "pixels identical",
    ]
    ratio = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    report("data_path", headers, rows, f"ratio (uvft best / baseline, samples/s per core): {ratio}")


if __name__ == "__main__":
    main()
