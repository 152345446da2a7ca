"""Fuzz: a model's special tokens (and a line break) in every user-text field of every reader, built
for each family. Each cell ends as the family's reserved text (formats/reserved.py) says: the
example skipped and counted with the kind of token and the field ("image token in question"), the
line break replaced by a space and counted, or, for text that is no token of the family, kept as
written; no record holds the family's special token in any user-text position. And the reported
case: `<image>` in a PaliGemma VQA question (`<OD>` in a Florence-2 one) no longer crashes
training at its batch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from pipeline import formats
from pipeline.data.build import build
from pipeline.errors import DataError
from pipeline.formats import reserved
from pipeline.recipe import load_recipe
from pipeline.sources import repairs

TOKENS = ["<image>", "<loc0005>", "<seg001>", "<eos>", "<loc_5>", "<OD>", "\n"]
FAMILIES = ["paligemma", "florence2"]
# fields a target is parsed back from, where both formats refuse "<" at render (a DataError for
# the whole build, tested with the formats): a token that is only text to a family is not tried there
LABEL_FIELDS = {"objects.category", "crowd.category", "categories", "phrase", "regions.text"}
BREAK_KEPT = {"text"}  # OCR's text keeps its lines


def value(token: str) -> str:
    return f"red {token} one"


@dataclass
class Written:
    """A reader's data with the token in one field per record: the recipe's sources, the cells
    (source, record id, field) and the records whose vocabulary holds the token."""

    sources: list[dict[str, Any]]
    cells: list[tuple[str, str, str]]
    vocabulary: list[tuple[str, str]] = field(default_factory=list)


def _png(path: Path, colour: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (colour, 40, 90)).save(path)
    return path


def _json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def write_jsonl(root: Path, token: str, family: str, labels: bool) -> Written:
    _png(root / "a.png")
    v, box = value(token), [1, 1, 9, 9]
    base = {"image": "a.png"}
    lines = [
        {"id": "clean", "task": "classification", "label": "cat"},
        {"id": "label", "task": "classification", "label": v},
        {"id": "caption", "task": "caption", "caption": v},
        {"id": "captions", "task": "caption", "captions": ["fine.", v]},
        {"id": "question", "task": "vqa", "question": v, "answers": ["yes"]},
        {"id": "answer", "task": "vqa", "question": "q?", "answers": [v]},
        {"id": "answers", "task": "vqa", "question": "q?", "answers": ["yes", "yes", v]},
        {"id": "objects", "task": "detection", "objects": [{"bbox": box, "category": v}]},
        {"id": "vocab", "task": "detection", "categories": ["cat", v],
         "objects": [{"bbox": box, "category": "cat"}]},
        {"id": "phrase", "task": "grounding", "phrase": v, "bbox": box},
        {"id": "text", "task": "ocr", "text": v},
        {"id": "regions", "task": "ocr", "text": "t", "regions": [{"text": v, "bbox": box}]},
    ]  # fmt: skip
    if family == "florence2":  # PaliGemma refuses segmentation (no mask decoder)
        lines.append({"id": "seg", "task": "segmentation", "phrase": v, "polygons": [[1, 1, 9, 1, 9, 9]]})
    fields = dict(label="label", caption="caption", captions="captions", question="question", answer="answer")
    fields |= dict(
        answers="answers", objects="objects.category", phrase="phrase", text="text", regions="regions.text"
    )
    fields |= dict(seg="phrase", vocab="categories")
    lines = [x for x in lines if x["id"] == "clean" or labels or fields[x["id"]] not in LABEL_FIELDS]
    (root / "all.jsonl").write_text("".join(json.dumps({**base, **x}) + "\n" for x in lines))
    source = {"name": "j", "format": "jsonl", "splits": {"train": {"path": "all.jsonl"}}}
    cells = [("j", x["id"], fields[x["id"]]) for x in lines if x["id"] not in ("clean", "vocab")]
    return Written([source], cells, [("j", x["id"]) for x in lines if x["id"] == "vocab"])


def write_coco_detection(root: Path, token: str, family: str, labels: bool) -> Written:
    images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2, 3)]
    for i in (1, 2, 3):
        _png(root / "images" / f"{i}.png", 30 * i)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [1, 1, 8, 8]},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 8, 8]},
        {"id": 4, "image_id": 3, "category_id": 2, "bbox": [10, 10, 8, 8], "iscrowd": 1},
    ]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": value(token)}]
    _json(root / "inst.json", {"images": images, "annotations": anns, "categories": cats})
    split = {"annotations": "inst.json", "images": "images"}
    source = {"name": "d", "format": "coco_detection", "splits": {"train": split}}
    cells = [("d", "2", "objects.category"), ("d", "3", "crowd.category")]
    return Written([source], cells, [("d", "1"), ("d", "2"), ("d", "3")])


def write_coco_captions(root: Path, token: str, family: str, labels: bool) -> Written:
    images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2, 3)]
    for i in (1, 2, 3):
        _png(root / "images" / f"{i}.png", 30 * i)
    v = value(token)
    caps = [
        {"id": 1, "image_id": 1, "caption": "a cat."},
        {"id": 2, "image_id": 2, "caption": v},
        {"id": 3, "image_id": 3, "caption": "fine."},
        {"id": 4, "image_id": 3, "caption": v},
    ]
    _json(root / "caps.json", {"images": images, "annotations": caps})
    split = {"annotations": "caps.json", "images": "images"}
    source = {"name": "c", "format": "coco_captions", "splits": {"train": split}}
    return Written([source], [("c", "2", "caption"), ("c", "3", "captions")])


def write_vqav2(root: Path, token: str, family: str, labels: bool) -> Written:
    _png(root / "images" / "1.png")
    v = value(token)
    texts = {1: "what colour?", 2: v, 3: "what colour?", 4: "what colour?"}
    answers = {1: ["red"] * 10, 2: ["red"] * 10, 3: ["yes"] * 9 + [v], 4: [v] * 10}
    questions = [{"question_id": q, "image_id": 1, "question": t} for q, t in texts.items()]
    anns = [
        {
            "question_id": q,
            "image_id": 1,
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(a)],
        }
        for q, a in answers.items()
    ]
    _json(root / "q.json", {"data_subtype": "x", "questions": questions})
    _json(root / "a.json", {"annotations": anns})
    split = {"questions": "q.json", "annotations": "a.json", "images": "images"}
    source = {
        "name": "v",
        "format": "vqav2",
        "options": {"image_pattern": "{image_id}.png"},
        "splits": {"train": split},
    }
    return Written([source], [("v", "2", "question"), ("v", "3", "answers"), ("v", "4", "answer")])


def write_image_folder(root: Path, token: str, family: str, labels: bool) -> Written:
    _png(root / "classes" / "cat" / "a.png")
    _png(root / "classes" / value(token) / "b.png", 200)  # the class folder's name is the label
    source = {"name": "i", "format": "image_folder", "splits": {"train": {"root": "classes"}}}
    bad = f"{value(token)}/b.png"
    return Written([source], [("i", bad, "label")], [("i", "cat/a.png"), ("i", bad)])


def write_refcoco(root: Path, token: str, family: str, labels: bool) -> Written:
    _png(root / "images" / "1.png")
    seg = [[1, 1, 9, 1, 9, 9, 1, 9]]
    instances = {
        "images": [{"id": 1, "file_name": "1.png", "width": 32, "height": 32}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "segmentation": seg},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [10, 10, 8, 8], "segmentation": seg},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": value(token)}],
    }

    def ref(ref_id: int, ann_id: int, category_id: int, sent: str) -> dict[str, Any]:
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": 1, "split": "train",
                "category_id": category_id, "sentences": [{"sent": sent, "raw": sent}]}  # fmt: skip

    refs = [ref(1, 11, 1, "the cat"), ref(2, 11, 1, value(token)), ref(3, 12, 2, "the other one")]
    _json(root / "instances.json", instances)
    _json(root / "refs(unc).json", refs)
    split = {"refs": "refs(unc).json", "instances": "instances.json", "images": "images"}
    source = {"name": "r", "format": "refcoco", "splits": {"train": split}}
    return Written([source], [("r", "2/0", "phrase"), ("r", "3/0", "objects.category")])


def write_hf_dataset(root: Path, token: str, family: str, labels: bool) -> Written:
    from datasets import Dataset

    _png(root / "imgs" / "a.png")
    v, box = value(token), [1.0, 1.0, 9.0, 9.0]
    tables = {  # task -> columns (image: a path under `images`); row index = record id
        "classification": {"label": ["cat", v]},
        "caption": {"caption": ["a cat.", v]},
        "vqa": {"question": ["q?", v, "q?"], "answers": [["yes"], ["yes"], ["yes", v]]},
        "detection": {"objects": [[{"bbox": box, "category": "cat"}], [{"bbox": box, "category": v}]]},
        "grounding": {"phrase": ["the cat", v], "bbox": [box, box]},
        "ocr": {"text": ["t", v, "t"], "regions": [[], [], [{"text": v, "bbox": box}]]},
    }
    if not labels:
        del tables["detection"], tables["grounding"]
        tables["ocr"] = {"text": ["t", v], "regions": [[], []]}
    sources = []
    for task, columns in tables.items():
        rows = len(next(iter(columns.values())))
        folder = root / f"hf-{task}"
        Dataset.from_dict({"image": ["a.png"] * rows, **columns}).save_to_disk(str(folder))
        split = {"path": str(folder), "from_disk": True, "task": task, "images": "imgs"}
        sources.append({"name": f"h_{task}", "format": "hf_dataset", "splits": {"train": split}})
    cells = [("h_classification", "1", "label"), ("h_caption", "1", "caption"), ("h_vqa", "1", "question")]
    cells += [("h_vqa", "2", "answers"), ("h_ocr", "1", "text")]
    # a split's distinct labels and categories are its vocabulary
    vocabulary = [("h_classification", "0"), ("h_classification", "1")]
    if labels:
        cells += [("h_detection", "1", "objects.category"), ("h_grounding", "1", "phrase")]
        cells += [("h_ocr", "2", "regions.text")]
        vocabulary += [("h_detection", "0"), ("h_detection", "1")]
    return Written(sources, cells, vocabulary)


WRITERS: dict[str, Callable[[Path, str, str, bool], Written]] = {
    "coco_detection": write_coco_detection,
    "coco_captions": write_coco_captions,
    "vqav2": write_vqav2,
    "jsonl": write_jsonl,
    "image_folder": write_image_folder,
    "refcoco": write_refcoco,
    "hf_dataset": write_hf_dataset,
}


def _reserved(token: str, family: str) -> tuple[str, str] | None:
    return reserved.find(token, formats.get(family).RESERVED)


def _labels(token: str, family: str) -> bool:
    """Whether the token is tried in the label fields (see LABEL_FIELDS)."""
    return token == "\n" or _reserved(token, family) is not None


CASES = [
    pytest.param(reader, family, token, id=f"{reader}-{family}-{token.strip() or 'newline'}")
    for reader in WRITERS
    for family in FAMILIES
    for token in TOKENS
    # a reader whose every text is a label field has nothing to try a no-token text in
    if _labels(token, family) or reader not in ("coco_detection", "refcoco")
]


def _values(row: dict[str, Any], name: str) -> list[str]:
    """The texts of field `name` (as a cell names it) in a record."""
    if name.endswith(".category"):
        return [o["category"] for o in row[name.split(".")[0]]]
    if name == "regions.text":
        return [r["text"] for r in row["regions"]]
    if name in ("caption", "answer"):  # trained on: the target; the references are kept too
        return [row["target"], *row[f"{name}s"]]
    value = row[name]
    return value if isinstance(value, list) else [value]


USER_TEXT = ("label", "captions", "question", "answers", "categories", "objects.category", "crowd.category")
USER_TEXT += ("phrase", "text", "regions.text")


def _user_texts(row: dict[str, Any], family: str) -> list[tuple[str, str]]:
    """(field, text) of every user-text position of a record, and of the rendered text around
    them where a format writes no token of its own (text targets; PaliGemma's prompts)."""
    out = [(name, t) for name in USER_TEXT for t in _values(row, name) if t is not None]
    if row["task"] in ("classification", "caption", "vqa"):
        out.append(("target", row["target"]))
    if family == "paligemma":
        out.append(("prompt", row["prompt"]))
    return out


@pytest.mark.parametrize(("reader", "family", "token"), CASES)
def test_special_tokens_in_every_text_field_are_skipped_or_repaired(reader, family, token, tmp_path):
    written = WRITERS[reader](tmp_path / "data", token, family, _labels(token, family))
    recipe = {
        "name": "t",
        "model": {"family": family, "id": None},
        "data": {
            "root": str(tmp_path / "data"),
            "cache_dir": str(tmp_path / "cache"),
            "max_skip_fraction": 1.0,
            "sources": written.sources,
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = build(load_recipe(tmp_path / "r.yaml"), progress=False)
    rows = {(r["source"], r["id"].split("#")[0]): r for ds in result.load().values() for r in ds.to_list()}
    skipped = sum((Counter(r.skipped) for r in result.stats.rows), Counter())
    repaired = sum((Counter(r.repaired) for r in result.stats.rows), Counter())
    repaired = Counter(
        {k: n for k, n in repaired.items() if k in (repairs.LINE_BREAK, repairs.RESERVED_CATEGORY)}
    )
    tried = {(s, i) for s, i, _ in written.cells}

    hit = _reserved(token, family)
    if hit:  # each cell's example skipped, naming the kind and the field; the other vocabularies repaired
        assert skipped == Counter(f"{hit[0]} token in {name}" for _, _, name in written.cells)
        assert not tried & set(rows)
        vocabularies = [v for v in written.vocabulary if v not in tried]
        assert repaired == (
            Counter({repairs.RESERVED_CATEGORY: len(vocabularies)}) if vocabularies else Counter()
        )
        assert all(value(token) not in c for r in rows.values() for c in r["categories"])
    elif token == "\n":  # kept, the break a space (OCR's text keeps its lines); one repair per example
        assert skipped == Counter() and tried <= set(rows)
        changed = {(s, i) for s, i, name in written.cells if name not in BREAK_KEPT} | set(written.vocabulary)
        assert repaired == Counter({repairs.LINE_BREAK: len(changed)})
        for s, i, name in written.cells:
            assert (value(token) if name in BREAK_KEPT else "red one") in _values(rows[s, i], name), (
                s,
                i,
                name,
            )
    else:  # no token of this family: kept as written
        assert skipped == Counter() and repaired == Counter() and tried <= set(rows)
        for s, i, name in written.cells:
            assert value(token) in _values(rows[s, i], name), (s, i, name)
    for (_, i), r in rows.items():  # no special token of the family, no break in a single-line text
        for name, text in _user_texts(r, family):
            assert reserved.find(text, formats.get(family).RESERVED) is None, (i, name, text)
            assert name in BREAK_KEPT or "\n" not in text, (i, name, text)


def _vqa_recipe(tmp_path: Path, family: str, token: str) -> dict[str, Any]:
    """Eight VQA lines (train and val read the same file), the fourth asking with `token`."""
    root = tmp_path / "data"
    lines = []
    for i in range(8):
        _png(root / f"{i}.png", 30 * i)
        question = f"what {token} colour?" if i == 3 else "what colour?"
        lines.append(
            {"id": str(i), "task": "vqa", "image": f"{i}.png", "question": question, "answers": ["red"]}
        )
    (root / "q.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    splits = {"train": {"path": "q.jsonl"}, "val": {"path": "q.jsonl"}}
    return {
        "name": "t",
        "model": {"family": family, "id": None, "tiny": {"base_steps": 0}},
        "data": {
            "root": str(root),
            "cache_dir": str(tmp_path / "cache"),
            "sources": [{"name": "q", "format": "jsonl", "splits": splits}],
        },
    }


def test_past_the_skip_limit_the_build_fails_naming_the_token_and_the_field(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_vqa_recipe(tmp_path, "paligemma", "<image>")))
    with pytest.raises(DataError) as e:  # the default data.max_skip_fraction: 1%
        build(load_recipe(tmp_path / "r.yaml"), progress=False)
    assert str(e.value) == (
        "file source q, split train: skipped 1 of 8 examples (12.5% > data.max_skip_fraction 1.0%): "
        "1 image token in question"
    )


@pytest.mark.parametrize(("family", "token"), [("paligemma", "<image>"), ("florence2", "<OD>")])
def test_the_reported_question_is_skipped_and_training_runs(family, token, tmp_path):
    """Issue 21: `<image>` in a PaliGemma VQA question built, then every training run (and every
    resume) failed at its batch: "The total number of <image> tokens in the prompts should be the
    same as the number of images passed" (Florence-2, `<OD>`: "Task token <OD> should be the only
    content in the prompt")."""
    from pipeline.train import loop

    recipe = _vqa_recipe(tmp_path, family, token)
    recipe["data"]["max_skip_fraction"] = 0.2
    recipe |= {
        "train": {
            "steps": 2,
            "log_every": 1,
            "batch_size": 8,
            "num_workers": 0,
            "trackers": [],
            "val_batches": 1,
            "save_every": 100,
        },
        "eval": {"every": 0},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(tmp_path / "r.yaml")
    built = build(loaded, progress=False)
    kind = _reserved(token, family)[0]
    assert [(r.split, r.examples, r.skipped) for r in built.stats.rows] == [
        ("train", 7, {f"{kind} token in question": 1}),
        ("val", 7, {f"{kind} token in question": 1}),
    ]
    summary = loop.train(loaded, progress=False)
    assert [e["step"] for e in summary.losses] == [1, 2]
    assert all(e["loss"] > 0 for e in summary.losses)
