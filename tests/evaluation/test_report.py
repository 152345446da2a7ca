"""Evaluation report: the summary and its verdicts, warnings, confusions, tables, delta signs, HTML
escaping, drawn boxes, best/worst selection, plots."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from pipeline.evaluation.report import (
    LINE_WIDTH,
    MASK_ALPHA,
    PRED_COLOR,
    REF_COLOR,
    comparable_base,
    confused_pairs,
    confusion,
    curves_figure,
    detection_confusion,
    format_table,
    render_example_image,
    select_examples,
    summarize,
    summary_table,
    warnings,
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
    assert page.index("<h3>Best examples</h3>") < page.index("<h3>Worst examples</h3>")
    # every example shown: not all of them are "best"; none scored: not ranked at all
    page = write_report(tmp_path / "few", gens[:3], {}, examples_per_task=4)["html"].read_text()
    assert "<h3>All 3 examples, best first</h3>" in page and "Best examples" not in page
    unscored = [gen(tmp_path, f"u{i}", "vqa", None) for i in range(5)]
    page = write_report(tmp_path / "unscored", unscored, {}, examples_per_task=2)["html"].read_text()
    assert "<h3>The first 2 examples (none scored)</h3>" in page


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
    # a CER (lower is better, may pass 1) is drawn as the mean counts it: max(0, 1 - CER)
    rows, keys = eval_curves([{"step": 1, "ocr/cer": 0.25}, {"step": 2, "ocr/cer": 1.5}])
    assert keys == ["1 - ocr/cer"] and [r["1 - ocr/cer"] for r in rows] == [0.75, 0.0]


# ---------------------------------------------------------------------------------------------
# grounding, segmentation, OCR

PHRASE = "the <red> circle & co"
NEW_METRICS = {  # inserted out of order: the report orders them
    "ocr": {
        "cer": 0.125,
        "wer": 0.25,
        "anls": 0.875,
        "exact_match": 0.5,
        "per_example_cer": [0.0, 0.25],
        "by_language": {"de": {"cer": 0.3}},
    },
    "segmentation": {
        "mean_iou": 0.6,
        "overall_iou": 0.65,
        "precision@0.5": 0.7,
        "per_example_iou": [0.5, 0.7],
    },
    "detection": {"map": 0.3},
    "grounding": {"accuracy": 0.5, "mean_iou": 0.55, "per_split": {"val": 0.5}, "per_example_iou": [0.4]},
    "counts": {"grounding": 1, "segmentation": 1, "ocr": 2, "detection": 1},
}


def blend(background, color, alpha=MASK_ALPHA):
    """A pixel of `background` under a mask of `color`, as alpha compositing yields it."""
    return tuple(round((c * alpha + b * (255 - alpha)) / 255) for c, b in zip(color, background, strict=True))


def card_row(page: str, name: str) -> str:
    (value,) = re.findall(rf"<tr><th>{re.escape(name)}</th><td>(.*?)</td></tr>", page)
    return value


def test_new_tasks_follow_detection_in_order():
    from pipeline import tasks

    order = tasks.names()
    assert order[order.index("detection") : order.index("ocr") + 1] == (
        "detection",
        "grounding",
        "segmentation",
        "ocr",
    )


def test_new_task_metrics_markdown_order_and_flattening(tmp_path):
    md = write_report(tmp_path, [], NEW_METRICS)["markdown"].read_text()
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    tasks_in_order = ["detection (n = 1)", "grounding (n = 1)", "segmentation (n = 1)", "ocr (n = 2)"]
    assert headings == ["Summary", "Warnings", *tasks_in_order, "All metrics"]
    assert re.findall(r"^### (.+)$", md, flags=re.M) == tasks_in_order  # the full tables, last
    # per-example lists are evidence, not metrics: never a row; nested dicts get dotted names
    assert "per_example" not in md
    assert re.search(r"\| by_language\.de\.cer\s+\|\s+0\.3000 \|", md)
    assert re.search(r"\| per_split\.val\s+\|\s+0\.5000 \|", md)
    assert re.search(r"\| precision@0\.5\s+\|\s+0\.7000 \|", md)
    assert re.search(r"\| anls\s+\|\s+0\.8750 \|", md)
    table = format_table(NEW_METRICS)
    tasks = [line.split()[0] for line in table.splitlines()[2:]]
    assert list(dict.fromkeys(tasks)) == ["detection", "grounding", "segmentation", "ocr"]
    assert tasks.count("ocr") == 5  # cer, wer, anls, exact_match, by_language.de.cer


@pytest.fixture
def grounding(tmp_path):
    refs = {"phrase": PHRASE, "objects": [{"bbox": REF_BOX, "category": "circle", "area": 1200.0}]}
    parsed = {"text": "", "objects": [{"bbox": PRED_BOX, "category": PHRASE, "score": 0.8}], "errors": 0}
    return gen(
        tmp_path, "gnd-0", "grounding", 0.0, prompt="<CAPTION_TO_PHRASE_GROUNDING>", refs=refs, parsed=parsed
    )


def test_grounding_boxes_labelled_with_the_phrase(tmp_path, grounding):
    image = render_example_image(grounding)
    scale = 4
    x1, y1, _, y2 = (v * scale for v in PRED_BOX)
    assert image.getpixel((x1, (y1 + y2) // 2)) == PRED_COLOR
    x1, y1, _, y2 = (v * scale for v in REF_BOX)
    assert image.getpixel((x1, (y1 + y2) // 2)) == REF_COLOR
    assert image.getpixel((2, 250)) == (0, 0, 0)
    # the reference label (inside the box, at its top left) is as wide as the phrase, not "circle"
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = draw.textbbox((0, 0), PHRASE)
    phrase_w, label_h = right - left + 4, bottom - top + 4
    left, _, right, _ = draw.textbbox((0, 0), "circle")
    assert right - left + 4 < phrase_w - 4
    label_y = y1 + LINE_WIDTH + label_h  # the label's bottom edge: fill, no text
    assert image.getpixel((x1 + phrase_w - 1, label_y)) == REF_COLOR
    assert image.getpixel((x1 + phrase_w + 2, label_y)) == (0, 0, 0)

    page = write_report(tmp_path / "out", [grounding], NEW_METRICS)["html"].read_text()
    assert card_row(page, "ref phrase") == "the &lt;red&gt; circle &amp; co"
    assert card_row(page, "predicted") == "the &lt;red&gt; circle &amp; co"
    assert PHRASE not in page
    (decoded,) = decode_images(page)
    assert decoded.getpixel((x1, (y1 + y2) // 2)) == REF_COLOR


REF_POLYGON = [4, 4, 28, 4, 28, 28, 4, 28]
PRED_POLYGON = [20, 20, 44, 20, 44, 44, 20, 44]
GREY = (100, 100, 100)


@pytest.fixture
def segmentation(tmp_path):
    Image.new("RGB", (64, 64), GREY).save(tmp_path / "seg-0.png")
    refs = {
        "phrase": PHRASE,
        "polygons": [REF_POLYGON],
        "objects": [{"bbox": [4, 4, 28, 28], "category": "circle", "area": 576.0}],
    }
    parsed = {"text": "", "objects": [], "polygons": [PRED_POLYGON], "errors": 0}
    return gen(
        tmp_path,
        "seg-0",
        "segmentation",
        0.2,
        prompt="<REFERRING_EXPRESSION_SEGMENTATION>",
        refs=refs,
        parsed=parsed,
    )


def test_segmentation_masks_are_translucent_overlays(tmp_path, segmentation):
    image = render_example_image(segmentation)
    assert image.mode == "RGB" and image.size == (256, 256)
    assert image.getpixel((10 * 4, 10 * 4)) == blend(GREY, REF_COLOR) == (86, 128, 91)  # reference only
    assert image.getpixel((38 * 4, 38 * 4)) == blend(GREY, PRED_COLOR) == (146, 74, 91)  # prediction only
    assert image.getpixel((24 * 4, 24 * 4)) == blend(blend(GREY, REF_COLOR), PRED_COLOR)  # both, tinted twice
    assert image.getpixel((56 * 4, 56 * 4)) == GREY  # outside both: untouched
    # outlines in full colour, scaled like the boxes
    assert image.getpixel((4 * 4, 10 * 4)) == REF_COLOR
    assert image.getpixel((44 * 4 - 1, 38 * 4)) == PRED_COLOR
    assert image.getpixel((4 * 4 - 2, 10 * 4)) == GREY

    page = write_report(tmp_path / "out", [segmentation], NEW_METRICS)["html"].read_text()
    assert card_row(page, "ref phrase") == "the &lt;red&gt; circle &amp; co"
    assert card_row(page, "predicted") == "1 polygon(s)"
    (decoded,) = decode_images(page)
    assert decoded.getpixel((40, 40)) == (86, 128, 91)
    assert decoded.getpixel((152, 152)) == (146, 74, 91)


def test_segmentation_without_prediction_draws_only_the_reference(segmentation):
    image = render_example_image(
        dict(segmentation, parsed={"text": "", "objects": [], "polygons": [], "errors": 1})
    )
    assert image.getpixel((40, 40)) == (86, 128, 91)
    assert image.getpixel((152, 152)) == GREY


def test_a_mask_decoded_from_codes_is_drawn_as_a_fill_with_its_box(segmentation):
    """PaliGemma's masks come as pixels (a COCO RLE), with the box the codes were pasted into."""
    import numpy as np

    from pipeline.masks import to_rle

    mask = np.zeros((64, 64), dtype=bool)
    mask[20:44, 20:44] = True
    parsed = {
        "text": "",
        "objects": [{"bbox": [20.0, 20.0, 44.0, 44.0], "category": PHRASE, "score": 0.9}],
        "polygons": [],
        "mask": to_rle(mask),
        "errors": 0,
    }
    image = render_example_image(dict(segmentation, parsed=parsed))
    assert image.getpixel((38 * 4, 38 * 4)) == blend(GREY, PRED_COLOR) == (146, 74, 91)  # prediction only
    assert image.getpixel((24 * 4, 24 * 4)) == blend(blend(GREY, REF_COLOR), PRED_COLOR)  # both
    assert image.getpixel((10 * 4, 10 * 4)) == (86, 128, 91)  # the reference polygon's fill
    assert image.getpixel((56 * 4, 56 * 4)) == GREY
    assert image.getpixel((44 * 4 - 1, 30 * 4)) == PRED_COLOR  # the box's outline


