"""What a run folder records about itself (pipeline.runfolder): a damaged recipe.yaml or summary.json
is one error line naming the file and what to do under every command that reads it, and a run's
base model resolves from any folder, for runs trained with relative paths too."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tiny_runs import train_tiny_run

from pipeline import loader, runfolder
from pipeline.cli import main
from pipeline.errors import UvftError
from pipeline.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_ADVICE = (
    "the file is damaged or cut short; `uvft finetune RECIPE --resume auto` with the run's recipe "
    "writes it again from the run's latest checkpoint"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Florence-2 run trained as a user does, from its project folder with relative paths
    (data.root shapes, data.cache_dir cache, output_dir run): the project folder."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "data_cards").symlink_to(ROOT / "data_cards")  # the recipe names its cards relatively
    here = os.getcwd()
    os.chdir(folder)
    try:
        train_tiny_run(folder, "florence2", "data.root=shapes", "data.cache_dir=cache", "output_dir=run")
    finally:
        os.chdir(here)
    return folder


def _image(folder: Path) -> str:
    return str(sorted((folder / "shapes/imagefolder/train").rglob("*.png"))[0])


def _copy_run(folder: Path, to: Path, *, checkpoints: bool = False) -> Path:
    ignore = None if checkpoints else shutil.ignore_patterns("checkpoints")
    shutil.copytree(folder / "run", to, ignore=ignore)
    return to


def test_a_run_records_its_base_so_that_it_resolves_from_anywhere(
    trained: Path, tmp_path, monkeypatch, capsys
):
    summary = json.loads((trained / "run/summary.json").read_text())
    tiny = summary["base_model"]
    assert Path(tiny).is_absolute() and Path(tiny).parent == trained / "cache/tiny", tiny
    assert json.loads((trained / "run/uvft.json").read_text())["base_model"] == tiny
    monkeypatch.chdir(tmp_path)  # not where it trained: its relative paths mean nothing here
    args = [
        "predict",
        "--model",
        str(trained / "run"),
        "--image",
        _image(trained),
        "--task",
        "classification",
    ]
    assert main(args) == 0
    assert "label" in capsys.readouterr().out
    assert main(["export", str(trained / "run"), "--merged", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged/model.safetensors").is_file()


def test_an_older_runs_relative_base_is_found_from_the_run_folders_location(
    trained: Path, tmp_path, monkeypatch
):
    """Runs trained before bases were recorded absolute wrote the path relative to where training ran
    (runs/old, .cache/... in one folder): summary.json's run_dir tells that folder from the run's."""
    old = _copy_run(trained, trained / "runs" / "old")
    tiny = Path(json.loads((old / "summary.json").read_text())["base_model"])
    relative = str(tiny.relative_to(trained))  # cache/tiny/florence2-...
    for name in ("summary.json", "uvft.json"):
        data = json.loads((old / name).read_text())
        data["base_model"] = relative
        if name == "summary.json":
            data["run_dir"] = "runs/old"
        (old / name).write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    assert loader.resolve_base(relative, old) == str(tiny)
    assert loader.resolve_base(relative, old / "best") == str(tiny)  # <run>/best: its run's
    assert main(["predict", "--model", str(old), "--image", _image(trained), "--task", "classification"]) == 0
    # a path relative to the run folder itself is found too; one nowhere here is still one error line
    assert runfolder.local_base(os.path.relpath(tiny, old), old) == old / os.path.relpath(tiny, old)
    with pytest.raises(UvftError, match="'cache/tiny/gone', is a folder that is not on this machine"):
        loader.resolve_base("cache/tiny/gone", old)


PARTIAL_SUMMARY = '{\n  "run_dir": "run",\n  "steps": 6,\n  "base_mo'
PARTIAL_RECIPE = "name: demo\nmodel: {family: florence2\n"


def _damage(run: Path, what: str) -> str:
    """Damage the run's file; return the error line uvft must print."""
    if what == "partial summary":
        (run / "summary.json").write_text(PARTIAL_SUMMARY)
        return (
            f"error: {run}/summary.json: not valid JSON (line 4, column 3: Unterminated string starting "
            f"at): {SUMMARY_ADVICE}"
        )
    if what == "summary without base_model":
        summary = json.loads((run / "summary.json").read_text())
        del summary["base_model"]
        (run / "summary.json").write_text(json.dumps(summary))
        return (
            f"error: {run}/summary.json does not name the run's base_model: {SUMMARY_ADVICE}, or set "
            "model.id to the model the run started from"
        )
    (run / "recipe.yaml").write_text(PARTIAL_RECIPE)
    copies = sorted(run.glob("checkpoints/step-*/recipe.yaml"))
    restore = (
        f"its latest checkpoint's copy, {copies[-1]}" if copies else "the recipe the run was trained with"
    )
    return (
        f"error: {run}/recipe.yaml: not valid YAML (line 3, column 1: expected ',' or '}}', but got "
        f"'<stream end>'): the file is damaged or cut short; restore it from {restore}"
    )


