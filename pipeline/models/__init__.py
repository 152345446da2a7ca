"""Model families: one module per family (florence2, paligemma), looked up by name with `get`.

Each family module satisfies the `Family` protocol (pipeline.models.family): loading, the tiny
build, LoRA presets, decoder-only or not, the image token, the location scheme, and the encoding
of training batches and of prompt-only generation inputs. The family table is
pipeline.families. Shared helpers (parameter counts, freezing, LoRA configs from a family's
presets) live in pipeline.models.common.
"""

from __future__ import annotations

import functools
import importlib

from pipeline.families import FAMILIES, FAMILY_MODULES
from pipeline.models.common import PRESETS, count_parameters, freeze_vision, lora_config
from pipeline.models.family import Family

__all__ = ["PRESETS", "Family", "count_parameters", "freeze_vision", "get", "lora_config", "names"]


@functools.cache  # the collator asks for every batch
def get(family: str) -> Family:
    """The models module of a family (imported on first use: transformers is heavy)."""
    module = importlib.import_module(FAMILY_MODULES.get(family).models)
    if not isinstance(module, Family):  # a name missing (the test checks the signatures too)
        raise TypeError(f"{module.__name__} does not satisfy the Family protocol")
    return module


def names() -> list[str]:
    return list(FAMILIES)
