"""Caption metrics: BLEU-1..4, CIDEr-D and ROUGE-L, computed by pycocoevalcap itself.

Each prediction is scored against *all* reference captions of its image, with the scorers of
``pycocoevalcap`` (the COCO caption evaluation code): ``Bleu(4)`` (corpus-level BLEU, option
"closest" reference length), ``Cider`` (which is CIDEr-D: Gaussian length penalty sigma=6,
clipped counts, x10) and ``Rouge`` (ROUGE-L, beta=1.2). The numbers equal what
``COCOEvalCap`` reports for the same predictions and references.

Tokenisation:

* ``"ptb"`` (used when ``java`` is on PATH): pycocoevalcap's ``PTBTokenizer`` (Stanford
  CoreNLP 3.4.1 jar shipped in the wheel, lower-cased, punctuation tokens removed), exactly
  the COCO pipeline. It spawns one Java process per call (well under a second).
* ``"fallback"`` (no Java): a pure-Python approximation of that tokenizer: lower-case;
  split clitics (``dog's`` -> ``dog 's``, ``can't`` -> ``ca n't``), currency/percent/``&``
  and other symbols into their own tokens; keep hyphenated words, numbers like ``2.5`` /
  ``1,000`` / ``3:15`` and dotted abbreviations (``u.s.``) whole; brackets become ``-lrb-``
  etc. (kept, as the PTB path keeps them); quotes and pycocoevalcap's ``PUNCTUATIONS`` are
  removed. On ordinary captions it gives the same tokens; on odd punctuation it may differ,
  so scores computed with it are close to, not guaranteed equal to, the official ones. The
  result's ``"tokenizer"`` key says which one ran.
* ``"characters"`` (``language`` one of ``CHARACTER_LANGUAGES``: Chinese, Japanese, Thai, Lao,
  Khmer, Burmese, written without spaces between words): every character that is not
  whitespace or punctuation is a token. Split on whitespace, a whole sentence there would be one
  "word", and one wrong character would zero every n-gram match of BLEU and CIDEr.

``language`` (an ISO 639-1 code, default ``"en"``) picks the tokenizer: the PTB tokenizer is
English's; any other language written with spaces takes the fallback (its word pattern is Unicode:
German, Korean, ... keep their letters), whichever Java says.

CIDEr-D's document frequencies come from the references of the evaluated set, so CIDEr is
only comparable between runs on the same set of images (as in COCO evaluation).

Not included: SPICE needs Stanford CoreNLP models that pycocoevalcap downloads on first use,
which is impossible offline; METEOR (Java, 2 GB heap) is left out to keep evaluation light.

An empty prediction (or one that tokenises to nothing) scores 0 on every metric; for ROUGE-L
we set that 0 ourselves, because pycocoevalcap's ``Rouge`` divides by the candidate length.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Sequence

import evaluate
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from pipeline.metrics import TEXT, TEXTS, metric_info

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_DROP = {*PUNCTUATIONS, '"'}
_TOKEN = re.compile(
    r"\w+(?=n't\b)"  # "ca" of "can't", "do" of "don't"
    r"|n't\b"
    r"|'(?:s|re|ve|ll|d|m)\b"  # clitics
    r"|(?:[a-z]\.){2,}"  # abbreviations: u.s., e.g.
    r"|\d+(?:[.,:]\d+)+"  # 2.5, 1,000, 3:15
    r"|\w+(?:-\w+)*"  # words, hyphenated words
    r"|([^\w\s])\1*"  # a run of one symbol: "!!!", "...", "--", "$", "%"
)


def fallback_tokenize(text: str) -> str:
    """Pure-Python approximation of pycocoevalcap's PTB tokenisation (see module docstring)."""
    text = text.replace("\n", " ").lower()
    tokens = (_BRACKETS.get(m.group(0), m.group(0)) for m in _TOKEN.finditer(text))
    return " ".join(t for t in tokens if t not in _DROP)


# written without spaces between words: tokens are characters (see the module docstring)
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my"})


def character_tokenize(text: str) -> str:
    """Characters as tokens, whitespace and punctuation (any Unicode P* category) dropped."""
    kept = (c for c in text.lower() if not c.isspace() and not unicodedata.category(c).startswith("P"))
    return " ".join(kept)


def _tokenize(captions: dict[int, list[str]], use_ptb: bool, language: str = "en") -> dict[int, list[str]]:
    if language in CHARACTER_LANGUAGES:
        return {k: [character_tokenize(c) for c in v] for k, v in captions.items()}
    if not use_ptb:
        return {k: [fallback_tokenize(c) for c in v] for k, v in captions.items()}
    out = ptb_tokenize(captions)
    if any(len(out.get(k, [])) != len(v) for k, v in captions.items()):
        raise RuntimeError("PTBTokenizer (java) returned fewer lines than captions sent; is java working?")
    return out


