"""A loadable model folder with a released architecture's widths, heads and full vocabulary at
reduced depth (`real_config_tiny`: one block per stack by default), random weights, and a tokenizer
built here on the records' texts: what `bench/train_step.py` times both loops on, and what
`bench/gpu.py` runs at full depth. Nothing is downloaded.

The tokenizer is the tiny one (its ids are a small part of the model's vocabulary); the head, the
embedding and every width are the released model's, so the step does the released model's work
per position. The image size is the released one (PaliGemma-2-3B-224: 224 px, 256 image tokens;
Florence-2-base: 768 px, 577 image tokens).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from pipeline import models

ARCH = {"florence2": "microsoft/Florence-2-base", "paligemma": "google/paligemma2-3b-pt-224"}
IMAGE = {"florence2": 768, "paligemma": 224}


def processor(family: str, texts: Iterable[str]):
    """The tiny tokenizer with the released image processor's size and image token count."""
    fam = models.get(family)
    if family == "paligemma":
        size = fam.Size(patch_size=14)  # SigLIP So400m/14: 224 px -> 16 x 16 = 256 image tokens
    else:  # DaViT's four stages: 768 px -> a 24 x 24 grid, plus the pooled token
        size = fam.Size(
            vision_dims=(128, 256, 512, 1024), vision_depths=(1,) * 4, vision_heads=(4, 8, 16, 32)
        )
    return fam.build_processor(list(texts), image_size=IMAGE[family], size=size)


def config(family: str, proc, *, layers: int | None = 1):
    """The released architecture (`layers` blocks per stack; None: the released depth) wired to
    the tiny tokenizer's image token, dropout off: Florence-2's 0.1 costs the same work, and
    without it two loops that draw their random numbers differently still compute the same
    losses, step by step."""
    cfg = models.get(family).real_config_tiny(ARCH[family], layers=layers)
    cfg.image_token_id = proc.tokenizer.image_token_id
    text = cfg.text_config
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        if hasattr(text, name):
            setattr(text, name, 0.0)
    return cfg


def build_folder(
    family: str,
    out: Path,
    texts: Iterable[str],
    *,
    layers: int | None = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Save the model (random weights, `dtype`; initialised on `device`, where a 3B model's random
    init is quick) and its processor in `out`: `models.get(family).load(out)` and a recipe's
    `model.id: out` read it."""
    import transformers

    fam = models.get(family)
    proc = processor(family, texts)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = getattr(transformers, fam.MODEL_CLASS)(config(family, proc, layers=layers)).to(dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
