"""The loop on CUDA (deselected unless `-m gpu`; `make bench-gpu` runs them): bf16 autocast, fused
AdamW, uint8 pixels finished on the card, and train.compile through Triton. A short run lowers the
held-out loss, and a compiled run trains as the eager one does to bf16 rounding."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from loop_runs import losses, recipe_for

from pipeline.train import loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# bf16 keeps 8 bits of mantissa: the compiled and eager steps round differently
BF16_TOLERANCE = 5e-2


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_a_short_run_on_cuda_lowers_the_held_out_loss(shapes_root, cache, tmp_path):
    summary = loop.train(recipe_for(shapes_root, cache, tmp_path / "run", "train.steps=40"), progress=False)
    assert all(math.isfinite(x) for x in losses(summary))
    assert summary.val[-1]["all"] < summary.val[0]["all"]
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_a_compiled_run_on_cuda_trains_as_the_eager_run_does(shapes_root, cache, tmp_path):
    eager = loop.train(recipe_for(shapes_root, cache, tmp_path / "eager"), progress=False)
    compiled = loop.train(
        recipe_for(shapes_root, cache, tmp_path / "compiled", "train.compile=true"), progress=False
    )
    a, b = losses(eager), losses(compiled)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < BF16_TOLERANCE, (a, b)
