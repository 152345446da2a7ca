"""Benchmark prediction on a trained run: load time, the first call, warm calls one image at a time
(the baseline), and `predict_many` batched, per task, in one process. Prints a table and writes
bench/results/predict.json.

    python bench/bench_predict.py [--model runs/demo] [--images 32] [--batch-size 16]

Run `make finetune` first (or pass any run folder, merged export or hub id).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pipeline.inference import load_model

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs/demo"))
    ap.add_argument("--images", type=int, default=32, help="validation images per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/predict.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = load_model(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    val = sorted((ROOT / "data/shapes/images/val").glob("*.png"))[: args.images]
    if not val:
        raise SystemExit("no validation images in data/shapes/images/val: run `make data` first")
    question = {"vqa": "what color is the shape?"}
    rows = []
    for n, task in enumerate(model.tasks):
        item = {"task": task, "question": question.get(task)}
        t0 = time.perf_counter()
        model.predict(val[0], task, question=item["question"])
        first = time.perf_counter() - t0
        warm = []
        for path in val:
            t0 = time.perf_counter()
            model.predict(path, task, question=item["question"])
            warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.predict_many([{**item, "image": p} for p in val], batch_size=args.batch_size, progress=False)
        batched = (time.perf_counter() - t0) / len(val)
        rows.append(
            {
                "task": task,
                "first_call_ms": round(1000 * first, 1),
                "warm_ms_per_image": round(1000 * statistics.median(warm), 1),
                "batched_ms_per_image": round(1000 * batched, 1),
                "batched_speedup": round(statistics.median(warm) / batched, 2),
                "first_call_of_process": n == 0,
            }
        )

    print(f"model {args.model}: loaded in {load_s:.2f} s; {len(val)} images per task, CPU")
    print(f"{'task':<15} {'first ms':>9} {'warm ms/img':>12} {'batched ms/img':>15} {'speedup':>8}")
    for r in rows:
        print(
            f"{r['task']:<15} {r['first_call_ms']:>9.1f} {r['warm_ms_per_image']:>12.1f} "
            f"{r['batched_ms_per_image']:>15.1f} {r['batched_speedup']:>7.2f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "load_s": round(load_s, 3), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
