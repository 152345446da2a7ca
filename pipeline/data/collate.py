"""Collate records into model inputs, through the family's processor (so training reads the same
text generation will), and measure and drop over-long targets before batching.

A batch (`Collator.__call__`) is what the family's `encode_batch` makes of the records' prompts,
targets and images (tensors padded on the right to the longest row, `labels` on the target
tokens; each family module documents its layout), plus two lists, one entry per record: `task`
(the record's task name, for per-task losses) and `id`. Nothing is ever truncated: a target
longer than `max_target_tokens` is dropped before batching (`drop_long_targets`, counted), and
the collator refuses one that slipped through.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from pipeline import models
from pipeline.errors import DataError
from pipeline.models.loss import IGNORE_INDEX
from pipeline.sources.images import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_INDEX",
    "META_KEYS",
    "Collator",
    "drop_long_targets",
    "split_batch",
    "target_length",
    "target_lengths",
]

META_KEYS = ("task", "id")  # the batch's non-tensor entries


class Collator:
    """records (dicts with image, prompt, target, task, id) -> a batch dict; see the module doc.

    Picklable (processor and settings only), so it runs in DataLoader workers.
    """

    def __init__(self, processor: Any, family: str, *, max_target_tokens: int | None = None) -> None:
        models.get(family)  # an unknown family fails here, not in a worker
        self.processor = processor
        self.family = family  # the name: a module does not pickle
        self.max_target_tokens = max_target_tokens

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            raise ValueError("Collator got an empty batch")
        family = models.get(self.family)
        prompts = [r["prompt"] for r in records]
        targets = [r["target"] for r in records]
        if self.max_target_tokens is not None:
            for r, n in zip(records, family.target_lengths(self.processor, targets), strict=True):
                if n > self.max_target_tokens:
                    raise DataError(
                        f"target is {n} tokens, over max_target_tokens={self.max_target_tokens}; "
                        "drop_long_targets should have removed it before batching",
                        record=r.get("id"),
                        field="target",
                    )
        batch: dict[str, Any] = family.encode_batch(
            self.processor, prompts, targets, [_image(r) for r in records]
        )
        batch["task"] = [r["task"] for r in records]
        batch["id"] = [r["id"] for r in records]
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
    """How many label tokens (loss positions) each target makes: the counts the collator's labels hold."""
    return models.get(family).target_lengths(processor, targets)


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
