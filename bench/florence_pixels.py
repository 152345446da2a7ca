"""Does the tiny Florence-2 see the image? Per-image spread of the image signal through each stage
(DaViT stage embeddings and blocks, the projector's position table, projection and LayerNorm, the
BART encoder's embedding LayerNorm and its output), and where the base stage's gradient goes
(vision tower, projector, language model).

Spread: the mean absolute difference between two images' activations at the same position,
averaged over image pairs, against the activations' mean absolute value (its scale); `rel` is
their ratio. A stage that writes nearly the same output for every image has rel near 0.

    python bench/florence_pixels.py                      # fresh tiny models, with and without the prior
    python bench/florence_pixels.py --model .cache/uvft/base/florence2-<key>/model   # a base stage

Measured on the demo recipe (2 cores, seed 0). Fresh, old init: DaViT's last stage rel 0.39 at
mean |x| 0.40, the learned position table mean |x| 0.016 (4% of it), after projection + LayerNorm
rel 0.21, encoder output rel 0.21 at the image tokens and 0.006 at the prompt's. Gradient norm of
one batch: vision tower 0.096, projector 0.155, BART encoder 0.027, decoder 1.95, embeddings 3.08
(the decoder learns a language model first). After 400 steps of a short loop outside this
script with the base stage's settings (lr 3e-4, 8 captions + 8 boxes a batch; pass --model for a
real base stage): DaViT's output grew to mean |x| 1.48 while the table stayed at 0.017 (1%), and
the spread shrank through the path: DaViT rel 0.18, LayerNorm 0.12, encoder 0.077 (image tokens)
and 0.013 (prompt). With the sine-cosine table (mean |x| 0.55): DaViT 0.22, LayerNorm 0.13,
encoder 0.12 and 0.041, 3 distinct greedy captions over 30 images against 2.

Colour: a red square turning blue (green) in place changes DaViT's output by 0.21 (0.23) of its
scale in the fresh model and by 0.06 (0.04) after the demo recipe's base stage with the position
prior (`--model .cache/uvft/base/florence2-<key>/model`), while moving it 24 px changes it by 0.42
and then 0.60; after the projector, colour 0.08 (0.08) -> 0.035 (0.025), place 0.16 -> 0.40. This
is no measure of whether colour can be read: after a 5,000-step base stage colour moves DaViT's
output as little (0.05), yet the fine-tuned model names colours (CIDEr-D 5.58, where 2,800 steps
give 2.39 and answer most colour questions "purple"): the stand-in learns colour later than place.

The linear colour probe says where: a multinomial logistic regression reads the shape's colour
(5 classes, chance 0.2; 600 training images, 200 validation) off the image features. Fresh model
(with the prior): DaViT 0.965, projector 0.955, encoder image tokens 0.955 (mean) / 1.000 (max);
after the 2,800-step base stage 0.875, 0.830, 0.800 / 0.610; after 5,000 steps 0.900, 0.830,
0.900 / 0.930. The image path keeps colour throughout; what is slow is the decoder learning to name
it: 94 of 200 validation captions name the right colour after 2,800 steps, 199 after 5,000.

Images: the first --images validation images of the recipe's caption records (model.family=florence2);
the fresh models are built from the recipe's texts, as the pipeline builds them.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import report

from pipeline import models
from pipeline.data.collate import Collator
from pipeline.demo.draw import COLORS

ROOT = Path(__file__).resolve().parent.parent
F2 = models.get("florence2")


def demo_records(
    recipe_path: Path, overrides: list[str], n: int, probe: int = 0
) -> tuple[list[dict], list[dict], list[str], tuple[list[dict], list[dict]]]:
    """(caption records of n different validation images, 16 training records: 8 captions of
    different images and 8 detections, every prompt and target, and for the colour probe the
    caption records of `probe` different training images and of up to `probe` // 3 validation
    ones) from the recipe's records."""
    from pipeline.data.build import build
    from pipeline.recipe import load_recipe

    recipe = load_recipe(recipe_path, ["model.family=florence2", *overrides])
    records = build(recipe, progress=False).load()
    val_all, train_all = records[recipe.train.val_split], records[recipe.data.train_split]

    def pick(ds, task: str, k: int) -> list[dict]:
        out, seen = [], set()
        for i in range(len(ds)):
            r = ds[i]
            if r["task"] == task and r["image"] not in seen:
                seen.add(r["image"])
                out.append(r)
            if len(out) == k:
                break
        return out

    texts = [t for ds in (train_all, val_all) for t in (*ds["prompt"], *ds["target"])]
    probe_sets = (
        (pick(train_all, "caption", probe), pick(val_all, "caption", probe // 3)) if probe else ([], [])
    )
    train = pick(train_all, "caption", 8) + pick(train_all, "detection", 8)
    return pick(val_all, "caption", n), train, texts, probe_sets


def spread(x: torch.Tensor) -> tuple[float, float]:
    """(mean |x_i - x_j| over image pairs i < j, mean |x|) of a batch (images first)."""
    x = x.detach().float().flatten(1)
    n = x.shape[0]
    diffs = [(x[i] - x[j]).abs().mean() for i in range(n) for j in range(i + 1, n)]
    return float(torch.stack(diffs).mean()), float(x.abs().mean())


@torch.no_grad()
def run_hooked(
    model, processor, records: list[dict[str, Any]], modules: dict[str, torch.nn.Module]
) -> tuple[dict[str, Any], Any, dict[str, torch.Tensor]]:
    """(each module's output by name, the model's output, the batch) of one forward pass over
    `records`, all with the first record's prompt (so the image tokens sit at the same positions)."""
    model.eval()
    batch = Collator(processor, "florence2")([{**r, "prompt": records[0]["prompt"]} for r in records])
    out: dict[str, Any] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o))
        for name, m in modules.items()
    ]
    try:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "pixel_values")}
        res = model(**inputs, decoder_input_ids=batch["decoder_input_ids"])
    finally:
        for h in hooks:
            h.remove()
    return out, res, batch


