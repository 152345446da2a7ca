"""OCR metrics: hand-worked CER/WER (corpus-level), ANLS at its threshold, CJK, empty texts."""

from __future__ import annotations

import pytest

from pipeline.metrics.ocr import (
    OCRMetrics,
    anls_score,
    normalize_text,
    normalized_levenshtein,
    ocr_metrics,
)


def test_kitten_sitting():
    # k->s, e->i, +g: 3 edits over 6 reference characters; one word substituted
    out = ocr_metrics(["sitting"], ["kitten"])
    assert (out["char_edits"], out["ref_chars"]) == (3, 6)
    assert out["cer"] == 0.5
    assert (out["word_edits"], out["ref_words"]) == (1, 1)
    assert out["wer"] == 1.0
    assert out["per_example_cer"] == [0.5]


def test_hand_worked_wer():
    # "sat" -> "sit" (substitution), second "the" deleted: 2 word edits over 6 words;
    # characters: a->i and "the " deleted = 5 edits over 22
    out = ocr_metrics(["the cat sit on mat"], ["the cat sat on the mat"])
    assert out["wer"] == pytest.approx(2 / 6)
    assert out["cer"] == pytest.approx(5 / 22)
    # case, punctuation and inner spaces are characters; outer whitespace is not
    assert ocr_metrics(["  Hello, World \n"], ["hello world"])["char_edits"] == 3
    assert ocr_metrics(["a  b"], ["a b"])["wer"] == 0.0  # words: split on any whitespace run


def test_corpus_level_not_mean_of_samples():
    # 1 edit in a 1-character reference, none in a 10-character one
    out = ocr_metrics(["b", "abcdefghij"], ["a", "abcdefghij"])
    assert out["cer"] == pytest.approx(1 / 11)
    assert out["per_example_cer"] == [1.0, 0.0]
    assert sum(out["per_example_cer"]) / 2 == 0.5  # what a mean of per-sample rates would say
    # words likewise: 1 wrong word of 1, then 0 of 4 -> 1/5, not 0.5
    assert ocr_metrics(["x", "a b c d"], ["y", "a b c d"])["wer"] == pytest.approx(1 / 5)


@pytest.mark.parametrize(
    ("prediction", "references", "want"),
    [
        ("abce", ["abcd"], 0.75),  # NL 1/4
        ("abd", ["abc"], 2 / 3),  # NL 1/3
        ("ab", ["ac"], 0.0),  # NL exactly 0.5: >= tau, so 0
        ("abcd", ["abef"], 0.0),  # NL 2/4 = 0.5: 0
        ("abcde", ["abxyz"], 0.0),  # NL 3/5
        ("abcdefghij", ["abcdefghxy"], 0.8),  # NL 0.2
        ("  Hello   WORLD ", ["hello world"], 1.0),  # lower-cased, whitespace collapsed
        ("ab", ["ac", "xyz", "ab"], 1.0),  # best over references
        ("abd", ["xyz", "abc"], 2 / 3),
        ("", ["abc"], 0.0),
        ("", [""], 1.0),  # two empty strings: NL 0
    ],
)
def test_anls(prediction, references, want):
    assert anls_score(prediction, references) == pytest.approx(want)


def test_anls_threshold_parameter():
    assert normalized_levenshtein("ab", "ac") == 0.5
    assert anls_score("ab", ["ac"], threshold=0.6) == 0.5
    assert ocr_metrics(["ab"], ["ac"], anls_threshold=0.6)["anls"] == 0.5
    with pytest.raises(ValueError):
        anls_score("a", [])


def test_cjk():
    # one character of four differs: CER 1/4; the line is one whitespace "word", so WER is 1
    out = ocr_metrics(["東京都廳"], ["東京都庁"])
    assert out["cer"] == 0.25
    assert out["wer"] == 1.0
    assert out["anls"] == 0.75
    assert ocr_metrics(["吾輩は猫である"], ["吾輩は猫である"])["cer"] == 0.0
    # exact match normalises NFKC: full-width Latin and half-width katakana equal their usual forms
    assert normalize_text("ＡＢＣ　１２３") == "ABC 123"
    assert normalize_text("ｶﾀｶﾅ") == "カタカナ"
    out = ocr_metrics(["ＡＢＣ１", "ｶﾀｶﾅ"], ["ABC1", "カタカナ"])
    assert out["exact_match"] == 1.0
    assert out["cer"] == 1.0  # CER compares the characters as written (4 + 4 substitutions of 8)


def test_exact_match():
    out = ocr_metrics(["hello   world ", "Hello world", "no"], ["hello world", "hello world", ["x", " no"]])
    assert out["exact_match"] == pytest.approx(2 / 3)  # case kept; any reference counts


def test_empty_prediction():
    out = ocr_metrics([""], ["hello world"])
    assert out["cer"] == 1.0  # 11 deletions over 11
    assert out["wer"] == 1.0
    assert out["anls"] == 0.0
    assert out["exact_match"] == 0.0


def test_empty_reference():
    # an empty reference adds the prediction's length to the edits and nothing to the denominator
    out = ocr_metrics(["abc", "abcd"], ["", "abcd"])
    assert (out["char_edits"], out["ref_chars"]) == (3, 4)
    assert out["cer"] == 0.75
    assert (out["word_edits"], out["ref_words"]) == (1, 1)
    assert out["per_example_cer"] == [None, 0.0]
    # no reference character in the whole corpus: CER and WER undefined
    blank = ocr_metrics(["", "x"], ["", " "])
    assert blank["cer"] is None and blank["wer"] is None
    assert blank["char_edits"] == 1
    assert blank["per_example_anls"] == [1.0, 0.0]
    assert blank["exact_match"] == 0.5


def test_several_references():
    # CER/WER use the first reference; ANLS and exact match all of them
    out = ocr_metrics(["dog"], [["cat", "dog"]])
    assert out["cer"] == 1.0
    assert out["anls"] == 1.0
    assert out["exact_match"] == 1.0


def test_empty_input_and_errors():
    out = ocr_metrics([], [])
    assert out["cer"] is None and out["wer"] is None and out["anls"] is None and out["exact_match"] is None
    assert out["num_examples"] == 0
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        ocr_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="record 1: no reference text"):
        ocr_metrics(["a", "b"], ["a", []])
    with pytest.raises(ValueError, match="record 1: prediction None is not a string"):
        ocr_metrics(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match="record 0: reference 3 is not a string"):
        ocr_metrics(["a"], [["a", 3]])


def test_evaluate_metric_matches_plain_function():
    predictions = ["sitting", "the cat sit on mat", "", "東京都廳"]
    references = ["kitten", ["the cat sat on the mat", "a cat"], "", ["東京都庁"]]
    want = ocr_metrics(predictions, references)
    assert OCRMetrics().compute(predictions=predictions, references=references) == want
    metric = OCRMetrics()
    metric.add_batch(predictions=predictions[:2], references=references[:2])
    metric.add(prediction=predictions[2], reference=references[2])
    metric.add(prediction=predictions[3], reference=references[3])
    assert metric.compute() == want
    assert OCRMetrics().compute(predictions=["ab"], references=["ac"], anls_threshold=0.6)["anls"] == 0.5
