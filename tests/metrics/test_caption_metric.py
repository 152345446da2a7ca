"""Caption metrics against pycocoevalcap called directly, and against values worked out by hand."""

from __future__ import annotations

import math
import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from pipeline.metrics import caption as caption_mod
from pipeline.metrics.caption import CaptionMetrics, caption_metrics, fallback_tokenize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer needs java")

PREDICTIONS = ["A man riding a horse on a beach.", "Two dogs playing in the grass", "a red bus"]
REFERENCES = [
    ["A man rides a horse on the beach.", "A person on a horse near the ocean.", "Man on horseback."],
    ["Two dogs are playing in the grass.", "Dogs play outside on a lawn."],
    ["A red double-decker bus on the street.", "A bus parked by the road.", "The red bus is big."],
]
KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l")


def direct_scores(gts: dict, res: dict) -> dict:
    """The independent path: pycocoevalcap's scorers on our own tokenised dicts."""
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"bleu_1": bleu[0], "bleu_2": bleu[1], "bleu_3": bleu[2], "bleu_4": bleu[3]} | {
        "cider": cider,
        "rouge_l": rouge,
    }


@needs_java
def test_ptb_path_equals_pycocoevalcap():
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(REFERENCES)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)})
    expected = direct_scores(gts, res)
    out = caption_metrics(PREDICTIONS, REFERENCES)
    assert out["tokenizer"] == "ptb" and out["count"] == 3
    for k in KEYS:
        assert out[k] == pytest.approx(expected[k], abs=1e-12), k
        assert len(out["per_image"][k]) == 3


