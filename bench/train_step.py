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
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import real_widths
import torch
from common import demo_recipe, report
from PIL import Image

from pipeline import models
from pipeline.demo import shapes
from pipeline.models.common import IMAGE_TOKEN
from pipeline.train import loop, setup
from pipeline.train.optim import make_scheduler

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


def _recipe(
    data: Path, cache: Path, out: Path, family: str, size: dict[str, Any], steps: int, batch: int, *extra: str
):
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
        *extra,
    )


# the released models' recipes train LoRA r 16 on attention and MLP (dropout 0 here, so that the two
# loops' losses stay comparable step by step); no embedding copies (those are for the tiny tokenizer)
REAL_ADAPTER = [
    "adapter.preset=attention_mlp",
    "adapter.r=16",
    "adapter.alpha=32",
    "adapter.dropout=0.0",
    "adapter.modules_to_save=null",
]


def _real_recipe(
    data: Path, cache: Path, out: Path, family: str, folder: Path, steps: int, batch: int, *extra: str
):
    return demo_recipe(
        data,
        cache,
        out,
        f"model.family={family}",
        f"model.id={folder}",
        *REAL_ADAPTER,
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        f"train.save_every={steps}",
        *extra,
    )


def run_uvft(recipe) -> tuple[list[float], list[float], Any]:
    """Per-step end times (after the time the first step began) and losses of uvft's loop, and what
    it ran (its Run, for the rows it drew)."""
    real, times, holder = loop._step, [], {}

    def timed(run, batches):
        if "run" not in holder:
            holder["run"] = run
            times.append(time.perf_counter())
        real(run, batches)
        times.append(time.perf_counter())

    loop._step = timed
    try:
        summary = loop.train(recipe, progress=False)
    finally:
        loop._step = real
    return times[1:], [e["loss"] for e in summary.losses], {**holder, "start": times[0]}


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


def guide_setup(recipe, base_model: str, rows: list[dict[str, Any]]):
    """The naive loop's (model, optimizer, scheduler, loader), as the guides write them, on `rows`."""
    from accelerate.utils import set_seed

    family = recipe.model.family
    set_seed(recipe.train.seed)
    model, processor = models.get(family).load(base_model)
    model = setup.apply_adapter(model, recipe)  # the same LoRA, initialised from the same seed
    # as the guides write it: AdamW over the trainable parameters, torch's default implementation
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    sched = make_scheduler(opt, recipe.train)
    loader = torch.utils.data.DataLoader(
        rows, batch_size=recipe.train.batch_size, shuffle=False, collate_fn=guide_collate(processor, family)
    )
    model.train()
    return model, opt, sched, loader


