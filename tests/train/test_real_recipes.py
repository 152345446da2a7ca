"""The shipped real recipes, run for two steps through the real loop.

florence2_base_multitask_lora.yaml and paligemma2_3b_multitask_lora.yaml load hub checkpoints and
read COCO, VQAv2 and Imagenette, none of which can be had here. So each test lays a small shapes set
out at the paths the recipe names, builds the recipe's architecture from the real config at one
layer per stack with random weights (processor at the real input size, tokenizer trained on the
records), and overrides only the model folder, the data root, the run's size and its side effects.
Everything else (sources, readers, cards, adapter preset, r, alpha, mixture) is the recipe's own.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from pipeline import models
from pipeline.data.build import build
from pipeline.demo import shapes
from pipeline.models import florence2, paligemma
from pipeline.models.common import VISION_TOWER
from pipeline.recipe import Recipe, load_recipe
from pipeline.sources.vqav2 import DEFAULT_IMAGE_PATTERN
from pipeline.train import loop

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "florence2": ROOT / "recipes/florence2_base_multitask_lora.yaml",
    "paligemma": ROOT / "recipes/paligemma2_3b_multitask_lora.yaml",
}
SPLITS = ("train", "val")


# --- data at the recipe's paths ------------------------------------------------------------------


def _jpeg(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, format="JPEG", quality=95)


def lay_out_recipe_data(recipe: Recipe, root: Path, shapes_dir: Path) -> None:
    """Write the shapes set under `root` at the paths the recipe's sources name, in the layout of
    the real sets: COCO 2017 (zero-padded .jpg names), VQAv2 (COCO_<subtype>_<id>.jpg images,
    data_subtype from the image folder, e.g. train2014), Imagenette (<wnid>/<wnid>_<id>.JPEG)."""
    for src in recipe.data.sources:
        for split in SPLITS:
            p = src.params(split)
            ann = json.loads((shapes_dir / f"annotations/instances_{split}.json").read_text())
            images = {im["id"]: shapes_dir / "images" / split / im["file_name"] for im in ann["images"]}
            if src.format in ("coco_detection", "coco_captions"):
                kind = "instances" if src.format == "coco_detection" else "captions"
                data = json.loads((shapes_dir / f"annotations/{kind}_{split}.json").read_text())
                for im in data["images"]:
                    im["file_name"] = f"{im['id']:012d}.jpg"
                    _jpeg(images[im["id"]], root / p["images"] / im["file_name"])
                (root / p["annotations"]).parent.mkdir(parents=True, exist_ok=True)
                (root / p["annotations"]).write_text(json.dumps(data))
            elif src.format == "vqav2":
                subtype = Path(p["images"]).name  # train2014 / val2014, as the real files say
                q = json.loads(
                    (shapes_dir / f"annotations/v2_OpenEnded_shapes_{split}_questions.json").read_text()
                )
                a = json.loads((shapes_dir / f"annotations/v2_shapes_{split}_annotations.json").read_text())
                for d in (q, a):
                    d.update(data_type="mscoco", data_subtype=subtype)
                pattern = p.get("image_pattern", DEFAULT_IMAGE_PATTERN)
                for image_id, path in images.items():
                    name = pattern.format(image_id=image_id, data_subtype=subtype)
                    _jpeg(path, root / p["images"] / name)
                for key, d in (("questions", q), ("annotations", a)):
                    (root / p[key]).parent.mkdir(parents=True, exist_ok=True)
                    (root / p[key]).write_text(json.dumps(d))
            elif src.format == "image_folder":
                wnids = list(p["label_map"])[:3]  # a few of the recipe's classes
                for i, (image_id, path) in enumerate(sorted(images.items())):
                    wnid = wnids[i % len(wnids)]
                    _jpeg(path, root / p["root"] / wnid / f"{wnid}_{image_id}.JPEG")
            else:
                raise AssertionError(f"no layout for source format {src.format!r} ({src.name})")


# --- the real architecture at one layer, random weights ------------------------------------------


def build_real_tiny(family: str, model_id: str, texts: list[str], out: Path) -> list[str]:
    """Save `model_id`'s architecture (1 layer per stack, random weights) with a processor at the
    real input size and a tokenizer trained on `texts`; return the model's module names."""
    from transformers import (
        Florence2ForConditionalGeneration,
        GenerationConfig,
        PaliGemmaForConditionalGeneration,
    )

    torch.manual_seed(0)
    if family == "florence2":
        cfg = florence2.real_config_tiny(model_id, layers=1)
        v = cfg.vision_config
        # the processor only needs the DaViT's stage count (image tokens: 768 px -> 24 x 24 + 1)
        stages = florence2.Size(
            vision_dims=tuple(v.embed_dim), vision_depths=tuple(v.depths), vision_heads=tuple(v.num_heads)
        )
        processor = florence2.build_processor(texts, image_size=768, size=stages)
        tok = processor.tokenizer
        assert processor.image_processor.image_seq_length == florence2.image_seq_length(768, 4) == 577
        assert len(tok) <= cfg.text_config.vocab_size
        # BART's ids (<s> 0, <pad> 1, </s> 2) as the real tokenizer; <image> sits where ours has it
        t = cfg.text_config
        assert (t.bos_token_id, t.pad_token_id, t.eos_token_id, t.decoder_start_token_id) == (
            tok.bos_token_id,
            tok.pad_token_id,
            tok.eos_token_id,
            tok.eos_token_id,
        )
        cfg.image_token_id = tok.image_token_id
        model = Florence2ForConditionalGeneration(cfg)
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            decoder_start_token_id=tok.eos_token_id,
            forced_bos_token_id=tok.bos_token_id,
            forced_eos_token_id=tok.eos_token_id,
        )
    else:
        # SigLIP So400m/14 at 224 px: 16 x 16 = 256 image tokens
        processor = paligemma.build_processor(texts, image_size=224, size=paligemma.Size(patch_size=14))
        tok = processor.tokenizer
        # the real 257216-row embedding is 593M parameters: the vocab is the tokenizer's, whose last
        # token is <image>, where real_config_tiny puts image_token_id for a reduced vocab
        cfg = paligemma.real_config_tiny(model_id, layers=1, vocab_size=len(tok))
        assert cfg.image_token_id == tok.image_token_id
        assert processor.image_seq_length == cfg.text_config.num_image_tokens == 256
        t = cfg.text_config
        assert (t.pad_token_id, t.eos_token_id, t.bos_token_id) == (
            tok.pad_token_id,
            tok.eos_token_id,
            tok.bos_token_id,
        )
        model = PaliGemmaForConditionalGeneration(cfg)
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
        )
    models.common.save_base(model, processor, out)
    return [name for name, _ in model.named_modules()]


