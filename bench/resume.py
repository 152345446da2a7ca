"""Time from start to the first trained step when resuming at 90% of an epoch, against a start at
0% (the baseline), in one process. Resuming restores the sampler's position from the checkpoint
(the sequence is counter-based: any position is computed, never replayed).

1. End to end on the demo recipe with a small shapes set: `train()` to the first finished step,
   from scratch (0%) and resumed from a checkpoint at 90% of an epoch (a fresh process state each:
   the model, records and loaders are built both times).
2. The sampler alone at COCO-2017 scale (the 1.15M training records of detection, captions and
   VQA, batch 64): the time to its first row at position 0 and at 90% of an epoch.

    python bench/resume.py [--n-train 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import demo_recipe, report

from pipeline.data.mixture import MixtureSampler
from pipeline.demo import shapes
from pipeline.train import loop

ROOT = Path(__file__).resolve().parent.parent


def _recipe(data: Path, cache: Path, out: Path, *overrides: str):
    return demo_recipe(data, cache, out, *overrides)


def _time_to_first_step(recipe, resume: str | None) -> float:
    """Seconds from calling train() to the end of its first step (the run stops right there)."""
    real, done = loop._step, {}

    def first(run, batches):
        real(run, batches)
        done.setdefault("t", time.perf_counter())
        raise KeyboardInterrupt  # the loop saves a checkpoint and re-raises: the run ends here

    loop._step = first
    start = time.perf_counter()
    try:
        loop.train(recipe, resume=resume, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        loop._step = real
    return done["t"] - start


def end_to_end(n_train: int) -> tuple[list[list], float]:
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp) / "shapes", Path(tmp) / "cache"
        shapes.generate(data, n_train=n_train, n_val=16, image_size=64, progress=False)
        probe = _recipe(data, cache, Path(tmp) / "probe")
        from pipeline.data.build import build

        n_records = len(build(probe, progress=False).load()[probe.data.train_split])
        epoch_steps = n_records // probe.train.batch_size
        at = int(0.9 * epoch_steps)
        # the checkpoint at 90% of an epoch
        loop.train(
            _recipe(data, cache, Path(tmp) / "run", f"train.steps={at}", f"train.save_every={at}"),
            progress=False,
        )
        steps = f"train.steps={at + 10}"
        fresh = _time_to_first_step(_recipe(data, cache, Path(tmp) / "fresh", steps), None)
        resumed = _time_to_first_step(_recipe(data, cache, Path(tmp) / "run", steps), "auto")
        rows = [
            ["demo recipe, tiny model: start at 0%", f"step 0 of {epoch_steps}", fresh, 1.0],
            [
                "demo recipe, tiny model: resume at 90%",
                f"step {at} of {epoch_steps}",
                resumed,
                resumed / fresh,
            ],
        ]
        return rows, resumed / fresh


def sampler_at_scale(batch: int = 64) -> tuple[list[list], float]:
    # COCO-2017 train: 118k detection images, 592k captions, 444k questions (the build's records)
    sizes = {"coco_detection": 117_266, "coco_captions": 591_753, "vqav2": 443_757}
    groups, start = {}, 0
    for name, n in sizes.items():
        groups[name] = np.arange(start, start + n)
        start += n
    epoch = start // batch
    rows, times = [], {}
    for label, steps in (("0%", 0), ("90%", int(0.9 * epoch))):
        t0 = time.perf_counter()
        sampler = MixtureSampler(groups, strategy="proportional", batch_size=batch, seed=0)
        sampler.set_position(steps)
        next(iter(sampler))
        times[label] = time.perf_counter() - t0
        rows.append(
            [f"sampler, COCO-2017 scale ({start:,} records, batch {batch}): {label}", f"step {steps:,}"]
        )
    rows[0] += [times["0%"], 1.0]
    rows[1] += [times["90%"], times["90%"] / times["0%"]]
    return rows, times["90%"] / times["0%"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200, help="shapes training images (an epoch's size)")
    args = ap.parse_args()
    rows, ratio = end_to_end(args.n_train)
    more, sampler_ratio = sampler_at_scale()
    report(
        "resume",
        ["what", "position", "seconds to the first step (row)", "vs 0%"],
        rows + more,
        f"ratio (resume at 90% / start at 0%): {ratio:.2f}x end to end, "
        f"{sampler_ratio:.2f}x the sampler at COCO scale",
    )


if __name__ == "__main__":
    main()