REF_QUAD = [4, 4, 60, 4, 60, 20, 4, 20]
PRED_QUAD = [4, 30, 50, 30, 50, 50, 4, 50]


def ocr_gen(tmp_path, id_, *, recognised, ref_text, ref_regions, pred_regions):
    refs = {"text": ref_text, "regions": ref_regions}
    parsed = {"text": recognised, "objects": [], "regions": pred_regions, "errors": 0}
    return gen(
        tmp_path, id_, "ocr", 0.5, prompt="<OCR_WITH_REGION>", text=recognised, refs=refs, parsed=parsed
    )


def test_ocr_quads_and_texts(tmp_path):
    ocr = ocr_gen(
        tmp_path,
        "ocr-0",
        recognised="Straße <b>",
        ref_text="Strasse & co",
        ref_regions=[{"text": "Strasse & co", "quad": REF_QUAD}],
        pred_regions=[{"text": "Straße <b>", "quad": PRED_QUAD}],
    )
    image = render_example_image(ocr)
    assert image.getpixel((4 * 4, 12 * 4)) == REF_COLOR  # left edge of the reference quad
    assert image.getpixel((4 * 4, 40 * 4)) == PRED_COLOR  # left edge of the predicted quad
    assert image.getpixel((30 * 4, 12 * 4)) == (0, 0, 0)  # quads are outlines, not fills
    assert image.getpixel((2, 250)) == (0, 0, 0)

    no_regions = ocr_gen(tmp_path, "ocr-1", recognised="", ref_text="Exit", ref_regions=[], pred_regions=[])
    assert render_example_image(no_regions).getcolors() == [(256 * 256, (0, 0, 0))]

    page = write_report(tmp_path / "out", [ocr, no_regions], NEW_METRICS)["html"].read_text()
    assert re.findall(r"<tr><th>recognised</th><td>(.*?)</td></tr>", page) == ["Straße &lt;b&gt;", ""]
    assert re.findall(r"<tr><th>ref text</th><td>(.*?)</td></tr>", page) == ["Strasse &amp; co", "Exit"]
    assert "<tr><th>parsed</th>" not in page  # OCR text is shown once, as "recognised"


