"""Soak: train a recipe for many times its steps and watch resident memory. The trainer runs as a
real `uvft finetune` process; its resident set (and its DataLoader workers') is sampled every
`--interval` seconds and mapped to training steps through the run's log lines. Prints a table,
writes bench/results/soak.{json,csv,png}.

    python bench/soak.py [--recipe recipes/demo.yaml] [--factor 10] [--eval-every 500] [KEY=VALUE ...]

Growth is measured after warm-up (the first `--warmup` fraction of the steps): the resident set at
the end against the median of the first post-warm-up window, and a least-squares slope in MiB per
1000 steps. It passes when the growth stays under `--bound` MiB.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
_STEP = re.compile(r"(?:step (\d+): eval|checkpoint saved: .*step-(\d+)|resumed from .* at step (\d+))")


def _rss(proc: psutil.Process) -> tuple[float, float]:
    """Resident MiB of the trainer and of its children (DataLoader workers) together."""
    try:
        main = proc.memory_info().rss
        kids = 0
        for c in proc.children(recursive=True):
            try:
                kids += c.memory_info().rss
            except psutil.Error:
                continue
        return main / 2**20, kids / 2**20
    except psutil.Error:
        return float("nan"), float("nan")


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/demo.yaml")
    ap.add_argument("--factor", type=int, default=10, help="times the recipe's train.steps")
    ap.add_argument("--eval-every", type=int, default=500, help="in-training evaluation every N steps")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between memory samples")
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps that is warm-up")
    ap.add_argument("--bound", type=float, default=64.0, help="allowed growth after warm-up, MiB")
    ap.add_argument("--output-dir", default="runs/soak")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()

    from pipeline.recipe import load_recipe

    recipe = load_recipe(ROOT / args.recipe, args.overrides)
    steps = recipe.train.steps * args.factor
    cmd = [
        sys.executable, "-m", "pipeline.cli", "finetune", args.recipe, *args.overrides,
        f"train.steps={steps}", f"eval.every={args.eval_every}", f"output_dir={args.output_dir}",
        "--overwrite", "--no-progress",
    ]  # fmt: skip
    print("running:", " ".join(cmd[2:]), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    marks: list[tuple[float, int]] = []  # (seconds, step) from the run's log lines
    log: list[str] = []
    t0 = time.monotonic()

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if m := _STEP.search(line):
                marks.append((time.monotonic() - t0, int(next(g for g in m.groups() if g))))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    samples: list[tuple[float, float, float]] = []  # (seconds, trainer MiB, workers MiB)
    while proc.poll() is None:
        main_mib, kids_mib = _rss(ps)
        if main_mib == main_mib:  # not NaN: the process was still there
            samples.append((time.monotonic() - t0, main_mib, kids_mib))
        time.sleep(args.interval)
    reader.join(timeout=10)
    if proc.returncode != 0:
        sys.stderr.write("".join(log[-40:]))
        raise SystemExit(f"the soak run failed (exit {proc.returncode})")

    # steps at each sample: linear between logged marks; before the first mark nothing is known
    run_marks = [(0.0, 0), *marks] if not marks or marks[0][1] > 0 else marks
    start = next((t for t, s in marks if s > 0), None)
    rows = []
    for t, m, k in samples:
        prev = max((x for x in run_marks if x[0] <= t), default=run_marks[0])
        nxt = min((x for x in run_marks if x[0] > t), default=None)
        if nxt is None:
            step = prev[1]
        else:
            step = prev[1] + (nxt[1] - prev[1]) * (t - prev[0]) / max(nxt[0] - prev[0], 1e-9)
        rows.append({"seconds": round(t, 1), "step": round(step), "trainer_mib": round(m, 1),
                     "workers_mib": round(k, 1)})  # fmt: skip
    warm = args.warmup * steps
    after = [r for r in rows if r["step"] >= warm]
    if len(after) < 10:
        raise SystemExit("too few samples after warm-up: lower --interval or raise --factor")
    first_window = [r["trainer_mib"] for r in after[: max(5, len(after) // 10)]]
    last_window = [r["trainer_mib"] for r in after[-max(5, len(after) // 10) :]]
    reference = statistics.median(first_window)
    growth = statistics.median(last_window) - reference
    peak_growth = max(r["trainer_mib"] for r in after) - reference
    slope = 1000 * _slope([r["step"] for r in after], [r["trainer_mib"] for r in after])
    wslope = 1000 * _slope([r["step"] for r in after], [r["workers_mib"] for r in after])
    result = {
        "command": " ".join(cmd[2:]),
        "steps": steps,
        "eval_every": args.eval_every,
        "seconds": round(samples[-1][0], 1),
        "first_step_logged_at_s": start,
        "warmup_steps": int(warm),
        "trainer_mib_after_warmup": round(reference, 1),
        "trainer_mib_at_end": round(statistics.median(last_window), 1),
        "growth_mib": round(growth, 1),
        "peak_growth_mib": round(peak_growth, 1),
        "slope_mib_per_1000_steps": round(slope, 2),
        "workers_mib_after_warmup": round(statistics.median(r["workers_mib"] for r in after[:10]), 1),
        "workers_slope_mib_per_1000_steps": round(wslope, 2),
        "bound_mib": args.bound,
        "passed": growth <= args.bound and peak_growth <= 2 * args.bound,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "soak.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    _plot(rows, result, args.out / "soak.png")

    print()
    print(f"{'what':<42} {'value':>12}")
    for key in ("steps", "seconds", "trainer_mib_after_warmup", "trainer_mib_at_end", "growth_mib",
                "peak_growth_mib", "slope_mib_per_1000_steps", "workers_mib_after_warmup",
                "workers_slope_mib_per_1000_steps", "bound_mib"):  # fmt: skip
        print(f"{key:<42} {result[key]:>12}")
    print(f"growth after warm-up {growth:+.1f} MiB against a bound of {args.bound:.0f} MiB: "
          f"{'PASS' if result['passed'] else 'FAIL'}")  # fmt: skip
    if not result["passed"]:
        sys.exit(1)


def _plot(rows: list[dict], result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["trainer_mib"] for r in rows], label="trainer RSS")
    ax.plot(steps, [r["workers_mib"] for r in rows], label="DataLoader workers RSS (sum)")
    ax.axvline(result["warmup_steps"], color="grey", linestyle=":", label="end of warm-up")
    ax.axhline(result["trainer_mib_after_warmup"] + result["bound_mib"], color="red", linestyle="--",
               linewidth=0.8, label=f"bound (+{result['bound_mib']:.0f} MiB)")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(f"soak: {result['steps']} steps, eval every {result['eval_every']}; "
                 f"growth {result['growth_mib']:+.1f} MiB")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
