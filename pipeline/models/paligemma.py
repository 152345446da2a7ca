"""PaliGemma / PaliGemma 2 (transformers' native `PaliGemmaForConditionalGeneration`): load a
checkpoint, build a tiny one from a config, and the LoRA target presets.

PaliGemma is a SigLIP image encoder, a linear projector and a Gemma (2) decoder that reads
`<image>`x N, `<bos>`, the prompt, "\\n" (the prefix, attended bidirectionally) and writes the
target then `<eos>` (the suffix, causal). The processor marks the suffix with token_type_ids 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.formats import pali as fmt
from pipeline.models.common import (
    IMAGE_TOKEN,
    TinySize,
    init_location_embeddings,
    load_native,
    sincos_2d,
    strip_tokens,
    train_bpe,
)
from pipeline.models.loss import IGNORE_INDEX
from pipeline.models.pixels import processor_images

logger = logging.getLogger(__name__)

FAMILY = "paligemma"
DISPLAY_NAME = "PaliGemma"
MODEL_CLASS = "PaliGemmaForConditionalGeneration"
DECODER_ONLY = True  # prefix-LM: labels are shifted inside the loss, and generation pads prompts on the left
LOCATIONS = fmt.LOCATIONS

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0-4
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]  # byte fallback, as Gemma's vocab has

# Module paths (see `PaliGemmaForConditionalGeneration.named_modules()`): the Gemma decoder is
# `model.language_model`, SigLIP is `model.vision_tower` (it has q_proj/k_proj/v_proj/fc1/fc2 of
# its own, hence regexes anchored on the language model's path), the projector
# `model.multi_modal_projector.linear`.
_LM_LAYER = r"model\.language_model\.layers\.\d+"
_ATTENTION = _LM_LAYER + r"\.self_attn\.(?:q_proj|k_proj|v_proj|o_proj)"
_MLP = _LM_LAYER + r"\.mlp\.(?:gate_proj|up_proj|down_proj)"
_PROJECTOR = r"model\.multi_modal_projector\.linear"
LORA_TARGETS = {
    "attention": _ATTENTION,
    "attention_mlp": f"(?:{_ATTENTION})|(?:{_MLP})",
    "all_linear": f"(?:{_ATTENTION})|(?:{_MLP})|(?:{_PROJECTOR})",
}
# `modules_to_save` for embeddings that must train (a tokenizer the checkpoint never saw: the tiny
# model): the input embedding and the head, each a trainable copy (untied from then on).
EMBEDDING_MODULES = ["embed_tokens", "lm_head"]


# ---------------------------------------------------------------------------- load


def load(
    model_id_or_path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
):
    """(model, processor) from a hub id or a local folder: native classes, safetensors only."""
    from transformers import PaliGemmaForConditionalGeneration as Model
    from transformers import PaliGemmaProcessor as Processor

    options = {"dtype": dtype, "attn_implementation": attn_implementation, "revision": revision}
    return load_native(Model, Processor, model_id_or_path, **options)


# ---------------------------------------------------------------------------- batches
#
# `input_ids` are `<image>`x N, `<bos>`, prompt, "\n", target, `<eos>`; `token_type_ids` is 1 on
# the target and `<eos>` only (the suffix, causal) and 0 on the prefix (bidirectional) and on
# padding; `labels` are the suffix tokens, aligned with `input_ids` (the loss shifts them).
# Training pads on the right (the Gemma tokenizer's default is left), so every row keeps the
# positions 1..L it has alone (PaliGemma's forward numbers positions without the mask).
# Padding has 0 in token_type_ids and attention_mask, IGNORE_INDEX in labels.


def _encode(processor, prompts, images, *, side: str, suffix=None, tensors: str = "pt"):
    # "<image>" written in the prompt: the processor then adds only <bos> after it and "\n" at
    # the end (without it, it warns and guesses where the image goes). `images`: PIL images, or
    # the pixel values pixels.PixelPath made of them (then a tensor whatever `tensors` says)
    stand_ins, image_kwargs, pixels = processor_images(images)
    out = processor(
        text=[IMAGE_TOKEN + p for p in prompts],
        images=stand_ins,
        suffix=None if suffix is None else list(suffix),
        padding="longest",
        padding_side=side,
        truncation=False,
        return_tensors=tensors,
        **image_kwargs,
    )
    if pixels is not None:
        out["pixel_values"] = pixels
    return out


def encode_prompts(processor, prompts: Sequence[str], images: Sequence[Any]) -> dict[str, torch.Tensor]:
    """The prefix alone, padded on the left so every row's generation starts right after its prompt."""
    enc = _encode(processor, prompts, images, side="left")
    return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}


