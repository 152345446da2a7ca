"""PaliGemma: the tiny model (config, tokenizer, processor, save/load), a forward with the
collator's labels, a few training steps, generation, and the real architecture at reduced depth."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file

from pipeline import models
from pipeline.formats import pali as fmt
from pipeline.models import paligemma

from .conftest import texts, train_steps

# the processor builds labels with np.array on torch tensors, which numpy warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def loaded(tiny_path):
    model, processor = paligemma.load(tiny_path("paligemma"))
    model.eval()
    return model, processor


def test_registry():
    assert models.get("paligemma") is paligemma


def test_tiny_size_and_parameters(loaded):
    model, _ = loaded
    trainable, total = models.count_parameters(model)
    print(f"tiny paligemma: {total:,} parameters")
    assert trainable == total
    assert 1_000_000 <= total <= 50_000_000
    t, v = model.config.text_config, model.config.vision_config
    assert (t.model_type, t.hidden_size, t.num_hidden_layers) == ("gemma2", 128, 2)
    assert (v.image_size, v.patch_size, v.hidden_size) == (64, 8, 128)


def test_unknown_size_key_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"d_model.*known:"):
        paligemma.build_tiny(tmp_path, ["a"], d_model=64)


def test_load_reads_exactly_the_saved_weights(tiny_path, loaded):
    model, _ = loaded
    saved = load_file(tiny_path("paligemma") / "model.safetensors")
    state = model.state_dict()
    # transformers saves PaliGemma under the hub checkpoints' names (language_model.model.*, ...)
    native = {
        "model." + k.replace("language_model.model.", "language_model.", 1): t for k, t in saved.items()
    }
    assert set(native) == set(state) - {"lm_head.weight"}  # lm_head is tied to embed_tokens
    for name, tensor in native.items():
        assert torch.equal(state[name], tensor), name
    assert torch.equal(state["lm_head.weight"], state["model.language_model.embed_tokens.weight"])


def test_build_is_deterministic(tmp_path, records):
    a = paligemma.build_tiny(tmp_path / "a", texts(records["paligemma"]), seed=3)
    b = paligemma.build_tiny(tmp_path / "b", texts(records["paligemma"]), seed=3)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_save_load_round_trip_gives_identical_logits(tmp_path, loaded, batch_of):
    model, processor = loaded
    batch = batch_of("paligemma", processor)
    models.common.save_base(model, processor, tmp_path / "copy")
    again, _ = paligemma.load(tmp_path / "copy")
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_tokenizer_carries_the_format_tokens(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 4]
    assert tok.image_token == "<image>" and tok.image_token_id == model.config.image_token_id
    assert processor.image_token_id == model.config.image_token_id
    extra = fmt.extra_tokens()  # 1024 locations + 128 segmentation tokens
    ids = tok.convert_tokens_to_ids(extra)
    assert tok.unk_token_id not in ids and ids == list(range(ids[0], ids[0] + len(extra)))
    assert tok.image_token_id == ids[-1] + 1  # the real tokenizer's order: locs, segs, <image>
    text = "<loc0000><loc1023><seg000> circle"
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[:3] == ["<loc0000>", "<loc1023>", "<seg000>"]
    # not special: decoding with skip_special_tokens keeps them, as PaliGemma's detection output needs
    ids_eos = [*tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert tok.decode(ids_eos, skip_special_tokens=True) == text
    # byte fallback: a character never seen in training is bytes, not <unk>
    assert tok.unk_token_id not in tok("é", add_special_tokens=False)["input_ids"]
    assert len(tok) == model.config.text_config.vocab_size


def test_reserved_text_covers_every_special_token_of_the_tokenizer_and_processor(loaded):
    """The format's RESERVED matches every token the tiny tokenizer carries as added or special
    (a token added to it later without the pattern fails here), and the tokens
    PaliGemmaProcessor adds to any tokenizer it is given."""
    from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS, IMAGE_TOKEN

    _, processor = loaded
    tok = processor.tokenizer
    carried = [t.content for t in tok.added_tokens_decoder.values()] + tok.all_special_tokens
    assert len(carried) > len(fmt.extra_tokens())
    assert [t for t in carried if not fmt.RESERVED.fullmatch(t)] == []
    assert [t for t in [*EXTRA_TOKENS, IMAGE_TOKEN] if not fmt.RESERVED.fullmatch(t)] == []


def test_processor_image_tokens_and_features(loaded, records):
    from pipeline.sources.images import load_image

    model, processor = loaded
    rec = records["paligemma"][1]  # caption
    enc = processor(text=["<image>" + rec["prompt"]], images=[load_image(rec["image"])], return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    n = processor.image_seq_length
    assert n == (64 // 8) ** 2 == model.config.text_config.num_image_tokens
    assert tokens == ["<image>"] * n + ["<bos>", "caption", "▁en", "\n"]
    with torch.no_grad():
        feats = model.get_image_features(enc["pixel_values"]).pooler_output
    assert feats.shape == (1, n, model.config.text_config.hidden_size)


def test_forward_loss_finite_and_training_lowers_it(tiny_path, batch_of):
    model, processor = paligemma.load(tiny_path("paligemma"))
    batch = batch_of("paligemma", processor)
    losses = train_steps(model, batch, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0] and losses[-1] < losses[0] - 0.1, losses


def test_generate_runs(loaded, records):
    from pipeline.sources.images import load_image

    model, processor = loaded
    recs = records["paligemma"][:2]
    # generation pads on the left (the tokenizer's default), prompt only
    enc = processor(
        text=["<image>" + r["prompt"] for r in recs],
        images=[load_image(r["image"]) for r in recs],
        padding="longest",
        return_tensors="pt",
    )
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 4
    assert torch.equal(out[:, : enc["input_ids"].shape[1]], enc["input_ids"])


def test_real_config_tiny_architecture():
    from transformers import PaliGemmaForConditionalGeneration

    cfg = paligemma.real_config_tiny("google/paligemma2-3b-pt-224")
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (
        2304,
        9216,
        8,
        4,
        256,
    )
    assert (t.final_logit_softcapping, t.attn_logit_softcapping, t.query_pre_attn_scalar) == (30.0, 50.0, 256)
    assert (v.hidden_size, v.intermediate_size, v.num_attention_heads, v.patch_size, v.image_size) == (
        1152,
        4304,
        16,
        14,
        224,
    )
    assert (t.vocab_size, cfg.image_token_id, cfg.projection_dim, t.num_image_tokens) == (
        257216,
        257152,
        2304,
        256,
    )
    with pytest.raises(KeyError, match="known"):
        paligemma.real_config_tiny("google/paligemma-3b-pt-896")
    with torch.device("meta"):
        names = [n for n, _ in PaliGemmaForConditionalGeneration(cfg).named_modules()]
    assert "model.language_model.layers.0.self_attn.q_proj" in names


def test_real_config_tiny_forward_backward():
    from transformers import PaliGemmaForConditionalGeneration

    # the real 257216 x 2304 embedding alone is 593M parameters (10 GB to train on a CPU): reduced
    cfg = paligemma.real_config_tiny("google/paligemma2-3b-pt-224", layers=1, vocab_size=16384)
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(cfg)
    _, total = models.count_parameters(model)
    print(f"paligemma2-3b widths, 1 layer per tower, vocab 16384: {total:,} parameters")
    start = time.perf_counter()
    n = 256
    ids = torch.randint(5, 16000, (1, n + 12))
    ids[0, :n] = cfg.image_token_id
    token_type_ids = torch.zeros_like(ids)
    token_type_ids[0, -5:] = 1
    out = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=token_type_ids,
        pixel_values=torch.randn(1, 3, 224, 224),
        labels=ids.masked_fill(token_type_ids == 0, -100),
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss > 0
    print(f"forward + backward: {time.perf_counter() - start:.1f} s")
