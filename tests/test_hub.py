"""Publishing: the model card, the staged folder, the merged export, and the card's snippet."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from hub_server import fake_hub_fixture  # noqa: F401
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from tiny_runs import TrainedRun

from pipeline import cli, folders, load_model
from pipeline.errors import UvftError
from pipeline.formats.loc import strip_markers
from pipeline.hub import export_merged, stage


def _metrics(run: TrainedRun) -> dict:
    return json.loads((run.run_dir / "eval" / "val" / "metrics.json").read_text())


def _rows(run: TrainedRun) -> list[dict]:
    return [json.loads(x) for x in (run.run_dir / "eval/val/generations.jsonl").read_text().splitlines()]


def _val_items(run: TrainedRun) -> list[dict]:
    rows = _rows(run)
    return [
        {"image": r["image"], "task": r["task"], "question": r["references"].get("question")} for r in rows
    ]


def test_adapter_on_a_local_base_is_refused_with_the_ways_out(trained_run: TrainedRun):
    with pytest.raises(UvftError, match=r"local folder .*--merged.*--base-repo-id"):
        stage(trained_run.run_dir, "me/demo")
    with pytest.raises(UvftError, match="namespace/name"):
        stage(trained_run.run_dir, "no-namespace", merged=True)


def test_staged_adapter_and_its_card(trained_run: TrainedRun):
    staged = stage(trained_run.run_dir, "me/demo", base_repo_id="me/demo-base")
    names = {name for name, _ in staged.files}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "generation_config.json",
        "uvft.json",
        "recipe.yaml",
        "metrics.json",
        "eval/report.md",
        "README.md",
    } <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    # the adapter points at the pushed base, which is staged too with its weights
    adapter_config = json.loads((staged.folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "me/demo-base"
    assert json.loads((staged.folder / "uvft.json").read_text())["base_model"] == "me/demo-base"
    assert staged.base is not None and staged.base.repo_id == "me/demo-base"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {n for n, _ in staged.base.files}
    # the weights are byte-identical to the run's
    for name in ("adapter_model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (staged.folder / name).read_bytes() == (trained_run.run_dir / name).read_bytes()

    # the card: metadata parses back the way the hub reads it, with values equal to metrics.json
    card = ModelCard.load(staged.folder / "README.md")
    meta = metadata_load(staged.folder / "README.md")
    family = trained_run.recipe.model.family
    assert meta["base_model"] == "me/demo-base"
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "image-text-to-text"
    assert set(meta["tags"]) >= {"uvft", "lora", family, "vqa", "detection", "caption", "classification"}
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["shapes"]
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "demo"
    metrics = _metrics(trained_run)
    got = {(r.task_type, r.metric_name): r.metric_value for r in results}
    assert got == {
        ("visual-question-answering", "VQAv2 accuracy"): metrics["vqa"]["accuracy"],
        ("object-detection", "COCO mAP@[.5:.95]"): metrics["detection"]["map"],
        ("object-detection", "COCO mAP@0.5"): metrics["detection"]["map_50"],
        ("image-to-text", "CIDEr-D"): metrics["caption"]["cider"],
        ("image-classification", "top-1 accuracy (generated label)"): metrics["classification"]["accuracy"],
        ("image-classification", "top-1 accuracy (closed-set)"): metrics["classification"]["closed_set"][
            "accuracy"
        ],
    }
    assert all(r.dataset_split == "val" for r in results)
    published = json.loads((staged.folder / "metrics.json").read_text())
    assert published["fine_tuned"] == metrics and published["base"] is not None
    body = card.text
    assert "More Information Needed" not in body
    for heading in ("Tasks and prompts", "Evaluation", "Training", "Use", "Limitations", "Reproduce"):
        assert f"## {heading}" in body
    spec = json.loads((staged.folder / "uvft.json").read_text())
    for task in spec["tasks"].values():
        assert task["prompt"].replace("|", "\\|") in body
    assert spec["location_tokens"]["tokens"] in body
    assert "planned" in body and "realised" in body  # the mixture table


def _snippet(readme: Path) -> str:
    return re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)


def _run_snippet(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<card snippet>", "exec"), {})
    return out.getvalue().strip()


def test_card_snippet_gives_what_uvft_predict_gives(trained_run: TrainedRun):
    staged = stage(trained_run.run_dir, "me/demo", base_repo_id="me/demo-base")
    rows = [
        json.loads(x) for x in (trained_run.run_dir / "eval/val/generations.jsonl").read_text().splitlines()
    ]
    image = next(r["image"] for r in rows if r["task"] == "detection")
    code = _snippet(staged.folder / "README.md")
    printed = _run_snippet(
        code, {'"me/demo"': repr(str(staged.folder)), '"me/demo-base"': repr(str(staged.base.folder)),
               '"image.jpg"': repr(image)},
    )  # fmt: skip
    # the staged adapter names its base by hub id; uvft predict on the run folder reads the same files
    predicted = load_model(trained_run.run_dir, device="cpu").predict(image, "detection")
    assert printed == strip_markers(predicted["generated_text"])
    evaluated = next(r for r in rows if r["image"] == image and r["task"] == "detection")
    assert printed == strip_markers(evaluated["generated_text"])


def test_merged_export_generates_what_the_adapter_generates(trained_run: TrainedRun, tmp_path: Path):
    out = export_merged(trained_run.run_dir, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "uvft.json", "README.md"} <= names
    assert "adapter_config.json" not in names
    assert json.loads((out / "uvft.json").read_text())["method"] == "merged"
    items = _val_items(trained_run)
    adapter = load_model(trained_run.run_dir, device="cpu").predict_many(items, progress=False)
    merged_model = load_model(out, device="cpu")
    assert not merged_model.is_adapter and not hasattr(merged_model.model, "peft_config")
    merged = merged_model.predict_many(items, progress=False)
    assert {i["task"] for i in items} == {"classification", "caption", "vqa", "detection"}
    assert [m["generated_text"] for m in merged] == [a["generated_text"] for a in adapter]
    assert [m.get("label") for m in merged] == [a.get("label") for a in adapter]
    # the merged card has no peft and shows the snippet for a full model
    meta = metadata_load(out / "README.md")
    assert meta["library_name"] == "transformers" and "lora" not in meta["tags"]
    code = _snippet(out / "README.md")
    assert "peft" not in code
    image = next(i["image"] for i in items if i["task"] == "detection")
    printed = _run_snippet(code, {'"local/merged"': repr(str(out)), '"image.jpg"': repr(image)})
    first = next(
        m for m, i in zip(merged, items, strict=True) if i["image"] == image and i["task"] == "detection"
    )
    assert printed == strip_markers(first["generated_text"])


def test_push_dry_run_lists_the_folder(trained_run: TrainedRun, capsys: pytest.CaptureFixture[str]):
    argv = ["push", str(trained_run.run_dir), "--repo-id", "me/demo", "--merged", "--dry-run"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "dry run: the model card validated; nothing was uploaded" in out
    assert re.search(r"me/demo: \d+ files, .* staged in .*push/me--demo", out)
    for name in ("model.safetensors", "README.md", "uvft.json", "metrics.json", "eval/report.md"):
        assert re.search(rf"^\s+[\d.]+ [KMG]?B  {re.escape(name)}$", out, re.M), name
    assert cli.main(["push", str(trained_run.run_dir), "--repo-id", "me/demo", "--dry-run"]) == 2
    assert "--base-repo-id" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the upload, on a loopback hub


def _no_token_anywhere(hub, token: str, *texts: str) -> None:
    for req in hub.requests:
        assert token.encode() not in req.body, req.path
        assert token not in req.path and token not in str(req.query)
        for key, value in req.headers.items():
            if key != "authorization":
                assert token not in value, key
    for repo_id in hub.repos:
        for name, data in hub.files(repo_id).items():
            assert token.encode() not in data, name
    for text in texts:
        assert token not in text


def test_push_uploads_the_staged_folder_and_the_model_loads_back(
    trained_run: TrainedRun, fake_hub, monkeypatch: pytest.MonkeyPatch, capsys, caplog
):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    caplog.set_level("DEBUG")
    argv = ["-v", "push", str(trained_run.run_dir), "--repo-id", "me/demo", "--base-repo-id", "me/demo-base"]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "pushed (private): " in out.out and "base model pushed: " in out.out
    staged = trained_run.run_dir / "push" / "me--demo"
    for repo_id, folder in (("me/demo", staged), ("me/demo-base", staged.with_name("me--demo--base"))):
        assert fake_hub.repos[repo_id].private
        received = {k: v for k, v in fake_hub.files(repo_id).items() if k != ".gitattributes"}
        local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert local.pop(folders.MARKER)  # uvft's mark on the folder it staged stays local
        assert received == local  # every other file, byte-identical
    assert "adapter_model.safetensors" in fake_hub.lfs_paths("me/demo", "main")
    _no_token_anywhere(fake_hub, fake_hub.token, out.out, out.err, caplog.text)

    # what was published is usable from the hub id alone: uvft predict, and the card's snippet
    rows = [
        json.loads(x) for x in (trained_run.run_dir / "eval/val/generations.jsonl").read_text().splitlines()
    ]
    row = next(r for r in rows if r["task"] == "detection")
    from_hub = load_model("me/demo", device="cpu").predict(row["image"], "detection")
    assert from_hub["generated_text"] == row["generated_text"]
    code = _snippet(Path(staged / "README.md"))
    assert _run_snippet(code, {'"image.jpg"': repr(row["image"])}) == strip_markers(row["generated_text"])


def test_push_options_public_pr_revision_message(trained_run: TrainedRun, fake_hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    base = ["push", str(trained_run.run_dir), "--merged"]
    assert cli.main([*base, "--repo-id", "me/pub", "--public", "--commit-message", "first cut"]) == 0
    assert not fake_hub.repos["me/pub"].private
    assert "first cut" in fake_hub.repos["me/pub"].commit_messages
    assert "model.safetensors" in fake_hub.files("me/pub")
    capsys.readouterr()
    assert cli.main([*base, "--repo-id", "me/pub"]) == 0  # the same files again
    assert "me/pub (public) already holds these files: nothing to commit" in capsys.readouterr().out
    # the adapter instead of the merged model, as a pull request
    adapter = ["push", str(trained_run.run_dir), "--base-repo-id", "me/pub-base", "--repo-id", "me/pub"]
    assert cli.main([*adapter, "--create-pr"]) == 0
    assert re.search(r"pushed \(public\): \S+/discussions/1", capsys.readouterr().out)
    assert fake_hub.repos["me/pub"].prs
    assert "adapter_config.json" not in fake_hub.files("me/pub")  # main is untouched
    assert cli.main([*base, "--repo-id", "me/pub", "--revision", "dev"]) == 0
    assert fake_hub.files("me/pub", "dev")["README.md"] == fake_hub.files("me/pub")["README.md"]


def test_push_errors_are_one_line(trained_run: TrainedRun, fake_hub, monkeypatch, capsys):
    argv = ["push", str(trained_run.run_dir), "--merged", "--repo-id"]

    def fails(*args: str) -> str:
        assert cli.main([*argv, *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and fake_hub.token not in err, err
        (line,) = [x for x in err.splitlines() if x.startswith("error")]  # one line, beside progress bars
        return line

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert "no Hugging Face token" in fails("me/demo")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_000000000000000000")
    assert "refused the token (401" in fails("me/demo")
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    assert "no write access to someone-else/x (403" in fails("someone-else/x")
    with fake_hub.down():
        assert "cannot reach the hub at http://127.0.0.1" in fails("me/demo")


def test_card_metrics_of_the_unified_tasks_and_ocr_told_from_captions():
    """Caption and OCR share the hub's task type (image-to-text): the card's model-index keeps them
    apart by task name, and every value read back equals metrics.json."""
    from huggingface_hub import ModelCardData

    from pipeline.hub import _Sources, eval_results, validate_card
    from pipeline.models.spec import ModelSpec, TaskSpec

    tasks = {
        t: TaskSpec(prompt="p", example_target="t", sources=[t]) for t in ("caption", "ocr", "grounding")
    }
    tasks["segmentation"] = TaskSpec(prompt="p", example_target="t", sources=["segmentation"])
    spec = ModelSpec(family="florence2", base_model="b", method="lora", tasks=tasks, location_tokens={})
    metrics = {
        "caption": {"cider": 1.25},
        "ocr": {"cer": 0.125, "wer": 0.25},
        "grounding": {"accuracy": 0.75, "mean_iou": 0.625},
        "segmentation": {"mean_iou": 0.5, "overall_iou": 0.55},
    }
    results = eval_results(spec, metrics, "val", _Sources({}, {}, {}))
    got = {(r.task_type, r.task_name, r.metric_name): r.metric_value for r in results}
    assert got == {
        ("image-to-text", "Image Captioning", "CIDEr-D"): 1.25,
        ("image-to-text", "Optical Character Recognition", "character error rate"): 0.125,
        ("image-to-text", "Optical Character Recognition", "word error rate"): 0.25,
        ("zero-shot-object-detection", "Phrase Grounding", "accuracy@IoU0.5 (top box)"): 0.75,
        ("zero-shot-object-detection", "Phrase Grounding", "mean IoU"): 0.625,
        ("image-segmentation", "Referring Expression Segmentation", "mask mIoU"): 0.5,
        ("image-segmentation", "Referring Expression Segmentation", "mask oIoU"): 0.55,
    }

    def card_of(results) -> ModelCard:
        data = ModelCardData(
            library_name="peft",
            pipeline_tag="image-text-to-text",
            tags=["uvft"],
            model_name="m",
            eval_results=results,
        )
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\nbody\n")

    card = card_of(results)
    validate_card(card, metrics, "val")  # reads each result back to its task and key
    with pytest.raises(UvftError, match="ocr character error rate"):
        validate_card(card, {**metrics, "ocr": {"cer": 0.5, "wer": 0.25}}, "val")
    # captions and OCR of the same images (one dataset): the hub groups results by task type and
    # dataset, so the dataset's config names the task, and each reads back as itself
    tasks["ocr"] = TaskSpec(prompt="p", example_target="t", sources=["caption"])
    shared = eval_results(spec, metrics, "val", _Sources({}, {}, {}))
    assert {
        (r.task_name, r.dataset_type, r.dataset_config) for r in shared if r.task_type == "image-to-text"
    } == {
        ("Image Captioning", "caption", "caption"),
        ("Optical Character Recognition", "caption", "ocr"),
    }
    assert all(r.dataset_config is None for r in shared if r.task_type != "image-to-text")
    validate_card(card_of(shared), metrics, "val")


def test_a_limited_evaluation_is_refused_unless_allowed(trained_run: TrainedRun, tmp_path: Path):
    """`uvft eval --limit` scores a sample: push refuses to publish its numbers as the split's, and
    with --allow-limited the card says they are a sample; a base scored on other records is left out."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run, ignore=shutil.ignore_patterns("push"))
    for folder in ("eval", "eval-base"):
        path = run / folder / "val" / "metrics.json"
        metrics = json.loads(path.read_text())
        assert metrics["sample"]["limit"] is None  # tiny_runs evaluates the whole split
        of = metrics["sample"]["of"]
        limited = {"limit": 2, "seed": 0, "records": dict.fromkeys(of, 2), "of": of, "fingerprint": folder}
        path.write_text(json.dumps({**metrics, "sample": limited}))
    with pytest.raises(
        UvftError, match=r"is a sample, not the whole split: 2 of \d+ classification.*--allow-limited"
    ):
        stage(run, "me/demo", merged=True)
    staged = stage(run, "me/demo", merged=True, allow_limited=True)
    card = (staged.folder / "README.md").read_text()
    assert "**Evaluated on a sample, not the whole split: 2 of" in card
    published = json.loads((staged.folder / "metrics.json").read_text())
    assert published["base"] is None  # its sample's fingerprint differs: not compared
    assert "| base |" in card and "(*base*:" not in card