def ptb_tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's `PTBTokenizer.tokenize`, the same command and the same post-processing, run
    so that it survives what a training job meets: Java runs in its own session (a Ctrl-C or
    SIGTERM sent to the job's process group, which the trainer turns into a clean stop, must not
    kill it mid-evaluation), its input lives in a temporary folder rather than the installed
    package's, and its progress line is not printed."""
    import subprocess
    import tempfile
    from pathlib import Path

    from pycocoevalcap.tokenizer import ptbtokenizer

    keys = [k for k, v in captions.items() for _ in range(len(v))]
    sentences = "\n".join(c.replace("\n", " ") for v in captions.values() for c in v)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes(sentences.encode())
        jar, main = ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR, "edu.stanford.nlp.process.PTBTokenizer"
        cmd = ["java", "-cp", jar, main, "-preserveLines", "-lowerCase", str(path)]
        cwd = Path(ptbtokenizer.__file__).parent  # the jar's folder: its path is relative
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, start_new_session=True, check=False)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise RuntimeError(f"PTBTokenizer (java) failed: {why[0]}")
    out: dict[int, list[str]] = {}
    for k, line in zip(keys, done.stdout.decode().split("\n"), strict=False):
        out.setdefault(k, []).append(" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS))
    return out


def caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    use_ptb: bool | None = None,
    language: str = "en",
) -> dict:
    """Score one caption per image against all of that image's reference captions.

    ``use_ptb``: ``None`` picks the PTB (Java) tokenizer when ``java`` is on PATH, else the
    fallback; only for English (``language``, see the module docstring). Returns ``{"bleu_1"..
    "bleu_4", "cider", "rouge_l": float, "tokenizer": "ptb" | "fallback" | "characters", "count":
    int, "per_image": {"bleu_1".."bleu_4", "cider", "rouge_l": [float]}}``.
    BLEU is corpus-level (as in pycocoevalcap); CIDEr and ROUGE-L are means over images.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"caption {i} has no reference captions")
    language = language.split("-")[0].lower()  # a BCP 47 tag's primary language: zh-Hant -> zh
    if language != "en":
        use_ptb = False
    elif use_ptb is None:
        use_ptb = shutil.which("java") is not None
    keys = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l")
    result: dict = {k: 0.0 for k in keys}
    tokenizer = "characters" if language in CHARACTER_LANGUAGES else "ptb" if use_ptb else "fallback"
    result.update(tokenizer=tokenizer, count=len(predictions))
    result["per_image"] = {k: [] for k in keys}
    if not predictions:
        return result

    n = len(predictions)
    # One tokenizer call for predictions and references together (ids n.. are the predictions).
    tok = _tokenize(
        {**{i: list(r) for i, r in enumerate(references)}, **{n + i: [p] for i, p in enumerate(predictions)}},
        use_ptb,
        language,
    )
    gts = {i: tok[i] for i in range(n)}
    res = {i: tok[n + i] for i in range(n)}

    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_per = Cider().compute_score(gts, res)
    rouge_per = [Rouge().calc_score(res[i], gts[i]) if res[i][0].split() else 0.0 for i in range(n)]
    for k in range(4):
        result[f"bleu_{k + 1}"] = float(bleu[k])
        result["per_image"][f"bleu_{k + 1}"] = [float(s) for s in bleu_per[k]]
    result["cider"] = float(cider)
    result["per_image"]["cider"] = [float(s) for s in cider_per]
    result["rouge_l"] = float(np.mean(rouge_per))
    result["per_image"]["rouge_l"] = [float(s) for s in rouge_per]
    return result


_DESCRIPTION = "COCO caption metrics (BLEU-1..4, CIDEr-D, ROUGE-L) via pycocoevalcap; see module docstring."
_CITATION = """@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and others},
  journal={arXiv:1504.00325}, year={2015}}"""
_INPUTS = """
Args:
    predictions: list of str, one generated caption per image.
    references: list of list of str, all reference captions of each image.
    use_ptb: optional bool; None = PTB tokenizer if java is on PATH, else the fallback.
    language: ISO 639-1 code of the captions (default "en"); zh, ja, th, lo, km, my: character tokens.
Returns: the dict of ``caption_metrics``.
"""


class CaptionMetrics(evaluate.Metric):
    """``evaluate`` wrapper of :func:`caption_metrics`; defined locally, so it works offline."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS, predictions=TEXT, references=TEXTS)

    def _compute(self, predictions, references, use_ptb=None, language="en") -> dict:
        return caption_metrics(predictions, references, use_ptb=use_ptb, language=language)
