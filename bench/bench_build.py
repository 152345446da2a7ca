"""Benchmark `uvft build` on the shapes set: a fresh build (the baseline) against a cached one,
for both model families, in one process. Prints a table and writes bench/results/build.json.

    python bench/bench_build.py [--n-train 800] [--n-val 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.data.build import build
from pipeline.demo import shapes
from pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=800)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/build.json")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        t0 = time.perf_counter()
        shapes.generate(data, n_train=args.n_train, n_val=args.n_val, progress=False)
        gen_s = time.perf_counter() - t0
        for family in ("paligemma", "florence2"):
            fresh, cached, n = [], [], 0
            for i in range(args.repeats):
                recipe = load_recipe(
                    ROOT / "recipes/demo.yaml",
                    [
                        f"data.root={data}",
                        f"data.cache_dir={tmp}/cache{i}",
                        "data.demo=null",
                        f"model.family={family}",
                    ],
                )
                t0 = time.perf_counter()
                result = build(recipe, progress=False)
                fresh.append(time.perf_counter() - t0)
                n = sum(sum(r.records.values()) for r in result.stats.rows)
                t0 = time.perf_counter()
                assert build(recipe, progress=False).cached
                cached.append(time.perf_counter() - t0)
            f, c = statistics.median(fresh), statistics.median(cached)
            rows.append(
                {
                    "family": family,
                    "records": n,
                    "fresh_s": round(f, 3),
                    "records_per_s": round(n / f),
                    "cached_s": round(c, 3),
                    "speedup": round(f / c, 1),
                }
            )

    print(f"shapes set: {args.n_train} + {args.n_val} images, generated in {gen_s:.2f} s")
    print(f"{'family':<10} {'records':>8} {'fresh s':>8} {'rec/s':>8} {'cached s':>9} {'speedup':>8}")
    for r in rows:
        print(
            f"{r['family']:<10} {r['records']:>8} {r['fresh_s']:>8.3f} {r['records_per_s']:>8} "
            f"{r['cached_s']:>9.3f} {r['speedup']:>7.1f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"generate_s": round(gen_s, 3), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
