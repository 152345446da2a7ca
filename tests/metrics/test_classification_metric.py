"""Classification accuracy, per-class accuracy and confusion matrix on a hand-counted case."""

from __future__ import annotations

import pytest

from pipeline.metrics.classification import (
    OTHER,
    ClassificationAccuracy,
    classification_metrics,
    normalize_label,
)

PREDS = ["Cat.", "  dog ", "cat", "Red  Fox!", "bird", "DOG"]
REFS = ["cat", "dog", "dog", "red fox", "cat", "fox"]
LABELS = ["cat", "dog", "red fox"]


@pytest.mark.parametrize(
    ("text", "want"),
    [("Cat.", "cat"), ("  Red \t Fox!! ", "red fox"), ("dog", "dog"), ("", ""), ("a.b", "a.b")],
)
def test_normalize_label(text, want):
    assert normalize_label(text) == want


def test_hand_counted_case():
    out = classification_metrics(PREDS, REFS, LABELS)
    # correct: cat/cat, dog/dog, red fox/red fox -> 3 of 6
    assert out["accuracy"] == 0.5
    assert out["num_examples"] == 6
    assert out["num_correct"] == 3
    assert out["num_other"] == 1  # "bird"
    # "fox" is a reference outside LABELS: appended as a row
    assert out["confusion_matrix"]["rows"] == ["cat", "dog", "red fox", "fox"]
    assert out["confusion_matrix"]["columns"] == ["cat", "dog", "red fox", "fox", OTHER]
    assert out["confusion_matrix"]["matrix"] == [
        [1, 0, 0, 0, 1],  # cat: cat, bird
        [1, 1, 0, 0, 0],  # dog: dog, cat
        [0, 0, 1, 0, 0],  # red fox
        [0, 1, 0, 0, 0],  # fox: DOG
    ]
    assert out["per_class_accuracy"] == {"cat": 0.5, "dog": 0.5, "red fox": 1.0, "fox": 0.0}
    assert out["support"] == {"cat": 2, "dog": 2, "red fox": 1, "fox": 1}


def test_labels_from_references_and_unused_label():
    out = classification_metrics(["b", "a"], ["a", "a"], labels=["z"])
    assert out["confusion_matrix"]["rows"] == ["z", "a"]
    assert out["confusion_matrix"]["matrix"] == [[0, 0, 0], [0, 1, 1]]
    assert out["per_class_accuracy"] == {"z": None, "a": 0.5}
    assert classification_metrics(["b"], ["a"])["confusion_matrix"]["columns"] == ["a", OTHER]


def test_empty_and_mismatched():
    assert classification_metrics([], [])["accuracy"] is None
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        classification_metrics(["a", "b"], ["a"])


def test_evaluate_metric_matches_plain_function():
    got = ClassificationAccuracy().compute(predictions=PREDS, references=REFS, labels=LABELS)
    assert got == classification_metrics(PREDS, REFS, LABELS)
