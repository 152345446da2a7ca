"""Padding: real over padded tokens per batch, in the text part of the input ids and in the target
(label) positions, for uvft's length-aware bucketing (`mixture.bucket_batches`, the default)
against random batches (the same sampler with bucketing off: the same draws, in the order the
mixture draws them). Also the realised task shares against the plan.

Two length distributions:
- the demo mixture: the demo recipe's records, tokenized by the tiny model's tokenizer;
- COCO + VQAv2 + captions at COCO-2017 scale (118k detection images, 592k captions, 444k
  questions), synthesized from the datasets' statistics (objects per image: negative binomial with
  COCO train2017's mean 7.3 and spread, clipped to 1..93; caption words ~ N(10.5, 2.4); one- to
  three-token answers; questions of 4-12 words), written in each family's target format's token
  counts: the real annotation files and tokenizers are not on this machine.

    python bench/padding.py [--steps 1000] [--batch 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import report

from pipeline.data.mixture import MixtureSampler, bucket_keys, groups_from_sources
from pipeline.recipe import MixtureSection

ROOT = Path(__file__).resolve().parent.parent


def efficiency(rows: np.ndarray, text: np.ndarray, target: np.ndarray, batch: int) -> tuple[float, float]:
    """(text-part input efficiency, target efficiency) of consecutive batches of `rows`."""
    t = text[rows].reshape(-1, batch)
    y = target[rows].reshape(-1, batch)
    return t.sum() / (t.max(axis=1) * batch).sum(), y.sum() / (y.max(axis=1) * batch).sum()


def simulate(sources, text, target, prompt_chars, *, strategy, weights, batch, steps, bucket) -> dict:
    groups = groups_from_sources(sources)
    sampler = MixtureSampler(
        groups,
        strategy=strategy,
        weights=weights,
        batch_size=batch,
        seed=0,
        lengths=bucket_keys(target, prompt_chars),
        bucket_batches=bucket,
    )
    rows = np.array(sampler.global_rows(0, steps * batch))
    text_eff, target_eff = efficiency(rows, text, target, batch)
    sampler.set_position(steps)
    counts = sampler.consumed_counts()
    total = sum(counts.values())
    planned = sampler.planned_shares()
    drift = max(abs(counts[s] / total - planned[s]) for s in planned) * 100
    return {"text": text_eff, "target": target_eff, "drift": drift}


def demo(family: str):
    from pipeline import models
    from pipeline.data.build import build
    from pipeline.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes/demo.yaml", [f"model.family={family}"])
    ds = build(recipe, progress=False).load()[recipe.data.train_split]
    prompts, targets, sources = ds["prompt"], ds["target"], ds["source"]
    mod = models.get(family)
    processor = mod.build_processor([*prompts, *targets])  # the tiny model's tokenizer, built on the spot
    tok = processor.tokenizer
    target = np.array(mod.target_lengths(processor, targets))
    prompt = np.array([len(x) for x in tok(list(prompts), add_special_tokens=True)["input_ids"]])
    text = prompt + target if mod.DECODER_ONLY else prompt
    chars = np.array([len(p) for p in prompts])
    return sources, text, target, chars, recipe.mixture.strategy, recipe.mixture.weights


def coco(family: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_det, n_cap, n_vqa = 117_266, 591_753, 443_757
    # objects per image: negative binomial, mean 7.3, sd ~6.9 (COCO train2017), clipped to 1..93
    mean, sd = 7.3, 6.9
    p = mean / sd**2
    objects = np.clip(rng.negative_binomial(mean * p / (1 - p), p, n_det), 1, 93)
    per_object = 6 if family == "paligemma" else 5  # 4 locations + ~1.3 category tokens (+ ";")
    det_target = objects * per_object + 1
    cap_target = np.clip(np.round(rng.normal(10.5, 2.4, n_cap) * 1.2), 4, 60).astype(int) + 1
    vqa_target = rng.choice([2, 3, 4], size=n_vqa, p=[0.8, 0.15, 0.05])
    det_prompt = np.full(n_det, 240 if family == "paligemma" else 6)  # PaliGemma lists the 80 names
    cap_prompt = np.full(n_cap, 4)
    vqa_prompt = rng.integers(6, 16, n_vqa) + 3
    target = np.concatenate([det_target, cap_target, vqa_target]).astype(np.int64)
    prompt = np.concatenate([det_prompt, cap_prompt, vqa_prompt]).astype(np.int64)
    sources = ["coco_detection"] * n_det + ["coco_captions"] * n_cap + ["vqav2"] * n_vqa
    text = prompt + target if family == "paligemma" else prompt
    return sources, text, target, prompt, "temperature", None  # secondary key: prompt tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    default = MixtureSection().bucket_batches
    ap.add_argument("--bucket-batches", type=int, default=default, help="uvft's window (the recipe default)")
    args = ap.parse_args()
    rows, worst = [], 1.0
    for name, make in (("demo mixture", demo), ("COCO + VQAv2 + captions", coco)):
        for family in ("paligemma", "florence2"):
            sources, text, target, chars, strategy, weights = make(family)
            kw = {"strategy": strategy, "weights": weights, "batch": args.batch, "steps": args.steps}
            base = simulate(sources, text, target, chars, bucket=0, **kw)
            uvft = simulate(sources, text, target, chars, bucket=args.bucket_batches, **kw)
            label = f"{name}, {family}"
            rows.append([label, "random batches", base["text"], base["target"], base["drift"], 1.0])
            rows.append(
                [
                    label,
                    "uvft (bucketed)",
                    uvft["text"],
                    uvft["target"],
                    uvft["drift"],
                    uvft["target"] / base["target"],
                ]
            )
            worst = min(worst, uvft["target"])
    headers = [
        "lengths",
        "batching",
        "input-id efficiency (text)",
        "target efficiency",
        "max share drift (points)",
        "target eff. vs random",
    ]
    report(
        "padding",
        headers,
        rows,
        f"ratio: uvft's lowest target-token efficiency {worst:.3f} (random batches: see the table)",
        steps=args.steps,
        batch=args.batch,
    )


if __name__ == "__main__":
    main()
