"""Is a shape's colour in the image tokens at the shape, in a scene of several? A linear probe
(bench/florence_pixels.py's) reads each shape's colour and class off the tokens under its box at
three places of a run's Florence-2 stand-in: DaViT's last stage, the projector's output (position
table, projection, LayerNorm) and the BART encoder's output. Not a benchmark of speed: a profile of
what a trained model carries, to tell "the image lost it" from "the decoder does not use it".

The scenes are the shapes set's referring scenes, each shape with its box and its Visual Genome
phrase ("red circle on the left": colour and class are its first two words); fitted on training
scenes, scored on the validation ones (chance: 1 / 5 for each).

    python bench/region_probe.py runs/demo_all_tasks
    python bench/region_probe.py .cache/uvft/base/florence2-<key>/model   # a base stage

Measured on recipes/demo_all_tasks.yaml (README, "On the unified-task demos").
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from common import report
from florence_pixels import linear_probe, run_hooked

from pipeline import loader
from pipeline.demo.draw import COLORS, SHAPES


def scene_regions(root: Path, split: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` scenes of a split: image path and each shape's box, colour and class."""
    folder = root / "regions" / split
    images = {i["image_id"]: i for i in json.loads((folder / "image_data.json").read_text())}
    scenes = []
    for entry in json.loads((folder / "region_descriptions.json").read_text())[:limit]:
        info = images[entry["id"]]
        shapes = []
        for r in entry["regions"]:
            colour, kind = r["phrase"].split()[:2]
            box = (r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"])
            shapes.append({"box": box, "colour": colour, "kind": kind})
        image = root / "images" / f"refer_{split}" / Path(info["url"]).name
        scenes.append({"image": str(image), "size": (info["width"], info["height"]), "shapes": shapes})
    return scenes


def cells_under(box: tuple[float, ...], size: tuple[int, int], side: int) -> list[int]:
    """Grid cells (row-major, `side` x `side`) that the box covers."""
    (w, h), (x1, y1, x2, y2) = size, box
    cols = range(int(x1 * side / w), min(side - 1, math.ceil(x2 * side / w) - 1) + 1)
    rows = range(int(y1 * side / h), min(side - 1, math.ceil(y2 * side / h) - 1) + 1)
    return [r * side + c for r in rows for c in cols]


@torch.no_grad()
def region_features(model, processor, scenes: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """One vector per shape at each place: the mean over the grid cells under its box."""
    inner = model.model
    modules = {"davit": inner.vision_tower, "projector": inner.multi_modal_projector}
    rows: dict[str, list[torch.Tensor]] = {"DaViT output": [], "projector output": [], "encoder output": []}
    for start in range(0, len(scenes), 32):
        chunk = scenes[start : start + 32]
        records = [
            {"id": str(i), "image": s["image"], "prompt": "<OD>", "target": "", "task": "detection"}
            for i, s in enumerate(chunk)
        ]
        out, res, batch = run_hooked(model, processor, records, modules)
        davit = out["davit"] if torch.is_tensor(out["davit"]) else out["davit"][0]  # B, C, H, W
        side = davit.shape[-1]
        davit = davit.float().flatten(2).transpose(1, 2)  # B, cells, C
        projector = out["projector"].float()[:, 1:]  # the pooled token first, then the grid
        image = batch["input_ids"][0] == model.config.image_token_id
        encoder = res.encoder_last_hidden_state[:, image].float()[:, 1:]
        for j, scene in enumerate(chunk):
            for shape in scene["shapes"]:
                cells = cells_under(shape["box"], scene["size"], side)
                rows["DaViT output"].append(davit[j, cells].mean(0))
                rows["projector output"].append(projector[j, cells].mean(0))
                rows["encoder output"].append(encoder[j, cells].mean(0))
    return {k: torch.stack(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a run folder (its adapter) or a model folder")
    parser.add_argument("--data", type=Path, default=Path("data/shapes_all"))
    parser.add_argument("--scenes", type=int, default=2400, help="training scenes the probe is fitted on")
    args = parser.parse_args()
    loaded = loader.load(args.model, family="florence2", device="cpu")
    model = loaded.model.get_base_model() if loaded.kind == "adapter" else loaded.model  # adapter active
    train = scene_regions(args.data, "train", args.scenes)
    val = scene_regions(args.data, "val", args.scenes)
    f_train = region_features(model, loaded.processor, train)
    f_val = region_features(model, loaded.processor, val)
    assert next(iter(f_train.values())).shape[0] == sum(len(s["shapes"]) for s in train)
    found = {}
    for name, vocab in (("colour", list(COLORS)), ("class", list(SHAPES))):
        key = "colour" if name == "colour" else "kind"
        y_train = torch.tensor([vocab.index(s[key]) for sc in train for s in sc["shapes"]])
        y_val = torch.tensor([vocab.index(s[key]) for sc in val for s in sc["shapes"]])
        found[name] = {k: linear_probe(f_train[k], y_train, f_val[k], y_val) for k in f_train}
    rows = [[place, f"{found['colour'][place]:.3f}", f"{found['class'][place]:.3f}"] for place in f_train]
    n_val = sum(len(s["shapes"]) for s in val)
    print(f"{args.model}: {sum(len(s['shapes']) for s in train)} training shapes, {n_val} validation shapes")
    report(
        "region_probe",
        ["image tokens under the shape's box", "colour (linear probe)", "class (linear probe)"],
        rows,
        f"colour at the encoder output {found['colour']['encoder output']:.3f}, class "
        f"{found['class']['encoder output']:.3f} (chance 0.2)",
        model=str(args.model),
        scenes={"train": len(train), "val": len(val)},
    )


if __name__ == "__main__":
    main()