def test_evidence_names_its_weights_and_push_refuses_another_models_numbers(
    trained_run: TrainedRun, tmp_path: Path
):
    """After `uvft finetune --overwrite` the eval/ folder holds the old adapter's numbers: push
    refuses them (the card would publish another model's), export leaves them out of its card."""
    import hashlib
    import shutil

    from pipeline.train import loop

    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run, ignore=shutil.ignore_patterns("push"))
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    adapter = run / "adapter_model.safetensors"
    assert metrics["weights"]["sha256"] == hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert f"sha256 {metrics['weights']['sha256']}." in (run / "eval" / "val" / "report.md").read_text()
    staged = stage(run, "me/demo", merged=True)
    assert f"(sha256 `{metrics['weights']['sha256']}`)" in (staged.folder / "README.md").read_text()

    recipe = trained_run.recipe.model_copy(deep=True, update={"output_dir": str(run)})
    recipe.train.seed += 1  # a different run into the same folder
    loop.train(recipe, progress=False, overwrite=True)
    new = hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert new != metrics["weights"]["sha256"]
    with pytest.raises(UvftError) as e:
        stage(run, "me/demo", merged=True)
    assert str(e.value) == (
        f"the val evaluation of {run} was computed from other weights (sha256 "
        f"{metrics['weights']['sha256'][:12]}…) than these ({new[:12]}…): the card would publish another "
        "model's numbers. Run `uvft eval` on it again (or pass --split naming an evaluation of these weights)"
    )
    out = export_merged(run, tmp_path / "merged")
    assert "Not evaluated: run `uvft eval`" in (out / "README.md").read_text()

    del metrics["weights"]  # written before uvft recorded the weights: cannot be tied to them
    (run / "eval" / "val" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UvftError, match="names no weights"):
        stage(run, "me/demo", merged=True)


