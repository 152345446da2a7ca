"""FLOPs and memory of one training step's loss on the released architectures at reduced depth
(Florence-2-base and PaliGemma-2-3B-224 shapes from `real_config_tiny`, one block per stack, real
widths and vocabularies, random weights, LoRA on attention as the recipes): uvft's loss (logits
only at label positions, no loss inside the model) against the baseline it replaced and every
guide writes (`labels` into the model, whose loss is then recomputed over fp32 logits of every
position). Counted with torch.utils.flop_counter over forward + backward.

- executed: FLOPs of the step on the padded batch;
- useful: the same examples one at a time (no padding), logits only where labels are;
- loss peak: peak resident memory of head + cross-entropy (forward and backward) on the step's
  hidden states, measured in a fresh process per variant over what was resident before it (the
  kernel's peak-RSS counter, reset through /proc/self/clear_refs: Linux only).

    python bench/loss_flops.py [--batch 4] [--families florence2,paligemma]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import report
from real_widths import ARCH, IMAGE
from torch.utils.flop_counter import FlopCounterMode

from pipeline import models
from pipeline.models.loss import IGNORE_INDEX, token_losses

# one record of each task, as the COCO-scale mixture has them: (prompt tokens, target tokens)
ROWS = {"classification": (9, 2), "vqa": (12, 3), "caption": (4, 14), "detection": (4, 60)}


def build(family: str) -> torch.nn.Module:
    import transformers
    from peft import get_peft_model

    fam = models.get(family)
    torch.manual_seed(0)
    model = getattr(transformers, fam.MODEL_CLASS)(fam.real_config_tiny(ARCH[family], layers=1))
    models.freeze_vision(model)
    return get_peft_model(
        model, models.lora_config(fam.LORA_TARGETS, "attention", r=16, alpha=32, dropout=0.0)
    )


def batch(family: str, cfg: Any, rows: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """A right-padded batch of random tokens with the families' layouts (see their encode_batch),
    for a model of config `cfg`."""
    g = torch.Generator().manual_seed(1)
    vocab = cfg.text_config.vocab_size
    size = IMAGE[family]
    pixels = torch.randn(len(rows), 3, size, size, generator=g)

    def ids(n: int) -> list[int]:
        return torch.randint(10, min(vocab, 50_000), (n,), generator=g).tolist()

    if family == "florence2":
        n_image = (size // 32) ** 2 + 1  # DaViT's last grid plus the pooled token
        enc = [[cfg.image_token_id] * n_image + ids(p + 2) for p, _ in rows]
        dec = [ids(t + 2) for _, t in rows]  # <s> target </s>
        width, dwidth = max(map(len, enc)), max(map(len, dec))
        input_ids = torch.tensor([r + [1] * (width - len(r)) for r in enc])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in enc])
        labels = torch.tensor([r + [IGNORE_INDEX] * (dwidth - len(r)) for r in dec])
        start = torch.full((len(rows), 1), 2)  # </s>, the decoder's start; padding is <pad> (1)
        shifted = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, 1)
        decoder_input_ids = torch.cat([start, shifted], dim=1)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "pixel_values": pixels,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }
    n_image = (size // 14) ** 2
    seqs, types = [], []
    for p, t in rows:
        prefix = [cfg.image_token_id] * n_image + ids(p + 2)  # <bos> prompt "\n"
        suffix = ids(t + 1)  # target <eos>
        seqs.append(prefix + suffix)
        types.append([0] * len(prefix) + [1] * len(suffix))
    width = max(map(len, seqs))
    input_ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    token_type_ids = torch.tensor([t + [0] * (width - len(t)) for t in types])
    labels = input_ids.masked_fill((token_type_ids == 0) | (mask == 0), IGNORE_INDEX)
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": token_type_ids,
        "pixel_values": pixels,
        "labels": labels,
    }


def baseline_losses(model: torch.nn.Module, b: dict[str, Any], *, shift: bool) -> torch.Tensor:
    """The loss uvft had (and the guides have): labels into the model, which computes its own loss
    over every position's logits, then the cross-entropy again over fp32 logits of every position."""
    out = model(**b)
    logits, labels = out.logits, b["labels"]
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return ce.sum(dim=1)


