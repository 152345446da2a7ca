"""Model families: one module per family (florence2, paligemma), looked up by name with `get`.

Each family module has the same surface:

- `load(model_id_or_path, *, dtype=None, attn_implementation=None, revision=None) -> (model, processor)`
- `build_tiny(out_dir, texts, *, image_size=64, seed=0, **size) -> out_dir` (then `load(out_dir)`)
- `lora_config(preset, r, alpha, dropout, modules_to_save) -> peft.LoraConfig`, with the presets'
  regexes in `LORA_TARGETS` ("attention", "attention_mlp", "all_linear"; never the vision tower)
- `EMBEDDING_MODULES`: what `modules_to_save` needs when the embeddings must train (tiny model)
- `real_config_tiny(model_id, *, layers=1) -> config`: a released architecture at reduced depth

Shared helpers: `count_parameters`, `freeze_vision` (pipeline.models.common).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.models.common import PRESETS, count_parameters, freeze_vision
from pipeline.registry import Registry

MODELS: Registry[ModuleType] = Registry("model family")
_MODULES = {"florence2": "pipeline.models.florence2", "paligemma": "pipeline.models.paligemma"}

__all__ = ["MODELS", "PRESETS", "count_parameters", "freeze_vision", "get", "names"]


def get(family: str) -> ModuleType:
    """The models module of a family (imported on first use: transformers is heavy)."""
    if family not in _MODULES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(names())}")
    if family not in MODELS:
        MODELS.register(family)(importlib.import_module(_MODULES[family]))
    return MODELS.get(family)


def names() -> list[str]:
    return sorted(_MODULES)
