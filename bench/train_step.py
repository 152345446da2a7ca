"""uvft's training loop against the naive loop of the Hugging Face fine-tuning guides, in one
process, on the same model, rows (in the same order), batch size, optimizer and schedule.

- uvft: `pipeline.train.loop.train` on the demo recipe (its loader, collator and loss).
- naive: a DataLoader over the same rows with the processor in its collate_fn (no workers, as the
  guides write it), `model(**batch).loss`, backward, clip, step, `loss.item()` each step.

Two models: the demo's tiny model (random weights, no base stage) and a ~50M-parameter one built
by `build_tiny` with larger sizes. Throughput is taken over the steps after a warm-up; the losses
of the two loops are compared step by step (they see the same batches).

    python bench/train_step.py [--steps 12] [--warmup 3] [--sizes tiny,50m] [--family paligemma]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import demo_recipe, report
from PIL import Image

from pipeline import models
from pipeline.demo import shapes
from pipeline.models.common import IMAGE_TOKEN
from pipeline.train import loop, setup
from pipeline.train.optim import make_optimizer, make_scheduler

ROOT = Path(__file__).resolve().parent.parent
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"paligemma": {}, "florence2": {}},
    "50m": {
        "paligemma": {
            "hidden": 512,
            "layers": 8,
            "heads": 8,
            "kv_heads": 4,
            "head_dim": 64,
            "intermediate": 2048,
            "vision_hidden": 384,
            "vision_layers": 6,
            "vision_heads": 6,
            "vision_intermediate": 1536,
        },
        "florence2": {
            "d_model": 512,
            "layers": 6,
            "heads": 8,
            "ffn": 2048,
            "vision_dims": [128, 256, 512],
            "vision_depths": [1, 1, 2],
            "vision_heads": [4, 8, 16],
        },
    },
}


def _recipe(data: Path, cache: Path, out: Path, family: str, size: dict[str, Any], steps: int, batch: int):
    size_json = f"{size!r}".replace("'", '"')
    return demo_recipe(
        data,
        cache,
        out,
        f"model.family={family}",
        f"model.tiny.size={size_json}",
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        f"train.save_every={steps}",
    )


def run_uvft(recipe) -> tuple[list[float], list[float], Any]:
    """Per-step end times and losses of uvft's loop, and its Run (for the rows it drew)."""
    real, times, holder = loop._step, [], {}

    def timed(run, batches):
        holder.setdefault("run", run)
        holder.setdefault("rows", []).append(run.sampler.position)
        real(run, batches)
        times.append(time.perf_counter())

    loop._step = timed
    try:
        summary = loop.train(recipe, progress=False)
    finally:
        loop._step = real
    return times, [e["loss"] for e in summary.losses], holder


def guide_collate(processor: Any, family: str):
    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [Image.open(r["image"]).convert("RGB") for r in rows]
        prompts, targets = [r["prompt"] for r in rows], [r["target"] for r in rows]
        if family == "paligemma":
            return processor(
                text=[IMAGE_TOKEN + p for p in prompts],
                images=images,
                suffix=targets,
                padding="longest",
                return_tensors="pt",
            )
        enc = processor(text=prompts, images=images, padding="longest", return_tensors="pt")
        dec = processor.tokenizer(targets, padding="longest", return_tensors="pt")
        enc["labels"] = dec["input_ids"].masked_fill(dec["attention_mask"] == 0, -100)
        return enc

    return collate


