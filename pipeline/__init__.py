"""uvft: multitask LoRA fine-tuning of unified vision-language models (Florence-2, PaliGemma)."""

__version__ = "0.1.0"
