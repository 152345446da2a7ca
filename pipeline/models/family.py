"""The model-family protocol: everything training, evaluation, inference and publishing ask of a
family, so that none of them branches on a family's name. `pipeline.models.florence2` and
`pipeline.models.paligemma` are modules that satisfy it (tests/models/test_family.py checks each
name, and each function's parameters); `pipeline.models.get(name)` returns one.

A batch the family encodes holds tensors padded to the longest row (the collator adds the
per-record `task` and `id` lists): what the model's forward takes, with `labels` holding the
target tokens the loss is taken over and IGNORE_INDEX elsewhere. `target_lengths` counts those
label tokens without building a batch (for dropping over-long targets before batching).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pipeline.formats.loc import LocScheme


@runtime_checkable
class Family(Protocol):
    FAMILY: str  # the recipe's `model.family`, and the checkpoints' `model_type`
    DISPLAY_NAME: str  # for people: "Florence-2", "PaliGemma"
    MODEL_CLASS: str  # the transformers class that loads a checkpoint (for model cards)
    # decoder-only: logits line up with the inputs (the loss shifts labels by one) and generation
    # pads prompts on the left; otherwise an encoder reads the prompt and the decoder the target
    DECODER_ONLY: bool
    IMAGE_TOKEN: str  # the placeholder the processor expands into the image tokens
    LOCATIONS: LocScheme  # how its text spells a box
    LORA_TARGETS: Mapping[str, str]  # preset -> regex of language-model modules (never the vision tower)
    EMBEDDING_MODULES: Sequence[str]  # `modules_to_save` when the embeddings must train (tiny model)

    def load(
        self,
        model_id_or_path: str | Path,
        *,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        revision: str | None = None,
    ) -> tuple[Any, Any]:
        """(model, processor) from a hub id or a local folder: native classes, safetensors only."""
        ...

    def build_tiny(
        self, out_dir: Path, texts: Iterable[str], *, image_size: int = 64, seed: int = 0, **size: Any
    ) -> Path:
        """A tiny model with random weights and a tokenizer trained on `texts`, saved to `out_dir`."""
        ...

    def real_config_tiny(self, model_id: str, *, layers: int | None = 1) -> Any:
        """A released architecture's config at reduced depth (None: the real depth)."""
        ...

    def encode_batch(
        self, processor: Any, prompts: Sequence[str], targets: Sequence[str], images: Sequence[Any]
    ) -> dict[str, torch.Tensor]:
        """Training / teacher-forcing inputs with `labels` (right padding, nothing truncated).
        `images`: RGB PIL images, or the tensor pixels.PixelPath made of them (see processor_images)."""
        ...

    def encode_prompts(
        self, processor: Any, prompts: Sequence[str], images: Sequence[Any]
    ) -> dict[str, torch.Tensor]:
        """Prompt-only inputs for `generate` (padded so every row's generation starts after its
        prompt); `images` as in encode_batch."""
        ...

    def target_lengths(self, processor: Any, targets: Sequence[str]) -> list[int]:
        """How many label tokens each target makes in `encode_batch`."""
        ...
