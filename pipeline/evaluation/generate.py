"""Generation for evaluation: batched by task, greedy or beam search, parsed by the family's format,
with a confidence score per detected box from the generated tokens' log-probabilities.

A box's score is exp(mean log-probability of its four location tokens): COCO AP ranks detections,
so every box needs one. Boxes are matched to the location-token quadruples of the generation in
order; when the parse reported errors (so that order is not trustworthy) every box of that
generation gets the mean over all its location tokens instead.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline import formats, models
from pipeline.sources.images import load_image

logger = logging.getLogger(__name__)

_LOC = re.compile(r"^<loc_?\d+>$")
IMAGE_TOKEN = "<image>"


def _batches(records: Sequence[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Records grouped by task, then by prompt length: similar lengths pad little."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    out = []
    for task in sorted(by_task):
        rows = sorted(by_task[task], key=lambda r: (len(r["prompt"]), r["id"]))
        out.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
    return out


def _inputs(processor: Any, family: str, batch: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    images = [load_image(r["image"]) for r in batch]
    if models.get(family).DECODER_ONLY:
        # decoder-only: pad on the left so every row's generation starts right after its prompt
        enc = processor(
            text=[IMAGE_TOKEN + r["prompt"] for r in batch],
            images=images,
            padding="longest",
            padding_side="left",
            return_tensors="pt",
        )
    else:
        enc = processor(
            text=[r["prompt"] for r in batch],
            images=images,
            padding="longest",
            padding_side="right",
            return_tensors="pt",
        )
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}


def box_scores(
    tokens: Sequence[str], logprobs: Sequence[float], n_boxes: int, parse_errors: int
) -> list[float]:
    """One confidence per parsed box from the location tokens' log-probabilities (see module doc)."""
    locs = [lp for t, lp in zip(tokens, logprobs, strict=True) if _LOC.match(t)]
    if not locs or n_boxes == 0:
        return [0.0] * n_boxes
    quads = [locs[i : i + 4] for i in range(0, len(locs) - len(locs) % 4, 4)]
    if parse_errors == 0 and len(quads) >= n_boxes:
        return [math.exp(sum(q) / 4) for q in quads[:n_boxes]]
    return [math.exp(sum(locs) / len(locs))] * n_boxes


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    processor: Any,
    family: str,
    records: Sequence[dict[str, Any]],
    *,
    generation_config: Any,
    batch_size: int = 16,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate for every record; return one dict per record (input order) with the generated text,
    the parsed prediction (boxes with scores) and the tokens' log-probabilities."""
    fmt = formats.get(family)
    device = next(model.parameters()).device
    model.eval()
    tok = processor.tokenizer
    results: dict[str, dict[str, Any]] = {}
    # the scores ride on a copy of the pinned config (transformers warns when both are passed)
    gen = copy.deepcopy(generation_config)
    gen.update(output_scores=True, return_dict_in_generate=True)
    bar = tqdm(total=len(records), desc="generate", unit=" rec", disable=not progress)
    for batch in _batches(records, batch_size):
        inputs = _inputs(processor, family, batch, device)
        out = model.generate(**inputs, generation_config=gen)
        scores = model.compute_transition_scores(
            out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=True
        )
        # decoder-only models return the prompt too; the scores cover the new tokens only
        new = out.sequences[:, -scores.shape[1] :]
        for r, ids, lps in zip(batch, new.tolist(), scores.tolist(), strict=True):
            keep = [
                (i, lp) for i, lp in zip(ids, lps, strict=True) if i != tok.pad_token_id and math.isfinite(lp)
            ]
            ids_kept = [i for i, _ in keep]
            text = tok.decode(ids_kept, skip_special_tokens=False)
            pred = fmt.parse(text, r["task"], tuple(r["image_size"]))
            token_strs = tok.convert_ids_to_tokens(ids_kept)
            confidences = box_scores(token_strs, [lp for _, lp in keep], len(pred.objects), pred.errors)
            results[r["id"] + "\0" + r["source"]] = {
                "generated_text": text,
                "parsed": {
                    "text": pred.text if r["task"] != "detection" else "",
                    "objects": [
                        {"bbox": list(o.bbox), "category": o.category, "score": s}
                        for o, s in zip(pred.objects, confidences, strict=True)
                    ],
                    "errors": pred.errors,
                },
                "mean_logprob": sum(lp for _, lp in keep) / max(len(keep), 1),
            }
        bar.update(len(batch))
    bar.close()
    return [results[r["id"] + "\0" + r["source"]] for r in records]


@torch.no_grad()
def label_loglikelihoods(
    model: torch.nn.Module,
    processor: Any,
    family: str,
    records: Sequence[dict[str, Any]],
    labels: Sequence[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> list[list[float]]:
    """Closed-set classification: for every record, the log-likelihood of each candidate label
    written as its target (the end-of-text token included, so "star" and "star shape" differ),
    teacher-forced through the training collator. The argmax is always a valid label, and any
    label set can be scored (zero-shot classification over classes the data never named)."""
    from pipeline.data.collate import Collator
    from pipeline.train.loop import token_losses

    if not labels:
        raise ValueError("closed-set classification needs at least one label")
    collator = Collator(processor, family)
    shift = models.get(family).DECODER_ONLY
    device = next(model.parameters()).device
    model.eval()
    pairs = [(i, j) for i in range(len(records)) for j in range(len(labels))]
    scores = [[0.0] * len(labels) for _ in records]
    bar = tqdm(total=len(records), desc="closed-set", unit=" rec", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = collator([{**records[i], "target": labels[j]} for i, j in chunk])
        inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        loss_sum, _ = token_losses(model, inputs, shift=shift)
        for (i, j), loss in zip(chunk, loss_sum.tolist(), strict=True):
            scores[i][j] = -loss
        bar.update(sum(1 for _, j in chunk if j == len(labels) - 1))
    bar.close()
    return scores
