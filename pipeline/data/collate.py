"""Collate records into model inputs, through the family's processor (so training reads the same
text generation will), and measure and drop over-long targets before batching.

A batch (`Collator.__call__`) holds tensors, padded on the right to the longest row:

- Florence-2 (encoder-decoder): `input_ids`, `attention_mask` (encoder: `<image>`x N, `<s>`, the
  prompt with task tokens expanded to sentences, `</s>`), `pixel_values`, and `labels`: the
  target as the decoder writes it, `<s>` target `</s>`, -100 on padding. The model builds
  `decoder_input_ids` by shifting `labels` right behind `decoder_start_token_id` (`</s>`), so the
  decoder reads `</s> <s> target` and predicts `<s> target </s>`, as the checkpoints were trained
  and as generation runs (start `</s>`, `<s>` forced first).
- PaliGemma (prefix-LM): `input_ids` (`<image>`x N, `<bos>`, prompt, "\\n", target, `<eos>`),
  `attention_mask`, `token_type_ids` (1 on the target and `<eos>` only: the suffix, causal;
  0 on image tokens, `<bos>`, prompt, "\\n" and padding: the prefix, bidirectional),
  `pixel_values`, and `labels` (the suffix tokens, -100 everywhere else). Labels are aligned with
  `input_ids`; the model shifts them. Padding goes on the right (the Gemma tokenizer's default is
  left), so every row keeps the positions 1..L it has alone (PaliGemma's forward numbers positions
  without the mask; RoPE makes a uniform shift harmless too, but right padding needs no such
  argument). Padding has 0 in token_type_ids and attention_mask, -100 in labels.

plus two lists, one entry per record: `task` (the record's task name, for per-task losses) and
`id`. Nothing is ever truncated: a target longer than `max_target_tokens` is dropped before
batching (`drop_long_targets`, counted), and the collator refuses one that slipped through.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from pipeline.errors import DataError
from pipeline.models.common import IMAGE_TOKEN
from pipeline.records import FAMILIES
from pipeline.sources.images import load_image

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
META_KEYS = ("task", "id")  # the batch's non-tensor entries


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


class Collator:
    """records (dicts with image, prompt, target, task, id) -> a batch dict; see the module doc.

    Picklable (processor and settings only), so it runs in DataLoader workers.
    """

    def __init__(self, processor: Any, family: str, *, max_target_tokens: int | None = None) -> None:
        _check_family(family)
        self.processor = processor
        self.family = family
        self.max_target_tokens = max_target_tokens

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            raise ValueError("Collator got an empty batch")
        prompts = [r["prompt"] for r in records]
        targets = [r["target"] for r in records]
        if self.max_target_tokens is not None:
            lengths = target_lengths(self.processor, self.family, targets)
            for r, n in zip(records, lengths, strict=True):
                if n > self.max_target_tokens:
                    raise DataError(
                        f"target is {n} tokens, over max_target_tokens={self.max_target_tokens}; "
                        "drop_long_targets should have removed it before batching",
                        record=r.get("id"),
                        field="target",
                    )
        images = [_image(r) for r in records]
        if self.family == "florence2":
            batch = self._florence2(prompts, targets, images)
        else:
            batch = self._paligemma(prompts, targets, images)
        batch["task"] = [r["task"] for r in records]
        batch["id"] = [r["id"] for r in records]
        return batch

    def _florence2(self, prompts: list[str], targets: list[str], images: list[Any]) -> dict[str, Any]:
        enc = self.processor(
            text=prompts,
            images=images,
            padding="longest",
            padding_side="right",
            truncation=False,
            return_tensors="pt",
        )
        dec = self.processor.tokenizer(
            targets,
            padding="longest",
            padding_side="right",
            truncation=False,
            return_tensors="pt",
        )
        labels = dec["input_ids"].masked_fill(dec["attention_mask"] == 0, IGNORE_INDEX)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixel_values": enc["pixel_values"],
            "labels": labels,
        }

    def _paligemma(self, prompts: list[str], targets: list[str], images: list[Any]) -> dict[str, Any]:
        # "<image>" written in the prompt: the processor then adds only <bos> after it and "\n" at
        # the end (without it, it warns and guesses where the image goes)
        # numpy out: the processor builds its own labels with np.array, which warns on torch tensors
        out = self.processor(
            text=[IMAGE_TOKEN + p for p in prompts],
            images=images,
            suffix=targets,
            padding="longest",
            padding_side="right",
            truncation=False,
            return_tensors="np",
        )
        batch = {
            k: torch.from_numpy(out[k])
            for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
        }
        batch["input_ids"] = batch["input_ids"].long()
        # labels from token_type_ids (the suffix) and the attention mask, not trusted from the processor
        suffix = (batch["token_type_ids"] == 1) & (batch["attention_mask"] == 1)
        batch["labels"] = batch["input_ids"].masked_fill(~suffix, IGNORE_INDEX)
        return batch


def _image(record: dict[str, Any]) -> Any:
    try:
        return load_image(record["image"])
    except (OSError, ValueError) as e:  # missing, unreadable or truncated since the build checked it
        raise DataError(f"cannot load {record['image']}: {e}", record=record.get("id"), field="image") from e


def split_batch(batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, list[Any]]]:
    """(model inputs, metadata): the tensors to call the model with, and the per-record lists."""
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return inputs, {k: batch[k] for k in META_KEYS if k in batch}


# ---------------------------------------------------------------------------- target lengths


def target_lengths(processor: Any, family: str, targets: Sequence[str]) -> list[int]:
    """How many label tokens (loss positions) each target makes: Florence-2 `<s>` target `</s>`,
    PaliGemma target `<eos>`. The same counts the collator's labels hold."""
    _check_family(family)
    tok = getattr(processor, "tokenizer", processor)
    if family == "florence2":
        ids = tok(list(targets), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]
    ids = tok(list(targets), add_special_tokens=False, truncation=False)["input_ids"]
    return [len(x) + 1 for x in ids]  # + <eos>, which the processor appends to every suffix


