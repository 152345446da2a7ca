"""Collator: exact token ids, labels and token_type_ids for one record of each task in each family
(tiny tokenizers trained here), right padding in a two-record batch, target lengths and dropping
over-long targets, pickling, and a forward on the tiny models whose logits padding does not move."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch

from pipeline import models
from pipeline.data.collate import (
    IGNORE_INDEX,
    Collator,
    drop_long_targets,
    measure_targets,
    split_batch,
    target_length,
    target_lengths,
)
from pipeline.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TASKS = ("classification", "caption", "vqa", "detection")

# What the format modules render for the four examples below (asserted in test_records_are_rendered)
PROMPTS = {
    "florence2": (
        "What category does the image belong to?",
        "<CAPTION>",
        "Answer the question: what color is the circle?",
        "<OD>",
    ),
    "paligemma": (
        "answer en what category does this image belong to?",
        "caption en",
        "answer en what color is the circle?",
        "detect circle ; square",
    ),
}
TARGETS = {
    "florence2": (
        "circle",
        "A red circle.",
        "green",
        "square<loc_500><loc_41><loc_958><loc_333>circle<loc_125><loc_250><loc_500><loc_750>",
    ),
    "paligemma": (
        "circle",
        "A red circle.",
        "green",
        "<loc0042><loc0512><loc0341><loc0981> square ; <loc0256><loc0128><loc0768><loc0512> circle",
    ),
}

# Florence-2 encoder tokens after the 65 image tokens (8 x 8 grid + 1 pooled), and decoder labels.
# The processor swaps <CAPTION> and <OD> for their sentences. Labels are `<s> target </s>`: the
# decoder starts from </s> (decoder_start_token_id) and the checkpoints write <s> first.
FLORENCE_IMAGE_TOKENS = 65
# fmt: off
FLORENCE_ENCODER = {
    "classification": ["<s>", "What", "Ġcategory", "Ġdoes", "Ġthe", "Ġimage", "Ġbelong", "Ġto", "?", "</s>"],
    "caption": ["<s>", "What", "Ġdoes", "Ġthe", "Ġimage", "Ġdescribe", "?", "</s>"],
    "vqa": ["<s>", "Answer", "Ġthe", "Ġquestion", ":", "Ġwhat", "Ġcolor", "Ġis", "Ġthe", "Ġcircle", "?",
            "</s>"],
    "detection": ["<s>", "Locate", "Ġthe", "Ġobjects", "Ġwith", "Ġcategory", "Ġname", "Ġin", "Ġthe",
                  "Ġimage", ".", "</s>"],
}
FLORENCE_LABELS = {
    "classification": ["<s>", "circle", "</s>"],
    "caption": ["<s>", "A", "Ġred", "Ġcircle", ".", "</s>"],
    "vqa": ["<s>", "green", "</s>"],
    "detection": ["<s>",
                  "square", "<loc_500>", "<loc_41>", "<loc_958>", "<loc_333>",
                  "circle", "<loc_125>", "<loc_250>", "<loc_500>", "<loc_750>",
                  "</s>"],
}
# fmt: on

# PaliGemma: 64 image tokens (8 x 8 patches), then the prefix (<bos>, prompt, "\n") and the
# suffix (target, <eos>). token_type_ids are 1 on the suffix only; labels are the suffix tokens.
PALI_IMAGE_TOKENS = 64
# fmt: off
PALI_PREFIX = {
    "classification": ["<bos>", "answer", "▁en", "▁what", "▁category", "▁does", "▁this", "▁image",
                       "▁belong", "▁to?", "\n"],
    "caption": ["<bos>", "caption", "▁en", "\n"],
    "vqa": ["<bos>", "answer", "▁en", "▁what", "▁color", "▁is", "▁the", "▁circle?", "\n"],
    "detection": ["<bos>", "detect", "▁circle", "▁;", "▁square", "\n"],
}
PALI_SUFFIX = {
    "classification": ["circle", "<eos>"],
    "caption": ["A", "▁red", "▁circle.", "<eos>"],
    "vqa": ["green", "<eos>"],
    "detection": ["<loc0042>", "<loc0512>", "<loc0341>", "<loc0981>", "▁square", "▁;", "▁",
                  "<loc0256>", "<loc0128>", "<loc0768>", "<loc0512>", "▁circle", "<eos>"],
}
# fmt: on


def _texts(recs: list[dict[str, Any]]) -> list[str]:
    return [t for r in recs for t in (r["prompt"], r["target"])]


@pytest.fixture(scope="module")
def processors(records) -> dict[str, Any]:
    """Tiny processors (tokenizer trained on the four records' text): enough for exact ids."""
    return {f: models.get(f).build_processor(_texts(records[f])) for f in ("florence2", "paligemma")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, records) -> dict[str, tuple[Any, Any]]:
    out = {}
    for f in ("florence2", "paligemma"):
        path = models.get(f).build_tiny(tmp_path_factory.mktemp(f), _texts(records[f]), seed=0)
        model, processor = models.get(f).load(path)
        out[f] = (model.eval(), processor)
    return out


def test_records_are_rendered(records):
    for family in ("florence2", "paligemma"):
        assert tuple(r["task"] for r in records[family]) == TASKS
        assert tuple(r["prompt"] for r in records[family]) == PROMPTS[family]
        assert tuple(r["target"] for r in records[family]) == TARGETS[family]


@pytest.mark.parametrize("index", range(4), ids=TASKS)
def test_florence2_exact_ids_and_labels(records, processors, index):
    proc = processors["florence2"]
    tok = proc.tokenizer
    rec = records["florence2"][index]
    task = rec["task"]
    batch = Collator(proc, "florence2")([rec])

    expected_input = tok.convert_tokens_to_ids(["<image>"] * FLORENCE_IMAGE_TOKENS + FLORENCE_ENCODER[task])
    assert batch["input_ids"][0].tolist() == expected_input
    assert batch["attention_mask"][0].tolist() == [1] * len(expected_input)
    expected_labels = tok.convert_tokens_to_ids(FLORENCE_LABELS[task])
    assert tok.unk_token_id not in expected_input + expected_labels
    assert batch["labels"][0].tolist() == expected_labels
    assert batch["pixel_values"].shape == (1, 3, 64, 64)
    assert batch["task"] == [task] and batch["id"] == [rec["id"]]
    assert batch["decoder_input_ids"][0].tolist() == [tok.eos_token_id, *expected_labels[:-1]]
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "decoder_input_ids",
        "labels",
        "task",
        "id",
    }


