"""`uvft eval --limit` and `eval.per_task` score a seeded sample that represents the split (by class for
classification, by source for every task), recorded in metrics.json, and a base is compared only on the
records the fine-tuned model was scored on."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.evaluation.run import print_metrics, sample_notes
from pipeline.evaluation.score import same_records, sample_split

SHAPES = ("circle", "diamond", "square", "star", "triangle")


def _split() -> dict[str, list]:
    """A validation split as an ImageFolder and two caption sources lay it out: classification
    records sorted by class (40 of each), captions from two sources (70 + 30), 50 questions."""
    rows = [("classification", "classes", s, f"{s}/{i}") for s in SHAPES for i in range(40)]
    rows += [("caption", "coco", None, str(i)) for i in range(70)]
    rows += [("caption", "web", None, str(i)) for i in range(30)]
    rows += [("vqa", "vqav2", None, str(i)) for i in range(50)]
    return {
        "task": [r[0] for r in rows],
        "source": [r[1] for r in rows],
        "label": [r[2] for r in rows],
        "id": [r[3] for r in rows],
    }


def _picked(ds: dict[str, list], indices: list[int], column: str, task: str) -> Counter:
    return Counter(ds[column][i] for i in indices if ds["task"][i] == task)


def test_a_limit_spreads_over_classes_and_sources():
    ds = _split()
    sample = sample_split(ds, 20, seed=0)
    # the first 20 classification records are all circles; the sample has four of each class
    assert _picked(ds, sample.indices, "label", "classification") == {s: 4 for s in SHAPES}
    # sources in proportion: one each, then 18 by what each has left (69:29), largest remainder
    assert _picked(ds, sample.indices, "source", "caption") == {"coco": 14, "web": 6}
    assert sample.records == {"classification": 20, "caption": 20, "vqa": 20}
    assert sample.of == {"classification": 200, "caption": 100, "vqa": 50}
    assert sample.indices == sorted(sample.indices) and len(set(sample.indices)) == 60
    assert sample.describe() == {
        "limit": 20,
        "seed": 0,
        "records": {"classification": 20, "caption": 20, "vqa": 20},
        "of": {"classification": 200, "caption": 100, "vqa": 50},
        "fingerprint": sample.fingerprint,
    }


def test_the_sample_is_a_seeded_draw():
    ds = _split()
    first, again, other = sample_split(ds, 20, 0), sample_split(ds, 20, 0), sample_split(ds, 20, 1)
    assert first.indices == again.indices and first.fingerprint == again.fingerprint
    assert first.indices != other.indices and first.fingerprint != other.fingerprint
    # another seed draws other records, in the same shares
    assert _picked(ds, other.indices, "label", "classification") == {s: 4 for s in SHAPES}


def test_fewer_records_than_strata_and_the_whole_split():
    ds = _split()
    small = sample_split(ds, 3, seed=0)
    classes = _picked(ds, small.indices, "label", "classification")
    assert sum(classes.values()) == 3 and set(classes.values()) == {1}  # three classes, one each
    whole = sample_split(ds, None, seed=0)
    assert whole.indices == list(range(len(ds["task"])))
    assert whole.records == whole.of and whole.limit is None
    assert sample_split(ds, 10_000, seed=0).fingerprint == whole.fingerprint


def test_same_records_compares_fingerprints():
    a = {"sample": {"fingerprint": "x"}}
    assert same_records(a, {"sample": {"fingerprint": "x"}})
    assert not same_records(a, {"sample": {"fingerprint": "y"}})
    assert not same_records(a, {"vqa": {}})  # a base scored before samples were recorded
    assert same_records({"vqa": {}}, {"vqa": {}})  # two such: compared by their counts, as before
    assert not same_records({"counts": {"vqa": 3}}, {"counts": {"vqa": 4}})


METRICS = {
    "vqa": {"accuracy": 0.5},
    "counts": {"vqa": 20},
    "sample": {
        "limit": 20,
        "seed": 0,
        "records": {"vqa": 20},
        "of": {"vqa": 504},
        "fingerprint": "f1",
    },
}


def test_uvft_eval_prints_the_base_only_for_the_same_records(capsys: pytest.CaptureFixture[str]):
    base = {**METRICS, "vqa": {"accuracy": 0.25}}
    print_metrics(METRICS, base)
    out = capsys.readouterr().out
    assert "0.250" in out and "base" in out
    assert "a sample, not the whole split: 20 of 504 vqa records (--limit 20, seed 0" in out
    other = {**base, "sample": {**METRICS["sample"], "fingerprint": "f2"}}
    print_metrics(METRICS, other)
    out = capsys.readouterr().out
    assert "0.250" not in out
    assert "base: not shown, `uvft eval --base` scored other records" in out


def test_a_whole_split_has_no_sample_note():
    whole = {**METRICS, "sample": {**METRICS["sample"], "limit": None, "records": {"vqa": 504}}}
    assert sample_notes(whole) == [] and sample_notes({"vqa": {}}) == []
