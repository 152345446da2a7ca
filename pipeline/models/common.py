"""What the model families share: parameter counting and freezing, LoRA configs from regex presets,
checked `from_pretrained`, and the BPE tokenizer trained on the spot for tiny models."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import ModelError

logger = logging.getLogger(__name__)

# the placeholder both families' processors expand into the image tokens
IMAGE_TOKEN = "<image>"

PRESETS = ("attention", "attention_mlp", "all_linear")
VISION_TOWER = "vision_tower"  # the module name both families give their image encoder


# ---------------------------------------------------------------------------- parameters


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once (parameters() yields it once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def is_vision(name: str) -> bool:
    """True for a parameter or module name inside the vision tower (bare or peft-wrapped model)."""
    return VISION_TOWER in name.split(".")


def freeze_vision(model: nn.Module) -> int:
    """Freeze every vision-tower parameter (the projector stays as it is); return how many tensors."""
    n = 0
    for name, p in model.named_parameters():
        if is_vision(name):
            p.requires_grad_(False)
            n += 1
    if n == 0:
        raise ValueError(f"freeze_vision: no '{VISION_TOWER}' parameter in {type(model).__name__}")
    return n


def has_adapters(model: nn.Module) -> bool:
    """True when peft layers (LoRA, modules_to_save copies) are inside the model."""
    return any(
        hasattr(m, "base_layer") or hasattr(m, "modules_to_save") or hasattr(m, "lora_A")
        for m in model.modules()
    )


def save_base(model: nn.Module, processor: Any, out_dir: str | Path) -> Path:
    """Save a plain (unwrapped) model and its processor, refusing one that peft has wrapped.

    `get_peft_model` rewrites the base model in place (`q_proj` becomes `q_proj.base_layer` + LoRA),
    so a base saved after wrapping no longer has the names `from_pretrained` looks for, and those
    weights would be re-initialised on load. Save the base before wrapping, or save the adapter.
    """
    if has_adapters(model):
        raise ValueError(
            "save_base: this model carries peft adapter layers (get_peft_model changed it in place); "
            "save the base before wrapping it, or save the adapter with PeftModel.save_pretrained"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------- LoRA


def lora_config(
    targets: Mapping[str, str],
    preset: str,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    modules_to_save: Sequence[str] | None = None,
):
    """A peft LoraConfig whose `target_modules` is the preset's regex, from a family's LORA_TARGETS
    (never the vision tower).

    A regex string is matched with `re.fullmatch` against full module names, so it can anchor on the
    language model's path; a list of names would match by suffix and reach into the vision tower.
    """
    from peft import LoraConfig

    if preset not in targets:
        raise KeyError(f"unknown LoRA preset {preset!r}; known: {', '.join(targets)}")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets[preset],
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
    )


def matching_modules(model: nn.Module, pattern: str) -> list[str]:
    """Names of the modules a target regex selects (what peft will wrap)."""
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if name and rx.fullmatch(name)]


# ---------------------------------------------------------------------------- loading


def from_pretrained_checked(cls: Any, name: str | Path, **kwargs: Any):
    """`cls.from_pretrained(name, use_safetensors=True, ...)` that refuses checkpoints whose weights
    do not match the class: random weights where a checkpoint was expected would train silently."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model, info = cls.from_pretrained(str(name), use_safetensors=True, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ModelError(
            f"{name}: the checkpoint does not match {cls.__name__} ({len(missing)} missing, "
            f"{len(mismatched)} mismatched weights, e.g. {(missing + [str(m) for m in mismatched])[:3]}); "
            "is it a remote-code checkpoint rather than a native transformers one, or a base model "
            "saved after get_peft_model had wrapped it (see save_base)?"
        )
    if info.get("unexpected_keys"):
        logger.warning("%s: %d unexpected weights ignored", name, len(info["unexpected_keys"]))
    return model


def load_native(
    model_cls: Any, processor_cls: Any, name: str | Path, *, revision: str | None = None, **model_kwargs: Any
) -> tuple[Any, Any]:
    """(model, processor) of a native transformers checkpoint (hub id or folder): remote code refused,
    safetensors only, weights checked against the class (see from_pretrained_checked)."""
    check_model_name(name)
    try:
        refuse_remote_code(name, revision)
        model = from_pretrained_checked(model_cls, name, revision=revision, **model_kwargs)
        return model, processor_cls.from_pretrained(str(name), revision=revision)
    except OSError as e:  # transformers' "not a local folder and not a valid model identifier", offline, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load model {name}: {first}") from None


