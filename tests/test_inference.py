"""`load_model` / `Model.predict` and `uvft predict`: the same outputs as `uvft eval`, from a run
folder, a full fine-tune, an image in memory, and the many-images inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from tiny_runs import TrainedRun, train_tiny_run

from pipeline import cli, load_model, tasks
from pipeline.errors import UvftError
from pipeline.inference import format_prediction, parse_classes, read_items
from pipeline.models.spec import load_spec


def _eval_rows(run: TrainedRun) -> list[dict]:
    lines = (run.run_dir / "eval" / "val" / "generations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _item(row: dict) -> dict:
    return {
        "image": row["image"],
        "task": row["task"],
        "question": row["references"].get("question"),
        "classes": None,
    }


def test_run_folder_carries_its_prompts(trained_run: TrainedRun):
    spec = load_spec(trained_run.run_dir)
    assert spec is not None and spec.family == trained_run.recipe.model.family
    assert spec.base_model == trained_run.base and spec.method == "lora"
    assert set(spec.tasks) == {"classification", "caption", "vqa", "detection"}
    assert not (trained_run.run_dir / "README.md").exists()  # peft's empty template is not kept
    # every validation prompt is what the spec renders for its task
    for row in _eval_rows(trained_run):
        question = row["references"].get("question")
        assert spec.prompt(row["task"], question=question) == row["prompt"]
    assert spec.tasks["classification"].classes == ["circle", "diamond", "square", "star", "triangle"]


def test_predict_reproduces_uvft_eval(trained_run: TrainedRun):
    model = load_model(trained_run.run_dir, device="cpu")
    rows = _eval_rows(trained_run)
    results = model.predict_many([_item(r) for r in rows], batch_size=8, progress=False)
    assert len(results) == len(rows)
    for row, res in zip(rows, results, strict=True):
        assert res["prompt"] == row["prompt"]
        assert res["generated_text"] == row["generated_text"], row["id"]
        assert res["image_size"] == row["image_size"]
        if row["task"] == "detection":
            assert [o["bbox"] for o in res["objects"]] == [o["bbox"] for o in row["parsed"]["objects"]]
            assert [o["score"] for o in res["objects"]] == pytest.approx(
                [o["score"] for o in row["parsed"]["objects"]]
            )
        if row["task"] == "classification":
            assert res["label"] == row["parsed"]["closed_set"]["label"]
            assert res["scores"] == pytest.approx(row["parsed"]["closed_set"]["scores"])
    # one at a time gives the same as batched
    one = model.predict(rows[0]["image"], rows[0]["task"], question=rows[0]["references"].get("question"))
    assert one["generated_text"] == rows[0]["generated_text"]


def test_predict_takes_an_image_in_memory_with_exif_and_odd_modes(trained_run: TrainedRun, tmp_path: Path):
    model = load_model(trained_run.run_dir, device="cpu")
    src = Image.open(_eval_rows(trained_run)[0]["image"]).convert("RGB").resize((64, 48))
    # stored sideways with EXIF orientation 6 (rotate 90° clockwise to view): the model sees it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = src.transpose(Image.Transpose.ROTATE_90)
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif.tobytes(), quality=95)
    by_path = model.predict(path, "detection")
    with Image.open(path) as im:
        in_memory = model.predict(im, "detection")
    assert by_path["image_size"] == [64, 48]  # width and height after orientation
    assert in_memory["generated_text"] == by_path["generated_text"]
    assert in_memory["objects"] == by_path["objects"]
    # grayscale and RGBA go through the same conversion as training's
    gray = src.convert("L")
    gray.save(tmp_path / "gray.png")
    assert model.predict(gray, "caption") == {
        **model.predict(tmp_path / "gray.png", "caption"),
        "image": "item 0",
    }
    rgba = src.convert("RGBA")
    assert model.predict(rgba, "classification")["label"] in model.spec.tasks["classification"].classes
    # open vocabulary: the classes given are the candidates
    res = model.predict(src, "classification", classes=["cat", "dog"])
    assert res["label"] in ("cat", "dog") and set(res["scores"]) == {"cat", "dog"}
    with pytest.raises(UvftError, match="needs a question"):
        model.predict(src, "vqa")
    with pytest.raises(UvftError, match="not trained on task 'ocr'"):
        model.predict(src, "ocr")


def test_full_fine_tune_run_loads_from_its_model_folder(tmp_path: Path):
    run = train_tiny_run(tmp_path, "paligemma", "adapter.method=full", "train.steps=2", "train.lr=1.0e-3")
    assert (run.run_dir / "model" / "config.json").is_file()
    assert (run.run_dir / "model" / "uvft.json").is_file()
    model = load_model(run.run_dir, device="cpu")
    assert not model.is_adapter and model.folder == run.run_dir / "model"
    rows = _eval_rows(run)
    results = model.predict_many([_item(r) for r in rows], progress=False)
    assert [r["generated_text"] for r in results] == [r["generated_text"] for r in rows]


def test_read_items_from_a_folder_a_list_and_json_lines(tmp_path: Path):
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "notes.md").write_text("not an image")
    items = read_items(tmp_path, "caption")
    assert [Path(i["image"]).name for i in items] == ["a.jpg", "b.png"]
    assert all(i["task"] == "caption" for i in items)
    (tmp_path / "list.txt").write_text("# images\nb.png\n\na.jpg\n")
    assert [Path(i["image"]).name for i in read_items(tmp_path / "list.txt", "vqa", question="q?")] == [
        "b.png",
        "a.jpg",
    ]
    (tmp_path / "many.jsonl").write_text(
        '{"image": "a.jpg", "task": "vqa", "question": "what color?"}\n'
        '{"image": "b.png", "classes": ["x", "y"]}\n'
        '{"image": "b.png", "task": "grounding", "phrase": "the red circle"}\n'
        '{"image": "b.png", "task": "caption", "language": "de"}\n'
        '{"image": "b.png", "task": "region_to_category", "region": [1, 2, 5, 6]}\n'
        '{"image": "b.png", "task": "caption", "level": "detailed"}\n'
    )
    items = read_items(tmp_path / "many.jsonl", "detection", classes=["circle", "square"], phrase="a star")
    assert items[0] == {
        "image": str(tmp_path / "a.jpg"),
        "task": "vqa",
        "question": "what color?",
        "classes": ["circle", "square"],
        "phrase": "a star",
        "language": None,
        "level": None,
        "region": None,
    }
    assert items[1]["task"] == "detection" and items[1]["classes"] == ["x", "y"]
    assert (items[2]["task"], items[2]["phrase"]) == ("grounding", "the red circle")
    assert (items[3]["task"], items[3]["language"]) == ("caption", "de")
    assert (items[4]["task"], items[4]["region"]) == ("region_to_category", [1, 2, 5, 6])
    assert (items[5]["task"], items[5]["level"]) == ("caption", "detailed")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.jpg"}\n{"task": "vqa"}\n')
    with pytest.raises(UvftError, match=r"bad.jsonl: line 2: field 'image'"):
        read_items(tmp_path / "bad.jsonl", "caption")
    (tmp_path / "box.jsonl").write_text('{"image": "a.jpg", "region": [1, 2, 3]}\n')
    with pytest.raises(UvftError, match=r"box.jsonl: line 1: field 'region' must be 4 numbers"):
        read_items(tmp_path / "box.jsonl", "region_to_category")
    (tmp_path / "missing.txt").write_text("a.jpg\nnope.png\n")
    with pytest.raises(UvftError, match=r"missing.txt:2: image .*nope.png does not exist"):
        read_items(tmp_path / "missing.txt", "caption")


def test_format_prediction_is_readable():
    det = {
        "task": "detection",
        "generated_text": "",
        "parse_errors": 0,
        "objects": [{"bbox": [1.0, 2.0, 30.5, 40.25], "label": "circle", "score": 0.875}],
    }
    assert format_prediction(det) == (
        "1 object:\n  circle               score 0.88  box [1.0, 2.0, 30.5, 40.2] (x1, y1, x2, y2 in pixels)"
    )
    cls = {
        "task": "classification",
        "generated_text": "star",
        "parse_errors": 0,
        "label": "circle",
        "generated_label": "star",
        "scores": {"circle": -0.5, "star": -1.25},
    }
    assert format_prediction(cls).splitlines()[0] == (
        "label: circle (closed-set over 2 classes; generated: 'star')"
    )
    assert format_prediction({"task": "vqa", "answer": "red", "generated_text": "red"}) == "answer: red"


def test_uvft_predict_cli(trained_run: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rows = [r for r in _eval_rows(trained_run) if r["task"] == "detection"]
    png = tmp_path / "pred.png"
    args = ["predict", "--model", str(trained_run.run_dir), "--image", rows[0]["image"]]
    assert cli.main([*args, "--task", "detection", "--json", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[: out.rindex("}") + 1])
    assert result["generated_text"] == rows[0]["generated_text"]
    with Image.open(png) as im:
        assert im.size[0] >= 64  # small images are enlarged for drawing, as in the report
    assert cli.main([*args, "--task", "caption"]) == 0
    assert capsys.readouterr().out.startswith("caption: ")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(r["image"] for r in rows) + "\n")
    out_file = tmp_path / "preds.jsonl"
    argv = ["predict", "--model", str(trained_run.run_dir), "--images", str(listing)]
    assert cli.main([*argv, "--task", "detection", "--output", str(out_file), "--no-progress"]) == 0
    lines = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [x["generated_text"] for x in lines] == [r["generated_text"] for r in rows]
    assert cli.main(["predict", "--model", str(tmp_path / "nope"), "--image", rows[0]["image"]]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_spec_prompts_of_the_unified_tasks(family):
    from pipeline.models.spec import ModelSpec, TaskSpec

    ocr = "<OCR_WITH_REGION>" if family == "florence2" else "ocr"
    tasks = {
        t: TaskSpec(prompt="", example_target="") for t in ("caption", "vqa", "grounding", "segmentation")
    }
    tasks["ocr"] = TaskSpec(prompt=ocr, example_target="")
    spec = ModelSpec(family=family, base_model="b", method="lora", tasks=tasks, location_tokens={})
    if family == "florence2":
        assert spec.prompt("grounding", phrase=" the dog ") == "<CAPTION_TO_PHRASE_GROUNDING>the dog"
        assert spec.prompt("segmentation", phrase="the dog") == "<REFERRING_EXPRESSION_SEGMENTATION>the dog"
        assert spec.prompt("caption", language="de") == "<CAPTION>"
    else:
        assert spec.prompt("grounding", phrase="the dog") == "detect the dog"
        assert spec.prompt("caption", language="de") == "caption de"
        assert spec.prompt("vqa", question="wie viele?", language="de") == "answer de wie viele?"
        assert spec.prompt("caption") == "caption en"
    assert spec.prompt("ocr") == ocr  # the prompt it was trained with
    with pytest.raises(UvftError, match="needs a phrase"):
        spec.prompt("grounding")
    with pytest.raises(UvftError, match="only for caption and vqa"):
        spec.prompt("grounding", phrase="x", language="de")


@pytest.mark.parametrize(
    ("family", "task", "given", "field", "token"),
    [
        ("paligemma", "vqa", {"question": "what is <image>?"}, "question", "<image>, an image token"),
        ("paligemma", "grounding", {"phrase": "the <loc0005> dog"}, "phrase", "<loc0005>, a location token"),
        (
            "paligemma",
            "detection",
            {"classes": ["dog", "<seg001>"]},
            "classes",
            "<seg001>, a segmentation token",
        ),
        ("paligemma", "vqa", {"question": "why<eos>"}, "question", "<eos>, a special token"),
        ("florence2", "vqa", {"question": "what <OD>?"}, "question", "<OD>, a task token"),
        ("florence2", "grounding", {"phrase": "the<loc_5>"}, "phrase", "<loc_5>, a location token"),
        ("florence2", "vqa", {"question": "what is <image>?"}, "question", "<image>, an image token"),
    ],
)
def test_spec_prompts_refuse_the_familys_special_tokens(family, task, given, field, token):
    """What a person asks `uvft predict` is checked as training text was: a special token of the
    family is refused with one line naming the field (before: PaliGemma's processor failed on the
    extra `<image>`, Florence-2's on a task token beside other text)."""
    from pipeline.models.spec import ModelSpec, TaskSpec

    specs = {t: TaskSpec(prompt="", example_target="") for t in ("vqa", "grounding", "detection")}
    spec = ModelSpec(family=family, base_model="b", method="lora", tasks=specs, location_tokens={})
    value = given[field] if field != "classes" else given[field][1]
    with pytest.raises(UvftError) as e:
        spec.prompt(task, **given)
    assert str(e.value) == (
        f"field '{field}': {value!r} holds {token} of {family}: the model would read it as that token, "
        "not as text; leave it out"
    )
    # a line break is what training saw: a space
    assert spec.prompt("vqa", question="what\ncolour?").endswith(" what colour?")


def test_uvft_predict_refuses_a_special_token_in_one_line(
    trained_run: TrainedRun, capsys: pytest.CaptureFixture[str]
):
    family = trained_run.recipe.model.family
    token = {"paligemma": "<image>", "florence2": "<OD>"}[family]
    image = _eval_rows(trained_run)[0]["image"]
    args = ["predict", "--model", str(trained_run.run_dir), "--image", image, "--task", "vqa"]
    assert cli.main([*args, "--question", f"what {token} is it?"]) == 2
    kind = "an image" if token == "<image>" else "a task"
    err = capsys.readouterr().err  # after the weights' loading bar: the one line, no traceback
    assert err.endswith(
        f"\nerror: field 'question': 'what {token} is it?' holds {token}, {kind} token of "
        f"{family}: the model would read it as that token, not as text; leave it out\n"
    )
    assert "Traceback" not in err


def test_classes_comma_separated_or_repeated_whole():
    parser = cli.build_parser()

    def classes(*flags: str) -> list[str] | None:
        args = parser.parse_args(["predict", "--model", "m", "--image", "x.png", *flags])
        return parse_classes(args.classes)

    assert classes() is None
    assert classes("--classes", "circle, square,,star ") == ["circle", "square", "star"]
    assert classes("--classes", "traffic light", "--classes", "car") == ["traffic light", "car"]
    # repeated: each value is one name, its commas kept
    assert classes("--classes", "salt, fine", "--classes", "pepper", "--classes", "car") == [
        "salt, fine",
        "pepper",
        "car",
    ]
    assert classes("--classes", "car", "--classes", "car ") == ["car"]
    assert classes("--classes", " , ") is None


def test_jsonl_classes_keep_their_commas(tmp_path: Path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "items.jsonl").write_text('{"image": "a.png", "classes": ["salt, fine", "pepper"]}\n')
    assert read_items(tmp_path / "items.jsonl", "detection")[0]["classes"] == ["salt, fine", "pepper"]
    # the Python API takes a list, or one comma-separated string as --classes does
    assert read_items(tmp_path / "a.png", "detection", classes=["salt, fine"])[0]["classes"] == ["salt, fine"]
    assert read_items(tmp_path / "a.png", "detection", classes="salt, pepper")[0]["classes"] == [
        "salt",
        "pepper",
    ]
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "classes": ["salt", 3]}\n')
    with pytest.raises(UvftError, match=r"bad.jsonl: line 1: field 'classes' must be a list of names"):
        read_items(tmp_path / "bad.jsonl", "detection")


