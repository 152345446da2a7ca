"""COCO box mAP on a generated split of thousands of images: uvft's detection metric (faster-coco-eval)
against plain pycocotools COCOeval (the baseline, built here) and uvft's metric with
``backend="pycocotools"``, in one process, on the same data. All 12 COCOeval stats must agree to 1e-6.

The split is seeded: images of about 640x480, about 7 ground-truth boxes per image from 80 categories
(1 % of them crowd regions), about 20 scored predictions per image, most near a ground-truth box with
jitter (a tenth of them with the wrong category), the rest random; 2 % of the images have none.
Each timing covers the whole evaluation from the inputs as that side takes them: uvft's per-image
records (converted to COCO inside the timing) and, for the baseline, ready-made COCO JSON.

    python bench/coco_eval.py [--images 5000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time
from typing import Any

import numpy as np
from common import report

from pipeline.metrics.detection import STAT_KEYS, detection_metrics

TOL = 1e-6


def make_case(images: int, seed: int = 0, categories: int = 80) -> dict[str, Any]:
    """The split twice over, from the same numbers: uvft records (xyxy) and COCO JSON (xywh)."""
    rng = np.random.default_rng(seed)
    names = [f"c{k:02d}" for k in range(categories)]  # sorted = id order: uvft's ids are the same
    gts: list[dict[str, Any]] = []
    preds: list[dict[str, Any]] = []
    coco_images: list[dict[str, Any]] = []
    coco_anns: list[dict[str, Any]] = []
    coco_dets: list[dict[str, Any]] = []

    def boxes(n: int, w: int, h: int) -> np.ndarray:
        # log-uniform side lengths: small (< 32²), medium and large (> 96²) boxes all common
        side = np.exp(rng.uniform(np.log(6), np.log(0.9 * min(w, h)), n))
        aspect = np.exp(rng.normal(0.0, 0.4, n))
        bw = np.minimum(side * np.sqrt(aspect), w - 1)
        bh = np.minimum(side / np.sqrt(aspect), h - 1)
        x1 = rng.uniform(0, w - bw)
        y1 = rng.uniform(0, h - bh)
        return np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)

    def clip(b: np.ndarray, w: int, h: int) -> np.ndarray:
        b = np.round(b, 2)  # COCO JSON carries two decimals
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
        return b

    def xywh(b: list[float]) -> list[float]:
        # the metric's own arithmetic, so both sides see the same floats
        return [b[0], b[1], max(0.0, b[2] - b[0]), max(0.0, b[3] - b[1])]

    for i in range(images):
        image_id = i + 1
        w, h = int(rng.integers(560, 721)), int(rng.integers(400, 561))
        n_gt = int(rng.poisson(7))
        g_box = clip(boxes(n_gt, w, h), w, h)
        g_cat = rng.integers(0, categories, n_gt)
        g_crowd = rng.random(n_gt) < 0.01
        objects = []
        for b, c, crowd in zip(g_box.tolist(), g_cat.tolist(), g_crowd.tolist(), strict=True):
            objects.append({"bbox": b, "category": names[c], **({"iscrowd": 1} if crowd else {})})
            box = xywh(b)
            coco_anns.append(
                {
                    "id": len(coco_anns) + 1,
                    "image_id": image_id,
                    "category_id": c + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd),
                }
            )
        gts.append(
            {"image_id": f"img{i:05d}", "width": w, "height": h, "objects": objects, "categories": names}
        )
        coco_images.append({"id": image_id, "width": w, "height": h})

        if rng.random() < 0.02:  # a generation that found nothing
            preds.append({"image_id": f"img{i:05d}", "objects": []})
            continue
        near = rng.random(n_gt) < 0.85
        src = g_box[near]
        size = np.stack([src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]] * 2, axis=1)
        jittered = src + rng.normal(0.0, 0.08, src.shape) * size
        n_rand = max(0, int(rng.poisson(20)) - len(src))
        p_box = clip(np.concatenate([jittered, boxes(n_rand, w, h)]), w, h)
        wrong = rng.random(len(src)) < 0.1
        p_cat = np.concatenate(
            [
                np.where(wrong, rng.integers(0, categories, len(src)), g_cat[near]),
                rng.integers(0, categories, n_rand),
            ]
        )
        # three decimals: some ties, as from a model's float scores
        p_score = np.round(np.concatenate([rng.beta(5, 2, len(src)), rng.beta(2, 5, n_rand)]), 3)
        p_objects = []
        for b, c, s in zip(p_box.tolist(), p_cat.tolist(), p_score.tolist(), strict=True):
            p_objects.append({"bbox": b, "category": names[c], "score": s})
            coco_dets.append({"image_id": image_id, "category_id": c + 1, "bbox": xywh(b), "score": s})
        preds.append({"image_id": f"img{i:05d}", "objects": p_objects})

    coco_gt = {
        "images": coco_images,
        "annotations": coco_anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
    }
    return {"gts": gts, "preds": preds, "coco_gt": coco_gt, "coco_dets": coco_dets}


def pycocotools_stats(coco_gt: dict[str, Any], coco_dets: list[dict[str, Any]]) -> list[float | None]:
    """The baseline: COCO JSON straight into pycocotools COCOeval, its summary print discarded."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        dt = gt.loadRes(coco_dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [None if v < 0 else float(v) for v in ev.stats]


