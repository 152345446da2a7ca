"""LoRA presets (what each regex wraps, never the vision tower), freezing, parameter counts, and
the save-before-wrap rule with an adapter round trip that gives identical logits."""

from __future__ import annotations

import re

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn

from pipeline import models
from pipeline.models.common import has_adapters, is_vision, matching_modules, save_base

from .conftest import train_steps

pytestmark = pytest.mark.filterwarnings(
    "ignore:Model has `tie_word_embeddings=True`:UserWarning",  # modules_to_save copies are untied on purpose
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",
)

FAMILIES = ("florence2", "paligemma")

# What each preset must wrap, per layer of the language model (by the module's last name)
ATTENTION = {
    "florence2": {"q_proj", "k_proj", "v_proj", "out_proj"},  # self_attn, and encoder_attn in the decoder
    "paligemma": {"q_proj", "k_proj", "v_proj", "o_proj"},
}
MLP = {"florence2": {"fc1", "fc2"}, "paligemma": {"gate_proj", "up_proj", "down_proj"}}
PROJECTOR = {
    "florence2": "model.multi_modal_projector.image_projection",
    "paligemma": "model.multi_modal_projector.linear",
}


def _lora_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0]


def _lm_linears(model: nn.Module) -> set[str]:
    return {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.startswith("model.language_model.")
    }


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


def _fresh(tiny_path, family):
    model, processor = models.get(family).load(tiny_path(family))
    return model, processor


@pytest.mark.parametrize("preset", models.PRESETS)
def test_presets_wrap_exactly_their_modules_and_never_the_vision_tower(tiny_path, family, preset):
    fam = models.get(family)
    model, _ = _fresh(tiny_path, family)
    lm_linears = _lm_linears(model)
    peft_model = get_peft_model(
        model, models.lora_config(fam.LORA_TARGETS, preset, r=4, alpha=8, dropout=0.0)
    )
    wrapped = {n.removeprefix("base_model.model.") for n in _lora_modules(peft_model)}
    assert wrapped
    assert not [n for n in wrapped if is_vision(n)]
    assert not [n for n, p in peft_model.named_parameters() if is_vision(n) and "lora" in n]
    kinds = {n.rsplit(".", 1)[-1] for n in wrapped if n.startswith("model.language_model.")}
    expected = ATTENTION[family] | (MLP[family] if preset != "attention" else set())
    assert kinds == expected
    assert (PROJECTOR[family] in wrapped) == (preset == "all_linear")
    if preset == "all_linear":  # every linear of the language model, and the projector; not lm_head
        assert wrapped == lm_linears | {PROJECTOR[family]}
    n_layers = model.config.text_config.num_hidden_layers if family == "paligemma" else 2
    per_layer = {
        "florence2": {"attention": 4 + 8, "attention_mlp": 6 + 10},
        "paligemma": {"attention": 4, "attention_mlp": 7},
    }
    if preset != "all_linear":
        assert len(wrapped) == n_layers * per_layer[family][preset]
    trainable, total = models.count_parameters(peft_model)
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    print(f"{family} {preset}: {trainable:,} trainable / {total:,}")
    assert trainable == lora


def test_a_suffix_list_would_reach_the_vision_tower(tiny_path, family):
    # the trap the regexes avoid: peft matches a list of names by suffix
    model, _ = _fresh(tiny_path, family)
    name = {"florence2": "fc1", "paligemma": "q_proj"}[family]
    hits = [n for n, _ in model.named_modules() if n.endswith("." + name)]
    assert any(is_vision(n) for n in hits)
    assert not any(
        is_vision(n) for n in matching_modules(model, models.get(family).LORA_TARGETS["all_linear"])
    )


@pytest.mark.parametrize("family_name", FAMILIES)
def test_presets_on_the_real_architectures(family_name):
    # the released configs at two layers, on the meta device: names only, no memory
    fam = models.get(family_name)
    model_id = {"florence2": "microsoft/Florence-2-base", "paligemma": "google/paligemma2-3b-pt-224"}[
        family_name
    ]
    cls = {"florence2": "Florence2ForConditionalGeneration", "paligemma": "PaliGemmaForConditionalGeneration"}
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, cls[family_name])(fam.real_config_tiny(model_id, layers=2))
    for preset, pattern in fam.LORA_TARGETS.items():
        hits = matching_modules(model, pattern)
        assert hits and not any(is_vision(n) for n in hits), preset
        assert all(isinstance(model.get_submodule(n), nn.Linear) for n in hits)
    assert set(matching_modules(model, fam.LORA_TARGETS["all_linear"])) == _lm_linears(model) | {
        PROJECTOR[family_name]
    }


