"""GPU throughput of the two released architectures at full depth (Florence-2-base, PaliGemma-2-3B-224;
random weights), bf16 autocast, LoRA as the real recipes train them (attention_mlp, r 16, vision
frozen), uvft's loss: tokens/s, peak memory, and MFU = counted FLOPs per step (torch.utils.flop_counter)
x steps/s over the card's measured bf16 matmul peak. The baseline is the same step with the loss
uvft had before (labels into the model, fp32 logits of every position), in the same process.

Needs CUDA; about 3 minutes on an H100/H200.

    python bench/gpu.py [--batch 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import report
from loss_flops import ARCH, ROWS, baseline_losses, batch
from torch.utils.flop_counter import FlopCounterMode

from pipeline import models
from pipeline.models.loss import token_losses


def build(family: str) -> torch.nn.Module:
    import transformers
    from peft import get_peft_model

    fam = models.get(family)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = getattr(transformers, fam.MODEL_CLASS)(fam.real_config_tiny(ARCH[family], layers=None))
    models.freeze_vision(model)
    cfg = models.lora_config(fam.LORA_TARGETS, "attention_mlp", r=16, alpha=32, dropout=0.0)
    return get_peft_model(model, cfg)


def matmul_peak(n: int = 8192, reps: int = 20) -> float:
    """Measured bf16 matmul FLOP/s of this card."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step(model, b, shift: bool, variant: str, opt) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if variant == "uvft":
            loss_sum, n = token_losses(model, b, shift=shift)
        else:
            loss_sum = baseline_losses(model, b, shift=shift)
            n = (b["labels"][:, 1:] if shift else b["labels"]).ne(-100).sum(dim=1)
        loss = loss_sum.sum() / n.sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs CUDA")
    peak = matmul_peak()
    rows, out = [], {}
    spec = [list(ROWS.values())[i % len(ROWS)] for i in range(args.batch)]
    for family in ("florence2", "paligemma"):
        model = build(family)
        shift = models.get(family).DECODER_ONLY
        b = {k: v.cuda() for k, v in batch(family, model.config, spec).items()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        tokens = int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) * (not shift)
        for variant in ("baseline", "uvft"):
            counter = FlopCounterMode(display=False)
            with counter:
                step(model, b, shift, variant, opt)
            flops = counter.get_total_flops()
            for _ in range(3):
                step(model, b, shift, variant, opt)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, b, shift, variant, opt)
            torch.cuda.synchronize()
            per_step = (time.perf_counter() - t0) / args.steps
            mem = torch.cuda.max_memory_allocated() / 1024**3
            mfu = flops / per_step / peak
            rows.append(
                [ARCH[family], variant, tokens / per_step, args.batch / per_step, mem, flops / 1e12, mfu]
            )
            out[f"{family}/{variant}"] = {"s_per_step": per_step, "mfu": mfu, "peak_gib": mem}
        del model, opt
        torch.cuda.empty_cache()
    headers = ["architecture (full depth)", "loss", "tokens/s", "samples/s", "peak GiB", "TFLOPs/step", "MFU"]
    parts = []
    for f in ("florence2", "paligemma"):
        base, mine = out[f"{f}/baseline"], out[f"{f}/uvft"]
        parts.append(f"{f}: {base['s_per_step'] / mine['s_per_step']:.2f}x, MFU {mine['mfu']:.1%}")
    ratio = ", ".join(parts)
    report("gpu", headers, rows, f"ratio (baseline / uvft step time): {ratio}", bf16_peak_tflops=peak / 1e12)


if __name__ == "__main__":
    main()