def test_language_shown_for_caption_and_vqa(tmp_path):
    gens = [
        gen(tmp_path, "cap-de", "caption", 0.5, refs={"captions": ["ein Kreis"], "language": "de"}),
        gen(tmp_path, "vqa-en", "vqa", 1.0, refs={"answers": ["yes"], "language": None}),
    ]
    page = write_report(tmp_path, gens, {"caption": {"cider": 1.0}})["html"].read_text()
    assert card_row(page, "ref language") == "de"  # exactly one: None means English, not shown


def test_html_gallery_orders_new_tasks(tmp_path, generations, grounding, segmentation):
    ocr = ocr_gen(tmp_path, "ocr-0", recognised="a", ref_text="a", ref_regions=[], pred_regions=[])
    page = write_report(tmp_path / "out", [ocr, segmentation, grounding, *generations], NEW_METRICS)[
        "html"
    ].read_text()
    sections = re.findall(r'<h2 id="task-(\w+)">', page)
    assert sections == ["classification", "caption", "vqa", "detection", "grounding", "segmentation", "ocr"]


# ---------------------------------------------------------------------------------------------
# the answer first: summary, verdicts, warnings

SUMMARY_METRICS = {
    "classification": {"accuracy": 0.865, "majority_baseline": {"label": "circle", "accuracy": 0.22}},
    "caption": {"cider": 5.1506},
    "vqa": {"accuracy": 0.2, "majority_baseline": {"answer": "1", "accuracy": 0.2579}},
    "ocr": {"cer": 0.2, "wer": 0.4, "majority_baseline": {"text": "EXIT", "cer": 0.6}},
    "counts": {"classification": 200, "caption": 200, "vqa": 504, "ocr": 10},
}
SUMMARY_BASE = {
    "classification": {"accuracy": 0.0},
    "caption": {"cider": 4.831},
    "vqa": {"accuracy": 0.3},
    "ocr": {"cer": 0.5, "wer": 0.3},
    "counts": SUMMARY_METRICS["counts"],
}


