"""Florence-2: the tiny model (config, tokenizer, processor, save/load), a forward with the
collator's labels, a few training steps, generation, and the real architecture at reduced depth."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file

from pipeline import models
from pipeline.formats import florence2 as fmt
from pipeline.models import florence2

from .conftest import train_steps


@pytest.fixture(scope="module")
def loaded(tiny_path):
    model, processor = florence2.load(tiny_path("florence2"))
    model.eval()
    return model, processor


def test_registry():
    assert models.get("florence2") is florence2
    assert models.names() == ["florence2", "paligemma"]
    with pytest.raises(KeyError, match="known: florence2, paligemma"):
        models.get("llava")


def test_tiny_size_and_parameters(loaded):
    model, _ = loaded
    trainable, total = models.count_parameters(model)
    print(f"tiny florence2: {total:,} parameters")
    assert trainable == total
    assert 1_000_000 <= total <= 50_000_000
    cfg = model.config
    assert (cfg.text_config.d_model, cfg.text_config.encoder_layers, cfg.text_config.decoder_layers) == (
        128,
        2,
        2,
    )
    assert list(cfg.vision_config.embed_dim) == [64, 128]


def test_unknown_size_key_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"hidden_size.*known:"):
        florence2.build_tiny(tmp_path, ["a"], hidden_size=64)


def test_load_reads_exactly_the_saved_weights(tiny_path, loaded):
    # nothing re-initialised on load: every tensor equals the file's
    model, _ = loaded
    saved = load_file(tiny_path("florence2") / "model.safetensors")
    state = model.state_dict()
    tied = {  # BART ties these to the shared embedding; the file holds it once
        "lm_head.weight",
        "model.language_model.encoder.embed_tokens.weight",
        "model.language_model.decoder.embed_tokens.weight",
    }
    assert set(saved) == set(state) - tied
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    for name in tied:
        assert torch.equal(state[name], state["model.language_model.shared.weight"])


def test_build_is_deterministic(tmp_path, records):
    from .conftest import texts

    a = florence2.build_tiny(tmp_path / "a", texts(records["florence2"]), seed=3)
    b = florence2.build_tiny(tmp_path / "b", texts(records["florence2"]), seed=3)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_save_load_round_trip_gives_identical_logits(tmp_path, loaded, batch_of):
    model, processor = loaded
    batch = batch_of("florence2", processor)
    models.common.save_base(model, processor, tmp_path / "copy")
    again, _ = florence2.load(tmp_path / "copy")
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)


def test_tokenizer_carries_the_format_tokens(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    assert (tok.bos_token, tok.pad_token, tok.eos_token, tok.unk_token) == ("<s>", "<pad>", "</s>", "<unk>")
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tok.image_token == "<image>" and tok.image_token_id == model.config.image_token_id
    extra = fmt.extra_tokens()
    ids = tok.convert_tokens_to_ids(extra)
    assert tok.unk_token_id not in ids and len(set(ids)) == len(extra)
    # one token each, never split; special (as in the real tokenizer): dropped by skip_special_tokens
    text = "circle<loc_0><loc_999><loc_500><loc_1>"
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[1:] == ["<loc_0>", "<loc_999>", "<loc_500>", "<loc_1>"]
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == "circle"
    assert len(tok) == model.config.text_config.vocab_size


def test_reserved_text_covers_every_special_token_of_the_tokenizer_and_processor(loaded):
    """The format's RESERVED matches every token the tiny tokenizer carries as added or special
    (a token added to it later without the pattern fails here), and every task token
    Florence2Processor swaps or refuses in a prompt."""
    _, processor = loaded
    tok = processor.tokenizer
    carried = [t.content for t in tok.added_tokens_decoder.values()] + tok.all_special_tokens
    assert len(carried) > len(fmt.extra_tokens())
    assert [t for t in carried if not fmt.RESERVED.fullmatch(t)] == []
    task_tokens = {
        *processor.tasks_answer_post_processing_type,
        *processor.task_prompts_without_inputs,
        *processor.task_prompts_with_input,
    }
    assert task_tokens == set(fmt.PROCESSOR_TASK_TOKENS)
    assert all(fmt.RESERVED.fullmatch(t).lastgroup == "task" for t in task_tokens)


def test_processor_expands_task_tokens_and_counts_image_tokens(loaded, records):
    model, processor = loaded
    rec = records["florence2"][1]  # caption: "<CAPTION>"
    from pipeline.sources.images import load_image

    enc = processor(text=[rec["prompt"]], images=[load_image(rec["image"])], return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    n = processor.image_processor.image_seq_length
    assert n == florence2.image_seq_length(64, 2) == 8 * 8 + 1
    assert tokens[:n] == ["<image>"] * n
    # the sentence, tokenized as whole words: the tiny tokenizer was trained on it
    assert tokens[n:] == ["<s>", "What", "Ġdoes", "Ġthe", "Ġimage", "Ġdescribe", "?", "</s>"]
    assert enc["pixel_values"].shape == (1, 3, 64, 64)
    with torch.no_grad():
        feats = model.get_image_features(enc["pixel_values"]).pooler_output
    assert feats.shape == (1, n, model.config.text_config.d_model)


def test_post_process_generation_works(loaded):
    _, processor = loaded
    out = processor.post_process_generation(
        text="</s><s>circle<loc_125><loc_250><loc_500><loc_750></s>", task="<OD>", image_size=(96, 48)
    )
    assert out["<OD>"]["labels"] == ["circle"]
    assert len(out["<OD>"]["bboxes"]) == 1


def test_forward_loss_finite_and_training_lowers_it(tiny_path, batch_of):
    model, processor = florence2.load(tiny_path("florence2"))
    batch = batch_of("florence2", processor)
    losses = train_steps(model, batch, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0] and losses[-1] < losses[0] - 0.1, losses


def test_the_models_own_loss_equals_uvfts_on_the_same_batch(tiny_path, batch_of):
    """Florence2ForConditionalGeneration given `labels` (it shifts them into decoder inputs itself)
    and uvft's loss on uvft's batch (decoder inputs built by encode_batch, logits only at label
    positions) are one number: the installed transformers does not shift the labels a second time
    (it did from Sept 2025 to June 2026, transformers #46897), and uvft's decoder inputs are the
    ones the model builds."""
    from pipeline.models.loss import token_losses

    model, processor = florence2.load(tiny_path("florence2"))
    model.eval()
    batch = batch_of("florence2", processor)
    assert (batch["labels"] == -100).any()  # padding in the batch: the ignored positions agree too
    with torch.no_grad():
        sums, counts = token_losses(model, batch, shift=False)
        inputs = {k: v for k, v in batch.items() if k != "decoder_input_ids"}
        own = model(**inputs).loss
    assert float(own) == pytest.approx(float(sums.sum() / counts.sum()), rel=1e-6)


def test_generate_starts_with_forced_bos(loaded, batch_of):
    model, processor = loaded
    batch = batch_of("florence2", processor)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model.generate(**inputs, max_new_tokens=6, num_beams=1, do_sample=False)
    tok = processor.tokenizer
    assert out[:, 0].tolist() == [tok.eos_token_id] * 4  # decoder_start_token_id: </s>
    assert out[:, 1].tolist() == [tok.bos_token_id] * 4  # forced <s>, as the collator's labels begin


def test_load_maps_microsoft_ids_to_native_checkpoints():
    assert florence2.native_id("microsoft/Florence-2-base") == "florence-community/Florence-2-base"
    assert florence2.native_id("microsoft/Florence-2-large-ft") == "florence-community/Florence-2-large-ft"
    assert florence2.native_id("some/other") == "some/other"


def test_load_refuses_remote_code_config(tmp_path, tiny_path):
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_path("florence2"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_florence2.Florence2Config"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="remote code"):
        florence2.load(folder)


def test_real_config_tiny_base_architecture():
    from transformers import Florence2ForConditionalGeneration, Florence2VisionConfig

    cfg = florence2.real_config_tiny("microsoft/Florence-2-base")
    v, t = cfg.vision_config, cfg.text_config
    assert list(v.embed_dim) == list(Florence2VisionConfig().embed_dim) == [128, 256, 512, 1024]
    assert (v.projection_dim, t.d_model, t.encoder_attention_heads, t.encoder_ffn_dim) == (768, 768, 12, 3072)
    assert (t.vocab_size, cfg.image_token_id) == (51328, 51289)
    # 768 px through strides 4, 2, 2, 2: a 24 x 24 grid plus the pooled token, as image_seq_length 577
    assert florence2.image_seq_length(768, 4) == 577
    large = florence2.real_config_tiny("microsoft/Florence-2-large")
    assert (large.vision_config.embed_dim[-1], large.text_config.d_model) == (2048, 1024)
    with torch.device("meta"):  # full names at no cost
        names = [n for n, _ in Florence2ForConditionalGeneration(cfg).named_modules()]
    assert "model.language_model.encoder.layers.0.self_attn.q_proj" in names


def test_real_config_tiny_forward_backward():
    from transformers import Florence2ForConditionalGeneration

    cfg = florence2.real_config_tiny("microsoft/Florence-2-base", layers=1)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(cfg)
    _, total = models.count_parameters(model)
    print(f"florence-2-base widths, 1 layer per stack: {total:,} parameters")
    start = time.perf_counter()
    n = 577
    ids = torch.randint(3, 50000, (1, n + 10))
    ids[0, :n] = cfg.image_token_id
    out = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.randn(1, 3, 768, 768),
        labels=torch.randint(3, 50000, (1, 8)),
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.model.language_model.shared.weight.grad is not None
    print(f"forward + backward: {time.perf_counter() - start:.1f} s")
