"""Florence-2 (transformers' native `Florence2ForConditionalGeneration`): load a checkpoint, build a
tiny one from a config, and the LoRA target presets.

Florence-2 is a DaViT image encoder, a projector, and a BART encoder-decoder. The encoder reads
`<image>`x N, `<s>`, the prompt, `</s>` (the processor swaps a task token such as `<CAPTION>` for
its sentence, "What does the image describe?"); the decoder starts from `</s>` and writes
`<s>` target `</s>`.

Checkpoints. The `microsoft/Florence-2-*` repositories hold remote code and pickled weights;
their native, safetensors conversions live under `florence-community/` (same weights, plus the
`<image>` token, vocab padded to 51328). `load` maps the former to the latter and says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ModelError
from pipeline.formats import florence2 as fmt
from pipeline.models.common import (
    IMAGE_TOKEN,
    TinySize,
    init_location_embeddings,
    load_native,
    strip_tokens,
    train_bpe,
)
from pipeline.models.loss import IGNORE_INDEX
from pipeline.models.pixels import processor_images

logger = logging.getLogger(__name__)

FAMILY = "florence2"
DISPLAY_NAME = "Florence-2"
MODEL_CLASS = "Florence2ForConditionalGeneration"
DECODER_ONLY = False  # encoder-decoder: the encoder reads the prompt, the decoder's labels are the target
LOCATIONS = fmt.LOCATIONS

NATIVE_IDS = {
    f"microsoft/Florence-2-{v}": f"florence-community/Florence-2-{v}"
    for v in ("base", "large", "base-ft", "large-ft")
}

# Module paths (see `Florence2ForConditionalGeneration.named_modules()`): the BART language model
# is `model.language_model` (encoder + decoder), the DaViT is `model.vision_tower`, the projector
# `model.multi_modal_projector`. Every regex anchors on the language model's path, because the
# vision tower has its own `fc1`/`fc2`/`qkv`/`proj` linears.
_LM_LAYER = r"model\.language_model\.(?:encoder|decoder)\.layers\.\d+"
_ATTENTION = _LM_LAYER + r"\.(?:self_attn|encoder_attn)\.(?:q_proj|k_proj|v_proj|out_proj)"
_MLP = _LM_LAYER + r"\.(?:fc1|fc2)"
_PROJECTOR = r"model\.multi_modal_projector\.image_projection"
LORA_TARGETS = {
    "attention": _ATTENTION,
    "attention_mlp": f"(?:{_ATTENTION})|(?:{_MLP})",
    "all_linear": f"(?:{_ATTENTION})|(?:{_MLP})|(?:{_PROJECTOR})",
}
# `modules_to_save` for embeddings that must train (a tokenizer the checkpoint never saw: the tiny
# model). peft matches these by name suffix and gives each its own trainable copy, untied: the
# encoder reads `shared` (Florence2Model embeds the prompt with it), the decoder its own
# `embed_tokens`, the head `lm_head`; all three must be listed or the decoder's stays frozen.
# (peft's ensure_weight_tying does not handle BART's three tied modules: it breaks the forward.)
EMBEDDING_MODULES = ["language_model.shared", "decoder.embed_tokens", "lm_head"]

# The processor's parsing rules (as in the converted checkpoints); post_process_generation refuses
# a task whose kind is missing here.
POST_PROCESSOR_CONFIG = {
    "ocr": {  # transformers' name of a parsing rule, not uvft's task
        "pattern": r"(.+?)" + r"<loc_(\d+)>" * 8,
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": []},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------- load


def native_id(model_id_or_path: str | Path, revision: str | None = None) -> str | Path:
    """The native transformers checkpoint for a hub id (microsoft/Florence-2-* -> florence-community)."""
    if isinstance(model_id_or_path, str) and model_id_or_path in NATIVE_IDS:
        native = NATIVE_IDS[model_id_or_path]
        if revision is not None:
            raise ValueError(
                f"{model_id_or_path} holds remote code, so uvft loads {native} instead, where revision "
                f"{revision!r} means nothing: name {native} and one of its revisions"
            )
        logger.warning("%s holds remote code; loading its native conversion %s", model_id_or_path, native)
        return native
    return model_id_or_path


def load(
    model_id_or_path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
):
    """(model, processor) from a hub id or a local folder: native classes, safetensors only."""
    from transformers import Florence2ForConditionalGeneration as Model
    from transformers import Florence2Processor as Processor

    native = native_id(model_id_or_path, revision)
    options = {"dtype": dtype, "attn_implementation": attn_implementation, "revision": revision}
    model, processor = load_native(Model, Processor, native, **options)
    text, tok = model.config.text_config, processor.tokenizer
    if (text.decoder_start_token_id, text.pad_token_id) != (tok.eos_token_id, tok.pad_token_id):
        raise ModelError(
            f"{model_id_or_path}: the decoder starts from token {text.decoder_start_token_id} and pads "
            f"with {text.pad_token_id}, but its tokenizer's </s> is {tok.eos_token_id} and <pad> "
            f"{tok.pad_token_id}: uvft builds the decoder's inputs from the tokenizer, as every "
            "Florence-2 checkpoint has them"
        )
    return model, processor


# ---------------------------------------------------------------------------- batches
#
# The encoder reads `<image>`x N, `<s>`, the prompt (task tokens expanded to sentences), `</s>`;
# `labels` is the target as the decoder writes it, `<s>` target `</s>`, IGNORE_INDEX on padding.
# `decoder_input_ids` are `labels` shifted right behind `decoder_start_token_id` (`</s>`), padding
# as `<pad>` (what the model builds from `labels` when it is given them, which the loss does not
# do: see models/loss.py), so the decoder reads `</s> <s> target` and predicts `<s> target </s>`,
# as the checkpoints were trained and as generation runs (start `</s>`, `<s>` forced first).


def encode_prompts(processor, prompts: Sequence[str], images: Sequence[Any]) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask`, `pixel_values` of the encoder, padded on the right. `images`:
    PIL images, or the pixel values pixels.PixelPath made of them."""
    stand_ins, image_kwargs, pixels = processor_images(images)
    enc = processor(
        text=list(prompts),
        images=stand_ins,
        padding="longest",
        padding_side="right",
        truncation=False,
        return_tensors="pt",
        **image_kwargs,
    )
    if pixels is not None:
        enc["pixel_values"] = pixels
    return {k: enc[k] for k in ("input_ids", "attention_mask", "pixel_values")}