def test_summary_table_cells():
    headers, cells = summary_table(summarize(SUMMARY_METRICS, SUMMARY_BASE))
    assert headers == ["task", "metric", "n", "base", "fine-tuned", "trivial baseline", "verdict"]
    assert cells == [
        [
            "classification",
            "top-1 accuracy",
            "200",
            "0.0000",
            "0.8650",
            "0.2200",
            "beats the baseline; better than the base (+0.8650)",
        ],
        ["caption", "CIDEr-D", "200", "4.8310", "5.1506", "-", "no baseline; better than the base (+0.3196)"],
        [
            "vqa",
            "VQA accuracy",
            "504",
            "0.3000",
            "0.2000",
            "0.2579",
            "worse than the baseline; worse than the base (-0.1000)",
        ],
        # CER: lower is better, so a lower CER beats the baseline and the base
        [
            "ocr",
            "CER (lower is better)",
            "10",
            "0.5000",
            "0.2000",
            "0.6000",
            "beats the baseline; better than the base (-0.3000)",
        ],
    ]
    # without a base: no base column, and the model's column is not called fine-tuned
    headers, cells = summary_table(summarize(SUMMARY_METRICS))
    assert headers == ["task", "metric", "n", "model", "trivial baseline", "verdict"]
    assert cells[0] == ["classification", "top-1 accuracy", "200", "0.8650", "0.2200", "beats the baseline"]


def test_lower_is_better_verdicts_and_colours(tmp_path):
    def ocr_verdicts(cer):
        metrics = {"ocr": {"cer": cer, "majority_baseline": {"cer": 0.6}}}
        (row,) = summarize(metrics, {"ocr": {"cer": 0.5}})
        return [(v.text, v.mood) for v in row.verdicts]

    assert ocr_verdicts(0.2) == [("beats the baseline", "good"), ("better than the base (-0.3000)", "good")]
    assert ocr_verdicts(0.7) == [("worse than the baseline", "bad"), ("worse than the base (+0.2000)", "bad")]
    assert ocr_verdicts(0.6) == [("ties the baseline", "bad"), ("worse than the base (+0.1000)", "bad")]
    # equal as shown (4 decimals): the same, neither better nor worse
    assert ocr_verdicts(0.50001) == [("beats the baseline", "good"), ("same as the base", "even")]

    page = write_report(tmp_path, [], SUMMARY_METRICS, base_metrics=SUMMARY_BASE)["html"].read_text()
    (ocr_row,) = re.findall(r'<tr><td><a href="#task-ocr">ocr</a></td>.*?</tr>', page)
    assert '<td class="verdict"><span class="good">beats the baseline</span>; ' in ocr_row
    assert '<span class="good">better than the base (-0.3000)</span></td>' in ocr_row
    (vqa_row,) = re.findall(r'<tr><td><a href="#task-vqa">vqa</a></td>.*?</tr>', page)
    assert '<span class="bad">worse than the baseline</span>; <span class="bad">worse than' in vqa_row
    assert '<td title="majority-answer baseline">0.2579</td>' in vqa_row
    # the full tables colour a delta only where the direction is known: CER down is good, WER unknown
    assert '<tr><td>cer</td><td>0.2000</td><td>0.5000</td><td class="good">-0.3000</td></tr>' in page
    assert "<tr><td>wer</td><td>0.4000</td><td>0.3000</td><td>+0.1000</td></tr>" in page
    assert '<tr><td>accuracy</td><td>0.8650</td><td>0.0000</td><td class="good">+0.8650</td></tr>' in page
    assert '<td class="bad">-0.1000</td>' in page  # vqa accuracy went down


