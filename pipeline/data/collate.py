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

import numpy as np
import torch

from pipeline import models
from pipeline.errors import DataError
from pipeline.models import pixels
from pipeline.models.loss import IGNORE_INDEX
from pipeline.sources.images import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_INDEX",
    "META_KEYS",
    "Collator",
    "drop_long_targets",
    "measure_targets",
    "split_batch",
    "target_length",
    "target_lengths",
]

META_KEYS = ("task", "id")  # the batch's non-tensor entries


class Collator:
    """records (dicts with image, prompt, target, task, id) -> a batch dict; see the module doc.

    Picklable (processor and settings only), so it runs in DataLoader workers.

    `defer_pixels`: where the processor has a PixelPath (models/pixels.py), leave `pixel_values`
    as the resized uint8 pixels, a quarter of the bytes to make, send and move, with the table
    that finishes them under `pixels.TABLE`: `pixels.finish(batch)` on the model's device gives
    the processor's values to the bit. The training loop does this; a batch for anything else
    is ready as it is.
    """

    def __init__(
        self,
        processor: Any,
        family: str,
        *,
        max_target_tokens: int | None = None,
        defer_pixels: bool = False,
    ) -> None:
        models.get(family)  # an unknown family fails here, not in a worker
        self.processor = processor
        self.family = family  # the name: a module does not pickle
        self.max_target_tokens = max_target_tokens
        self.defer_pixels = defer_pixels

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
        images: Any = [_image(r) for r in records]
        path = pixels.path_for(self.processor)
        defer = path is not None and self.defer_pixels
        if path is not None:
            images = path.resized(images) if defer else path(images)
        batch: dict[str, Any] = family.encode_batch(self.processor, prompts, targets, images)
        if defer:
            batch[pixels.TABLE] = torch.from_numpy(path.table)
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


def measure_targets(dataset: Any, processor: Any, family: str, *, batch_size: int = 10_000) -> np.ndarray:
    """Label tokens of every record's target (`dataset`: a datasets.Dataset or a list of record
    dicts), tokenized in chunks: what drop_long_targets and length-aware batching both use."""
    targets = [r["target"] for r in dataset] if isinstance(dataset, list) else dataset["target"]
    out = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), batch_size):
        chunk = list(targets[start : start + batch_size])
        out[start : start + len(chunk)] = target_lengths(processor, family, chunk)
    return out


def drop_long_targets(
    dataset: Any,
    processor: Any,
    family: str,
    max_target_tokens: int | None,
    *,
    batch_size: int = 10_000,
    lengths: np.ndarray | None = None,
) -> tuple[Any, int]:
    """(dataset without the records whose target exceeds `max_target_tokens`, how many were dropped).

    Dropping the whole record, never truncating: a cut target would teach the model to stop in
    the middle of a caption or of a location quadruple. `dataset` is a `datasets.Dataset` (kept
    as one, via `select`) or a list of record dicts. None: nothing is dropped. `lengths`: the
    targets' label tokens if already measured (measure_targets); kept ones are `lengths[lengths
    <= max_target_tokens]`, in order.
    """
    if max_target_tokens is None:
        return dataset, 0
    if max_target_tokens < 1:
        raise ValueError(f"max_target_tokens must be >= 1, got {max_target_tokens}")
    is_list = isinstance(dataset, list)
    if lengths is None:
        lengths = measure_targets(dataset, processor, family, batch_size=batch_size)
    too_long = np.flatnonzero(lengths > max_target_tokens)
    if not too_long.size:
        return dataset, 0
    tasks = [r["task"] for r in dataset] if is_list else dataset["task"]
    dropped = Counter(tasks[i] for i in too_long.tolist())
    keep = np.flatnonzero(lengths <= max_target_tokens).tolist()
    n_dropped = int(too_long.size)
    logger.warning(
        "dropped %d records whose target exceeds %d tokens: %s",
        n_dropped,
        max_target_tokens,
        ", ".join(f"{t} {n}" for t, n in sorted(dropped.items())),
    )
    return ([dataset[i] for i in keep] if is_list else dataset.select(keep)), n_dropped
