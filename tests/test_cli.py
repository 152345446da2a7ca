"""The `uvft` command line: build prints the stats table, errors exit 2 with the key's path."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.cli import main, quiet_libraries
from pipeline.errors import UvftError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "shapes"
    assert main(["data", "demo", "--out", str(out), "--n-train", "6", "--n-val", "3", "--seed", "2"]) == 0
    return out


def test_data_demo_writes_the_real_formats(demo_dir: Path):
    coco = json.loads((demo_dir / "annotations/instances_train.json").read_text())
    assert len(coco["images"]) == 6
    assert len(list((demo_dir / "images/val").glob("*.png"))) == 3
    assert sum(1 for _ in (demo_dir / "imagefolder/train").rglob("*.png")) == 6


def test_data_demo_leaves_an_existing_folder_alone(demo_dir: Path, capsys: pytest.CaptureFixture[str]):
    before = (demo_dir / "annotations/instances_train.json").read_bytes()
    assert main(["data", "demo", "--out", str(demo_dir), "--n-train", "4"]) == 0
    assert "--force" in capsys.readouterr().out
    assert (demo_dir / "annotations/instances_train.json").read_bytes() == before


def test_build_prints_the_table_and_exports(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "r.jsonl"
    args = ["build", str(ROOT / "recipes/demo.yaml"), f"data.root={demo_dir}", f"data.cache_dir={tmp_path}"]
    assert (
        main([*args, "data.demo=null", "model.family=florence2", "--export-jsonl", str(out), "--no-progress"])
        == 0
    )
    text = capsys.readouterr().out
    assert (
        "records for florence2" in text
        and "shapes_vqa" in text
        and "license of shapes_vqa: Apache-2.0" in text
    )
    assert out.is_file() and all(
        json.loads(line)["family"] == "florence2" for line in out.read_text().splitlines()
    )
    assert main([*args, "data.demo=null", "model.family=florence2", "--no-progress"]) == 0
    assert "cached, nothing changed" in capsys.readouterr().out


def test_bad_recipe_key_exits_2_naming_the_path(capsys: pytest.CaptureFixture[str]):
    assert main(["build", str(ROOT / "recipes/demo.yaml"), "data.sources.0.splits.train.annotatons=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data.sources.0.splits.train.annotatons" in err


def test_check_prints_the_resolved_recipe_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["check", str(ROOT / "recipes/demo.yaml"), "data.seed=5", f"data.root={tmp_path / 'shapes'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "seed: 5" not in out and out.splitlines()[-1] == "ok: ready to train"
    for argv in ([*args, "--print"], ["-v", *args]):  # -v: uvft's own flag, before the command
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("name: demo\n") and "  seed: 5\n" in out
        assert out.splitlines()[-1] == "ok: ready to train"


def test_check_says_what_it_found_and_ends_in_a_verdict(demo_dir: Path, capsys: pytest.CaptureFixture[str]):
    recipe = str(ROOT / "recipes/demo.yaml")
    assert main(["check", recipe, f"data.root={demo_dir}", "data.demo=null", "model.tiny.base_steps=0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"ok       recipe {recipe}: valid (paligemma; shapes_detection, shapes_captions, shapes_vqa, "
        "shapes_classes)"
    )
    assert lines[1].startswith(
        "note     model.id null: uvft's tiny stand-in PaliGemma, random weights (~1.1M"
    )
    assert lines[2] == f"ok       data.root {demo_dir}: the 16 paths the sources name are there"
    assert [line.split(" (")[0] for line in lines[3:7]] == [
        "ok       shapes_detection/train",
        "ok       shapes_captions/train",
        "ok       shapes_vqa/train",
        "ok       shapes_classes/train",
    ]
    assert lines[7:] == ["ok: ready to train"]


def test_check_exits_2_with_the_problems_in_its_verdict(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "pali"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "paligemma"}')
    args = ["check", str(ROOT / "recipes/demo.yaml"), f"data.root={demo_dir}-typo", "data.demo=null"]
    assert main([*args, "model.family=florence2", f"model.id={folder}"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        f"problem  model.id {folder}: its {folder / 'config.json'} says 'paligemma', but model.family is "
        "florence2: set model.family: paligemma, or model.id to a florence2 model",
        f"problem  data.root {demo_dir}-typo: no such folder (the sources' relative paths are resolved "
        "under it)",
        "2 problems: model.id, data.root",
    ]
    # a recipe that does not validate is a problem too, with the same verdict line
    assert main(["check", str(ROOT / "recipes/demo.yaml"), "data.sources.0.splits.train.annotatons=x"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("problem  ") and "data.sources.0.splits.train.annotatons" in lines[0]
    assert lines[1:] == ["1 problem: recipe"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["eval", "--batch-size", "0"], "uvft eval: error: argument --batch-size: must be at least 1, got 0"),
        (
            ["eval", "--batch-size", "-2"],
            "uvft eval: error: argument --batch-size: must be at least 1, got -2",
        ),
        (["eval", "--limit", "-1"], "uvft eval: error: argument --limit: must be at least 1, got -1"),
        (["eval", "--limit", "0"], "uvft eval: error: argument --limit: must be at least 1, got 0"),
        (["eval", "--limit", "1.5"], "uvft eval: error: argument --limit: '1.5' is not a whole number"),
        (
            ["predict", "--model", "m", "--image", "i", "--batch-size", "0"],
            "uvft predict: error: argument --batch-size: must be at least 1, got 0",
        ),
        (
            ["predict", "--model", "m", "--image", "i", "--threshold", "-0.1"],
            "uvft predict: error: argument --threshold: must be between 0 and 1, got -0.1",
        ),
        (
            ["predict", "--model", "m", "--image", "i", "--threshold", "nan"],
            "uvft predict: error: argument --threshold: must be between 0 and 1, got nan",
        ),
        (
            ["data", "demo", "--n-train", "-1"],
            "uvft data demo: error: argument --n-train: must be at least 0, got -1",
        ),
        (
            ["data", "demo", "--n-val", "-5"],
            "uvft data demo: error: argument --n-val: must be at least 0, got -5",
        ),
        (
            ["data", "demo", "--image-size", "8"],
            "uvft data demo: error: argument --image-size: must be at least 32, got 8",
        ),
        (
            ["data", "demo", "--max-shapes", "0"],
            "uvft data demo: error: argument --max-shapes: must be at least 1, got 0",
        ),
        (
            ["data", "demo", "--shape-size", "0", "0.5"],
            "uvft data demo: error: argument --shape-size: must be above 0 and at most 1, got 0",
        ),
        (
            ["data", "demo", "--shape-size", "0.6", "0.3"],
            "uvft data demo: error: argument --shape-size: MIN 0.6 is above MAX 0.3",
        ),
        (
            ["data", "demo", "--seed", "-1"],
            "uvft data demo: error: argument --seed: must be at least 0, got -1",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_while_the_command_line_is_read(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == error


def test_mixture_weights_with_another_strategy_fail_check_and_build_naming_the_key(
    capsys: pytest.CaptureFixture[str],
):
    recipe = str(ROOT / "recipes/demo.yaml")
    said = (
        f"{recipe}: mixture.weights: only strategy 'weights' uses them, and mixture.strategy is 'uniform': "
        "set mixture.strategy=weights to use them, or mixture.weights=null to drop them"
    )
    assert main(["check", recipe, "mixture.strategy=uniform"]) == 2
    assert capsys.readouterr().out.splitlines() == [f"problem  {said}", "1 problem: recipe"]
    assert main(["build", recipe, "mixture.strategy=uniform"]) == 2
    assert capsys.readouterr().err == f"error: {said}\n"


def test_console_script_help():
    # the installed `uvft` entry point, as a user runs it
    script = Path(sys.executable).parent / "uvft"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "build" in out.stdout and "data" in out.stdout


def test_overrides_may_follow_options(capsys: pytest.CaptureFixture[str]):
    assert main(["check", str(ROOT / "recipes/demo.yaml"), "--print", "data.seed=5", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "steps: 7" in out
    with pytest.raises(SystemExit):
        main(["check", str(ROOT / "recipes/demo.yaml"), "--bogus"])


@pytest.mark.parametrize("model_id", ["{tmp}/no/such/model", "./missing-model-folder"])
def test_finetune_with_a_missing_model_folder_is_one_error_line(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], model_id: str
):
    args = ["finetune", str(ROOT / "recipes/demo.yaml"), f"data.root={demo_dir}", "data.demo=null"]
    args += [f"data.cache_dir={tmp_path}", f"output_dir={tmp_path / 'run'}", "train.trackers=[]"]
    args += [f"model.id={model_id.format(tmp=tmp_path)}", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Repo id must be" not in err
    assert (
        err.strip().splitlines()[-1] == f"error: model {model_id.format(tmp=tmp_path)}: no such folder "
        "(a hub id is namespace/name)"
    )


def test_remote_code_checkpoint_is_one_error_line(demo_dir: Path, tmp_path: Path, capsys):
    from pipeline import models

    folder = models.get("paligemma").build_tiny(tmp_path / "remote", ["caption en", "a red circle."])
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    args = ["finetune", str(ROOT / "recipes/demo.yaml"), f"data.root={demo_dir}", "data.demo=null"]
    args += [f"data.cache_dir={tmp_path}", f"output_dir={tmp_path / 'run'}", "train.trackers=[]"]
    assert main([*args, f"model.id={folder}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {folder}: its config.json maps to remote code")


def test_data_demo_extra_tasks(tmp_path: Path):
    out = tmp_path / "shapes"
    args = [
        "data",
        "demo",
        "--out",
        str(out),
        "--n-train",
        "3",
        "--n-val",
        "2",
        "--extra-tasks",
        "ocr",
        "refer",
    ]
    assert main(args) == 0
    assert json.loads((out / "shapes.json").read_text())["extra_tasks"] == ["refer", "ocr"]  # canonical order
    assert len((out / "ocr/ocr_val.jsonl").read_text().splitlines()) == 2
    assert (out / "refer/refs(unc).p").is_file() and not (out / "annotations/captions_train_de.json").exists()


def test_predict_task_choices_come_from_the_task_table(capsys: pytest.CaptureFixture[str]):
    from pipeline import tasks

    with pytest.raises(SystemExit) as stop:
        main(["predict", "--model", "runs/x", "--image", "x.png", "--task", "detetcion"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'detetcion'" in err
    assert ", ".join(repr(t) for t in tasks.names()) in err


@pytest.mark.parametrize(
    "mistake",
    ["mistyped data.root", "missing annotations", "family of a local folder", "family of a hub id"],
)
def test_finetune_stops_before_building_anything(
    demo_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mistake: str,
):
    """Each mistake ends in one error line before a record is built or a model loaded (the hub is
    not asked: its lookup answers as an unreachable hub does)."""
    from pipeline import check
    from pipeline.train import loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("finetune went on to train"))
    monkeypatch.setattr(
        check,
        "hub_config",
        lambda model_id, revision, timeout: check.HubAnswer(None, "the hub did not answer"),
    )
    folder = tmp_path / "pali"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "paligemma"}')
    overrides, error = {
        "mistyped data.root": (
            [f"data.root={demo_dir}x"],
            f"data.root {demo_dir}x: no such folder (the sources' relative paths are resolved under it)",
        ),
        "missing annotations": (
            ["data.sources.shapes_vqa.splits.val.questions=annotations/q.json"],
            f"shapes_vqa/val: questions {demo_dir / 'annotations/q.json'}: no such file or folder",
        ),
        "family of a local folder": (
            ["model.family=florence2", f"model.id={folder}"],
            f"model.id {folder}: its {folder / 'config.json'} says 'paligemma', but model.family is "
            "florence2: set model.family: paligemma, or model.id to a florence2 model",
        ),
        "family of a hub id": (
            ["model.family=florence2", "model.id=google/paligemma2-3b-pt-224"],
            "model.id google/paligemma2-3b-pt-224: its name says 'paligemma', but model.family is florence2: "
            "set model.family: paligemma, or model.id to a florence2 model (its config was not read: the hub "
            "did not answer)",
        ),
    }[mistake]
    args = ["finetune", str(ROOT / "recipes/demo.yaml"), f"data.root={demo_dir}", "data.demo=null"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}", "--no-progress"]
    assert main([*args, *overrides]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {error}"]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_other_libraries_notices_are_hidden_unless_verbose():
    """What transformers and peft say about uvft's own choices is hidden (uvft's warnings and the
    libraries' others are not), only while the command runs, and -v shows it all."""
    notices = [  # (category, module, message) as the libraries raise them
        (FutureWarning, "transformers.modeling_utils", "`is_gradient_checkpointing` is deprecated"),
        (UserWarning, "peft.tuners.tuners_utils", "Model has `tie_word_embeddings=True` and a tied layer"),
        (UserWarning, "peft.tuners.tuners_utils", "Input and output embeddings are no longer tied after "
         "merging. Setting `tie_word_embeddings=False` in the model config."),
    ]  # fmt: skip
    kept = [
        (UserWarning, "pipeline.data.build", "uvft's own"),
        (UserWarning, "transformers.modeling_utils", "a transformers warning of another kind"),
        (FutureWarning, "peft.tuners.tuners_utils", "a peft deprecation"),
    ]
    logs = [
        ("transformers.generation.configuration_utils", "The following generation flags are not valid and "
         "may be ignored: ['early_stopping']."),
        ("transformers.generation.utils", "Both `max_new_tokens` (=64) and `max_length`(=20) seem to have "
         "been set."),
        ("transformers.modeling_utils", "The tied weights mapping and config for this model specifies to tie "
         "a to b, but both are present in the checkpoints with different values, so we will NOT tie them."),
    ]  # fmt: skip
    kept_logs = [
        ("transformers.modeling_utils", "Some weights of the model checkpoint were not used"),
        ("transformers.generation.utils", "The following generation flags are not valid"),  # another logger's
    ]

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen_logs.append(record.getMessage())

    def shown(verbose: bool) -> tuple[list[str], list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_libraries(verbose):
                for category, module, message in notices + kept:
                    warnings.warn_explicit(message, category, "x.py", 1, module=module)
                for name, message in logs + kept_logs:
                    logging.getLogger(name).warning(message)
        return [str(w.message) for w in caught], seen_logs

    collect = Collect()
    for name, _ in logs + kept_logs:
        logging.getLogger(name).addHandler(collect)
    try:
        filters = list(warnings.filters)
        seen_logs: list[str] = []
        assert shown(verbose=False) == ([m for *_, m in kept], [m for _, m in kept_logs])
        assert warnings.filters == filters  # as they were: main changes nothing for later
        seen_logs = []
        assert shown(verbose=True) == ([m for *_, m in notices + kept], [m for _, m in logs + kept_logs])
    finally:
        for name, _ in logs + kept_logs:
            logging.getLogger(name).removeHandler(collect)
    assert all(not logging.getLogger(name).filters for name, _ in logs)


def test_an_error_inside_a_progress_bar_starts_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from tqdm.auto import tqdm

    def fails_midway(args: object) -> int:
        bar = tqdm(total=4, desc="reading", ncols=60)
        bar.update(1)
        raise UvftError("file x.json, record 2: it broke")

    monkeypatch.setattr(cli, "cmd_check", fails_midway)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    *bar, error, end = err.split("\n")
    assert (error, end) == ("error: file x.json, record 2: it broke", "")
    assert bar[-1].split("\r")[-1].startswith("reading:  25%")  # the bar, closed where it stopped
    assert not cli._open_bars()


def test_log_lines_are_printed_above_a_progress_bar_not_glued_to_it():
    import io

    from tqdm.auto import tqdm

    out = io.StringIO()
    logger = logging.getLogger("pipeline.test_cli")
    handler = cli._LineHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        with tqdm(total=2, desc="building", file=out, ncols=60) as bar:
            bar.update(1)
            logger.warning("class folder val/diamond has no images")
        logger.warning("after the bar")
    finally:
        logger.removeHandler(handler)
    lines = [part.split("\r")[-1] for part in out.getvalue().split("\n")]
    assert "WARNING pipeline.test_cli: class folder val/diamond has no images" in lines
    assert lines[-2:] == ["WARNING pipeline.test_cli: after the bar", ""]
