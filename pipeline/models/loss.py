"""The training loss, shared by training (the loop, held-out loss) and evaluation (closed-set
scoring): per-example sums of target-token cross-entropy, and target-token counts.

Logits are computed only where a label is: the model gets a boolean `logits_to_keep` mask (the
positions that predict a target token) and applies its head (softcap included) to those hidden
states alone, and no `labels`, so it computes no loss of its own. A PaliGemma batch is mostly
image and prompt positions, and its head is 257k wide: the head, the fp32 logits and the
cross-entropy at every other position were work thrown away.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of a position without a target token (prompt, image, padding)


def label_positions(labels: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): the boolean mask of the positions whose logits predict a label, and the
    labels those positions predict (aligned with `labels` when not shifted)."""
    # decoder-only: position t predicts token t+1, and the last position predicts nothing
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) if shift else labels
    return targets != IGNORE_INDEX, targets


def token_losses(
    model: torch.nn.Module, batch: dict[str, Any], *, shift: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target-token cross-entropy summed per example, and the target-token count per example."""
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
    keep, targets = label_positions(batch["labels"], shift)
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (label positions, vocab)
    ce = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]  # the example of each kept position, in the same (row-major) order
    loss_sum = torch.zeros(keep.shape[0], dtype=ce.dtype, device=ce.device).index_add_(0, rows, ce)
    return loss_sum, keep.sum(dim=1)


def target_tokens(batch: dict[str, Any], shift: bool) -> int:
    labels = batch["labels"][:, 1:] if shift else batch["labels"]
    return int((labels != IGNORE_INDEX).sum())
