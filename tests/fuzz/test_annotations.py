"""Fuzz: random mutations of COCO detection, COCO captions, VQAv2 and JSONL files (missing keys,
wrong types, negative, NaN and huge numbers, duplicates, enormous strings, values nested deeper
than the readers' bound, truncation) end in a DataError naming the file, or in Examples with
what was skipped counted: never an exception from inside a library, never a hang. The cases are
seeded, so a failure reproduces."""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.demo import shapes
from pipeline.errors import DataError
from pipeline.sources import SourceContext, get

CASES_PER_FORMAT = 120
DEEP = [[]]
for _ in range(100):  # deeper than sources/nesting.py lets through
    DEEP = [DEEP]
VALUES = [
    None,
    "x",
    -1,
    0,
    1.5,
    float("nan"),
    float("inf"),
    1e308,
    -(10**30),
    [],
    {},
    True,
    "a" * 100_000,
    DEEP,
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "shapes"
    shapes.generate(root, n_train=4, n_val=2, max_shapes=2, seed=1, progress=False)
    lines = []
    coco = json.loads((root / "annotations/instances_train.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for img in coco["images"]:
        objs = [
            {"bbox": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
             "category": names[a["category_id"]]}
            for a in coco["annotations"] if a["image_id"] == img["id"]
        ]  # fmt: skip
        lines.append({"task": "detection", "image": f"images/train/{img['file_name']}", "objects": objs})
        lines.append({"task": "caption", "image": f"images/train/{img['file_name']}", "captions": ["a b."]})
        lines.append(
            {"task": "vqa", "image": f"images/train/{img['file_name']}", "question": "q?", "answers": ["y"]}
        )
    (root / "all.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


_COCO = {"images": "images/train"}
FORMATS = {  # the file mutated, and the reader's parameters
    "coco_detection": ("annotations/instances_train.json",
                       {**_COCO, "annotations": "annotations/instances_train.json"}),
    "coco_captions": ("annotations/captions_train.json",
                      {**_COCO, "annotations": "annotations/captions_train.json"}),
    "vqav2": ("annotations/v2_shapes_train_annotations.json", {
        "questions": "annotations/v2_OpenEnded_shapes_train_questions.json",
        "annotations": "annotations/v2_shapes_train_annotations.json",
        "images": "images/train", "image_pattern": "{image_id:06d}.png"}),
    "vqav2_questions": ("annotations/v2_OpenEnded_shapes_train_questions.json", None),
    "jsonl": ("all.jsonl", {"path": "all.jsonl"}),
}  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, rng: random.Random) -> tuple[Any, str]:
    doc = copy.deepcopy(doc)
    path = rng.choice([p for p in _paths(doc) if p])
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    op = rng.choice(["delete", "value", "value", "duplicate"])
    if op == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    else:
        value = rng.choice(VALUES)
        parent[last] = value
        op = f"set to {str(value)[:20]!r}"
    return doc, f"{op} at {'/'.join(map(str, path))}"


def _case(data: Path, fmt: str, seed: int) -> str:
    rng = random.Random(seed)
    target, _ = FORMATS[fmt]
    reader_fmt = "vqav2" if fmt == "vqav2_questions" else fmt
    params = FORMATS[reader_fmt][1]
    path = data / target
    original = path.read_bytes()
    if rng.random() < 0.15:  # a truncated file
        cut = rng.randrange(1, len(original))
        path.write_bytes(original[:cut])
        what = f"truncated at byte {cut}"
    elif fmt == "jsonl":
        lines = original.decode().splitlines()
        i = rng.randrange(len(lines))
        doc, what = _mutate(json.loads(lines[i]), rng)
        lines[i] = json.dumps(doc)
        path.write_text("\n".join(lines) + "\n")
        what = f"line {i + 1}: {what}"
    else:
        doc, what = _mutate(json.loads(original), rng)
        path.write_text(json.dumps(doc))
    ctx = SourceContext(name="s", split="train")
    started = time.monotonic()
    outcome = "read"
    args = {k: (data / v if k != "image_pattern" else v) for k, v in params.items()}
    try:
        list(get(reader_fmt)(ctx, **args))
        if ctx.tally.skipped or ctx.tally.repaired:
            outcome = "skips or repairs counted"
    except DataError as e:
        assert e.file is not None or str(data) in str(e), f"{fmt} ({what}): DataError names no file: {e}"
        outcome = "DataError"
    finally:
        path.write_bytes(original)
    assert time.monotonic() - started < 10, f"{fmt} ({what}): took too long"
    return outcome


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mutated_annotations_end_in_a_clear_error_or_counted_skips(data, fmt):
    import traceback

    failures: dict[str, str] = {}  # one example per distinct failure (type and where it was raised)
    outcomes: Counter[str] = Counter()
    for seed in range(CASES_PER_FORMAT):
        try:
            outcomes[_case(data, fmt, seed)] += 1
        except Exception as e:  # anything but DataError (or a failed check) is a bug
            frame = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            failures.setdefault(where, f"seed {seed}: {str(e)[:200]}")
    assert not failures, "\n".join(f"{fmt}: {w}: {ex}" for w, ex in failures.items())
    # the mutations bite: many cases are refused with a named error
    assert outcomes["DataError"] > CASES_PER_FORMAT // 4, outcomes
    print(f"{fmt}: {CASES_PER_FORMAT} mutated files: {dict(outcomes)}")