def target_length(processor: Any, family: str, target: str) -> int:
    """Label tokens of one target (see target_lengths)."""
    return target_lengths(processor, family, [target])[0]


def drop_long_targets(
    dataset: Any, processor: Any, family: str, max_target_tokens: int | None, *, batch_size: int = 10_000
) -> tuple[Any, int]:
    """(dataset without the records whose target exceeds `max_target_tokens`, how many were dropped).

    Dropping the whole record, never truncating: a cut target would teach the model to stop in
    the middle of a caption or of a location quadruple. `dataset` is a `datasets.Dataset` (kept
    as one, via `select`) or a list of record dicts. None: nothing is dropped.
    """
    if max_target_tokens is None:
        return dataset, 0
    if max_target_tokens < 1:
        raise ValueError(f"max_target_tokens must be >= 1, got {max_target_tokens}")
    is_list = isinstance(dataset, list)
    targets = [r["target"] for r in dataset] if is_list else dataset["target"]
    tasks = [r["task"] for r in dataset] if is_list else dataset["task"]
    keep: list[int] = []
    dropped: Counter[str] = Counter()
    for start in range(0, len(targets), batch_size):
        chunk = list(targets[start : start + batch_size])
        for i, n in enumerate(target_lengths(processor, family, chunk), start=start):
            if n <= max_target_tokens:
                keep.append(i)
            else:
                dropped[tasks[i]] += 1
    n_dropped = sum(dropped.values())
    if not n_dropped:
        return dataset, 0
    logger.warning(
        "dropped %d records whose target exceeds %d tokens: %s",
        n_dropped,
        max_target_tokens,
        ", ".join(f"{t} {n}" for t, n in sorted(dropped.items())),
    )
    return ([dataset[i] for i in keep] if is_list else dataset.select(keep)), n_dropped
