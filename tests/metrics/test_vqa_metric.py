"""VQAv2 accuracy: the official leave-one-out formula and every normalisation rule, by hand."""

from __future__ import annotations

import pytest

from pipeline.metrics.vqa import (
    VQAAccuracy,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    question_accuracy,
    vqa_accuracy,
)


def humans(match: str, k: int, other: str = "zzz") -> list[str]:
    """Ten human answers, k of them equal to ``match``."""
    return [match] * k + [other] * (10 - k)


# Leave-one-out by hand, 10 humans, k of them match:
#   each matching human left out -> (k-1) matches among the other 9; each other one -> k.
K0, K1, K2, K3, K4 = (
    0.0,
    (9 * (1 / 3)) / 10,
    (2 * (1 / 3) + 8 * (2 / 3)) / 10,
    (3 * (2 / 3) + 7 * 1) / 10,
    1.0,
)


def test_hand_worked_constants():
    worked = [K1, K2, K3]
    assert worked == pytest.approx([0.3, 0.6, 0.9])


@pytest.mark.parametrize(("k", "expected"), [(0, K0), (1, K1), (2, K2), (3, K3), (4, K4), (10, 1.0)])
def test_leave_one_out_formula(k, expected):
    assert question_accuracy("cat", humans("cat", k, "dog")) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("two", humans("2", 3), K3),  # number word -> digit
        ("Two", humans("2", 2), K2),  # lower-cased
        ("none", humans("0", 1), K1),  # none -> 0
        ("ten", humans("10", 3), K3),
        ("the red car", humans("red car", 3), K3),  # article dropped
        ("a dog", humans("an dog", 2), K2),  # articles dropped on both sides
        ("dont know", humans("don't know", 2), K2),  # contraction table
        ("isnt", humans("isn't", 1), K1),
        ("1,000", humans("1000", 3), K3),  # digit,digit -> comma removed
        ("cat.", humans("cat", 3), K3),  # trailing period removed
        ("2.", humans("2", 2), K2),  # period after a digit removed too (official regex)
        ("2.5", humans("25", 3), 0.0),  # decimal point kept: 2.5 != 25
        ("2.5", humans("2.5", 3), K3),
        ("yes!", humans("yes", 3), K3),  # "!" not next to a space -> replaced by space, then split
        ("black/white", humans("black white", 3), K3),  # "/" -> space
        ("black / white", humans("black white", 2), K2),  # " /" -> removed, spaces collapse
        ("(left)", humans("left", 1), K1),
        ("  yes\n", humans("yes", 3), K3),  # newline / tab / outer spaces
        ("yes\tplease", humans("yes please", 3), K3),
        ("nope", humans("yes", 3), 0.0),
    ],
)
def test_normalisation_rules(prediction, answers, expected):
    assert question_accuracy(prediction, answers) == pytest.approx(expected)


def test_no_normalisation_when_all_humans_agree():
    # Official quirk: with one distinct human answer nothing but strip() is applied.
    assert question_accuracy("two", ["2"] * 10) == 0.0
    assert question_accuracy("2.", ["2"] * 10) == 0.0
    assert question_accuracy(" 2\n", ["2"] * 10) == 1.0
    # ... while one dissenting human switches normalisation on.
    assert question_accuracy("two", ["2"] * 9 + ["3"]) == 1.0


def test_helpers():
    assert process_punctuation("1,000") == "1000"
    assert process_punctuation("a,b") == "a b"
    assert process_punctuation("a, b") == "a b"
    assert process_punctuation("end.") == "end"
    assert process_punctuation("3.14") == "3.14"
    assert process_digit_article("The Two dogs") == "2 dogs"
    assert process_digit_article("i dont  know") == "i don't know"
    assert normalize_answer(" An apple!\t") == "apple"
    assert normalize_answer("somebody'd") == "somebodyd"  # official table, sic


def test_overall_and_per_answer_type():
    predictions = ["yes", "two", "red", "cat", "blue"]
    references = [humans("yes", 10), humans("2", 3), humans("red", 1), humans("cat", 2), humans("blue", 4)]
    types = ["yes/no", "number", "other", "other", None]
    out = vqa_accuracy(predictions, references, types)
    assert out["per_question"] == pytest.approx([1.0, K3, K1, K2, 1.0])
    assert out["accuracy"] == pytest.approx((1.0 + K3 + K1 + K2 + 1.0) / 5)
    assert out["per_answer_type"] == pytest.approx({"yes/no": 1.0, "number": K3, "other": (K1 + K2) / 2})
    assert out["count"] == 5
    assert out["count_per_answer_type"] == {"yes/no": 1, "number": 1, "other": 2}


def test_no_answer_types_and_empty_input():
    out = vqa_accuracy(["cat"], [humans("cat", 3)])
    assert out["accuracy"] == pytest.approx(K3) and out["per_answer_type"] == {}
    assert vqa_accuracy([], [], [])["accuracy"] == 0.0


def test_errors():
    with pytest.raises(ValueError):
        vqa_accuracy(["a"], [], [])
    with pytest.raises(ValueError):
        vqa_accuracy(["a"], [["a"]], ["other", "other"])
    with pytest.raises(ValueError):
        question_accuracy("a", [])


def test_evaluate_metric_matches_function():
    predictions = ["two", "dont know", "cat"]
    references = [humans("2", 3), humans("don't know", 2), humans("cat", 1)]
    types = ["number", "other", None]
    out = VQAAccuracy().compute(predictions=predictions, references=references, answer_types=types)
    expected = vqa_accuracy(predictions, references, types)
    assert out["accuracy"] == pytest.approx(expected["accuracy"]) == pytest.approx((K3 + K2 + K1) / 3)
    assert out["per_answer_type"] == pytest.approx(expected["per_answer_type"])