def _boxes() -> dict:
    return {
        "task": "detection",
        "generated_text": "",
        "parse_errors": 0,
        "objects": [
            {"bbox": [1.0, 2.0, 30.0, 40.0], "label": "Circle", "score": 0.9},
            {"bbox": [5.0, 5.0, 9.0, 9.0], "label": "square", "score": 0.8},
            {"bbox": [0.0, 0.0, 4.0, 4.0], "label": "traffic  light", "score": 0.25},
        ],
    }


def test_box_results_keep_to_the_classes_and_the_threshold():
    detection, grounding = tasks.get(tasks.DETECTION), tasks.get(tasks.GROUNDING)
    result = _boxes()
    assert detection.keep(result) == result and "dropped" not in detection.keep(result)
    kept = detection.keep(result, classes=["circle", "Traffic light"])  # case and spacing aside
    assert [o["label"] for o in kept["objects"]] == ["Circle", "traffic  light"]
    assert kept["dropped"] == [
        {"bbox": [5.0, 5.0, 9.0, 9.0], "label": "square", "score": 0.8, "reason": "not a given class"}
    ]
    both = detection.keep(result, classes=["circle", "traffic light"], threshold=0.5)
    assert [o["label"] for o in both["objects"]] == ["Circle"]
    assert [(o["label"], o["reason"]) for o in both["dropped"]] == [
        ("square", "not a given class"),
        ("traffic  light", "score below 0.5"),
    ]
    assert format_prediction(both) == (
        "1 object:\n"
        "  Circle               score 0.90  box [1.0, 2.0, 30.0, 40.0] (x1, y1, x2, y2 in pixels)\n"
        "dropped 2: square score 0.80 (not a given class), traffic  light score 0.25 (score below 0.5)"
    )
    # a filter that drops nothing still says it applied
    assert detection.keep(result, threshold=0.1)["dropped"] == []
    # grounding has no class vocabulary (its label is the phrase): only the threshold applies
    located = {**result, "task": "grounding"}
    assert grounding.keep(located, classes=["circle"]) == located
    assert [o["score"] for o in grounding.keep(located, threshold=0.85)["objects"]] == [0.9]


