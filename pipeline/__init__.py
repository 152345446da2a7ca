"""uvft: multitask LoRA fine-tuning of unified vision-language models (Florence-2, PaliGemma).

`from pipeline import load_model` loads a run, a merged export or a hub id for prediction
(pipeline.inference); the import is lazy, so `import pipeline` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from pipeline.inference import load_model

        return load_model
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
