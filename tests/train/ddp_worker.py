"""Run by `accelerate launch` from test_distributed.py: train, then write this rank's losses and a
checksum of its trainable parameters."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from pipeline.recipe import load_recipe
from pipeline.runtime import make_accelerator
from pipeline.train.loop import train


def main() -> None:
    recipe_path, out, *overrides = sys.argv[1:]
    recipe = load_recipe(recipe_path, overrides)
    accelerator = make_accelerator(recipe, cpu=True, log=False)
    summary = train(recipe, progress=False, accelerator=accelerator)
    model = accelerator._models[-1]
    digest = hashlib.sha256()
    for name, p in sorted(accelerator.unwrap_model(model).named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().cpu().float().numpy().tobytes())
    Path(out, f"rank{accelerator.process_index}.json").write_text(
        json.dumps({"losses": [e["loss"] for e in summary.losses], "params": digest.hexdigest()})
    )


if __name__ == "__main__":
    main()
