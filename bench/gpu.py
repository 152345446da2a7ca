"""GPU throughput of the two released architectures at full depth (Florence-2-base, PaliGemma-2-3B-224;
random weights), bf16, LoRA as the real recipes train them (attention_mlp, r 16, vision frozen), in
two parts, each against its baseline in the same process:

1. the step: uvft's loss (logits at label positions only) against the loss uvft had before (labels
   into the model, fp32 logits of every position) on one fixed batch: tokens/s, peak memory, and MFU =
   counted FLOPs per step (torch.utils.flop_counter) x steps/s over the card's measured bf16 matmul peak;
2. the whole loop: `uvft finetune`'s loop (pipeline.train.loop.train: records from generated images,
   the collator in DataLoader workers, the step, logging every 10 steps) on a model folder of the
   released architecture (bench/real_widths.py), with and without train.compile: samples/s, MFU (FLOPs
   of the same batches counted in an eager pass), compile time. The baseline is the eager loop.

Needs CUDA; `make bench-gpu` runs it and the GPU-marked tests. `--cpu-check` runs the same code at
one block per stack on the CPU with a small batch (seconds of work, numbers meaningless): the smoke run
of `make test-slow` uses it, so the script is known to run before a GPU is lent.

    python bench/gpu.py [--batch 16] [--steps 20] [--loop-steps 30] [--families florence2,paligemma]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import real_widths
import torch
from common import demo_recipe, report
from loss_flops import ROWS, baseline_losses, batch
from torch.utils.flop_counter import FlopCounterMode
from train_step import _real_recipe, _texts, run_uvft

from pipeline import models
from pipeline.demo import shapes
from pipeline.models.loss import token_losses
from pipeline.train import loop


def build(family: str, device: str, layers: int | None) -> torch.nn.Module:
    import transformers
    from peft import get_peft_model

    fam = models.get(family)
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, fam.MODEL_CLASS)(
            fam.real_config_tiny(real_widths.ARCH[family], layers=layers)
        )
    models.freeze_vision(model)
    cfg = models.lora_config(fam.LORA_TARGETS, "attention_mlp", r=16, alpha=32, dropout=0.0)
    return get_peft_model(model, cfg)


def matmul_peak(device: str, n: int = 8192, reps: int = 20) -> float:
    """Measured matmul FLOP/s of this card in bf16 (of the CPU in fp32, for --cpu-check)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = n if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step(model, b, shift: bool, variant: str, opt, device: str) -> None:
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        if variant == "uvft":
            loss_sum, n = token_losses(model, b, shift=shift)
        else:
            loss_sum = baseline_losses(model, b, shift=shift)
            n = (b["labels"][:, 1:] if shift else b["labels"]).ne(-100).sum(dim=1)
        loss = loss_sum.sum() / n.sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_part(families, args, device: str, layers: int | None, peak: float) -> tuple[list, dict]:
    rows, out = [], {}
    spec = [list(ROWS.values())[i % len(ROWS)] for i in range(args.batch)]
    for family in families:
        model = build(family, device, layers)
        shift = models.get(family).DECODER_ONLY
        b = {k: v.to(device) for k, v in batch(family, model.config, spec).items()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        tokens = int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) * (not shift)
        for variant in ("baseline", "uvft"):
            counter = FlopCounterMode(display=False)
            with counter:
                step(model, b, shift, variant, opt, device)
            flops = counter.get_total_flops()
            for _ in range(args.warmup):
                step(model, b, shift, variant, opt, device)
            sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, b, shift, variant, opt, device)
            sync(device)
            per_step = (time.perf_counter() - t0) / args.steps
            mem = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else float("nan")
            mfu = flops / per_step / peak
            rows.append(
                [
                    real_widths.ARCH[family],
                    f"step, {variant} loss",
                    tokens / per_step,
                    args.batch / per_step,
                    mem,
                    flops / 1e12,
                    mfu,
                    "",
                ]
            )
            out[f"step/{family}/{variant}"] = {"s_per_step": per_step, "mfu": mfu, "peak_gib": mem}
        del model, opt
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows, out


def counted_flops(recipe, steps: int) -> float:
    """FLOPs per step of the first `steps` steps of an eager run of `recipe` (the batches every run
    of it draws first), forward, backward and update."""
    real, counts = loop._step, []

    def counting(run, batches):
        if len(counts) < steps:
            counter = FlopCounterMode(display=False)
            with counter:
                real(run, batches)
            counts.append(counter.get_total_flops())
        else:
            real(run, batches)

    loop._step = counting
    try:
        loop.train(recipe, progress=False)
    finally:
        loop._step = real
    return sum(counts) / len(counts)


