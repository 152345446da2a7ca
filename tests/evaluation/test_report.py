"""Evaluation report: tables, delta signs, HTML escaping, drawn boxes, best/worst selection, plots."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from pipeline.evaluation.report import (
    PRED_COLOR,
    REF_COLOR,
    format_table,
    render_example_image,
    select_examples,
    write_report,
)

METRICS = {
    "classification": {"accuracy": 0.75},
    "caption": {"cider": 1.2345, "bleu_4": 0.2},
    "vqa": {"accuracy": 0.9, "per_answer_type": {"yes/no": 1.0, "number": 0.5}},
    "detection": {"map": 0.3, "map_50": 0.6},
    "counts": {"classification": 2, "caption": 2, "vqa": 3, "detection": 2},
}
BASE = {
    "classification": {"accuracy": 0.5},
    "caption": {"cider": 1.5, "bleu_4": 0.1},
    "vqa": {"accuracy": 0.4, "per_answer_type": {"yes/no": 0.5, "number": 0.5}},
    "detection": {"map": 0.1, "map_50": 0.2},
}
SUMMARY = {
    "losses": [
        {"step": s, "loss": 2.0 / s, "loss/vqa": 1.5 / s, "loss/detection": 3.0 / s} for s in range(1, 6)
    ],
    "val": [{"step": s, "vqa": 1.0 / s, "detection": 2.0 / s, "all": 1.5 / s} for s in (2, 4)],
    "evals": [
        {"step": s, "vqa/accuracy": 0.2 * s, "detection/map_50": 0.1 * s, "mean": 0.15 * s} for s in (2, 4)
    ],
}


def gen(tmp: Path, id_, task, score, *, prompt="What is it?", text="a circle", refs=None, parsed=None):
    path = tmp / f"{id_}.png"
    if not path.exists():
        Image.new("RGB", (64, 64), (0, 0, 0)).save(path)
    return {
        "id": id_,
        "task": task,
        "source": "shapes",
        "prompt": prompt,
        "generated_text": text,
        "parsed": parsed or {"text": text, "objects": [], "errors": 0},
        "references": refs or {},
        "image": str(path),
        "image_size": [64, 64],
        "score": score,
    }


PRED_BOX = [8, 8, 40, 40]
REF_BOX = [20, 30, 60, 60]


@pytest.fixture
def generations(tmp_path):
    det_parsed = {
        "text": "",
        "objects": [{"bbox": PRED_BOX, "category": "circle", "score": 0.9}],
        "errors": 0,
    }
    det_refs = {"objects": [{"bbox": REF_BOX, "category": "circle"}]}
    return [
        gen(tmp_path, "cls-0", "classification", 1.0, refs={"label": "circle"}),
        gen(tmp_path, "cls-1", "classification", 0.0, refs={"label": "square"}),
        gen(tmp_path, "cap-0", "caption", 0.4, refs={"captions": ["a red circle", "a circle"]}),
        gen(tmp_path, "vqa-0", "vqa", 0.3, refs={"answers": ["1"] * 10, "answer_type": "number"}),
        gen(tmp_path, "vqa-1", "vqa", 1.0, refs={"answers": ["yes"] * 10, "answer_type": "yes/no"}),
        gen(
            tmp_path,
            "det-0",
            "detection",
            0.5,
            prompt="<OD> <loc0001><loc0002>",
            text="<loc0001> circle",
            refs=det_refs,
            parsed=det_parsed,
        ),
    ]


def test_format_table_aligned_with_values():
    table = format_table(METRICS)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "metric", "fine-tuned"]
    assert "per_answer_type.yes/no" in table
    assert "1.2345" in table and "0.7500" in table
    assert "counts" not in table
    # right-aligned numbers: every data line has the same length as the header rule
    assert len({len(line) for line in lines[1:]}) == 1


def test_format_table_with_base_has_signed_delta():
    table = format_table(METRICS, BASE)
    assert table.splitlines()[0].split() == ["task", "metric", "fine-tuned", "base", "delta"]
    row = next(line for line in table.splitlines() if "cider" in line)
    assert row.split()[-1] == "-0.2655"
    row = next(line for line in table.splitlines() if line.startswith("vqa") and " accuracy" in line)
    assert row.split()[-1] == "+0.5000"
    # base metrics may also come inside the metrics dict
    assert format_table({**METRICS, "base": BASE}) == table


def test_write_report_files_and_markdown(tmp_path, generations):
    paths = write_report(tmp_path / "out", generations, METRICS, summary=SUMMARY)
    assert set(paths) == {"markdown", "html", "loss", "val_loss", "val_metrics"}
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 0
    for name in ("loss", "val_loss", "val_metrics"):
        with Image.open(paths[name]) as im:
            assert im.format == "PNG"
    md = paths["markdown"].read_text()
    for name in ("accuracy", "cider", "bleu_4", "map_50", "per_answer_type.yes/no"):
        assert name in md
    assert re.search(r"\| cider\s+\|\s+1\.2345 \|", md)
    assert "## vqa (n = 3)" in md
    assert "delta" not in md


def test_markdown_delta_column(tmp_path, generations):
    paths = write_report(tmp_path, generations, METRICS, base_metrics=BASE)
    md = paths["markdown"].read_text()
    assert re.search(r"\| metric\s+\|\s+fine-tuned \|\s+base \|\s+delta \|", md)
    assert re.search(r"\| cider\s+\|\s+1\.2345 \|\s+1\.5000 \|\s+-0\.2655 \|", md)
    assert re.search(r"\| map_50\s+\|\s+0\.6000 \|\s+0\.2000 \|\s+\+0\.4000 \|", md)
    assert set(paths) == {"markdown", "html"}  # no summary, no plots


def test_html_images_escaping_and_plots(tmp_path, generations):
    paths = write_report(tmp_path, generations, METRICS, summary=SUMMARY, examples_per_task=6)
    page = paths["html"].read_text()
    # every task has <= 6 examples, so all 6 examples are shown, plus the three plots
    assert page.count("<img") == len(generations) + 3
    assert "&lt;loc0001&gt;" in page
    assert "<loc0001>" not in page
    assert "&lt;OD&gt;" in page


def decode_images(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        for data in re.findall(r'<img[^>]* src="data:image/png;base64,([^"]+)"', page)
    ]


def test_detection_boxes_drawn_in_two_colours(tmp_path, generations):
    det = generations[-1]
    image = render_example_image(det)
    assert image.size == (256, 256)  # 64 px upscaled 4x
    scale = 4
    # left edges of each box, halfway down (away from the labels at the top)
    x1, y1, _, y2 = (v * scale for v in PRED_BOX)
    assert image.getpixel((x1, (y1 + y2) // 2)) == PRED_COLOR
    x1, y1, _, y2 = (v * scale for v in REF_BOX)
    assert image.getpixel((x1, (y1 + y2) // 2)) == REF_COLOR
    # the same pixels come back out of the HTML
    page = write_report(tmp_path, [det], METRICS)["html"].read_text()
    (decoded,) = decode_images(page)
    assert decoded.getpixel((PRED_BOX[0] * scale, 24 * scale)) == PRED_COLOR
    assert decoded.getpixel((REF_BOX[0] * scale, 45 * scale)) == REF_COLOR
    assert decoded.getpixel((2, 250)) == (0, 0, 0)  # untouched background


def test_best_and_worst_by_score(tmp_path):
    gens = [gen(tmp_path, f"v{i}", "vqa", s) for i, s in enumerate([0.5, 0.9, 0.1, 0.7, 0.0, 0.3, None])]
    best, worst = select_examples(gens, 4)
    assert [g["id"] for g in best] == ["v1", "v3"]  # 0.9, 0.7
    assert [g["id"] for g in worst] == ["v4", "v2"]  # 0.0, 0.1
    best, worst = select_examples(gens, 3)
    assert [g["id"] for g in best] == ["v1", "v3"] and [g["id"] for g in worst] == ["v4"]
    # few examples: all shown, best first, none twice
    best, worst = select_examples(gens[:3], 6)
    assert [g["id"] for g in best] == ["v1", "v0", "v2"] and worst == []
    # nothing scored: the first k
    best, worst = select_examples([gen(tmp_path, f"u{i}", "vqa", None) for i in range(5)], 2)
    assert [g["id"] for g in best] == ["u0", "u1"] and worst == []

    page = write_report(tmp_path / "out", gens, {"vqa": {"accuracy": 0.5}}, examples_per_task=4)[
        "html"
    ].read_text()
    assert page.count("<img") == 4
    order = re.findall(r'alt="vqa (v\d)"', page)
    assert order == ["v1", "v3", "v4", "v2"]
    assert page.index("<h3>Best</h3>") < page.index("<h3>Worst</h3>")


def test_missing_image_gets_placeholder(tmp_path, generations):
    det = dict(generations[-1], image=str(tmp_path / "gone.png"))
    image = render_example_image(det)
    assert image.size == (256, 256)
    assert image.getpixel((PRED_BOX[0] * 4, 24 * 4)) == PRED_COLOR


def test_validation_curves_share_one_zero_to_one_axis():
    """CIDEr-D (0-10) drawn beside accuracies squeezed them flat: it is drawn / 10, as the mean
    counts it, and its legend says so."""
    from pipeline.evaluation.report import eval_curves

    evals = [
        {"step": 250, "caption/cider": 4.5, "vqa/accuracy": 0.25, "mean": 0.4},
        {"step": 500, "caption/cider": None, "vqa/accuracy": 0.7, "mean": 0.6},
    ]
    rows, keys = eval_curves(evals)
    assert keys == ["caption/cider / 10", "vqa/accuracy", "mean"]
    assert rows[0] == {"step": 250, "caption/cider / 10": 0.45, "vqa/accuracy": 0.25, "mean": 0.4}
    assert rows[1]["caption/cider / 10"] is None  # a missing score stays missing
    assert evals[0]["caption/cider"] == 4.5  # the summary is not changed
