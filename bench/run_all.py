"""Run every CPU benchmark (`make bench`) one after another and print the table of their ratio lines.

Each benchmark prints its own table and writes bench/results/NAME.json; this collects their last
lines (the ratio) and the time each took into bench/results/summary.json.

    python bench/run_all.py [--only coco_eval,padding]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, table

HERE = Path(__file__).resolve().parent
# name -> arguments; gpu.py runs only on a CUDA machine (`python bench/gpu.py`)
BENCHMARKS = {
    "padding": [],
    "loss_flops": [],
    "train_step": [],
    "coco_eval": [],
    "resume": [],
    "build_scale": [],  # COCO-2017 scale: ~6 min of the ~12 (the data is generated once, to /tmp)
    "data_path": [],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated names")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else [n for n in BENCHMARKS if (HERE / f"{n}.py").is_file()]
    rows, failed = [], []
    for name in names:
        print(f"\n## {name}\n", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS.get(name, [])],
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"machine": machine(), "rows": rows}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