def loop_part(families, args, device: str, layers: int | None, peak: float, tmp: Path) -> tuple[list, dict]:
    """uvft's whole loop, eager and compiled, on each family's released architecture."""
    rows, out = [], {}
    steps, warmup, batch_size = args.loop_steps, args.loop_warmup, args.batch
    data = tmp / "shapes"
    shapes.generate(data, n_train=max(64, steps * batch_size), n_val=16, image_size=64, progress=False)
    for family in families:
        folder = tmp / f"model-{family}"
        texts = _texts(demo_recipe(data, tmp / "cache", tmp / "texts", f"model.family={family}"))
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        real_widths.build_folder(family, folder, texts, layers=layers, dtype=dtype, device=device)

        def recipe(tag: str, *extra: str, family=family, folder=folder):
            out, loop_settings = tmp / f"run-{family}-{tag}", ("train.log_every=10", "train.val_batches=1")
            workers = f"train.num_workers={args.workers}"
            return _real_recipe(
                data, tmp / "cache", out, family, folder, steps, batch_size, *loop_settings, workers, *extra
            )

        flops = counted_flops(recipe("flops", f"train.steps={warmup + 2}"), warmup + 2)
        spans = {}
        for name, extra in (("eager", ()), ("train.compile", ("train.compile=true",))):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, losses, holder = run_uvft(recipe(name, *extra))
            per_step = (times[-1] - times[warmup - 1]) / (steps - warmup)
            settle = times[warmup - 1] - holder["start"] - warmup * per_step
            spans[name] = (per_step, settle)
            rows.append(
                [
                    real_widths.ARCH[family],
                    f"whole loop, {name}",
                    float("nan"),
                    batch_size / per_step,
                    torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else float("nan"),
                    flops / 1e12,
                    flops / per_step / peak,
                    "",
                ]
            )
            out[f"loop/{family}/{name}"] = {
                "s_per_step": per_step,
                "mfu": flops / per_step / peak,
                "last_loss": losses[-1],
            }
        compile_s = spans["train.compile"][1] - spans["eager"][1]
        rows[-1][-1] = f"{compile_s:.0f}"
        out[f"loop/{family}/train.compile"]["compile_s"] = compile_s
    return rows, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of the step part")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--loop-steps", type=int, default=30, help="steps of each whole-loop run")
    ap.add_argument("--loop-warmup", type=int, default=5, help="of which the first are not timed")
    ap.add_argument("--workers", type=int, default=4, help="DataLoader workers of the whole loop")
    ap.add_argument("--families", default="florence2,paligemma")
    ap.add_argument("--parts", default="step,loop")
    ap.add_argument("--cpu-check", action="store_true", help="one block per stack on the CPU (see above)")
    args = ap.parse_args()
    if args.cpu_check:
        device, layers = "cpu", 1
    elif torch.cuda.is_available():
        device, layers = "cuda", None
    else:
        raise SystemExit(
            "bench/gpu.py needs CUDA (--cpu-check runs its code on the CPU at one block per stack)"
        )
    families, parts = args.families.split(","), args.parts.split(",")
    peak = matmul_peak(device)
    rows, out = [], {}
    if "step" in parts:
        r, o = step_part(families, args, device, layers, peak)
        rows, out = rows + r, {**out, **o}
    if "loop" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            r, o = loop_part(families, args, device, layers, peak, Path(tmp))
        rows, out = rows + r, {**out, **o}
    headers = [
        "architecture (full depth)" if layers is None else "architecture (1 block per stack, --cpu-check)",
        "what",
        "tokens/s",
        "samples/s",
        "peak GiB",
        "TFLOPs/step",
        "MFU",
        "compile s",
    ]
    parts_text = []
    for f in families:
        if f"step/{f}/uvft" in out:
            base, mine = out[f"step/{f}/baseline"], out[f"step/{f}/uvft"]
            parts_text.append(
                f"{f} step {base['s_per_step'] / mine['s_per_step']:.2f}x, MFU {mine['mfu']:.1%}"
            )
        if f"loop/{f}/eager" in out:
            eager, comp = out[f"loop/{f}/eager"], out[f"loop/{f}/train.compile"]
            parts_text.append(
                f"{f} loop compile {eager['s_per_step'] / comp['s_per_step']:.2f}x, "
                f"MFU {eager['mfu']:.1%} -> {comp['mfu']:.1%}"
            )
    name = "gpu" if device == "cuda" else "gpu_cpu_check"
    report(
        name,
        headers,
        rows,
        f"ratio (baseline / uvft step time): {'; '.join(parts_text)}",
        peak_tflops=peak / 1e12,
        summary=out,
    )


if __name__ == "__main__":
    main()
