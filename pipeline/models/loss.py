"""The training loss, shared by training (the loop, held-out loss) and evaluation (closed-set
scoring): per-example sums of target-token cross-entropy, and target-token counts."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of a position without a target token (prompt, image, padding)


def token_losses(
    model: torch.nn.Module, batch: dict[str, Any], *, shift: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target-token cross-entropy summed per example, and the target-token count per example."""
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    labels = inputs["labels"]
    logits = model(**inputs).logits
    if shift:  # decoder-only: position t predicts token t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    logits = logits[:, -labels.shape[1] :]  # prefix positions (image tokens) carry no label
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = labels != IGNORE_INDEX
    return (ce * mask).sum(dim=1), mask.sum(dim=1)


def target_tokens(batch: dict[str, Any], shift: bool) -> int:
    labels = batch["labels"][:, 1:] if shift else batch["labels"]
    return int((labels != IGNORE_INDEX).sum())