@pytest.mark.parametrize(
    ("model_id", "params"),
    [
        ("microsoft/Florence-2-base", 231_443_968),  # published: 0.23B
        ("microsoft/Florence-2-large", 770_213_888),  # published: 0.77B
        ("google/paligemma2-3b-pt-224", 3_032_242_416),  # published: 3B (3.03B)
    ],
)
def test_real_configs_at_full_depth_have_the_published_size(model_id, params):
    import transformers

    family_name = "paligemma" if "paligemma" in model_id else "florence2"
    cls = {"florence2": "Florence2ForConditionalGeneration", "paligemma": "PaliGemmaForConditionalGeneration"}
    with torch.device("meta"):
        model = getattr(transformers, cls[family_name])(
            models.get(family_name).real_config_tiny(model_id, layers=None)
        )
    assert models.count_parameters(model)[1] == params


def test_unknown_preset(family):
    with pytest.raises(KeyError, match="attention, attention_mlp, all_linear"):
        models.lora_config(models.get(family).LORA_TARGETS, "everything")


def test_lora_config_fields(family):
    cfg = models.lora_config(
        models.get(family).LORA_TARGETS,
        "attention_mlp",
        r=8,
        alpha=16,
        dropout=0.1,
        modules_to_save=["lm_head"],
    )
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.modules_to_save) == (8, 16, 0.1, ["lm_head"])
    assert isinstance(cfg.target_modules, str) and re.compile(cfg.target_modules)


def test_freeze_vision_and_counts(tiny_path, family):
    model, _ = _fresh(tiny_path, family)
    _, total = models.count_parameters(model)
    vision = sum(p.numel() for n, p in model.named_parameters() if is_vision(n))
    assert models.freeze_vision(model) > 0
    assert models.count_parameters(model) == (total - vision, total)
    assert all(not p.requires_grad for n, p in model.named_parameters() if is_vision(n))
    assert all(p.requires_grad for n, p in model.named_parameters() if "multi_modal_projector" in n)
    # tied weights count once: the embedding is shared with lm_head
    assert total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_full_method_trains_every_weight_but_the_frozen_vision(tiny_path, family, batch_of):
    model, processor = _fresh(tiny_path, family)
    models.freeze_vision(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = train_steps(model, batch_of(family, processor), steps=2)
    assert losses[-1] < losses[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not any(is_vision(n) for n in changed)


def test_save_base_before_wrapping_then_adapter_round_trip(tmp_path, tiny_path, family, batch_of):
    """The rule: save the base before get_peft_model (which rewrites it in place), then save only the
    adapter; base + adapter loaded back give the trained model's logits exactly."""
    fam = models.get(family)
    model, processor = _fresh(tiny_path, family)
    batch = batch_of(family, processor)
    base_dir = save_base(model, processor, tmp_path / "base")  # before wrapping

    config = models.lora_config(
        fam.LORA_TARGETS, "all_linear", r=4, alpha=8, dropout=0.0, modules_to_save=fam.EMBEDDING_MODULES
    )
    peft_model = get_peft_model(model, config)
    losses = train_steps(peft_model, batch, steps=3)
    assert losses[-1] < losses[0] - 0.1, losses
    trainable, total = models.count_parameters(peft_model)
    print(f"{family} all_linear + embeddings: {trainable:,} trainable / {total:,}")

    # the base is no longer plain: saving it now would write names from_pretrained cannot read
    assert has_adapters(model)
    with pytest.raises(ValueError, match="save the base before wrapping"):
        save_base(model, processor, tmp_path / "too-late")

    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base, _ = fam.load(base_dir)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    reloaded.eval()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
        got = reloaded(**batch).logits
    assert torch.equal(expected, got)
    with torch.no_grad():  # and the adapter matters: the plain base differs
        plain, _ = fam.load(base_dir)
        assert not torch.allclose(plain.eval()(**batch).logits, expected)


def test_a_base_saved_after_wrapping_is_refused_on_load(tmp_path, tiny_path, family):
    """What goes wrong without the rule: transformers would re-initialise the wrapped weights
    (their names became `*.base_layer.weight`); `load` refuses the folder instead."""
    fam = models.get(family)
    model, processor = _fresh(tiny_path, family)
    get_peft_model(model, models.lora_config(fam.LORA_TARGETS, "attention", r=4, alpha=8, dropout=0.0))
    model.save_pretrained(tmp_path / "bad")
    processor.save_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="does not match"):
        fam.load(tmp_path / "bad")


def test_embedding_modules_make_every_embedding_trainable(tiny_path, family):
    fam = models.get(family)
    model, _ = _fresh(tiny_path, family)
    peft_model = get_peft_model(
        model,
        models.lora_config(
            fam.LORA_TARGETS, "attention", r=4, alpha=8, dropout=0.0, modules_to_save=fam.EMBEDDING_MODULES
        ),
    )
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n}
    base = peft_model.get_base_model()
    # every embedding the forward reads, and the head, has a trainable copy
    used = [
        "lm_head",
        "model.language_model.shared" if family == "florence2" else "model.language_model.embed_tokens",
    ]
    if family == "florence2":
        used.append("model.language_model.decoder.embed_tokens")
    for name in used:
        assert hasattr(base.get_submodule(name), "modules_to_save"), name
        assert any(n.startswith(f"base_model.model.{name}.modules_to_save") for n in trainable), name