def check_model_name(name: str | Path) -> None:
    """A name that is written as a path (`./x`, `/x`, `~/x`, `a/b/c`) must be an existing folder:
    otherwise transformers takes it for a hub id and answers with a confusing repo-id error."""
    text = str(name)
    if Path(text).expanduser().is_dir():
        return
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or isinstance(name, Path):
        raise ModelError(f"model {text}: no such folder (a hub id is namespace/name)")


def refuse_remote_code(name: str | Path, revision: str | None) -> None:
    """Raise when a checkpoint's config asks for remote code: uvft only runs native transformers models."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(str(name), revision=revision)
    if "auto_map" in config:
        raise ModelError(
            f"{name}: its config.json maps to remote code (auto_map); uvft loads native transformers "
            "checkpoints only, never trust_remote_code"
        )


# ---------------------------------------------------------------------------- tiny models


@dataclass
class TinySize:
    """Base for the families' tiny-model sizes: `from_kwargs` refuses unknown keys by name."""

    @classmethod
    def from_kwargs(cls, **size: Any):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(size) - known)
        if unknown:
            raise TypeError(
                f"unknown tiny {cls.__name__} key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**size)


def init_location_embeddings(model: nn.Module, token_ids: Sequence[int], *, period: float = 4.0) -> None:
    """Give the location tokens (bins 0..n-1, in order) sinusoidal embeddings of their bin index.

    A pretrained model's location embeddings vary smoothly with the bin (neighbouring bins mean
    neighbouring pixels); random ones make the 1000-way choice of a coordinate a lookup the tiny
    model must learn bin by bin. Frequencies run geometrically from one cycle over all bins to one
    per `period` bins; the row norm matches the random rows', so no scale changes. With tied
    embeddings the output head gets the same prior (a coordinate's neighbours score alike).
    """
    emb = model.get_input_embeddings().weight
    n, dim = len(token_ids), emb.shape[1]
    half = dim // 2
    idx = torch.arange(n, dtype=torch.float64)[:, None]
    wavelengths = torch.logspace(math.log10(2 * n), math.log10(period), half, dtype=torch.float64)[None, :]
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0 : 2 * half : 2] = torch.sin(2 * math.pi * idx / wavelengths)
    table[:, 1 : 2 * half : 2] = torch.cos(2 * math.pi * idx / wavelengths)
    with torch.no_grad():
        others = emb.norm(dim=1).mean()
        table *= float(others) / float(table.norm(dim=1).mean())
        ids = torch.as_tensor(list(token_ids))
        emb[ids] = table.to(emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[ids] = table.to(out.weight.dtype)


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """(side*side, dim) fixed 2-D sine-cosine position embeddings in raster order (as MAE's): half
    the channels encode the row, half the column, each with frequencies 1/10000^(k/(dim/4))."""
    if dim % 4:
        raise ValueError(f"sincos_2d needs a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    grid = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")

    def enc(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([enc(rows), enc(cols)], dim=1)


def strip_tokens(texts: Iterable[str], tokens: Sequence[str]) -> list[str]:
    """The pieces of text between the given special tokens: BPE merges should go to words, not to
    fragments of `<loc_123>`, which the tokenizer matches whole anyway."""
    rx = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    return [piece for t in texts for piece in rx.split(t) if piece]


def train_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    specials: Sequence[str],
    byte_level: bool,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a BPE trained on `texts`; `specials` take the first ids, in order.

    byte_level: GPT-2/BART style (bytes mapped to printable characters, "Ġ" marks a space);
    otherwise SentencePiece/Gemma style (spaces become "▁", unknown bytes fall back to `<0xNN>`,
    which `specials` should then contain).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if byte_level:
        tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        # training only: keep merges inside words ("▁word") and "\n" alone, as SentencePiece does;
        # the saved tokenizer needs no such split since no merge crosses these boundaries
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split("▁", behavior="merged_with_next"),
                pre_tokenizers.Split("\n", behavior="isolated"),
            ]
        )
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    for i, s in enumerate(specials):
        if vocab.get(s) != i:
            raise AssertionError(f"special token {s!r} got id {vocab.get(s)}, expected {i}")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges  # type: ignore[return-value]