def step_flops(model: torch.nn.Module, b: dict[str, Any], variant: str, shift: bool) -> tuple[int, float]:
    """(FLOPs of forward + backward, loss) of one step."""
    counter = FlopCounterMode(display=False)
    with counter:
        if variant == "uvft":
            loss_sum, n = token_losses(model, b, shift=shift)
        else:
            loss_sum = baseline_losses(model, b, shift=shift)
            n = (b["labels"][:, 1:] if shift else b["labels"]).ne(IGNORE_INDEX).sum(dim=1)
        loss = loss_sum.sum() / n.sum()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops(), float(loss.detach())


def _status(key: str) -> int:
    """A byte count from /proc/self/status (VmRSS: resident now; VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(family: str, variant: str, n_rows: int) -> None:
    """One variant in a fresh process: the loss's peak memory over what was resident before it."""
    fam = models.get(family)
    config = fam.real_config_tiny(ARCH[family], layers=1)
    text = config.get_text_config()
    labels = batch(family, config, list(ROWS.values())[:n_rows])["labels"]
    width = getattr(text, "hidden_size", None) or text.d_model
    # the last hidden states of the step (their values do not change the memory) and the frozen head
    h = torch.randn(*labels.shape, width, requires_grad=True)
    head = torch.nn.Linear(width, text.vocab_size, bias=False).requires_grad_(False)
    softcap = getattr(text, "final_logit_softcapping", None)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to what is resident now (Linux)
    before = _status("VmRSS")
    if variant == "uvft":
        from pipeline.models.loss import label_positions

        keep, targets = label_positions(labels, fam.DECODER_ONLY)
        logits = head(h[keep])
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    else:
        logits = head(h)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        lab = labels
        if fam.DECODER_ONLY:
            logits, lab = logits[:, :-1], labels[:, 1:]
        # the model's own loss, then the recomputation over fp32 logits
        inner = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=IGNORE_INDEX
        )
        loss = F.cross_entropy(
            logits.float().transpose(1, 2), lab, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        loss = loss + 0 * inner
    loss.backward()
    print(json.dumps({"peak_bytes": _status("VmHWM") - before, "positions": int(h.shape[0] * h.shape[1])}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="records per step (one per task, up to 4)")
    ap.add_argument("--families", default="florence2,paligemma")
    ap.add_argument("--child", nargs=2, metavar=("FAMILY", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.batch)
        return
    torch.set_grad_enabled(True)
    rows, out = [], {}
    for family in args.families.split(","):
        model = build(family)
        shift = models.get(family).DECODER_ONLY
        spec = list(ROWS.values())[: args.batch]
        b = batch(family, model.config, spec)
        base_flops, base_loss = step_flops(model, b, "baseline", shift)
        uvft_flops, uvft_loss = step_flops(model, b, "uvft", shift)
        useful = sum(step_flops(model, batch(family, model.config, [r]), "uvft", shift)[0] for r in spec)
        mem = {}
        for variant in ("baseline", "uvft"):
            cmd = [sys.executable, __file__, "--child", family, variant, "--batch", str(args.batch)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            mem[variant] = json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"]
        gib = 1024**3
        rows += [
            [
                ARCH[family],
                "baseline",
                base_flops / 1e9,
                useful / base_flops,
                mem["baseline"] / gib,
                base_loss,
            ],
            [ARCH[family], "uvft", uvft_flops / 1e9, useful / uvft_flops, mem["uvft"] / gib, uvft_loss],
        ]
        out[family] = {
            "executed_ratio": base_flops / uvft_flops,
            "memory_ratio": mem["baseline"] / max(mem["uvft"], 1),
        }
        del model
    ratio = "; ".join(
        f"{f}: {v['executed_ratio']:.2f}x fewer FLOPs, {v['memory_ratio']:.1f}x less loss memory"
        for f, v in out.items()
    )
    headers = [
        "architecture (1 block per stack)",
        "loss",
        "GFLOPs / step",
        "useful / executed",
        "loss peak GiB",
        "loss value",
    ]
    report("loss_flops", headers, rows, f"ratio (baseline / uvft): {ratio}", summary=out)


if __name__ == "__main__":
    main()