def test_florence2_decoder_reads_labels_shifted_behind_its_start_token(records, processors):
    from transformers.models.florence2.modeling_florence2 import shift_tokens_right

    proc = processors["florence2"]
    tok = proc.tokenizer
    batch = Collator(proc, "florence2")(records["florence2"][1:3])  # caption, vqa: padded labels
    decoder_input = shift_tokens_right(batch["labels"], tok.pad_token_id, tok.eos_token_id)
    # the batch carries what the model would build from its labels (the loss gives it no labels)
    assert torch.equal(batch["decoder_input_ids"], decoder_input)
    assert tok.convert_ids_to_tokens(decoder_input[0].tolist()) == [
        "</s>",
        "<s>",
        "A",
        "Ġred",
        "Ġcircle",
        ".",
    ]
    assert tok.convert_ids_to_tokens(decoder_input[1].tolist()) == [
        "</s>",
        "<s>",
        "green",
        "</s>",
        "<pad>",
        "<pad>",
    ]


@pytest.mark.parametrize("index", range(4), ids=TASKS)
def test_paligemma_exact_ids_token_types_and_labels(records, processors, index):
    proc = processors["paligemma"]
    tok = proc.tokenizer
    rec = records["paligemma"][index]
    task = rec["task"]
    batch = Collator(proc, "paligemma")([rec])

    prefix = ["<image>"] * PALI_IMAGE_TOKENS + PALI_PREFIX[task]
    suffix = PALI_SUFFIX[task]
    expected_input = tok.convert_tokens_to_ids(prefix + suffix)
    assert tok.unk_token_id not in expected_input
    assert batch["input_ids"][0].tolist() == expected_input
    assert batch["attention_mask"][0].tolist() == [1] * len(expected_input)
    # 1 only on the target and <eos>; 0 on image tokens, <bos>, prompt and the "\n" separator
    assert batch["token_type_ids"][0].tolist() == [0] * len(prefix) + [1] * len(suffix)
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * len(prefix) + tok.convert_tokens_to_ids(suffix)
    assert batch["pixel_values"].shape == (1, 3, 64, 64)
    assert batch["task"] == [task]
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "pixel_values",
        "labels",
        "task",
        "id",
    }


