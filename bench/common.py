"""What the benchmarks share: a markdown table, the results file, and the machine they ran on.

Every benchmark compares uvft with a baseline implemented in the benchmark, in the same process,
on the same model, data and batch size; it prints a table, writes bench/results/NAME.json, and
ends with one line: the ratio.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# bench/results, or UVFT_BENCH_RESULTS (the smoke run writes to a temporary folder)
RESULTS = Path(os.environ.get("UVFT_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
ROOT = Path(__file__).resolve().parent.parent


def demo_recipe(data: Path, cache: Path, out: Path, *overrides: str):
    """The demo recipe on generated shapes in `data`: the tiny model without its base stage, no
    trackers, no held-out loss or evaluation during training, a log line per step."""
    from pipeline.recipe import load_recipe

    base = [f"data.root={data}", f"data.cache_dir={cache}", "data.demo=null", f"output_dir={out}"]
    quiet = ["model.tiny.base_steps=0", "train.trackers=[]", "train.val_every=0", "eval.every=0"]
    return load_recipe(ROOT / "recipes/demo.yaml", [*base, *quiet, "train.log_every=1", *overrides])


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(
    name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], ratio: str, **extra: Any
) -> None:
    """Print the table and the ratio line; write bench/results/NAME.json."""
    print(table(headers, rows))
    payload = {"name": name, "machine": machine(), "headers": list(headers), "rows": rows, "ratio": ratio}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**payload, **extra}, indent=2, default=str) + "\n")
    print(ratio)