@torch.no_grad()
def stage_spreads(model, processor, records: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(stage, spread, scale) through the image path, for one prompt over different images."""
    inner = model.model
    tower, proj = inner.vision_tower, inner.multi_modal_projector
    modules = {f"davit{k}.embed": conv for k, conv in enumerate(tower.convs)}
    modules |= {f"davit{k}.blocks": blocks[-1] for k, blocks in enumerate(tower.blocks)}
    modules |= {
        "pos_table": proj.image_position_embed,
        "projection": proj.image_projection,
        "proj_norm": proj.image_proj_norm,
        "enc.embed_norm": inner.language_model.encoder.layernorm_embedding,
    }
    out, res, batch = run_hooked(model, processor, records, modules)
    image = batch["input_ids"][0] == model.config.image_token_id
    text_emb = inner.language_model.shared(batch["input_ids"][:, ~image])
    rows = []
    for k in range(len(tower.convs)):
        rows += [(f"davit{k}.{part}", *spread(out[f"davit{k}.{part}"])) for part in ("embed", "blocks")]
    pos = out["pos_table"][0]
    rows.append(("pos_table (added)", float("nan"), float(pos.abs().mean())))
    rows += [(n, *spread(out[n])) for n in ("projection", "proj_norm")]
    rows.append(("text token embeddings", float("nan"), float(text_emb.abs().mean())))
    rows.append(("enc.embed_norm (image)", *spread(out["enc.embed_norm"][:, image])))
    rows.append(("encoder out (image)", *spread(res.encoder_last_hidden_state[:, image])))
    rows.append(("encoder out (prompt)", *spread(res.encoder_last_hidden_state[:, ~image])))
    return rows


RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 160, 30)


def square(color: tuple[int, int, int], x: int, size: int = 64):
    """A 20-px square of `color` at column `x`, row 20, on a light grey image."""
    import numpy as np
    from PIL import Image

    a = np.full((size, size, 3), 235, np.uint8)
    a[20:40, x : x + 20] = color
    return Image.fromarray(a)


@torch.no_grad()
def colour_and_place(model, processor) -> dict[str, float]:
    """How much the image features change, relative to their scale, at DaViT's output and after the
    projector, when a red square turns blue or green in place, and when it moves 24 px: can the
    model tell colours apart as well as places?"""
    model.eval()

    def features(image) -> tuple[torch.Tensor, torch.Tensor]:
        batch = F2.encode_prompts(processor, ["<CAPTION>"], [image])
        out = model.model.get_image_features(batch["pixel_values"])
        return out.last_hidden_state, out.pooler_output

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().mean() / ((a.abs().mean() + b.abs().mean()) / 2))

    red = features(square(RED, 10))
    others = {
        "red->blue": features(square(BLUE, 10)),
        "red->green": features(square(GREEN, 10)),
        "moved 24 px": features(square(RED, 34)),
    }
    return {
        f"{where} {name}": rel(red[k], other[k])
        for k, where in enumerate(("davit", "projector"))
        for name, other in others.items()
    }


def colour_of(text: str) -> str | None:
    """The shapes set's colour a caption names first (None: it names none of draw.COLORS)."""
    words = re.findall(r"[a-z]+", text.lower())
    return next((w for w in words if w in COLORS), None)


@torch.no_grad()
def probe_features(model, processor, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """One vector per image at each place of the image path: DaViT's last stage and the projector
    (mean over the image tokens), the BART encoder's output at the image tokens (mean and max)."""
    proj = model.model.multi_modal_projector
    modules = {"davit": model.model.vision_tower.blocks[-1][-1], "projector": proj.image_proj_norm}
    rows: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(records), 32):
        out, res, batch = run_hooked(model, processor, records[start : start + 32], modules)
        image = batch["input_ids"][0] == model.config.image_token_id
        davit = out["davit"][0] if isinstance(out["davit"], tuple) else out["davit"]
        enc = res.encoder_last_hidden_state[:, image].float()
        found = {
            "davit (mean)": davit.float().flatten(2).mean(-1) if davit.dim() == 4 else davit.float().mean(1),
            "projector (mean)": out["projector"].float().mean(1),
            "encoder image tokens (mean)": enc.mean(1),
            "encoder image tokens (max)": enc.amax(1),
        }
        for k, v in found.items():
            rows.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in rows.items()}