def test_padding_florence2(records, processors):
    proc = processors["florence2"]
    tok = proc.tokenizer
    cap, det = records["florence2"][1], records["florence2"][3]
    batch = Collator(proc, "florence2")([cap, det])
    n_cap = FLORENCE_IMAGE_TOKENS + len(FLORENCE_ENCODER["caption"])  # 73
    n_det = FLORENCE_IMAGE_TOKENS + len(FLORENCE_ENCODER["detection"])  # 77
    assert batch["input_ids"].shape == (2, n_det)
    # right padding: <pad> ids, attention 0
    assert batch["input_ids"][0, n_cap:].tolist() == [tok.pad_token_id] * (n_det - n_cap)
    assert batch["attention_mask"][0].tolist() == [1] * n_cap + [0] * (n_det - n_cap)
    assert batch["attention_mask"][1].tolist() == [1] * n_det
    # labels padded with -100 to the longest target
    cap_labels = tok.convert_tokens_to_ids(FLORENCE_LABELS["caption"])
    det_labels = tok.convert_tokens_to_ids(FLORENCE_LABELS["detection"])
    assert batch["labels"].tolist() == [
        cap_labels + [IGNORE_INDEX] * (len(det_labels) - len(cap_labels)),
        det_labels,
    ]
    assert batch["task"] == ["caption", "detection"] and batch["id"] == ["cap", "det"]
    # the collator pads on the right whatever the tokenizer's own setting
    left = copy.deepcopy(proc)
    left.tokenizer.padding_side = "left"
    again = Collator(left, "florence2")([cap, det])
    assert all(torch.equal(batch[k], again[k]) for k in ("input_ids", "attention_mask", "labels"))


def test_padding_paligemma(records, processors):
    proc = processors["paligemma"]
    tok = proc.tokenizer
    cap, det = records["paligemma"][1], records["paligemma"][3]
    batch = Collator(proc, "paligemma")([cap, det])
    pre_cap = PALI_IMAGE_TOKENS + len(PALI_PREFIX["caption"])
    n_cap = pre_cap + len(PALI_SUFFIX["caption"])  # 72
    n_det = PALI_IMAGE_TOKENS + len(PALI_PREFIX["detection"]) + len(PALI_SUFFIX["detection"])  # 83
    pad = n_det - n_cap
    assert batch["input_ids"].shape == (2, n_det)
    # right padding (the tokenizer's default is left), and the four tensors agree on it
    assert batch["input_ids"][0, n_cap:].tolist() == [tok.pad_token_id] * pad
    assert batch["attention_mask"][0].tolist() == [1] * n_cap + [0] * pad
    assert (
        batch["token_type_ids"][0].tolist() == [0] * pre_cap + [1] * len(PALI_SUFFIX["caption"]) + [0] * pad
    )
    cap_suffix = tok.convert_tokens_to_ids(PALI_SUFFIX["caption"])
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * pre_cap + cap_suffix + [IGNORE_INDEX] * pad
    assert batch["attention_mask"][1].tolist() == [1] * n_det
    assert (batch["labels"][1] != IGNORE_INDEX).sum().item() == len(PALI_SUFFIX["detection"])