def test_export_never_deletes_what_uvft_did_not_write(trained_run: TrainedRun, tmp_path: Path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("x")
    assert cli.main(["export", str(trained_run.run_dir), "--merged", str(victim)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {victim} exists and was not written by uvft (no .uvft file in it): choose a new folder, "
        "or pass --overwrite to replace it and everything in it\n"
    )
    assert (victim / "notes.txt").read_text() == "x"
    run_parent = trained_run.run_dir.parent  # `--merged nest/runs`: the run's own parent
    assert cli.main(["export", str(trained_run.run_dir), "--merged", str(run_parent), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"error: refusing to replace {run_parent}: it holds {trained_run.run_dir}; choose another folder\n"
    )
    assert (trained_run.run_dir / "adapter_model.safetensors").is_file()
    out = tmp_path / "merged"
    for _ in range(2):  # written, then replaced: it is uvft's
        assert cli.main(["export", str(trained_run.run_dir), "--merged", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / folders.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "victim"]


def test_a_run_folder_whose_recipe_is_an_alias_bomb_is_refused_by_name(tmp_path: Path):
    # a run folder from the hub is anyone's: yaml.safe_load built its bomb, the card expanded it
    from yaml_bombs import BILLION_LAUGHS

    from pipeline.hub import run_record

    (tmp_path / "recipe.yaml").write_text(f"name: {BILLION_LAUGHS}\n")
    with pytest.raises(UvftError) as err:
        run_record(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'recipe.yaml'}: the YAML expands to more than 100000 values through aliases "
        "(&anchor/*alias); a recipe needs far fewer"
    )
