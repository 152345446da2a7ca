"""VQAv2 accuracy, exactly as the official evaluation code computes it.

Reference: ``vqaEval.py`` in GT-Vision-Lab/VQA (PythonEvaluationTools/vqaEvaluation).
This module reproduces it rule for rule, quirks included:

* Every answer (prediction and the ten human answers) has ``\\n`` and ``\\t`` replaced by
  a space and is stripped.
* **Normalisation only when the humans disagree.** Punctuation and digit/article processing
  (``process_punctuation`` then ``process_digit_article``) is applied to the prediction *and*
  the human answers only when the human answers are not all identical
  (``len(set(gt_answers)) > 1``). When all ten humans wrote the same string, the prediction
  is compared to it verbatim (after the strip above): against ten ``"2"`` answers the
  prediction ``"two"`` scores 0, while against a mixed set it is mapped to ``"2"``. The
  official code does the same; we keep it so numbers match published ones.
* ``process_punctuation``: each character of the official ``punct`` list is deleted when it
  is next to a space in the text or when the text holds a digit-comma-digit (``1,000``), and
  replaced by a space otherwise; then periods not followed by a digit are deleted (the
  official ``periodStrip`` regex ``(?!<=\\d)(\\.)(?!\\d)`` has a typo'd look-behind, so a
  period after a digit is deleted too, e.g. ``"2."`` -> ``"2"``, while ``"2.5"`` is kept).
  The official call passes ``re.UNICODE`` as the *count* argument of ``re.sub``, so at most
  32 periods are removed; reproduced.
* ``process_digit_article``: lower-case, split on whitespace, number words ``none``/``zero``
  ..``ten`` -> digits, articles ``a``/``an``/``the`` dropped, words in the official
  ``contractions`` table mapped (``dont`` -> ``don't``), joined with single spaces.
* Accuracy of one question: for each of the N human answers, leave it out and take
  ``min(1, #matches among the other N-1 / 3)``; average the N values. With 10 humans and
  k matches: ``(k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10``. (The official code
  leaves out one answer *dict*; dicts carry a unique ``answer_id``, so it is the same as
  leaving out one position, which is what we do.)
* Overall accuracy is the mean over questions; per answer type (``yes/no``, ``number``,
  ``other``, or any other string given) the mean over that type's questions.

Values are fractions in [0, 1]; the official script prints them x100 rounded to 2 decimals.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import evaluate

from pipeline.metrics import TEXT, TEXTS, metric_info

CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",  # sic: the official table maps this one backwards
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
# Verbatim from the official code, including the malformed look-behind "(?!<=\d)".
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
ANSWER_TYPES = ("yes/no", "number", "other")


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``."""
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official code passes re.UNICODE (= 32) positionally, i.e. as ``count``.
    return PERIOD_STRIP.sub("", out, int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Whitespace clean-up, punctuation, then digits/articles/contractions (the full chain)."""
    return process_digit_article(process_punctuation(_clean(text)))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy of one prediction against the human answers (usually ten)."""
    if not answers:
        raise ValueError("a VQA question needs at least one reference answer")
    gts = [_clean(a) for a in answers]
    pred = _clean(prediction)
    if len(set(gts)) > 1:  # official quirk: normalise only when the humans disagree
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    total_matches = sum(a == pred for a in gts)
    accs = [min(1.0, (total_matches - (a == pred)) / 3.0) for a in gts]
    return sum(accs) / len(accs)


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    answer_types: Sequence[str | None] | None = None,
) -> dict:
    """VQAv2 accuracy of ``predictions`` against the human ``references`` (one list per question).

    Returns ``{"accuracy": float, "per_answer_type": {type: float}, "count": int,
    "count_per_answer_type": {type: int}, "per_question": [float, ...]}``; accuracies are
    fractions in [0, 1] (0.0 when there is nothing to average). A ``None`` answer type
    counts toward the overall accuracy only.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if answer_types is None:
        answer_types = [None] * len(predictions)
    if len(answer_types) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(answer_types)} answer types")
    per_question = [question_accuracy(p, r) for p, r in zip(predictions, references, strict=True)]
    by_type: dict[str, list[float]] = defaultdict(list)
    for acc, t in zip(per_question, answer_types, strict=True):
        if t is not None:
            by_type[t].append(acc)
    return {
        "accuracy": sum(per_question) / len(per_question) if per_question else 0.0,
        "per_answer_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
        "count": len(per_question),
        "count_per_answer_type": {t: len(v) for t, v in sorted(by_type.items())},
        "per_question": per_question,
    }


_DESCRIPTION = "VQAv2 accuracy (official GT-Vision-Lab/VQA rules); see pipeline.metrics.vqa."
_CITATION = """@inproceedings{goyal2017making,
  title={Making the V in VQA Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR}, year={2017}}"""
_INPUTS = """
Args:
    predictions: list of str, one answer per question.
    references: list of list of str, the human answers of each question (ten in VQAv2).
    answer_types: list of str or None ("yes/no", "number", "other"); pass [None] * n if unknown.
Returns: the dict of ``vqa_accuracy``.
"""


class VQAAccuracy(evaluate.Metric):
    """``evaluate`` wrapper of :func:`vqa_accuracy`; defined locally, so it works offline."""

    def _info(self) -> evaluate.MetricInfo:
        features = {"predictions": TEXT, "references": TEXTS, "answer_types": TEXT}
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS, **features)

    def _compute(self, predictions, references, answer_types=None) -> dict:
        return vqa_accuracy(predictions, references, answer_types)
