"""The README's examples print what the README shows: each output block is produced here by the
command beside it (`…` in a README line stands for what changes from run to run: a time, a path, a
network error), and the defaults it lists are the recipe schema's. The demo run's predictions need
the trained demo (minutes): those run under `-m slow`."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from coco_sets import coco_set

from pipeline import cli, recipe
from pipeline.demo import shapes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block_after(marker: str) -> list[str]:
    """The lines of the first fenced block after the first line holding `marker` (a marker inside a
    block, a command say: the block after that one)."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    inside = sum(1 for i in fences if i < start) % 2 == 1
    after = [i for i in fences if i > start][1 if inside else 0 :]
    return lines[after[0] + 1 : after[1]]


def block_with(marker: str) -> list[str]:
    """The lines of the fenced block that holds the line with `marker`."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    opening = max(i for i in fences if i < start)
    return lines[opening + 1 : min(i for i in fences if i > start)]


def matches(shown: list[str], printed: list[str]) -> None:
    """Each README line equals the printed one, `…` standing for any text; `...` alone on a line
    stands for the rest of the output."""
    for i, line in enumerate(shown):
        if line.strip() == "...":
            return
        assert i < len(printed), f"the README shows more than was printed: {line!r}"
        pattern = ".*".join(re.escape(part) for part in line.split("…"))
        assert re.fullmatch(pattern, printed[i].rstrip()), f"README: {line!r}\nprinted: {printed[i]!r}"
    assert len(printed) == len(shown), f"printed more than the README shows: {printed[len(shown) :]}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out like the repository (recipes/, data_cards/), as the current folder."""
    for name in ("recipes", "data_cards"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


# --- Your own data -------------------------------------------------------------------------------


def _own_data(root: Path) -> None:
    """The layout the README's own-data section shows: COCO instances (train and val, 2 categories,
    11 training annotations), a captions JSONL without a val split, an ImageFolder of cats and dogs."""
    from PIL import Image

    coco = root / "coco"
    for split, n in (("train", 8), ("val", 3)):
        (coco / "images" / split).mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            Image.new("RGB", (48, 32), (20 * i, 120, 60)).save(coco / "images" / split / f"{i:03d}.jpg")
            images.append({"id": i, "file_name": f"{i:03d}.jpg", "width": 48, "height": 32})
            for k in range(2 if i < 3 else 1):  # 3 images with two boxes: 11 annotations of 8 images
                anns.append(
                    {"id": len(anns), "image_id": i, "category_id": 1 + k, "bbox": [2 + 10 * k, 4, 8, 8]}
                )
        categories = [{"id": 1, "name": "ball"}, {"id": 2, "name": "cube"}]
        (coco / "annotations").mkdir(exist_ok=True)
        data = {"images": images, "annotations": anns, "categories": categories}
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    (root / "captions").mkdir()
    lines = [
        {"task": "caption", "image": f"coco/images/train/{i:03d}.jpg", "caption": f"a photo {i}"}
        for i in range(8)
    ]
    (root / "captions" / "captions_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for cls in ("cat", "dog"):
        (root / "pets" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (32, 32), (200, 30 * i, 10)).save(root / "pets" / cls / f"{i}.jpg")


def test_own_data_init_writes_the_recipe_the_readme_shows(workdir: Path, capsys):
    _own_data(workdir / "mydata")
    command = next(
        line for line in block_after("`uvft init` reads each path") if line.startswith("uvft init")
    )
    code, out, _ = _run(shlex.split(command)[1:], capsys)
    assert code == 0
    matches(block_after("uvft init mydata/coco"), out)
    written = (workdir / "recipes" / "mine.yaml").read_text().replace(str(workdir), "/home/me")
    (workdir / "recipes" / "mine.yaml").unlink()  # recipes/ is the repository's, through a link
    assert written.splitlines() == block_after("`recipes/mine.yaml`, the whole recipe")


def test_own_data_recipe_checks_and_its_jsonl_fields(workdir: Path, capsys):
    _own_data(workdir / "mydata")
    out = workdir / "mine.yaml"
    paths = [
        "mydata/coco/annotations/instances_train.json",
        "mydata/captions/captions_train.jsonl",
        "mydata/pets",
    ]
    assert cli.main(["init", *paths, "--out", str(out)]) == 0
    capsys.readouterr()
    code, printed, _ = _run(["check", str(out), "model.id=null"], capsys)
    assert code == 0 and printed[-1] == "ok: ready to train"
    # the JSONL table names the reader's fields, task by task
    after = README.split("One JSONL line per example")[1].splitlines()
    first = next(i for i, line in enumerate(after) if line.startswith("| "))
    table = []
    for line in after[first:]:
        if not line.startswith("| "):
            break
        table.append(line)
    from pipeline import tasks

    assert [row.split("|")[1].strip() for row in table[2:]] == list(tasks.names())


# --- Quick start, the export, uvft check, a build that fails -------------------------------------


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default recipe's shapes set (5,000 + 200 images), as `make data` generates it."""
    folder = tmp_path_factory.mktemp("demo")
    defaults = recipe.load_recipe(ROOT / "recipes/demo.yaml").data.demo
    shapes.generate(folder / "data" / "shapes", progress=False, **defaults.model_dump())
    return folder


def test_quick_start_build_table(demo_build: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(demo_build)
    for name in ("recipes", "data_cards"):
        if not (demo_build / name).exists():
            (demo_build / name).symlink_to(ROOT / name)
    code, out, _ = _run(["build", "recipes/demo.yaml", "--no-progress"], capsys)
    assert code == 0
    table = [re.sub(r"[\u2500-\u257f]", " ", line).rstrip() for line in out]
    rows = [re.sub(r"\s+", " ", line).strip() for line in table if line.strip()]
    shown = [re.sub(r"\s+", " ", line).strip() for line in block_after("prints a table like this")]
    assert re.fullmatch(r"records for paligemma \(built in [\d.]+ s\)", rows[0])
    assert shown[0].startswith("records for paligemma (built in")
    assert rows[1] == shown[1] and rows[2] == shown[2] and shown[3] == "..."


def test_the_chat_jsonl_export_example(demo_build: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(demo_build)
    for name in ("recipes", "data_cards"):
        if not (demo_build / name).exists():
            (demo_build / name).symlink_to(ROOT / name)
    assert (
        cli.main(["build", "recipes/demo.yaml", "--export", "chat-jsonl", "mixture.jsonl", "--no-progress"])
        == 0
    )
    first = json.loads((demo_build / "mixture.jsonl").read_text().splitlines()[0])
    shown = json.loads("\n".join(block_after("SFT trainer and hosted multimodal fine-tuning")))
    url = shown["messages"][0]["content"][0]["image_url"]
    url["url"] = url["url"].replace("/work/main/", f"{Path.cwd()}/")
    assert first == shown


def test_uvft_check_example(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    shown = block_with("$ uvft check my.yaml")
    argv = shlex.split(shown[0].removeprefix("$ "))[1:]
    # my.yaml: a COCO source whose val annotations are not there, under /data/mine
    coco_set(tmp_path / "mine" / "ann", "xywh")
    (tmp_path / "mine" / "ann" / "instances.json").rename(tmp_path / "mine" / "ann" / "instances_train.json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "my",
                "model": {"family": "paligemma", "id": None},
                "data": {
                    "root": str(tmp_path / "mine"),
                    "sources": [
                        {
                            "name": "my_boxes",
                            "format": "coco_detection",
                            "splits": {
                                "train": {"annotations": "ann/instances_train.json", "images": "ann/images"},
                                "val": {"annotations": "ann/instances_val.json", "images": "ann/images"},
                            },
                        }
                    ],
                },
            }
        )
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub lookup here: the name decides, as without a network
    code, out, _ = _run(argv, capsys)
    assert code == 2
    matches(shown[1:], [line.replace(str(tmp_path / "mine"), "/data/mine") for line in out])


def test_the_build_error_of_xyxy_boxes(tmp_path: Path, capsys):
    recipe_file = coco_set(tmp_path / "coco", "xyxy")
    code, _, err = _run(["build", str(recipe_file), "--no-progress"], capsys)
    assert code == 2
    shown = " ".join(block_after("and the likely cause (`pipeline/sources/repairs.py`)"))
    assert " ".join(err).strip() == f"error: {shown.removeprefix('error: ')}"


# --- the recipe defaults -------------------------------------------------------------------------


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for k, v in node.items():
            out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
        return out
    return {prefix.rstrip("."): node}


def test_the_defaults_the_readme_lists_are_the_schemas():
    shown = yaml.safe_load("\n".join(block_after("The training sections (all optional, with defaults")))
    given = recipe.load_recipe(ROOT / "recipes/demo.yaml").model_dump(mode="json")
    sections = {
        "model": recipe.ModelSection,
        "adapter": recipe.AdapterSection,
        "mixture": recipe.MixtureSection,
        "train": recipe.TrainSection,
        "eval": recipe.EvalSection,
    }
    defaults = {}
    for name, cls in sections.items():
        values = {
            k: f.get_default(call_default_factory=True)
            for k, f in cls.model_fields.items()
            if not f.is_required()
        }
        defaults[name] = json.loads(json.dumps(values, default=lambda m: m.model_dump(mode="json")))
    for key, value in _leaves(shown).items():
        section, *path = key.split(".")
        node = defaults[section]
        for part in path:
            node = node[part]
        assert node == value, f"README says {key}: {value!r}; the schema's default is {node!r}"
    assert given  # the demo recipe loads with these sections
    first = yaml.safe_load("\n".join(block_after("heavy starts: a misspelt key")))["data"]
    for key in (
        "caption_targets",
        "check_images",
        "max_skip_fraction",
        "max_repair_fraction",
        "val_fraction",
        "polygon_tolerance",
    ):
        assert first[key] == recipe.DataSection.model_fields[key].default, key


# --- the demo's predictions (the trained demo: minutes) ------------------------------------------


@pytest.mark.slow
def test_the_demo_predictions_the_readme_shows(workdir: Path, capsys):
    """`make finetune` on the default recipe, then the README's `uvft predict` examples on it."""
    from pipeline.recipe import load_recipe
    from pipeline.train import loop

    loop.train(load_recipe("recipes/demo.yaml"), progress=False)
    command = block_after("### `uvft predict`")[0]
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(workdir / "pred.png")
    code, out, _ = _run(argv, capsys)
    assert code == 0
    matches(
        block_after("uvft predict --model runs/demo_multilingual"),
        [line.replace(str(workdir) + os.sep, "") for line in out],
    )
    shown = block_with("--task detection --classes diamond,star")
    code, out, _ = _run(shlex.split(shown[0].removeprefix("$ "))[1:], capsys)
    assert code == 0
    matches(shown[1:], out)
