"""The loss computes logits only at label positions and equals the full-logits cross-entropy, and
transformers' own loss, on both tiny families."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.models.loss import IGNORE_INDEX, label_positions, token_losses


def test_label_positions_shift_for_decoder_only():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8], [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX]])
    keep, targets = label_positions(labels, shift=True)
    assert keep.tolist() == [[False, True, True, False], [True, False, False, False]]
    assert targets[keep].tolist() == [7, 8, 5]
    keep, targets = label_positions(labels, shift=False)
    assert keep.tolist() == [[False, False, True, True], [False, True, False, False]]
    assert targets[keep].tolist() == [7, 8, 5]


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_token_losses_equal_the_full_logits_loss(family, tiny_path, batch_of):
    fam = models.get(family)
    model, processor = fam.load(tiny_path(family))
    model.eval()
    batch = batch_of(family, processor)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with torch.no_grad():
        loss_sum, n_tok = token_losses(model, batch, shift=fam.DECODER_ONLY)
    hook.remove()
    assert seen == [(int(n_tok.sum()), model.lm_head.out_features)]  # the head ran at label positions only

    with torch.no_grad():
        out = model(**batch)  # transformers' forward with labels: every position's logits and its loss
    logits, labels = out.logits.float(), batch["labels"]
    if fam.DECODER_ONLY:
        logits, labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    torch.testing.assert_close(loss_sum, ce.sum(dim=1), rtol=1e-5, atol=1e-5)
    assert n_tok.tolist() == (labels != IGNORE_INDEX).sum(dim=1).tolist()
    assert float(loss_sum.sum() / n_tok.sum()) == pytest.approx(float(out.loss), rel=1e-5)