def test_fallback_path_equals_pycocoevalcap_on_clean_text(monkeypatch):
    monkeypatch.setattr(caption_mod.shutil, "which", lambda name: None)
    # Plain captions: the PTB tokens are just the lower-cased words without the final period.
    gts = {i: [c.lower().rstrip(".") for c in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [p.lower().rstrip(".")] for i, p in enumerate(PREDICTIONS)}
    expected = direct_scores(gts, res)
    out = caption_metrics(PREDICTIONS, REFERENCES)
    assert out["tokenizer"] == "fallback"
    for k in KEYS:
        assert out[k] == pytest.approx(expected[k], abs=1e-12), k


def test_bleu_and_rouge_by_hand():
    # "a cat" vs "a cat sat": all 1- and 2-gram precisions are 1, brevity penalty exp(1 - 3/2).
    out = caption_metrics(["a cat"], [["a cat sat"]], use_ptb=False)
    assert out["bleu_1"] == pytest.approx(math.exp(-0.5), abs=1e-6)
    assert out["bleu_2"] == pytest.approx(math.exp(-0.5), abs=1e-6)
    # ROUGE-L: LCS("a cat sat on mat", "the cat sat on the mat") = 4; P = 4/5, R = 4/6, beta = 1.2.
    out = caption_metrics(["a cat sat on mat"], [["the cat sat on the mat"]], use_ptb=False)
    p, r, b2 = 4 / 5, 4 / 6, 1.2**2
    assert out["rouge_l"] == pytest.approx((1 + b2) * p * r / (r + b2 * p), abs=1e-9)


def test_identical_captions_score_high():
    refs = [
        ["a man riding a horse", "a person on a horse"],
        ["two dogs playing in the grass", "dogs on a lawn"],
    ]
    out = caption_metrics([r[0] for r in refs], refs, use_ptb=False)
    assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert out["bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert out["rouge_l"] == pytest.approx(1.0)
    assert out["cider"] > 3.0


def test_empty_prediction_scores_zero_without_crashing():
    out = caption_metrics(["", "a red bus"], [["a cat"], ["a red bus"]], use_ptb=False)
    assert out["per_image"]["rouge_l"] == [0.0, 1.0]
    assert out["per_image"]["cider"][0] == 0.0
    assert out["rouge_l"] == pytest.approx(0.5)


def test_fallback_tokenizer_mimics_ptb():
    # Right-hand sides are what pycocoevalcap's PTBTokenizer printed for the same inputs.
    cases = {
        "A dog's ball, (red) isn't \"here\"!": "a dog 's ball -lrb- red -rrb- is n't here",
        "e.g. 2.5 cats... [x] {y} black-and-white": (
            "e.g. 2.5 cats -lsb- x -rsb- -lcb- y -rcb- black-and-white"
        ),
        "Can't  won't 3:15 $5 50% a&b U.S. end.": "ca n't wo n't 3:15 $ 5 50 % a & b u.s. end",
        "!!!": "!!!",
        "": "",
    }
    for text, ptb in cases.items():
        assert fallback_tokenize(text) == ptb


@needs_java
def test_fallback_tokenizer_agrees_with_ptb():
    texts = [
        "A dog's ball, (red) isn't \"here\"!",
        "Can't  won't 3:15 $5 50% a&b U.S. end.",
        "A man, riding a horse; on the beach?",
    ]
    ptb = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert [fallback_tokenize(t) for t in texts] == [ptb[i][0] for i in range(len(texts))]


def test_input_errors_and_empty():
    with pytest.raises(ValueError):
        caption_metrics(["a"], [])
    with pytest.raises(ValueError):
        caption_metrics(["a"], [[]], use_ptb=False)
    out = caption_metrics([], [], use_ptb=False)
    assert out["count"] == 0 and out["cider"] == 0.0


def test_evaluate_metric_matches_function():
    out = CaptionMetrics().compute(predictions=PREDICTIONS, references=REFERENCES, use_ptb=False)
    expected = caption_metrics(PREDICTIONS, REFERENCES, use_ptb=False)
    for k in KEYS:
        assert out[k] == pytest.approx(expected[k]), k
    assert out["tokenizer"] == "fallback"


@needs_java
def test_ptb_tokenizer_survives_a_signal_to_the_process_group(tmp_path):
    """Java runs in its own session: the Ctrl-C or SIGTERM a training job's process group gets
    (and the trainer turns into a clean stop) does not reach it mid-evaluation. The job here is a
    child process in a session of its own, so the signal reaches nothing else."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "job.py"
    script.write_text(
        "import json, signal, sys\n"
        "from pipeline.metrics import caption\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append(1))  # the trainer's: record, don't die\n"
        "captions = {i: [f'A red circle, number {i}.'] * 3 for i in range(3000)}\n"
        "print('tokenizing', flush=True)\n"
        "for _ in range(100):  # until the signal has come (during a run of Java, most likely)\n"
        "    out = caption.ptb_tokenize(captions)\n"
        "    if got: break\n"
        "print(json.dumps({'signalled': bool(got), 'n': len(out), 'seven': out[7]}))\n"
    )
    job = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert job.stdout.readline().strip() == "tokenizing"
    time.sleep(0.3)  # Java is starting or tokenizing
    os.killpg(job.pid, signal.SIGINT)
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"signalled": True, "n": 3000, "seven": ["a red circle number 7"] * 3}


def test_languages_without_spaces_are_scored_on_characters():
    """CIDEr and BLEU on whitespace tokens would see a Chinese sentence as one word: one wrong
    character and nothing matches. Character tokens give the partial credit the text deserves."""
    assert caption_mod.character_tokenize("一只红色的猫。") == "一 只 红 色 的 猫"  # 。 is punctuation
    assert caption_mod.character_tokenize("赤い 猫、です") == "赤 い 猫 で す"
    refs = [["一只红色的猫"]]
    exact = caption_metrics(["一只红色的猫"], refs, language="zh")
    one_off = caption_metrics(["一只蓝色的猫"], refs, language="zh")
    assert exact["tokenizer"] == one_off["tokenizer"] == "characters"
    assert exact["bleu_1"] == pytest.approx(1.0)
    assert one_off["bleu_1"] == pytest.approx(5 / 6)  # 5 of 6 characters, same length: no brevity penalty
    # 2-grams 一只 只蓝 蓝色 色的 的猫: 3 of 5 in the reference (一只 色的 的猫)
    assert one_off["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    whole = caption_metrics(["一只蓝色的猫"], refs, use_ptb=False)  # as English: the line is one token
    assert whole["tokenizer"] == "fallback" and whole["bleu_1"] < 1e-6


def test_other_languages_take_the_unicode_fallback_never_ptb(monkeypatch):
    def no_java(*args, **kwargs):
        raise AssertionError("the PTB tokenizer is for English")

    monkeypatch.setattr(caption_mod, "ptb_tokenize", no_java)
    got = caption_metrics(["Eine rote Katze."], [["eine rote Katze"]], use_ptb=True, language="de")
    assert got["tokenizer"] == "fallback" and got["bleu_1"] == pytest.approx(1.0)
    assert fallback_tokenize("Eine GRÜNE Katze.") == "eine grüne katze"