LIMITED = {
    "classification": {"accuracy": 0.5, "majority_baseline": {"accuracy": 0.25}},
    "caption": {"cider": 1.0},
    "vqa": {"accuracy": 0.25, "majority_baseline": {"accuracy": 0.25}},
    "detection": {
        "map_50": 0.1,
        "format_validity": {
            "total": 6,
            "parsed": 1,
            "partial": 0,
            "unparsed": 5,
            "objects": 1,
            "unknown_category": 0,
        },
    },
    "counts": {"classification": 20, "caption": 20, "vqa": 20, "detection": 6},
    "sample": {
        "limit": 20,
        "seed": 0,
        "records": {"vqa": 20, "detection": 6, "classification": 20, "caption": 20},
        "of": {"classification": 200, "caption": 200, "vqa": 504, "detection": 6},
        "fingerprint": "a" * 64,
    },
}


def test_warnings_one_line_each(tmp_path):
    base = {**LIMITED, "sample": {**LIMITED["sample"], "fingerprint": "b" * 64}}
    caption_gens = [
        gen(tmp_path, f"c{i}", "caption", 1.0, parsed={"text": "x", "objects": [], "errors": int(i == 0)})
        for i in range(4)
    ]
    # detection's own errors are counted by its format_validity block, not again from the generations
    det_gen = gen(tmp_path, "d0", "detection", 0.0, parsed={"text": "", "objects": [], "errors": 3})
    found = warnings(LIMITED, base, [*caption_gens, det_gen])
    assert found == [
        "limited evaluation: 20 of 200 classification records, 20 of 200 caption records, "
        "20 of 504 vqa records, 6 of 6 detection records (limit 20, seed 0): "
        "the numbers are a sample, not the whole split",
        "vqa: VQA accuracy 0.2500 does not beat the majority-answer baseline (0.2500)",
        "caption: low format validity: 1 of 4 generations had parse errors",
        "detection: low format validity: 5 of 6 generations had parse errors (5 not parsed at all, 0 partly)",
        "base evaluated on other records: not compared",
    ]
    # the base evaluated other records: no base column, no delta, in either file
    paths = write_report(tmp_path / "out", [*caption_gens, det_gen], LIMITED, base_metrics=base)
    md = paths["markdown"].read_text()
    assert "| task           | metric         |         n |  model | trivial baseline |" in md
    assert (
        "| classification | top-1 accuracy | 20 of 200 | 0.5000 |           0.2500 | beats the baseline |"
        in md
    )
    assert "delta" not in md and "base 0." not in md
    page = paths["html"].read_text()
    assert "<th>base</th>" not in page and "<li>base evaluated on other records: not compared</li>" in page
    # warnings come before every task section, the summary before them
    assert (
        md.index("## Summary")
        < md.index("## Warnings")
        < md.index("- limited evaluation")
        < md.index("## classification")
    )
    assert page.index("<h2>Summary</h2>") < page.index('<ul class="warnings">') < page.index('id="task-')
    # a full evaluation with nothing wrong says so
    assert warnings({"caption": {"cider": 1.0}}, None, caption_gens[1:]) == []
    assert (
        "## Warnings\n\nNone."
        in write_report(tmp_path / "ok", [], {"caption": {"cider": 1.0}})["markdown"].read_text()
    )


