"""Closed-set classification: every candidate label scored by the model's likelihood."""

from __future__ import annotations

import pytest
import torch

from pipeline import models
from pipeline.data.collate import Collator, target_length
from pipeline.evaluation.predict import label_loglikelihoods

from .conftest import model_inputs, train_steps

LABELS = ["circle", "square", "red circle", "triangle"]


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_scores_are_the_models_own_label_likelihoods(family, tiny_path, records):
    model, processor = models.get(family).load(tiny_path(family))
    model.eval()
    record = next(r for r in records[family] if r["task"] == "classification")
    scores = label_loglikelihoods(
        model, processor, family, [record, record], LABELS, batch_size=3, progress=False
    )
    assert len(scores) == 2 and scores[0] == pytest.approx(scores[1], abs=1e-5)
    collator = Collator(processor, family)
    for label, score in zip(LABELS, scores[0], strict=True):
        batch = model_inputs(collator([{**record, "target": label}]))
        with torch.no_grad():
            mean_loss = model(**batch).loss.item()  # transformers' loss: mean over the label tokens
        n = target_length(processor, family, label)
        assert score == pytest.approx(-mean_loss * n, rel=1e-4)


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_the_trained_label_wins(family, tiny_path, records):
    model, processor = models.get(family).load(tiny_path(family))
    record = next(r for r in records[family] if r["task"] == "classification")
    assert record["target"] == "circle"
    train_steps(model, model_inputs(Collator(processor, family)([record])), steps=15, lr=3e-3)
    scores = label_loglikelihoods(model, processor, family, [record], LABELS, progress=False)[0]
    assert max(range(len(LABELS)), key=lambda j: scores[j]) == LABELS.index("circle")
    # the end token counts: "red circle" is not "circle" with a free prefix
    assert scores[LABELS.index("circle")] > scores[LABELS.index("red circle")]


def test_no_labels_is_an_error(tiny_path, records):
    model, processor = models.get("paligemma").load(tiny_path("paligemma"))
    with pytest.raises(ValueError, match="at least one label"):
        label_loglikelihoods(model, processor, "paligemma", records["paligemma"][:1], [], progress=False)