def run_naive(recipe, base_model: str, rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    model, opt, sched, loader = guide_setup(recipe, base_model, rows)
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


def measure(make_recipe, steps: int, warmup: int, batch: int, repeats: int, compiled: bool) -> dict:
    """The eager loops `repeats` times, alternating (uvft, naive, uvft, ...); each loop's fastest
    run counts (the slower ones lost time to the machine, not to the loop). uvft with train.compile
    runs once, after the first uvft run, compiling from an empty Inductor cache (main() points it at
    a new folder): its compile time is what a user's first run pays."""

    def span(run: tuple) -> float:
        return run[0][-1] - run[0][warmup - 1]

    def settling(run: tuple) -> float:  # the warm-up steps' time over their steady-state cost
        return run[0][warmup - 1] - run[2] - warmup * span(run) / (steps - warmup)

    best: dict[str, tuple] = {}

    def keep(name: str, run: tuple) -> None:
        if name not in best or span(run) < span(best[name]):
            best[name] = run

    times, losses, holder = run_uvft(make_recipe("uvft-0"))
    keep("uvft", (times, losses, holder["start"]))
    run = holder["run"]
    rows = [run.loader.dataset[i] for i in run.sampler.global_rows(0, steps * batch)]
    base_model = run.recipe.model.id or str(_base(make_recipe("uvft-0")))
    compile_s: list[float] = []
    for rep in range(repeats):
        if rep:
            times, losses, holder = run_uvft(make_recipe(f"uvft-{rep}"))
            keep("uvft", (times, losses, holder["start"]))
        if compiled and not rep:
            times, losses, holder = run_uvft(make_recipe("compiled", "train.compile=true"))
            keep("compiled", (times, losses, holder["start"]))
            compile_s.append(settling((times, losses, holder["start"])) - settling(best["uvft"]))
        n_times, n_losses = run_naive(make_recipe("naive"), base_model, rows)
        keep("naive", (n_times, n_losses, n_times[0]))
    tokens = sum(
        models.get(run.recipe.model.family).target_lengths(
            run.processor, [r["target"] for r in rows[warmup * batch :]]
        )
    )
    samples = (steps - warmup) * batch
    out: dict[str, Any] = {"params": models.count_parameters(run.model)[1]}
    for name, r in best.items():
        out[name] = {"samples_s": samples / span(r), "tokens_s": tokens / span(r), "losses": r[1]}
        out[name]["ratio"] = span(best["naive"]) / span(r)
        out[name]["max_loss_diff"] = max(abs(a - b) for a, b in zip(r[1], best["naive"][1], strict=True))
    if compiled:
        saved = (span(best["uvft"]) - span(best["compiled"])) / (steps - warmup)
        out["compiled"]["compile_s"] = compile_s
        out["compiled"]["vs_eager"] = span(best["uvft"]) / span(best["compiled"])
        out["compiled"]["vs_eager_loss_diff"] = max(
            abs(a - b) for a, b in zip(best["compiled"][1], best["uvft"][1], strict=True)
        )
        # steps after which the compiled run is ahead, its first-run compile paid
        out["compiled"]["break_even_steps"] = math.ceil(compile_s[0] / saved) if saved > 0 else None
    return out


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
    ap.add_argument("--sizes", default="tiny,50m", help="tiny, 50m (empty: none)")
    ap.add_argument("--family", default="paligemma", choices=["paligemma", "florence2"])
    ap.add_argument(
        "--real",
        default="paligemma,florence2",
        help="families timed at their released widths, one block per stack (empty: none)",
    )
    ap.add_argument("--real-steps", type=int, default=4, help="steps per loop at real widths (one warm-up)")
    ap.add_argument("--real-batch", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true", help="leave out the train.compile runs")
    ap.add_argument("--n-train", type=int, default=200)
    args = ap.parse_args()
    compiled = not args.no_compile
    table_rows, out = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        # the first compiled run compiles from nothing, as a user's first run does
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        data = Path(tmp) / "shapes"
        shapes.generate(data, n_train=args.n_train, n_val=16, image_size=64, progress=False)
        runs: list[tuple[str, Any, int, int, int, int]] = []
        for size in filter(None, args.sizes.split(",")):
            batch, steps = (16, args.steps) if size == "tiny" else (8, max(args.warmup + 4, args.steps // 4))
            dims = SIZES[size][args.family]

            def make(tag, *extra, size=size, dims=dims, steps=steps, batch=batch):
                out = Path(tmp) / f"run-{size}-{tag}"
                return _recipe(data, Path(tmp) / "cache", out, args.family, dims, steps, batch, *extra)

            runs.append((f"{args.family} {size}", make, steps, args.warmup, batch, args.repeats))
        for family in filter(None, args.real.split(",")):
            folder = Path(tmp) / f"real-{family}"

            def make(tag, *extra, family=family, folder=folder):
                if not folder.exists():
                    texts = _texts(_recipe(data, Path(tmp) / "cache", Path(tmp) / "texts", family, {}, 1, 1))
                    real_widths.build_folder(family, folder, texts)
                steps, batch = args.real_steps, args.real_batch
                out = Path(tmp) / f"real-{family}-{tag}"
                return _real_recipe(data, Path(tmp) / "cache", out, family, folder, steps, batch, *extra)

            name = f"{real_widths.ARCH[family]} widths, 1 block per stack"
            runs.append((name, make, args.real_steps, 1, args.real_batch, 1))
        for name, make, steps, warmup, batch, repeats in runs:
            m = measure(make, steps, warmup, batch, repeats, compiled)
            out[name] = m
            label = f"{name} ({m['params'] / 1e6:.1f}M), batch {batch}"
            for loop_name, key in (("naive", "naive"), ("uvft", "uvft"), ("uvft, train.compile", "compiled")):
                if key in m:
                    r = m[key]
                    compile_s = ""
                    if "compile_s" in r:
                        even = r["break_even_steps"]
                        pays = f"pays after {even:,} steps" if even else "never pays"
                        compile_s = f"{r['compile_s'][0]:.0f} ({pays}; {r['vs_eager']:.2f}x eager)"
                    diff = "" if key == "naive" else r["max_loss_diff"]
                    table_rows.append(
                        [label, loop_name, r["samples_s"], r["tokens_s"], r["ratio"], diff, compile_s]
                    )

    def line(m: dict) -> str:
        text = f"{m['uvft']['ratio']:.2f}x"
        if "compiled" in m:
            text += f" (compiled {m['compiled']['ratio']:.2f}x)"
        return text

    ratio = "; ".join(f"{name} {line(m)}" for name, m in out.items())
    headers = [
        "model",
        "loop",
        "samples/s",
        "target tokens/s",
        "vs naive",
        "max |loss diff| vs naive",
        "compile s (first run; vs eager uvft)",
    ]
    assert all(math.isfinite(m[k]["max_loss_diff"]) for m in out.values() for k in ("uvft", "naive"))
    report("train_step", headers, table_rows, f"ratio (uvft / naive samples/s): {ratio}", summary=out)


def _texts(recipe) -> list[str]:
    """The training records' prompts and targets: what the real-width model's tokenizer is built on."""
    from pipeline.data.build import build

    train = build(recipe, progress=False).load()[recipe.data.train_split]
    return [*train["prompt"], *train["target"]]


if __name__ == "__main__":
    main()