def test_detection_format_validity_warnings():
    def validity(**counts):
        block = {
            "total": 100,
            "parsed": 100,
            "partial": 0,
            "unparsed": 0,
            "objects": 100,
            "unknown_category": 0,
        }
        return {"detection": {"map_50": 0.5, "format_validity": {**block, **counts}}}

    assert warnings(validity(parsed=95, unparsed=3, partial=2)) == []  # 5 %: not low yet
    assert warnings(validity(parsed=94, unparsed=3, partial=3)) == [
        "detection: low format validity: 6 of 100 generations had parse errors "
        "(3 not parsed at all, 3 partly)"
    ]
    assert warnings(validity(objects=0)) == ["detection: none of the 100 generations wrote an object"]
    assert warnings(validity(objects=40, unknown_category=3)) == [
        "detection: 3 of 40 predicted objects name a category outside the vocabulary"
    ]


@pytest.mark.parametrize(
    ("mine", "theirs", "compared"),
    [
        ({"fingerprint": "f"}, {"fingerprint": "f"}, True),
        ({"fingerprint": "f"}, {"fingerprint": "g"}, False),
        ({"fingerprint": "f"}, None, False),  # one lacks it
        (None, {"fingerprint": "f"}, False),
        (None, None, True),  # both from before fingerprints, with the same counts
    ],
)
def test_base_compared_only_on_the_same_records(mine, theirs, compared):
    metrics = {"vqa": {"accuracy": 0.5}, "counts": {"vqa": 3}}
    base = {"vqa": {"accuracy": 0.25}, "counts": {"vqa": 3}}
    if mine is not None:
        metrics["sample"] = {"limit": None, **mine}
    if theirs is not None:
        base["sample"] = {"limit": None, **theirs}
    got, why = comparable_base(metrics, base)
    assert (got is base, why) == (
        (True, None) if compared else (False, "base evaluated on other records: not compared")
    )
    (row,) = summarize(metrics, base)
    assert row.base == (0.25 if compared else None)
    assert ("delta" in format_table(metrics, base).splitlines()[0]) == compared


def test_base_from_before_fingerprints_with_other_counts_is_not_compared():
    metrics = {"vqa": {"accuracy": 0.5}, "counts": {"vqa": 3}}
    assert comparable_base(metrics, {"vqa": {"accuracy": 0.25}, "counts": {"vqa": 500}})[0] is None


# ---------------------------------------------------------------------------------------------
# confusions


def det_gen(tmp_path, id_, refs, preds, crowd=()):
    parsed = {
        "text": "",
        "objects": [{"bbox": b, "category": c, "score": 0.5} for c, b in preds],
        "errors": 0,
    }
    references = {"objects": [{"bbox": b, "category": c} for c, b in refs], "crowd": list(crowd)}
    return gen(tmp_path, id_, "detection", 0.0, refs=references, parsed=parsed)


@pytest.fixture
def detections(tmp_path):
    return [
        det_gen(
            tmp_path,
            "d1",
            refs=[("circle", [0, 0, 10, 10]), ("square", [20, 20, 30, 30])],
            # a hit, a square called a triangle (IoU 0.81), a box where nothing is
            preds=[("circle", [0, 0, 10, 10]), ("triangle", [21, 21, 30, 30]), ("star", [40, 40, 50, 50])],
        ),
        det_gen(
            tmp_path,
            "d2",
            refs=[("triangle", [0, 0, 10, 10])],
            # IoU 0.16 with the triangle: not a match; inside a crowd region: ignored, not spurious
            preds=[("circle", [0, 0, 4, 4]), ("square", [50, 50, 60, 60])],
            crowd=[{"bbox": [0, 0, 5, 5], "category": "circle"}],
        ),
        det_gen(
            tmp_path,
            "d3",
            # two references under one box: the prediction takes the one of its own category
            refs=[("circle", [0, 0, 10, 10]), ("square", [0, 0, 10, 10])],
            preds=[("square", [0, 0, 10, 10])],
        ),
    ]


