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


def test_deepspeed_zero3_trains_and_consolidates_the_adapter(shapes_root, cache, tmp_path):
    """recipes/accelerate/deepspeed_zero3.yaml on one GPU: the run trains, and the adapter written
    at its end is DeepSpeed's gathered 16-bit weights in peft's folder (each tensor the shape of a
    plain run's, lora_B moved from its zeros), not the main process's empty ZeRO-3 partitions."""
    import importlib.util
    import os
    import subprocess
    import sys

    from loop_runs import ROOT
    from safetensors.torch import load_file

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs deepspeed (pip install deepspeed)")
    plain = tmp_path / "plain"
    loop.train(recipe_for(shapes_root, cache, plain), progress=False)
    out = tmp_path / "zero3"
    args = _overrides(shapes_root, cache, out)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "recipes/accelerate/deepspeed_zero3.yaml"), "--num_processes", "1",
        "-m", "pipeline.cli", "finetune", str(ROOT / "recipes/demo.yaml"), *args, "eval.every=0",
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    mine, theirs = (
        load_file(out / "adapter_model.safetensors"),
        load_file(plain / "adapter_model.safetensors"),
    )
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert all(mine[k].abs().sum() > 0 for k in mine if "lora_B" in k)


def _overrides(shapes_root: Path, cache: Path, out: Path) -> list[str]:
    """recipe_for's overrides, for a launched run."""
    recipe = recipe_for(shapes_root, cache, out)
    t = recipe.train
    return [
        f"data.root={shapes_root}",
        f"data.cache_dir={cache}",
        "data.demo=null",
        f"output_dir={out}",
        "model.tiny.base_steps=0",
        f"train.steps={t.steps}",
        f"train.batch_size={t.batch_size}",
        "train.num_workers=0",
        "train.trackers=[]",
        f"train.save_every={t.save_every}",
        "train.val_batches=1",
        "adapter.dropout=0.0",
    ]