def test_a_long_unparseable_output_is_shortened_in_the_text_only():
    runaway = "<loc0012>" * 200 + " circle"
    result = {"task": "caption", "caption": "", "generated_text": runaway, "parse_errors": 1}
    text = format_prediction(result)
    assert text == (
        "caption: (empty)\n"
        f"(1 piece(s) of the output could not be parsed: {runaway[:80]!r} … {runaway[-80:]!r}; "
        "1,807 characters, 200 location tokens, shortened (--json prints it whole))"
    )
    assert len(text) < 320  # of 1,807
    short = {**result, "generated_text": "<loc_12><loc_40> circle"}
    assert format_prediction(short).endswith("could not be parsed: '<loc_12><loc_40> circle')")


def test_uvft_predict_filters_boxes_and_says_what_it_dropped(
    trained_run: TrainedRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """The CLI's --classes and --threshold reach the result: the generation is made up here (a tiny
    run writes no boxes), everything after it is uvft predict's."""
    from pipeline.evaluation import predict

    objects = [
        {"bbox": [1.0, 2.0, 30.0, 40.0], "category": "circle", "score": 0.9},
        {"bbox": [5.0, 5.0, 9.0, 9.0], "category": "square", "score": 0.2},
    ]

    def generate(model, processor, family, rows, **_):
        return [
            {"generated_text": "boxes", "parsed": {"text": "", "objects": objects, "errors": 0}} for _ in rows
        ]

    monkeypatch.setattr(predict, "generate", generate)
    image = next(r["image"] for r in _eval_rows(trained_run) if r["task"] == "detection")
    args = ["predict", "--model", str(trained_run.run_dir), "--image", image, "--task", "detection"]
    assert cli.main([*args, "--classes", "circle", "--classes", "star"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "dropped 1: square score 0.20 (not a given class)"
    assert cli.main([*args, "--threshold", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [o["label"] for o in result["objects"]] == ["circle"]
    assert result["dropped"] == [
        {"bbox": [5.0, 5.0, 9.0, 9.0], "label": "square", "score": 0.2, "reason": "score below 0.5"}
    ]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image}\n{image}\n")
    many = ["predict", "--model", str(trained_run.run_dir), "--images", str(listing), "--no-progress"]
    assert cli.main([*many, "--task", "detection", "--classes", "square,star"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [[o["label"] for o in x["objects"]] for x in lines] == [["square"], ["square"]]
    assert [[o["label"] for o in x["dropped"]] for x in lines] == [["circle"], ["circle"]]
    assert cli.main([*args[:-1], "caption", "--threshold", "0.5"]) == 2
    assert (
        capsys.readouterr().err
        == "error: --threshold is for the tasks answered with boxes (detection, grounding, "
        "dense_region_caption, region_proposal, open_vocabulary_detection)\n"
    )
    with pytest.raises(SystemExit) as e:  # refused while the command line is read (tests/test_cli.py)
        cli.main([*args, "--threshold", "1.5"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "uvft predict: error: argument --threshold: must be between 0 and 1, got 1.5"
    )


def test_uvft_predict_hides_other_libraries_notices_unless_verbose(trained_run: TrainedRun, tmp_path: Path):
    """Run as a user runs it: peft's note on tied embeddings and transformers' renamed-method
    FutureWarning are raised on loading a run, hidden by the command line and shown with -v."""
    image = _eval_rows(trained_run)[0]["image"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = ["predict", "--model", str(trained_run.run_dir), "--image", image, "--task", "caption"]

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pipeline.cli", *flags, *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, check=True)

    quiet, verbose = run(), run("-v")
    assert quiet.stdout == verbose.stdout and quiet.stdout.startswith("caption: ")
    for notice in ("FutureWarning: `is_gradient_checkpointing` is deprecated", "tie_word_embeddings"):
        assert notice not in quiet.stderr
        assert notice in verbose.stderr
    assert "Warning" not in quiet.stderr


def test_a_paligemma_mask_reads_as_text_and_draws(tmp_path):
    """A mask decoded from codes: `uvft predict` says its size and boxes, scores it as pixels and
    draws it filled over the image, its box on top."""
    import numpy as np

    from pipeline.formats import Prediction
    from pipeline.inference import draw_prediction
    from pipeline.masks import to_rle
    from pipeline.records import Object

    mask = np.zeros((16, 20), dtype=bool)
    mask[3:12, 2:10] = True  # 72 pixels
    task = tasks.get("segmentation")
    pred = Prediction("segmentation", objects=[Object((2.0, 3.0, 10.0, 12.0), "x")], mask_codes=[[0] * 16])
    pred.mask = to_rle(mask)
    parsed = task.parsed(pred, [0.5])
    result = task.result(parsed, None)
    assert result["mask"] == pred.mask and result["objects"] == [
        {"bbox": [2.0, 3.0, 10.0, 12.0], "label": "x", "score": 0.5}
    ]
    assert (
        task.describe(result)
        == "a mask of 72 pixels on the 20x16 image (COCO RLE)\n  box [2.0, 3.0, 10.0, 12.0]"
    )
    rows = [
        {"parsed": parsed, "references": {"polygons": [[2, 3, 10, 3, 10, 12, 2, 12]]}, "image_size": [20, 16]}
    ]
    assert task.score(rows, {})["mean_iou"] == 1.0 and rows[0]["score"] == 1.0
    Image.new("RGB", (20, 16), (100, 100, 100)).save(tmp_path / "a.png")
    drawn = draw_prediction(tmp_path / "a.png", {"task": "segmentation", "image_size": [20, 16], **result})
    scale = drawn.width / 20
    assert drawn.getpixel((int(6 * scale), int(8 * scale))) != (100, 100, 100)  # inside: tinted
    assert drawn.getpixel((int(16 * scale), int(14 * scale))) == (100, 100, 100)  # outside: untouched