def test_detection_confusion_from_generations(tmp_path, detections):
    conf = detection_confusion(detections)
    assert conf.rows == ["circle", "square", "triangle", "(spurious)"]
    assert conf.columns == ["circle", "square", "triangle", "star", "(missed)"]
    assert conf.matrix == [
        [1, 0, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 1, 0, 1, 0],
    ]
    assert confused_pairs(conf) == [("square", "triangle", 1, 2)]

    metrics = {"detection": {"map_50": 0.3}, "counts": {"detection": 3}}
    paths = write_report(tmp_path / "out", detections, metrics)
    md = paths["markdown"].read_text()
    assert "| reference  | circle | square | triangle | star | (missed) |" in md
    assert "| (spurious) |      0 |      1 |        0 |    1 |        0 |" in md
    assert (
        "3 of 5 reference boxes matched at IoU >= 0.5 (2 with the right category), 2 missed; "
        "2 spurious predicted boxes"
    ) in md
    assert "Most confused: square predicted as triangle: 1 of 2 (50%)" in md
    page = paths["html"].read_text()
    assert (
        '<table class="confusion">' in page and "<li>square predicted as triangle: 1 of 2 (50%)</li>" in page
    )
    # a diagonal cell is tinted green by its share of the row, a confusion red
    assert (
        '<tr><th>square</th><td class="zero">0</td><td style="background: rgba(26, 127, 55, 0.42)">1</td>'
        in page
    )
    assert '<td style="background: rgba(207, 34, 46, 0.42)">1</td>' in page


def test_classification_confusion_from_its_metrics(tmp_path):
    metrics = {
        "classification": {
            "accuracy": 5 / 9,
            "confusion_matrix": {
                "rows": ["a", "b"],
                "columns": ["a", "b", "(other)"],
                "matrix": [[3, 1, 0], [2, 2, 1]],
            },
        }
    }
    conf = confusion("classification", metrics, [])
    assert confused_pairs(conf) == [("b", "a", 2, 5), ("a", "b", 1, 4), ("b", "(other)", 1, 5)]
    md = write_report(tmp_path, [], metrics)["markdown"].read_text()
    assert "| reference | a | b | (other) |" in md and "| b         | 2 | 2 |       1 |" in md
    assert (
        "Most confused: b predicted as a: 2 of 5 (40%); a predicted as b: 1 of 4 (25%); "
        "b predicted as (other): 1 of 5 (20%)"
    ) in md
    assert "reference boxes" not in md  # the tally is detection's
    # tasks without a matrix have none
    assert confusion("vqa", {"vqa": {"accuracy": 1.0}}, []) is None


def test_captions_ranked_by_unclipped_cider(tmp_path):
    """Capped at 1, the three good captions tied and the 'worst' was the first of them in the
    input; by their CIDEr-D they are told apart."""
    from pipeline import tasks

    data = [
        ("c2", "a blue square", ["a green square on a plain background", "one green square"]),
        ("c1", "a red circle", ["a red circle on a plain background", "a red circle"]),
        (
            "c0",
            "a red circle on a plain background",
            ["a red circle on a plain background", "one red circle"],
        ),
        ("c3", "a yellow star", ["a blue triangle", "one blue triangle on a plain background"]),
    ]
    gens = [gen(tmp_path, i, "caption", None, text=t, refs={"captions": r}) for i, t, r in data]
    tasks.get(tasks.CAPTION).score(gens, {})
    assert [round(g["score"], 4) for g in gens] == [1.1188, 6.1461, 6.2189, 0.0]
    best, worst = select_examples(gens, 3)
    assert [g["id"] for g in best] == ["c0", "c1"] and [g["id"] for g in worst] == ["c3"]


def test_plot_legends_beside_the_curves():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = curves_figure(SUMMARY["losses"], ["loss/vqa", "loss/detection", "loss"], "loss")
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes, over no curve
    assert legend.x1 <= fig.bbox.x1  # and inside the image
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vqa", "detection", "loss"]
    assert curves_figure(SUMMARY["losses"], ["loss/ocr"], "loss") is None


def test_a_region_task_draws_the_region_it_asked_about(tmp_path):
    from pipeline.evaluation.report.gallery import ASKED_COLOR

    refs = {"region": REF_BOX, "label": "circle"}
    parsed = {"text": "circle", "objects": [], "errors": 0}
    region = gen(tmp_path, "r2c-0", "region_to_category", 1.0, refs=refs, parsed=parsed)
    image = render_example_image(region)
    scale = 4  # a 64 px image is shown at 256
    x1, y1, x2, y2 = (v * scale for v in REF_BOX)
    assert image.getpixel((x2 - 1, (y1 + y2) // 2)) == ASKED_COLOR  # its right edge
    assert image.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)) == (0, 0, 0)  # an outline, not a fill
