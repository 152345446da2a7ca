"""OCR and text-answer metrics: corpus-level CER and WER, ANLS and normalised exact match.

Edit distances are Levenshtein distances (insertions, deletions and substitutions, each cost 1)
computed by ``rapidfuzz.distance.Levenshtein``, on characters for CER and on word lists for WER.

* ``cer``: total character edits over total reference characters, summed over the corpus first
  (the standard definition, as ``jiwer.cer`` sums it too): not a mean of per-sample rates, which
  would weight a two-character label like a page of text. Both strings are stripped of leading and
  trailing whitespace; case, inner whitespace and punctuation count as characters.
* ``wer``: the same over whitespace-separated words (``str.split()``). WER on whitespace tokens is
  meaningless for Chinese or Japanese text, written without spaces: a whole line is one "word", so
  one wrong character makes the line's WER 1. Read CER there.
* ``anls``: Average Normalized Levenshtein Similarity (ST-VQA, Biten et al. 2019; DocVQA). Per
  question, over its references: ``s = 1 - NL`` with ``NL = distance / max(len(pred), len(ref))``,
  set to 0 when ``NL >= tau`` (tau = 0.5); the question scores the best ``s``; ``anls`` is the mean
  over questions. Both sides are lower-cased, stripped and have whitespace runs collapsed to one
  space first (as the DocVQA / InfographicVQA scoring scripts do). Two empty strings have NL 0 (score 1).
  Note: this is the paper's rule, ``NL >= tau`` -> 0. The Robust Reading Competition's scoring
  script writes it as ``1 - NL < tau`` -> 0, which keeps 0.5 at exactly ``NL = 0.5`` (1 edit in 2
  characters, 2 in 4) where this gives 0; it also divides by the lengths of the un-normalised
  strings. Numbers from that server can differ from these on such answers.
* ``exact_match``: fraction of records whose prediction equals one of the references after NFKC
  normalisation, whitespace runs collapsed and stripping (case kept).

References may be one string or a list of strings per record: ANLS and exact match use all of
them, CER and WER the first.

Empty references: an empty reference contributes nothing to the denominator and the whole
prediction (its length in characters / words) to the edit count, so text hallucinated on a blank
input is still penalised. If the corpus has no reference character (word) at all, ``cer``
(``wer``) is None, being undefined; likewise a record's entry in ``per_example_cer``. With no
records, every rate is None.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import evaluate
from rapidfuzz.distance import Levenshtein

from pipeline.metrics import TEXT, TEXTS, metric_info

ANLS_THRESHOLD = 0.5
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, stripped: what exact match compares."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def _anls_form(text: str) -> str:
    return " ".join(text.lower().split())


def normalized_levenshtein(a: str, b: str) -> float:
    """Levenshtein distance over the longer length; 0.0 for two empty strings."""
    longest = max(len(a), len(b))
    return Levenshtein.distance(a, b) / longest if longest else 0.0


def anls_score(prediction: str, references: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one question: the best ``1 - NL`` over its references, 0 where ``NL >= threshold``."""
    if not references:
        raise ValueError("an ANLS question needs at least one reference answer")
    pred = _anls_form(prediction)
    best = 0.0
    for ref in references:
        nl = normalized_levenshtein(pred, _anls_form(ref))
        if nl < threshold:
            best = max(best, 1.0 - nl)
    return best


def _reference_list(reference: Any, index: int) -> list[str]:
    refs = [reference] if isinstance(reference, str) else list(reference or [])
    if not refs:
        raise ValueError(f"record {index}: no reference text")
    for ref in refs:
        if not isinstance(ref, str):
            raise ValueError(f"record {index}: reference {ref!r} is not a string")
    return refs


def ocr_metrics(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    anls_threshold: float = ANLS_THRESHOLD,
) -> dict[str, Any]:
    """CER, WER, ANLS and exact match of ``predictions`` against ``references`` (one string or a
    list of strings per record).

    Returns ``{"cer": float | None, "wer": float | None, "anls": float | None, "exact_match":
    float | None, "num_examples": int, "char_edits": int, "ref_chars": int, "word_edits": int,
    "ref_words": int, "per_example_cer": [float | None, ...], "per_example_anls": [float, ...]}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    char_edits = ref_chars = word_edits = ref_words = exact = 0
    per_cer: list[float | None] = []
    per_anls: list[float] = []
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(prediction, str):
            raise ValueError(f"record {i}: prediction {prediction!r} is not a string")
        refs = _reference_list(reference, i)
        pred, first = prediction.strip(), refs[0].strip()
        edits = Levenshtein.distance(pred, first)
        char_edits += edits
        ref_chars += len(first)
        per_cer.append(edits / len(first) if first else None)
        word_edits += Levenshtein.distance(pred.split(), first.split())
        ref_words += len(first.split())
        per_anls.append(anls_score(prediction, refs, anls_threshold))
        exact += normalize_text(prediction) in {normalize_text(r) for r in refs}
    n = len(per_anls)
    return {
        "cer": char_edits / ref_chars if ref_chars else None,
        "wer": word_edits / ref_words if ref_words else None,
        "anls": sum(per_anls) / n if n else None,
        "exact_match": exact / n if n else None,
        "num_examples": n,
        "char_edits": char_edits,
        "ref_chars": ref_chars,
        "word_edits": word_edits,
        "ref_words": ref_words,
        "per_example_cer": per_cer,
        "per_example_anls": per_anls,
    }


_DESCRIPTION = "Corpus CER and WER, ANLS and normalised exact match; see pipeline.metrics.ocr."
_CITATION = """@inproceedings{biten2019scene,
  title={Scene Text Visual Question Answering},
  author={Biten, Ali Furkan and Tito, Ruben and Mafla, Andres and Gomez, Lluis and Rusinol, Marcal and
          Valveny, Ernest and Jawahar, C.V. and Karatzas, Dimosthenis},
  booktitle={ICCV}, year={2019}}"""
_INPUTS = """
Args:
    predictions: list of str, one text per record.
    references: list of str or list of list of str, the reference text(s) of each record.
    anls_threshold: tau of ANLS (default 0.5).
Returns: the dict of ``ocr_metrics``.
"""


def _as_list(reference: Any) -> Any:
    return [reference] if isinstance(reference, str) else reference


class OCRMetrics(evaluate.Metric):
    """``evaluate`` wrapper of :func:`ocr_metrics`, usable offline:
    ``OCRMetrics().compute(predictions=[...], references=[...])``; a single reference string is
    stored as a list of one."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS, predictions=TEXT, references=TEXTS)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of records (single reference strings wrapped into lists)."""
        references = None if references is None else [_as_list(r) for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one record (a single reference string wrapped into a list)."""
        return super().add(prediction=prediction, reference=_as_list(reference), **kwargs)

    def _compute(self, predictions, references, anls_threshold: float = ANLS_THRESHOLD) -> dict[str, Any]:
        return ocr_metrics(predictions, references, anls_threshold)