def linear_probe(
    x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor
) -> float:
    """Validation accuracy of a multinomial logistic regression (standardised inputs, L2 1e-3,
    L-BFGS) fitted on the training vectors."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mu) / sd, (x_val - mu) / sd
    classes = int(max(y_train.max(), y_val.max())) + 1
    w = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x_val @ w + b).argmax(1) == y_val).float().mean())


def colour_probe(model, processor, train: list[dict], val: list[dict]) -> dict[str, float]:
    """Can the shape's colour be read off the image features by a linear map? Accuracy of a linear
    probe at each place of the image path (chance: 1 / 5)."""
    names = list(COLORS)
    train = [r for r in train if colour_of(r["target"])]
    val = [r for r in val if colour_of(r["target"])]
    y_train = torch.tensor([names.index(colour_of(r["target"])) for r in train])
    y_val = torch.tensor([names.index(colour_of(r["target"])) for r in val])
    f_train, f_val = probe_features(model, processor, train), probe_features(model, processor, val)
    return {k: linear_probe(f_train[k], y_train, f_val[k], y_val) for k in f_train}


def grad_norms(model, processor, records: list[dict[str, Any]]) -> dict[str, float]:
    """Gradient norm of the loss of one training batch, by part of the model (full training)."""

    model.train()
    model.zero_grad()
    batch = Collator(processor, "florence2")(records)
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    model(**inputs).loss.backward()
    parts = {"vision_tower": [], "projector": [], "lm_encoder": [], "lm_decoder": [], "embeddings": []}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if "vision_tower" in name:
            part = "vision_tower"
        elif "multi_modal_projector" in name:
            part = "projector"
        elif ".encoder." in name:
            part = "lm_encoder"
        elif ".decoder." in name:
            part = "lm_decoder"
        else:
            part = "embeddings"
        parts[part].append(p.grad.detach().float().norm() ** 2)
    model.zero_grad()
    return {k: float(torch.stack(v).sum().sqrt()) if v else 0.0 for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes/demo.yaml")
    ap.add_argument("--override", action="append", default=[], help="a dotted recipe override (repeatable)")
    ap.add_argument("--model", type=Path, action="append", help="a trained Florence-2 folder (repeatable)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument(
        "--probe-images",
        type=int,
        default=600,
        help="training images of the linear colour probe (validation: a third)",
    )
    args = ap.parse_args()

    val, train, texts, (probe_train, probe_val) = demo_records(
        args.recipe, args.override, args.images, args.probe_images
    )
    candidates: list[tuple[str, Path]] = [(str(p), p) for p in args.model or []]
    tmp = tempfile.TemporaryDirectory()
    if not candidates:
        for prior in (False, True):
            out = Path(tmp.name) / f"prior-{prior}"
            F2.build_tiny(out, texts, seed=0, geometry_prior=prior)
            candidates.append((f"fresh, geometry_prior={prior}", out))

    rows, extra, colours, probes = [], {}, {}, {}
    for label, path in candidates:
        model, processor = F2.load(path)
        for stage, d, scale in stage_spreads(model, processor, val):
            rows.append((label, stage, d, scale, d / scale if scale else float("nan")))
        extra[label] = grad_norms(model, processor, train)
        colours[label] = colour_and_place(model, processor)
        probes[label] = colour_probe(model, processor, probe_train, probe_val)
    print("gradient norm of one base-stage batch (8 captions + 8 boxes), by part:")
    for label, g in extra.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:.3g}" for k, v in g.items()))
    print("image features' relative change when a red square changes colour or moves (DaViT, projector):")
    for label, c in colours.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in c.items()))
    print(
        f"linear colour probe ({len(probe_train)} training images, {len(probe_val)} validation; chance 0.2):"
    )
    for label, c in probes.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in c.items()))
    pos = {r[0]: r[3] for r in rows if r[1] == "pos_table (added)"}
    last = {r[0]: r[3] for r in rows if r[1].endswith(".blocks")}  # the last DaViT stage's, in order
    ratio = "; ".join(f"{k}: position table / DaViT output scale {pos[k] / last[k]:.3f}" for k in pos)
    report(
        "florence_pixels",
        ["model", "stage", "spread", "scale", "rel"],
        rows,
        ratio=ratio,
        grads=extra,
        colours=colours,
        colour_probe=probes,
    )


if __name__ == "__main__":
    main()