def encode_batch(
    processor, prompts: Sequence[str], targets: Sequence[str], images: Sequence[Any]
) -> dict[str, torch.Tensor]:
    """Prefix and suffix, padded on the right, with `labels` on the suffix (see above)."""
    # numpy out: the processor builds its own labels with np.array, which warns on torch tensors
    out = _encode(processor, prompts, images, side="right", suffix=targets, tensors="np")
    keys = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
    batch = {k: torch.as_tensor(out[k]) for k in keys}  # numpy memory shared, prepared pixels kept
    batch["input_ids"] = batch["input_ids"].long()
    # labels from token_type_ids (the suffix) and the attention mask, not trusted from the processor
    suffix = (batch["token_type_ids"] == 1) & (batch["attention_mask"] == 1)
    batch["labels"] = batch["input_ids"].masked_fill(~suffix, IGNORE_INDEX)
    return batch


def target_lengths(processor, targets: Sequence[str]) -> list[int]:
    """Label tokens per target: target `<eos>` (the processor appends `<eos>` to every suffix)."""
    tok = getattr(processor, "tokenizer", processor)
    return [len(x) + 1 for x in tok(list(targets), add_special_tokens=False, truncation=False)["input_ids"]]


# ---------------------------------------------------------------------------- tiny model


@dataclass
class Size(TinySize):
    """Tiny PaliGemma 2 dimensions (build_tiny's **size)."""

    vocab_size: int = 1024  # BPE budget incl. Gemma's 5 specials and 256 byte tokens
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32
    intermediate: int = 512
    max_positions: int = 2048
    patch_size: int = 8  # 64 px -> 8 x 8 = 64 image tokens
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 512
    dropout: float = 0.0
    # geometry a pretrained model knows: location tokens start with sinusoidal embeddings of their
    # bin, and SigLIP's patch positions with 2-D sine-cosine ones (see init_geometry)
    geometry_prior: bool = True


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A Gemma-style BPE (spaces as "▁", byte fallback) trained on `texts`, carrying what the real
    tokenizer carries for our formats: `<pad>` `<eos>` `<bos>` `<unk>` `<mask>` (ids 0-4), byte
    tokens, `<loc0000>`..`<loc1023>` and `<seg000>`..`<seg127>` (added, not special: decoding with
    skip_special_tokens keeps them), then `<image>` (special)."""
    from transformers import GemmaTokenizer

    extra = fmt.extra_tokens()
    # the processor ends every prompt with "\n": the tokenizer must know it
    corpus = strip_tokens([*texts, "\n"], extra)
    vocab, merges = train_bpe(
        corpus, vocab_size=vocab_size, specials=SPECIALS + BYTE_TOKENS, byte_level=False
    )
    for t in [*extra, IMAGE_TOKEN]:  # fixed ids after the BPE vocab, in the real tokenizer's order
        vocab[t] = len(vocab)
    tok = GemmaTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tok.add_tokens(extra)
    return tok


def _image_processor(image_size: int, seq_length: int):
    # the PIL backend: the same pixels with or without torchvision, and no fallback warning
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=3,  # bicubic, as the real checkpoints
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=seq_length,
    )


def build_processor(texts: Iterable[str], *, image_size: int = 64, size: Size | None = None):
    from transformers import PaliGemmaProcessor

    size = size or Size()
    if image_size % size.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {size.patch_size}")
    tok = build_tokenizer(texts, size.vocab_size)
    seq = (image_size // size.patch_size) ** 2
    return PaliGemmaProcessor(image_processor=_image_processor(image_size, seq), tokenizer=tok)


def tiny_config(processor, size: Size, image_size: int):
    from transformers import Gemma2Config, PaliGemmaConfig, SiglipVisionConfig

    tok = processor.tokenizer
    vocab = len(tok)
    text = Gemma2Config(
        vocab_size=vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.head_dim,
        query_pre_attn_scalar=size.head_dim,
        max_position_embeddings=size.max_positions,
        attention_dropout=size.dropout,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_intermediate,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        patch_size=size.patch_size,
        image_size=image_size,
        vision_use_head=False,
        attention_dropout=size.dropout,
    )
    return PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        vocab_size=vocab,
        projection_dim=size.hidden,
        hidden_size=size.hidden,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )


def build_tiny(out_dir: Path, texts: Iterable[str], *, image_size: int = 64, seed: int = 0, **size) -> Path:
    """A PaliGemma 2 of `Size(**size)` with random weights and a tokenizer trained on `texts` (the
    records' prompts and targets), saved (safetensors) with its processor so `load(out_dir)` reads it."""
    from transformers import GenerationConfig, PaliGemmaForConditionalGeneration

    dims = Size.from_kwargs(**size)
    processor = build_processor(texts, image_size=image_size, size=dims)
    config = tiny_config(processor, dims, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    if dims.geometry_prior:
        init_geometry(model, processor.tokenizer)
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def init_geometry(model, tokenizer) -> None:
    """Random weights know nothing of space; a pretrained PaliGemma does. Give the tiny model the
    two priors that matter for boxes: smooth location-token embeddings (neighbouring bins alike)
    and 2-D sine-cosine patch positions. SigLIP initialises its learned positions with norm ~1
    while a patch's content embedding has norm ~10, so position is drowned out until trained;
    the sine-cosine table has norm sqrt(hidden / 2), on the content's scale."""
    init_location_embeddings(model, tokenizer.convert_tokens_to_ids(fmt.PALI.tokens()))
    pos = model.model.vision_tower.embeddings.position_embedding.weight
    side = math.isqrt(pos.shape[0])
    with torch.no_grad():
        pos.copy_(sincos_2d(side, pos.shape[1]).to(pos.dtype))


# ---------------------------------------------------------------------------- real architecture, fewer layers

REAL_VOCAB = 257216  # 256000 Gemma + 1024 loc + 128 seg + <image>, padded to a multiple of 64


def real_config_tiny(
    model_id: str = "google/paligemma2-3b-pt-224", *, layers: int | None = 1, vocab_size: int | None = None
):
    """The architecture of google/paligemma2-3b-pt-224 (SigLIP So400m/14 at 224 px, Gemma 2 2B; widths,
    heads and softcaps as its config.json) with `layers` blocks per tower (None: the real 27 and 26),
    for tests with random weights. `vocab_size` overrides the real 257216 (a 257216 x 2304
    embedding is 593M parameters)."""
    from transformers import Gemma2Config, PaliGemmaConfig, SiglipVisionConfig

    name = model_id.lower()
    if not name.startswith("google/paligemma2-3b") or not name.endswith("-224"):
        raise KeyError(
            f"no known PaliGemma architecture for {model_id!r}; known: google/paligemma2-3b-pt-224"
        )
    vocab = vocab_size or REAL_VOCAB
    text = Gemma2Config(
        vocab_size=vocab,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26 if layers is None else layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192,
    )
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27 if layers is None else layers,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        vision_use_head=False,
    )
    return PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=min(257152, vocab - 1),
        vocab_size=vocab,
        projection_dim=2304,
        hidden_size=2304,
    )
