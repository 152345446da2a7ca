"""Run every CPU benchmark (`make bench`) one after another and print the table of their ratio lines.

Each benchmark prints its own table and writes bench/results/NAME.json; this collects their last
lines (the ratio) and the time each took into bench/results/summary.json.

    python bench/run_all.py [--only coco_eval,padding] [--smoke]

`--smoke` runs each at a size that takes seconds (SMOKE), writing its results to a temporary
folder rather than bench/results: `make test-slow` runs it (tests/test_bench.py), so a benchmark
that breaks fails CI the day it breaks, not the next time someone times it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import machine, table

HERE = Path(__file__).resolve().parent
# name -> arguments; gpu.py runs only on a CUDA machine (`make bench-gpu`)
BENCHMARKS = {
    "padding": [],
    "loss_flops": [],
    "train_step": [],  # tiny, 50M and the released widths, eager and compiled: ~15 min of the ~28
    "step_profile": [],
    "coco_eval": [],
    "resume": [],
    "build_scale": [],  # COCO-2017 scale: ~6 min (the data is generated once, to /tmp)
    "data_path": [],
    "florence_pixels": [],  # the tiny Florence-2's image signal through its stages (issue 23)
}
# the same benchmarks at a size that takes seconds: what breaks shows, the figures mean nothing
SMOKE = {
    "padding": ["--steps", "20"],
    "loss_flops": ["--batch", "1", "--families", "florence2"],
    "train_step": [
        *("--steps", "3", "--warmup", "1", "--sizes", "tiny", "--n-train", "16", "--no-compile"),
        *("--real", "florence2", "--real-steps", "2", "--real-batch", "1"),
    ],
    "step_profile": ["--size", "tiny", "--steps", "3", "--warmup", "1", "--batch", "4"],
    "coco_eval": ["--images", "20"],
    "resume": ["--n-train", "16"],
    "build_scale": ["--scale", "0.002"],
    "data_path": ["--images", "16", "--batch", "8"],
    "florence_pixels": [
        *("--images", "2", "--override", "data.demo.n_train=32", "--override", "data.demo.n_val=8"),
        *("--override", "data.root=data/shapes_smoke"),
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated names")
    ap.add_argument("--smoke", action="store_true", help="each at a size that takes seconds (see SMOKE)")
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else BENCHMARKS
    if args.smoke and not os.environ.get("UVFT_BENCH_RESULTS"):  # smoke figures never replace real ones
        os.environ["UVFT_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="uvft-bench-smoke-")
    names = args.only.split(",") if args.only else [n for n in BENCHMARKS if (HERE / f"{n}.py").is_file()]
    rows, failed = [], []
    for name in names:
        print(f"\n## {name}\n", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *sizes.get(name, [])],
            stdout=subprocess.PIPE,
            text=True,
        )
        seconds = time.perf_counter() - t0
        print(proc.stdout, end="", flush=True)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        last = lines[-1] if lines and proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed.append(name)
        rows.append([name, last, round(seconds)])
    print("\n## summary\n")
    print(table(["benchmark", "ratio (its last line)", "seconds"], rows))
    results = Path(os.environ.get("UVFT_BENCH_RESULTS") or common.RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    summary = {"machine": machine(), "rows": rows}
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