def run_naive(recipe, base_model: str, rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    from accelerate.utils import set_seed

    family = recipe.model.family
    set_seed(recipe.train.seed)
    model, processor = models.get(family).load(base_model)
    model = setup.apply_adapter(model, recipe)  # the same LoRA, initialised from the same seed
    opt = make_optimizer(model, recipe.train, cuda=False)
    sched = make_scheduler(opt, recipe.train)
    loader = torch.utils.data.DataLoader(
        rows, batch_size=recipe.train.batch_size, shuffle=False, collate_fn=guide_collate(processor, family)
    )
    model.train()
    times, losses = [], []
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        times.append(time.perf_counter())
    return times, losses


def measure(
    size: str, family: str, steps: int, warmup: int, batch: int, data: Path, tmp: Path, repeats: int
) -> dict:
    """Both loops `repeats` times, alternating (uvft, naive, uvft, naive, ...); each loop's fastest
    run counts (the slower ones lost time to the machine, not to the loop)."""

    def span(run: tuple[list[float], list[float]]) -> float:
        return run[0][-1] - run[0][warmup - 1]

    def fastest(a, b):
        return a if b is None or span(a) < span(b) else b

    def recipe(rep: int):
        return _recipe(
            data, tmp / "cache", tmp / f"run-{size}-{rep}", family, SIZES[size][family], steps, batch
        )

    u_times, u_losses, holder = run_uvft(recipe(0))
    run = holder["run"]
    rows = [run.loader.dataset[i] for i in run.sampler.global_rows(0, steps * batch)]
    base_model = run.recipe.model.id or str(_base(recipe(0)))
    uvft, naive = (u_times, u_losses), None
    for rep in range(repeats):
        naive = fastest(run_naive(recipe(0), base_model, rows), naive)
        if rep + 1 < repeats:
            t, losses, _ = run_uvft(recipe(rep + 1))
            uvft = fastest((t, losses), uvft)
    (u_times, u_losses), (n_times, n_losses) = uvft, naive
    tokens = sum(
        models.get(family).target_lengths(run.processor, [r["target"] for r in rows[warmup * batch :]])
    )
    u_s, n_s = u_times[-1] - u_times[warmup - 1], n_times[-1] - n_times[warmup - 1]
    samples = (steps - warmup) * batch
    total = models.count_parameters(run.model)[1]
    return {
        "params": total,
        "uvft_samples_s": samples / u_s,
        "naive_samples_s": samples / n_s,
        "uvft_tokens_s": tokens / u_s,
        "naive_tokens_s": tokens / n_s,
        "max_loss_diff": max(abs(a - b) for a, b in zip(u_losses, n_losses, strict=True)),
        "last_losses": (u_losses[-1], n_losses[-1]),
        "ratio": n_s / u_s,
    }


def _base(recipe) -> Path:
    from pipeline.data.build import build
    from pipeline.runtime import make_accelerator

    records = build(recipe, progress=False).load()
    acc = make_accelerator(recipe, log=False)
    return Path(loop.base_model_path(recipe, records, progress=False, accelerator=acc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="steps per loop (the 50M model: a quarter)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument(
        "--repeats", type=int, default=2, help="runs of each loop, alternating; the fastest counts"
    )
    ap.add_argument("--sizes", default="tiny,50m")
    ap.add_argument("--family", default="paligemma", choices=["paligemma", "florence2"])
    ap.add_argument("--n-train", type=int, default=200)
    args = ap.parse_args()
    rows, out = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        shapes.generate(data, n_train=args.n_train, n_val=16, image_size=64, progress=False)
        for size in args.sizes.split(","):
            batch, steps = (16, args.steps) if size == "tiny" else (8, max(args.warmup + 4, args.steps // 4))
            m = measure(size, args.family, steps, args.warmup, batch, data, Path(tmp), args.repeats)
            out[size] = m
            name = f"{args.family} {size} ({m['params'] / 1e6:.1f}M), batch {batch}"
            rows.append([name, "naive", m["naive_samples_s"], m["naive_tokens_s"], 1.0, ""])
            rows.append(
                [name, "uvft", m["uvft_samples_s"], m["uvft_tokens_s"], m["ratio"], m["max_loss_diff"]]
            )
    ratio = ", ".join(f"{s} {v['ratio']:.2f}x" for s, v in out.items())
    headers = ["model", "loop", "samples/s", "target tokens/s", "vs naive", "max |loss diff| per step"]
    assert all(math.isfinite(v["max_loss_diff"]) for v in out.values())
    report("train_step", headers, rows, f"ratio (uvft / naive samples/s): {ratio}", summary=out)


if __name__ == "__main__":
    main()