def max_diff(got: list[float | None], want: list[float | None]) -> float:
    """Largest absolute difference over the 12 stats; inf where one side is None and the other not."""
    diffs = [
        0.0 if a is None and b is None else abs(a - b) if a is not None and b is not None else float("inf")
        for a, b in zip(got, want, strict=True)
    ]
    return max(diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=1, help="timings per variant; the best is reported")
    args = ap.parse_args()

    import faster_coco_eval  # noqa: F401  (imports outside the timings)
    import pycocotools.cocoeval  # noqa: F401

    t0 = time.perf_counter()
    case = make_case(args.images)
    gen_s = time.perf_counter() - t0
    n_gt = len(case["coco_gt"]["annotations"])
    n_dt = len(case["coco_dets"])
    print(f"{args.images:,} images, {n_gt:,} ground-truth boxes, {n_dt:,} predictions ({gen_s:.1f} s)")

    def uvft(backend: str):
        def run() -> list[float | None]:
            out = detection_metrics(case["gts"], case["preds"], backend=backend)
            return [out[k] for k in STAT_KEYS]

        return run

    def baseline() -> list[float | None]:
        return pycocotools_stats(gt_copy, dets_copy)

    variants = [
        ("uvft detection_metrics (faster-coco-eval)", uvft("faster-coco-eval")),
        ("pycocotools COCOeval (baseline)", baseline),
        ('uvft detection_metrics (backend="pycocotools")', uvft("pycocotools")),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    stats: dict[str, list[float | None]] = {}
    for _ in range(args.repeats):
        for name, fn in variants:
            if fn is baseline:  # pycocotools writes into what it is given: fresh copies, untimed
                gt_copy, dets_copy = copy.deepcopy(case["coco_gt"]), copy.deepcopy(case["coco_dets"])
            t0 = time.perf_counter()
            got = fn()
            times[name].append(time.perf_counter() - t0)
            if name in stats and got != stats[name]:
                raise SystemExit(f"{name}: stats changed between repeats")
            stats[name] = got

    base_name = variants[1][0]
    ref = stats[base_name]
    base_s = min(times[base_name])
    rows, diffs = [], {}
    for name, _ in variants:
        seconds = min(times[name])
        if name == base_name:
            equal = "reference"
        else:
            diffs[name] = max_diff(stats[name], ref)
            verdict = "yes" if diffs[name] <= TOL else "NO"
            equal = f"{verdict} (max abs diff {diffs[name]:.1e})"
        rows.append([name, seconds, equal, f"{base_s / seconds:.1f}x"])

    ratio = base_s / min(times[variants[0][0]])
    report(
        "coco_eval",
        ["what", "seconds", "stats equal to pycocotools", "ratio vs baseline"],
        rows,
        f"ratio (pycocotools / uvft): {ratio:.1f}x",
        images=args.images,
        repeats=args.repeats,
        gt_boxes=n_gt,
        predictions=n_dt,
        tolerance=TOL,
        times=times,
        max_abs_diff=diffs,
        stats={name: dict(zip(STAT_KEYS, s, strict=True)) for name, s in stats.items()},
    )
    if any(d > TOL for d in diffs.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
