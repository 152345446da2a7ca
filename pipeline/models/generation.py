"""The generation config pinned with every run, shared by training (saved with the weights),
evaluation and inference."""

from __future__ import annotations

import torch


def generation_config(model: torch.nn.Module, *, max_new_tokens: int):
    """The pinned generation config saved with a run: greedy, KV cache on, and
    no_repeat_ngram_size=0 (Florence-2 ships 3, which corrupts repeated <loc> structures)."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(model.config)
    gen = GenerationConfig.from_dict(base.to_dict())
    gen.update(
        num_beams=1, do_sample=False, no_repeat_ngram_size=0, use_cache=True, max_new_tokens=max_new_tokens
    )
    return gen
