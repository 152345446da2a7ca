"""The one loader of trained models (pipeline.loader): what it loads from each kind of folder, what it
reads only when asked, and the one-line errors; `uvft eval`, `load_model` / `uvft predict`, `uvft
export` and `uvft push` all go through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_runs import TrainedRun

from pipeline import loader
from pipeline.errors import UvftError
from pipeline.hub import export_merged
from pipeline.models.spec import load_spec

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    dst.mkdir(parents=True)
    for name in names:
        shutil.copy2(src / name, dst / name)
    return dst


def test_a_lora_run_loads_as_base_plus_adapter(trained_run: TrainedRun):
    m = loader.load(trained_run.run_dir, device="cpu")
    assert (m.kind, m.is_adapter, m.family) == ("adapter", True, trained_run.recipe.model.family)
    assert m.folder == trained_run.run_dir and hasattr(m.model, "peft_config")
    assert not m.model.training  # eval mode
    assert m.spec.method == "lora" and m.spec.base_model == trained_run.base
    # the generation config is the one pinned in the run folder
    pinned = json.loads((trained_run.run_dir / "generation_config.json").read_text())
    assert m.generation_config.no_repeat_ngram_size == pinned["no_repeat_ngram_size"] == 0


def test_best_reads_its_runs_uvft_json(trained_run: TrainedRun):
    # <run>/best holds an adapter without uvft.json: the run's says what it was trained on
    best = _copy(trained_run.run_dir, trained_run.run_dir / "best-copy", ADAPTER_FILES)
    try:
        m = loader.load(best, device="cpu")
        assert m.kind == "adapter" and m.spec == load_spec(trained_run.run_dir)
    finally:
        shutil.rmtree(best)


def test_what_the_caller_knows_is_not_read_again(trained_run: TrainedRun, tmp_path: Path):
    """`uvft eval` names the family and the base: an adapter folder with neither uvft.json nor a
    recipe beside it loads, and only asking for its spec says what is missing."""
    bare = _copy(trained_run.run_dir, tmp_path / "bare" / "adapter", ADAPTER_FILES)
    family = trained_run.recipe.model.family
    m = loader.load(bare, family=family, base=trained_run.base, device="cpu")
    assert m.kind == "adapter"
    with pytest.raises(UvftError, match=r"has no uvft\.json"):
        _ = m.spec
    with pytest.raises(UvftError, match=r"has no uvft\.json"):  # without them, the folder must say
        loader.load(bare, device="cpu")


def test_a_merged_export_and_a_base_load_as_models(trained_run: TrainedRun, tmp_path: Path):
    merged = loader.load(export_merged(trained_run.run_dir, tmp_path / "merged", card=False), device="cpu")
    assert (merged.kind, merged.is_adapter, merged.spec.method) == ("merged", False, "merged")
    assert not hasattr(merged.model, "peft_config")
    base = loader.load_base(trained_run.base, trained_run.recipe.model.family, device="cpu")
    assert (base.kind, base.folder) == ("base", Path(trained_run.base))
    assert not hasattr(base.model, "peft_config") and not base.model.training


def test_loading_errors_are_one_line(trained_run: TrainedRun, tmp_path: Path):
    with pytest.raises(UvftError, match="is a file; give a run folder"):
        loader.load(trained_run.run_dir / "uvft.json")
    with pytest.raises(UvftError, match=f"^{tmp_path}/not/here: no such folder, nor {tmp_path}/not "):
        loader.load(tmp_path / "not" / "here")
    empty = _copy(trained_run.run_dir, tmp_path / "empty", ("uvft.json",))
    with pytest.raises(UvftError, match=r"holds no adapter \(adapter_config\.json\) and no model"):
        loader.load(empty)
    pickled = _copy(trained_run.run_dir, tmp_path / "pickled", ("uvft.json", "adapter_config.json"))
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UvftError, match=r"no adapter_model\.safetensors \(uvft loads safetensors only\)"):
        loader.load(pickled)
    gone = _copy(trained_run.run_dir, tmp_path / "gone", ("uvft.json", *ADAPTER_FILES))
    spec = json.loads((gone / "uvft.json").read_text())
    (gone / "uvft.json").write_text(json.dumps({**spec, "base_model": "/machine/that/trained/it"}))
    with pytest.raises(UvftError, match="is a folder that is not on this machine"):
        loader.load(gone)


def test_a_path_that_is_not_there_is_a_local_error_naming_what_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A typo in a run folder's name says what is there; only `namespace/name` with no local
    `namespace/` goes to the hub."""
    import huggingface_hub

    asked: list[str] = []

    def snapshot_download(repo_id: str, **_: object) -> str:
        asked.append(repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    for name in ("demo", "ux-demo", "sig"):
        (tmp_path / "runs" / name / "best").mkdir(parents=True)
    (tmp_path / "runs" / "notes.txt").write_text("a file, not a run")

    def error(source: str) -> str:
        with pytest.raises(UvftError) as e:
            loader.resolve_source(source)
        return str(e.value)

    assert error("runs/ux-nothere") == "runs/ux-nothere: no such folder (folders in runs: demo, sig, ux-demo)"
    assert (
        error("runs/dmeo")
        == "runs/dmeo: no such folder; did you mean runs/demo? (folders in runs: demo, ux-demo, sig)"
    )
    assert error("./runz/demo/best") == (
        "./runz/demo/best: no such folder, nor runz; did you mean runs/demo/best? (folders here: runs)"
    )
    assert (
        error("runs/demo/bset")
        == "runs/demo/bset: no such folder; did you mean runs/demo/best? (folders in runs/demo: best)"
    )
    assert error("runs/sig/best/x") == "runs/sig/best/x: no such folder (runs/sig/best holds no folders)"
    assert error("demo") == "demo: no such folder (folders here: runs)"  # not of the form namespace/name
    assert asked == []
    assert loader.resolve_source("me/demo", revision="v1") == tmp_path  # no me/ here: a hub id
    assert asked == ["me/demo"]


@pytest.mark.parametrize(
    ("source", "local"),
    [
        ("./demo", True),
        ("../runs/demo", True),
        ("/abs/run", True),
        ("~/runs/demo", True),
        (".hidden/x", True),
        ("a/b/c", True),  # more than namespace/name
        ("runs/anything", True),  # runs/ exists here
        ("demo", True),  # its parent, the current folder, exists
        ("me/demo", False),
        ("google/paligemma2-3b-pt-224", False),
    ],
)
def test_what_reads_as_a_local_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, local: bool
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert loader.looks_local(source) is local
