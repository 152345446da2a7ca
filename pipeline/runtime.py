"""Where and in what precision a command runs: the Accelerator and the weights' dtype, shared by
training and evaluation."""

from __future__ import annotations

import torch

from pipeline.recipe import Recipe


def make_accelerator(recipe: Recipe, *, cpu: bool = False, log: bool = True):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cfg = recipe.train
    cuda = torch.cuda.is_available() and not cpu
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    trackers = list(cfg.trackers) if log else []
    return Accelerator(
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=cpu or not torch.cuda.is_available(),
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(recipe.run_dir), logging_dir=str(recipe.run_dir / "logs")
        ),
    )


def model_dtype(recipe: Recipe) -> torch.dtype | None:
    if recipe.model.dtype == "auto":
        # weights stay fp32 on CPU; on CUDA the mixed-precision autocast does the bf16 work
        return None
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        recipe.model.dtype
    ]