# --- the test -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_real_recipe_trains_two_steps_on_its_architecture(family, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes name their data cards relative to the repository root
    started = time.perf_counter()
    path = RECIPES[family]
    real = load_recipe(path)
    assert real.model.family == family and real.model.id is not None

    data_root, model_dir, out = tmp_path / "data", tmp_path / "model", tmp_path / "run"
    shapes.generate(tmp_path / "shapes", n_train=8, n_val=4, image_size=64, seed=0, progress=False)
    lay_out_recipe_data(real, data_root, tmp_path / "shapes")

    recipe = load_recipe(
        path,
        [
            f"model.id={model_dir}",
            "model.dtype=float32",
            f"data.root={data_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"output_dir={out}",
            "train.steps=2",
            "train.batch_size=1",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.val_batches=1",
            "train.log_every=1",  # a loss for each of the two steps
            "train.mixed_precision='no'",  # quoted: YAML reads a bare no as false
        ],
    )
    assert recipe.adapter == real.adapter and recipe.mixture == real.mixture
    assert recipe.data.sources == real.data.sources

    # the records first (the tokenizer is trained on their text, as uvft's tiny models are)
    records = build(recipe, progress=False).load()
    assert sorted(records) == ["train", "val"]
    assert set(records["train"]["source"]) == {s.name for s in real.data.sources}
    texts = sorted({t for ds in records.values() for t in (*ds["prompt"], *ds["target"])})
    names = build_real_tiny(family, real.model.id, texts, model_dir)

    summary = loop.train(recipe, progress=False, cpu=True)

    assert summary.steps == 2
    losses = [e["loss"] for e in summary.losses]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), summary.losses
    assert summary.nonfinite_skipped == 0
    assert all(math.isfinite(v) for v in summary.val[-1].values())
    assert 0 < summary.trainable_params < summary.total_params
    for name in ("adapter_config.json", "adapter_model.safetensors", "summary.json", "recipe.yaml"):
        assert (out / name).is_file(), name

    # the adapter is the recipe's preset, r and alpha, on the language model only
    family_mod = models.get(family)
    config = json.loads((out / "adapter_config.json").read_text())
    preset = family_mod.LORA_TARGETS[real.adapter.preset]
    assert config["target_modules"] == preset
    assert (config["r"], config["lora_alpha"]) == (real.adapter.r, real.adapter.alpha)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    wrapped = {k.removeprefix("base_model.model.").split(".lora_")[0] for k in keys if ".lora_" in k}
    assert not [k for k in keys if VISION_TOWER in k.split(".")]
    expected = {n for n in names if re.fullmatch(preset, n)}
    assert expected and wrapped == expected
    assert all(".language_model." in m for m in wrapped)
    print(
        f"{family}: {summary.total_params:,} parameters, {summary.trainable_params:,} trainable; "
        f"losses {losses}; {time.perf_counter() - started:.1f} s"
    )