def encode_batch(
    processor, prompts: Sequence[str], targets: Sequence[str], images: Sequence[Any]
) -> dict[str, torch.Tensor]:
    """The encoder's inputs and the decoder's `labels` (see above)."""
    dec = processor.tokenizer(
        list(targets), padding="longest", padding_side="right", truncation=False, return_tensors="pt"
    )
    labels = dec["input_ids"].masked_fill(dec["attention_mask"] == 0, IGNORE_INDEX)
    tok = processor.tokenizer
    decoder_input_ids = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=tok.eos_token_id)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == IGNORE_INDEX, tok.pad_token_id)
    return {
        **encode_prompts(processor, prompts, images),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


def target_lengths(processor, targets: Sequence[str]) -> list[int]:
    """Label tokens per target: `<s>` target `</s>`."""
    tok = getattr(processor, "tokenizer", processor)
    return [len(x) for x in tok(list(targets), add_special_tokens=True, truncation=False)["input_ids"]]


# ---------------------------------------------------------------------------- tiny model


@dataclass
class Size(TinySize):
    """Tiny Florence-2 dimensions (build_tiny's **size)."""

    vocab_size: int = 1024  # BPE budget (the location, task and image tokens come on top)
    d_model: int = 128
    layers: int = 2  # encoder layers, and as many decoder layers
    heads: int = 4
    ffn: int = 512
    max_positions: int = 1024
    vision_dims: tuple[int, ...] = (64, 128)  # DaViT stages (the real ones have four)
    vision_depths: tuple[int, ...] = (1, 1)
    vision_heads: tuple[int, ...] = (2, 4)
    window_size: int = 4
    # geometry a pretrained model knows: location tokens start with sinusoidal embeddings of their
    # bin, and the projector's 2-D position table (row and column) with sine-cosine ones on the
    # image features' scale (see init_geometry)
    geometry_prior: bool = True
    # the position table's waves times this: at 1.0 they are as loud as DaViT's output at the
    # start, and a shape's colour is a small part of an image token (see init_geometry)
    image_position_scale: float = 1.0
    # BART's learned 1-D positions (encoder and decoder) start as sine-cosine waves on the token
    # embeddings' scale, as a pretrained model's are smooth: copying from the prompt (a phrase, a
    # region's four location tokens) and telling x from y in a polygon need to know where one is
    text_position_prior: bool = False
    dropout: float = 0.0  # the real checkpoints use 0.1; 0 keeps tiny-model tests deterministic


# DaViT stage embeddings of the real checkpoints: the tiny model takes the first len(vision_dims)
_PATCH = (7, 3, 3, 3)
_STRIDE = (4, 2, 2, 2)
_PADDING = (3, 1, 1, 1)
_PRENORM = (False, True, True, True)
_POSITIONS_2D = 50  # Florence2VisionConfig.max_position_embeddings, as the real checkpoints


def grid_side(image_size: int, stages: int) -> int:
    """Side of the last DaViT stage's feature grid for a square image."""
    side = image_size
    for k in range(stages):
        side = math.floor((side + 2 * _PADDING[k] - _PATCH[k]) / _STRIDE[k]) + 1
    return side


def image_seq_length(image_size: int, stages: int) -> int:
    """Image tokens the projector emits: the last stage's grid plus one pooled token."""
    return grid_side(image_size, stages) ** 2 + 1


def _vision_config(size: Size, projection_dim: int):
    from transformers import Florence2VisionConfig

    n = len(size.vision_dims)
    if not (len(size.vision_depths) == len(size.vision_heads) == n) or not 1 <= n <= 4:
        raise ValueError("vision_dims, vision_depths and vision_heads need the same length, 1 to 4 stages")
    return Florence2VisionConfig(
        depths=list(size.vision_depths),
        patch_size=list(_PATCH[:n]),
        patch_stride=list(_STRIDE[:n]),
        patch_padding=list(_PADDING[:n]),
        patch_prenorm=list(_PRENORM[:n]),
        embed_dim=list(size.vision_dims),
        num_heads=list(size.vision_heads),
        num_groups=list(size.vision_heads),
        window_size=size.window_size,
        drop_path_rate=0.0,
        projection_dim=projection_dim,
    )


def _task_sentences() -> list[str]:
    """The sentences Florence2Processor substitutes for task tokens (read off a processor)."""
    from transformers import BartTokenizer, Florence2Processor

    placeholder = Florence2Processor(
        image_processor=_image_processor(64, 1),
        tokenizer=BartTokenizer(extra_special_tokens={"image_token": IMAGE_TOKEN}),
        post_processor_config=POST_PROCESSOR_CONFIG,
    )
    with_input = [s.replace("{input}", "").strip() for s in placeholder.task_prompts_with_input.values()]
    return [*placeholder.task_prompts_without_inputs.values(), *with_input]


def _image_processor(image_size: int, seq_length: int):
    # the PIL backend: the same pixels with or without torchvision, and no fallback warning
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
        resample=3,  # bicubic, as the real checkpoints
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        image_seq_length=seq_length,
    )


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A BART-style byte-level BPE trained on `texts` and Florence's task sentences, carrying what the
    real tokenizer carries for our formats: `<s>` `<pad>` `</s>` `<unk>` (ids 0-3) ... `<mask>`, the
    location tokens `<loc_0>`..`<loc_999>` and task tokens as special tokens, and `<image>`."""
    from transformers import BartTokenizer

    extra = fmt.extra_tokens()
    corpus = strip_tokens([*texts, *_task_sentences()], extra)
    vocab, merges = train_bpe(
        corpus, vocab_size=vocab_size, specials=["<s>", "<pad>", "</s>", "<unk>"], byte_level=True
    )
    vocab["<mask>"] = len(vocab)
    tok = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tok.add_tokens(extra, special_tokens=True)
    return tok


def build_processor(texts: Iterable[str], *, image_size: int = 64, size: Size | None = None):
    from transformers import Florence2Processor

    size = size or Size()
    side, limit = grid_side(image_size, len(size.vision_dims)), _POSITIONS_2D
    if side > limit:  # the projector's learned 2D position table has `limit` rows and columns
        raise ValueError(
            f"image_size {image_size} gives a {side} x {side} grid after {len(size.vision_dims)} DaViT "
            f"stages, over the {limit} x {limit} position table: use more stages or smaller images"
        )
    tok = build_tokenizer(texts, size.vocab_size)
    return Florence2Processor(
        image_processor=_image_processor(image_size, image_seq_length(image_size, len(size.vision_dims))),
        tokenizer=tok,
        post_processor_config=POST_PROCESSOR_CONFIG,
    )


def tiny_config(processor, size: Size):
    from transformers import BartConfig, Florence2Config

    tok = processor.tokenizer
    text = BartConfig(
        vocab_size=len(tok),
        d_model=size.d_model,
        encoder_layers=size.layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=size.ffn,
        decoder_ffn_dim=size.ffn,
        max_position_embeddings=size.max_positions,
        dropout=size.dropout,
        attention_dropout=size.dropout,
        activation_dropout=size.dropout,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    return Florence2Config(
        text_config=text,
        vision_config=_vision_config(size, size.d_model),
        image_token_id=tok.image_token_id,
    )


def build_tiny(out_dir: Path, texts: Iterable[str], *, image_size: int = 64, seed: int = 0, **size) -> Path:
    """A Florence-2 of `Size(**size)` with random weights and a tokenizer trained on `texts` (the
    records' prompts and targets), saved (safetensors) with its processor so `load(out_dir)` reads it."""
    from transformers import Florence2ForConditionalGeneration, GenerationConfig

    dims = Size.from_kwargs(**size)
    processor = build_processor(texts, image_size=image_size, size=dims)
    config = tiny_config(processor, dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config)
    if dims.geometry_prior:
        init_geometry(model, processor.tokenizer, position_scale=dims.image_position_scale)
    if dims.text_position_prior:
        init_text_positions(model)
    tok = processor.tokenizer
    # as the real checkpoints: start from </s>, force <s> first and </s> at the length limit
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=tok.bos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def init_geometry(model, tokenizer, *, position_scale: float = 1.0) -> None:
    """Random weights know nothing of space; a pretrained Florence-2 does. Give the tiny model the
    two priors that matter for boxes and regions: smooth location-token embeddings (neighbouring
    bins alike) and sine-cosine rows and columns in the projector's 2-D position table.

    The table is the only place Florence-2 says where an image token is: DaViT has no position
    embedding, and BART's learned 1-D positions are added before a LayerNorm at std 0.02. Its
    random rows (std 0.02, mean |x| 0.016) are added to DaViT's output (mean |x| 0.4 at init, 1.5
    after 400 base steps), so position is drowned out and stays so (bench/florence_pixels.py);
    unit sine-cosine waves are on the features' scale, as PaliGemma's patch positions are.

    position_scale multiplies the waves. Each image token is LayerNorm(projection(DaViT + table)),
    so what the table adds, the content loses: at 1.0 the base stage learns place first and colour
    late (the decoder names blue and purple alike, and red, green and yellow); at 0.4, 155 of 200
    captions name the right colour after the all-tasks recipe's first base part, against 79 of 200
    (mAP@0.5 0.838 against 0.949 at that point; README, "On the unified-task demos")."""
    init_location_embeddings(model, tokenizer.convert_tokens_to_ids(fmt.FLORENCE.tokens()))
    table = model.model.multi_modal_projector.image_position_embed
    with torch.no_grad():
        for emb in (table.row_embeddings, table.column_embeddings):
            emb.weight.copy_((position_scale * sincos_1d(*emb.weight.shape)).to(emb.weight.dtype))


def init_text_positions(model) -> None:
    """BART's learned position tables (encoder, decoder) as sine-cosine waves of the position, each
    row rescaled to the mean norm of the random rows it replaces (so no scale changes). Random rows
    (std 0.02) are as loud as the token embeddings, but say nothing of which positions neighbour
    which: a tiny model copying a phrase or a region from the prompt, or counting x and y in a
    polygon, must first learn that order from its data. Rows 0-1 are BART's offset (unused)."""
    lm = model.model.language_model
    for table in (lm.encoder.embed_positions, lm.decoder.embed_positions):
        offset = getattr(table, "offset", 2)
        weight = table.weight
        with torch.no_grad():
            waves = sincos_1d(weight.shape[0] - offset, weight.shape[1])
            waves *= float(weight.norm(dim=1).mean()) / float(waves.norm(dim=1).mean())
            weight[offset:] = waves.to(weight.dtype)


def sincos_1d(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim) fixed sine-cosine embeddings of 0..positions-1, sines then cosines, with
    frequencies 1/10000^(k/(dim/2)): one axis of common.sincos_2d's table (row or column)."""
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


# ---------------------------------------------------------------------------- real architecture, fewer layers


# vision embed dims, vision heads (= groups), projection, text d_model, text heads, text ffn, text layers
_REAL = {
    "base": ((128, 256, 512, 1024), (4, 8, 16, 32), 768, 768, 12, 3072, 6),
    "large": ((256, 512, 1024, 2048), (8, 16, 32, 64), 1024, 1024, 16, 4096, 12),
}
_REAL_VISION_DEPTHS = (1, 1, 9, 1)


def real_config_tiny(model_id: str = "microsoft/Florence-2-base", *, layers: int | None = 1):
    """The architecture of a released Florence-2 (widths, heads, vocab as its config.json) with
    `layers` blocks per DaViT stage and per BART stack, for tests with random weights; None keeps
    the real depths (DaViT 1-1-9-1, BART 6+6 for base, 12+12 for large)."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    name = NATIVE_IDS.get(model_id, model_id).lower()
    variant = name.rsplit("/", 1)[-1].removeprefix("florence-2-").removesuffix("-ft")
    if variant not in _REAL:
        raise KeyError(f"no known Florence-2 architecture for {model_id!r}; known: {', '.join(NATIVE_IDS)}")
    dims, heads, proj, d_model, text_heads, ffn, text_layers = _REAL[variant]
    depths = list(_REAL_VISION_DEPTHS) if layers is None else [layers] * 4
    text_layers = text_layers if layers is None else layers
    vision = Florence2VisionConfig(
        depths=depths,
        embed_dim=list(dims),
        num_heads=list(heads),
        num_groups=list(heads),
        window_size=12,
        projection_dim=proj,
    )
    text = BartConfig(
        vocab_size=51328,  # 50265 BART + 1024 Florence tokens (<loc_*>, <od>, ...) + <image>, padded to 64
        d_model=d_model,
        encoder_layers=text_layers,
        decoder_layers=text_layers,
        encoder_attention_heads=text_heads,
        decoder_attention_heads=text_heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=1024,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        scale_embedding=False,
    )
    return Florence2Config(text_config=text, vision_config=vision, image_token_id=51289)