@pytest.mark.parametrize(
    ("command", "damage"),
    [
        ("eval", "partial summary"),
        ("eval", "summary without base_model"),
        ("predict", "partial summary"),
        ("predict", "summary without base_model"),
        ("predict", "partial recipe"),
        ("export", "partial summary"),
        ("export", "partial recipe"),
        ("push", "partial summary"),
        ("push", "partial recipe"),
    ],
)
def test_a_damaged_run_file_is_one_error_line_naming_it(
    trained: Path, tmp_path, monkeypatch, capsys, command, damage
):
    run = _copy_run(trained, tmp_path / "run")
    want = _damage(run, damage)
    monkeypatch.chdir(trained)  # the run's recipe names its data relative to its project folder
    if command == "eval":
        args = [
            "eval",
            str(trained / "run/recipe.yaml"),
            f"output_dir={run}",
            "--limit",
            "1",
            "--no-progress",
        ]
    elif command == "predict":
        (run / "uvft.json").unlink()  # a run from before uvft.json: rebuilt from recipe.yaml and summary.json
        args = ["predict", "--model", str(run), "--image", _image(trained), "--task", "classification"]
    elif command == "export":
        args = ["export", str(run), "--merged", str(tmp_path / "merged")]
    else:
        args = ["push", str(run), "--repo-id", "me/demo", "--merged", "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == want


def test_a_damaged_recipe_given_to_eval_is_one_error_line(trained: Path, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(PARTIAL_RECIPE)
    assert main(["eval", str(recipe), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: {recipe}: not valid YAML (line 3, column 1: expected ',' or '}}', but got '<stream end>')\n"
    )


def test_resuming_an_older_checkpoint_with_a_damaged_run_recipe_is_one_error_line(
    trained: Path, tmp_path, monkeypatch, capsys
):
    """A checkpoint from before checkpoints kept their recipe is compared with the run's recipe.yaml:
    damaged, it is one line that says where a copy is."""
    run = _copy_run(trained, tmp_path / "run", checkpoints=True)
    for step in ckpt.checkpoint_dirs(run):  # as uvft wrote them before: format 2, no recipe.yaml
        (step / "recipe.yaml").unlink()
        state = json.loads((step / "state.json").read_text())
        (step / "state.json").write_text(json.dumps({**state, "format": 2}))
        ckpt.write_manifest(step)
    want = _damage(run, "partial recipe")
    assert "the recipe the run was trained with" in want  # no checkpoint holds a copy
    monkeypatch.chdir(trained)
    args = [
        "finetune",
        str(trained / "run/recipe.yaml"),
        f"output_dir={run}",
        "--resume",
        "auto",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == want


def test_a_pickled_adapter_is_refused_by_eval_as_by_predict(trained: Path, tmp_path, monkeypatch, capsys):
    pickled = _copy_run(trained, tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").unlink()
    (pickled / "adapter_model.bin").write_bytes(b"never unpickled")
    monkeypatch.chdir(trained)
    want = f"error: {pickled} has no adapter_model.safetensors (uvft loads safetensors only)"
    args = [
        "eval",
        str(trained / "run/recipe.yaml"),
        "--adapter",
        str(pickled),
        "--limit",
        "1",
        "--no-progress",
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == want
    assert main(["predict", "--model", str(pickled), "--image", _image(trained)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == want


def test_yaml_and_json_problems_are_said_on_one_line(tmp_path: Path):
    (tmp_path / "recipe.yaml").write_text("- a list\n- not a recipe\n")
    with pytest.raises(UvftError, match=r"recipe\.yaml: not a recipe \(a YAML mapping of sections\)"):
        runfolder.read_recipe(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(UvftError, match=r"summary\.json: not a run summary \(a JSON object\)"):
        runfolder.read_summary(tmp_path)
    assert (
        runfolder.read_recipe(tmp_path / "nothing") is None and runfolder.summary_base(tmp_path / "x") is None
    )
    assert runfolder.recorded_base("me/demo") == "me/demo"  # a hub id, not a folder here
    assert runfolder.recorded_base(str(tmp_path)) == str(tmp_path)
