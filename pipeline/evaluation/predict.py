"""Prediction for evaluation and inference: generation batched by task (greedy or beam search),
parsed by the family's format, with a confidence score per detected box from the generated tokens'
log-probabilities; closed-set classification by label log-likelihood; the run's pinned generation
config with the recipe's eval settings. Imports nothing of training.

A box's score is exp(mean log-probability of its four location tokens): COCO AP ranks detections,
so every box needs one. Boxes are matched to the location-token quadruples of the generation in
order; when the parse reported errors (so that order is not trustworthy) every box of that
generation gets the mean over all its location tokens instead.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline import formats, models, tasks
from pipeline.errors import UvftError
from pipeline.formats.loc import LocScheme
from pipeline.models import pixels, vqvae
from pipeline.models.generation import generation_config
from pipeline.models.loss import token_losses
from pipeline.recipe import EvalSection, Recipe
from pipeline.sources.images import load_image

logger = logging.getLogger(__name__)


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
    images = pixels.prepare(processor, [load_image(r["image"]) for r in batch])
    enc = models.get(family).encode_prompts(processor, [r["prompt"] for r in batch], images)
    return {k: v.to(device) for k, v in enc.items()}


def box_scores(
    tokens: Sequence[str],
    logprobs: Sequence[float],
    n_boxes: int,
    parse_errors: int,
    locations: LocScheme,
) -> list[float]:
    """One confidence per parsed box from the location tokens' log-probabilities (see module doc)."""
    locs = [lp for t, lp in zip(tokens, logprobs, strict=True) if locations.pattern.fullmatch(t)]
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
    mask_vae: vqvae.MaskVQVAE | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate for every record; return one dict per record (input order) with the generated text,
    the parsed prediction (boxes with scores; masks written as codes decoded by `mask_vae`) and the
    tokens' log-probabilities."""
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
        # every process generates its own records alone (a sharded run gathers the weights first:
        # pipeline.train.sharding.gathered); transformers would otherwise keep the processes of a
        # sharded model in step, and each stops after its own number of batches
        out = model.generate(**inputs, generation_config=gen, synced_gpus=False)
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
            if pred.mask_codes:
                pred.mask = _decoded(mask_vae, pred, tuple(r["image_size"]))
            token_strs = tok.convert_ids_to_tokens(ids_kept)
            confidences = box_scores(
                token_strs, [lp for _, lp in keep], len(pred.objects), pred.errors, fmt.LOCATIONS
            )
            results[r["id"] + "\0" + r["source"]] = {
                "generated_text": text,
                "parsed": tasks.get(r["task"]).parsed(pred, confidences),
                "mean_logprob": sum(lp for _, lp in keep) / max(len(keep), 1),
            }
        bar.update(len(batch))
    bar.close()
    return [results[r["id"] + "\0" + r["source"]] for r in records]


def _decoded(vae: vqvae.MaskVQVAE | None, pred: Any, size: tuple[int, int]) -> dict[str, Any]:
    if vae is None:
        raise UvftError(
            "this model writes masks as VQ-VAE codes and no codec was given to decode them: a trained "
            f"model keeps its own ({vqvae.MASK_VAE_FILE} beside its weights); evaluation uses the one the "
            "records were built with (model.mask_vae)"
        )
    return vqvae.decode_mask(vae, [o.bbox for o in pred.objects], pred.mask_codes, size)


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


def predict(
    model: Any,
    processor: Any,
    family: str,
    rows_in: list[dict[str, Any]],
    cfg: EvalSection,
    *,
    generation_config: Any,
    mask_vae: Any = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate and parse for every record (and score class names for closed-set classification);
    return the generations.jsonl rows, in input order. `mask_vae`: the codec of masks written as
    codes (models.vqvae), which decodes them."""
    outs = generate(
        model,
        processor,
        family,
        rows_in,
        generation_config=generation_config,
        batch_size=cfg.batch_size,
        mask_vae=mask_vae,
        progress=progress,
    )
    rows = [
        {
            "id": r["id"],
            "source": r["source"],
            "task": r["task"],
            "prompt": r["prompt"],
            "generated_text": o["generated_text"],
            "parsed": o["parsed"],
            "references": tasks.get(r["task"]).references(r),
            "image": r["image"],
            "image_size": r["image_size"],
        }
        for r, o in zip(rows_in, outs, strict=True)
    ]
    if cfg.closed_set:
        _closed_set(model, processor, family, rows_in, rows, cfg, progress=progress)
    return rows


def _closed_set(model, processor, family, rows_in, rows, cfg: EvalSection, *, progress: bool) -> None:
    """Add parsed["closed_set"] = {"label", "scores"} to the rows of closed-set tasks."""
    chosen = closed_set(
        model, processor, family, rows_in, labels=cfg.labels, batch_size=cfg.batch_size, progress=progress
    )
    for i, result in chosen.items():
        rows[i]["parsed"]["closed_set"] = result


def closed_set(
    model,
    processor,
    family: str,
    records: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[int, dict[str, Any]]:
    """Closed-set classification of the records whose task has one: index -> {"label", "scores"}, the
    label of highest likelihood (the first of equal scores) among `labels`, else the record's own
    class list (`categories`). Records are scored in groups of the same candidate list."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if tasks.get(r["task"]).CLOSED_SET:
            candidates = tuple(labels) if labels else tuple(r["categories"] or [])
            if not candidates:
                raise UvftError(
                    f"closed-set classification of record {r['source']}/{r['id']}: the record names no "
                    "classes (categories is empty); set eval.labels or eval.closed_set: false"
                )
            groups[candidates].append(i)
    out: dict[int, dict[str, Any]] = {}
    for candidates, idx in groups.items():
        scores = label_loglikelihoods(
            model,
            processor,
            family,
            [records[i] for i in idx],
            list(candidates),
            batch_size=batch_size,
            progress=progress,
        )
        for i, row_scores in zip(idx, scores, strict=True):
            best = max(range(len(candidates)), key=lambda j: row_scores[j])
            out[i] = {"label": candidates[best], "scores": dict(zip(candidates, row_scores, strict=True))}
    return out


def eval_generation_config(model: Any, recipe: Recipe, folder: Path | None = None) -> Any:
    """The run's pinned generation config (from `folder` when saved there), with the recipe's
    eval.num_beams and eval.max_new_tokens applied."""
    from transformers import GenerationConfig

    cfg = recipe.eval
    max_new = cfg.max_new_tokens or recipe.train.max_target_tokens or 256
    if folder is not None and (folder / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(folder)
    else:
        gen = generation_config(model, max_new_tokens=max_new)
    gen.update(num_beams=cfg.num_beams, max_new_tokens=max_new)
    return gen