@pytest.mark.parametrize(
    ("family", "lengths"),
    [("florence2", [3, 6, 3, 12]), ("paligemma", [2, 4, 2, 13])],
)
def test_target_lengths_count_the_label_tokens(records, processors, family, lengths):
    proc = processors[family]
    recs = records[family]
    assert target_lengths(proc, family, [r["target"] for r in recs]) == lengths
    assert [target_length(proc, family, r["target"]) for r in recs] == lengths
    batch = Collator(proc, family)(recs)
    assert (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist() == lengths


@pytest.mark.parametrize(
    ("family", "limit", "kept"),
    [
        ("florence2", None, ["cls", "cap", "vqa", "det"]),
        ("florence2", 12, ["cls", "cap", "vqa", "det"]),
        ("florence2", 11, ["cls", "cap", "vqa"]),
        ("florence2", 5, ["cls", "vqa"]),
        ("paligemma", 13, ["cls", "cap", "vqa", "det"]),
        ("paligemma", 4, ["cls", "cap", "vqa"]),
        ("paligemma", 3, ["cls", "vqa"]),
        ("paligemma", 1, []),
    ],
)
def test_drop_long_targets(records, processors, family, limit, kept):
    from datasets import Dataset

    recs = records[family]
    out, dropped = drop_long_targets(recs, processors[family], family, limit)
    assert [r["id"] for r in out] == kept
    assert dropped == len(recs) - len(kept)
    ds = Dataset.from_list(recs)
    out_ds, dropped_ds = drop_long_targets(ds, processors[family], family, limit, batch_size=3)
    assert isinstance(out_ds, Dataset)
    assert out_ds["id"] == kept and dropped_ds == dropped
    # measured once (as the loop does, for bucketing too) and handed in: the same outcome
    lengths = measure_targets(ds, processors[family], family, batch_size=3)
    assert lengths.tolist() == target_lengths(processors[family], family, [r["target"] for r in recs])
    out_given, dropped_given = drop_long_targets(ds, processors[family], family, limit, lengths=lengths)
    assert out_given["id"] == kept and dropped_given == dropped


def test_collator_refuses_a_long_target_it_should_never_see(records, processors):
    collate = Collator(processors["florence2"], "florence2", max_target_tokens=6)
    collate(records["florence2"][:3])  # 3, 6, 3 tokens: fine
    with pytest.raises(DataError, match=r"record det.*12 tokens.*max_target_tokens=6"):
        collate(records["florence2"])


def test_missing_image_names_the_record(records, processors, tmp_path):
    rec = {**records["florence2"][0], "image": str(tmp_path / "gone.png")}
    with pytest.raises(DataError, match=r"record cls, field 'image'"):
        Collator(processors["florence2"], "florence2")([rec])


def test_unknown_family_and_empty_batch(processors):
    with pytest.raises(KeyError, match="known: florence2, paligemma"):
        Collator(processors["florence2"], "llava")
    with pytest.raises(ValueError, match="empty"):
        Collator(processors["florence2"], "florence2")([])


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_collator_pickles_and_runs_in_a_worker(records, processors, family):
    collate = Collator(processors[family], family, max_target_tokens=64)
    again = pickle.loads(pickle.dumps(collate))
    a, b = collate(records[family]), again(records[family])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
    from torch.utils.data import DataLoader

    loader = DataLoader(records[family], batch_size=2, collate_fn=collate, num_workers=1)
    batches = list(loader)
    assert [bt["task"] for bt in batches] == [list(TASKS[:2]), list(TASKS[2:])]


def test_split_batch(records, processors):
    inputs, meta = split_batch(Collator(processors["paligemma"], "paligemma")(records["paligemma"]))
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values", "labels"}
    assert meta == {"task": list(TASKS), "id": ["cls", "cap", "vqa", "det"]}


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_forward_with_collated_labels_and_padding_invariance(records, tiny, family):
    """A finite loss on the four records, and each record's logits in the padded batch equal its
    logits alone: the masks and the right padding hide the padding from every real token."""
    model, processor = tiny[family]
    collate = Collator(processor, family)
    inputs, _ = split_batch(collate(records[family]))
    with torch.no_grad():
        out = model(**inputs)
        assert torch.isfinite(out.loss)
        for i, rec in enumerate(records[family]):
            alone, _ = split_batch(collate([rec]))
            logits = model(**alone).logits[0]
            torch.testing.assert_close(out.logits[i, : logits.shape[0]], logits, rtol=1e-4, atol=1e-4)
