"""The training loop: it learns, resumes exactly, checkpoints atomically, guards non-finite losses."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from loop_runs import interrupt_after_forward, losses, recipe_for

from pipeline.errors import UvftError
from pipeline.models.loss import token_losses
from pipeline.recipe import dump
from pipeline.train import checkpoint as ckpt
from pipeline.train import loop
from pipeline.train.signals import TrainingStopped
from pipeline.train.state import Run, TaskLossMeter, TrainState


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("family", ["paligemma", "florence2"])
def test_short_run_lowers_the_loss_and_saves_the_adapter(shapes_root, cache, tmp_path, family):
    out = tmp_path / "run"
    recipe = recipe_for(shapes_root, cache, out, f"model.family={family}", "train.steps=12", "train.lr=3e-3")
    summary = loop.train(recipe, progress=False)
    ls = losses(summary)
    assert len(ls) == 12 and all(math.isfinite(v) for v in ls)
    assert summary.val[-1]["all"] < summary.val[0]["all"]
    assert 0 < summary.trainable_params < summary.total_params
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "generation_config.json",
        "recipe.yaml",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["no_repeat_ngram_size"] == 0 and gen["num_beams"] == 1
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-000009", "step-000012"]  # keep_last=2


def test_ctrl_c_saves_and_resume_gives_the_same_losses_as_never_stopping(
    shapes_root, cache, tmp_path, monkeypatch
):
    # dropout on: resuming must also restore the RNG; save_every=100: only Ctrl-C saves
    overrides = ("adapter.dropout=0.1", "train.save_every=100")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)

    real, calls = loop.token_losses, {"n": 0}

    def interrupt_at_step_4(model, batch, *, shift):
        calls["n"] += model.training
        if model.training and calls["n"] == 4:
            raise KeyboardInterrupt
        return real(model, batch, shift=shift)

    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    monkeypatch.setattr(loop, "token_losses", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        loop.train(recipe, progress=False)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert len(straight.losses) == 6
    assert losses(resumed) == losses(straight)  # exactly: the same batches, the same RNG
    assert resumed.val[-1] == straight.val[-1]


def test_a_fresh_run_refuses_a_folder_with_checkpoints(shapes_root, cache, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints/step-000003").mkdir(parents=True)
    (out / "checkpoints/step-000003/state.json").write_text("{}")
    recipe = recipe_for(shapes_root, cache, out, "train.steps=1")
    with pytest.raises(UvftError, match="--resume auto"):
        loop.train(recipe, progress=False)
    loop.train(recipe, progress=False, overwrite=True)
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-000001"]


def test_tokens_are_averaged_over_the_global_batch():
    # two examples with 1 and 3 target tokens: the loss is the mean over 4 tokens, not of 2 means
    logits = torch.zeros(2, 3, 5)
    logits[0, 0, 1] = 10.0
    labels = torch.tensor([[1, -100, -100], [2, 3, 4]])

    class M(torch.nn.Module):
        def forward(self, **kw):  # as transformers applies a boolean logits_to_keep, and no labels
            assert "labels" not in kw and kw["use_cache"] is False
            return type("Out", (), {"logits": logits[kw["logits_to_keep"]]})

    loss_sum, n_tok = token_losses(M(), {"labels": labels}, shift=False)
    assert n_tok.tolist() == [1, 3]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="sum")
    assert float(loss_sum.sum()) == pytest.approx(float(expected))


def test_gradient_checkpointing_and_tensorboard(shapes_root, cache, tmp_path):
    out = tmp_path / "run"
    recipe = recipe_for(
        shapes_root,
        cache,
        out,
        "train.steps=2",
        "train.gradient_checkpointing=true",
        "train.trackers=[tensorboard]",
    )
    summary = loop.train(recipe, progress=False)
    assert len(summary.losses) == 2 and all(math.isfinite(v) for v in losses(summary))
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "samples_per_s", "val/all"} <= tags
    assert any(t.startswith("loss/") for t in tags)


def test_base_stage_is_built_once_and_cached(shapes_root, cache, tmp_path, monkeypatch):
    base_overrides = ("model.tiny.base_steps=2", "model.tiny.base_sources=[shapes_captions]", "train.steps=1")
    first = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *base_overrides), progress=False)
    assert first.base_model.endswith("/model") and (Path(first.base_model) / "config.json").is_file()
    base_summary = json.loads((Path(first.base_model).parent / "summary.json").read_text())
    assert base_summary["steps"] == 2
    assert {k for e in base_summary["losses"] for k in e if k.startswith("loss/")} == {"loss/caption"}

    calls, real_train = [], loop.train

    def spy(recipe, **kwargs):  # the loop trains a base stage that is not cached through train()
        calls.append(recipe.name)
        return real_train(recipe, **kwargs)

    monkeypatch.setattr(loop, "train", spy)
    # another run with another name, folder and adapter reuses the cached base
    again = real_train(
        recipe_for(shapes_root, cache, tmp_path / "b", *base_overrides, "adapter.r=4"), progress=False
    )
    assert again.base_model == first.base_model and calls == []


def test_base_stages_train_in_turn_each_from_the_one_before(shapes_root, cache, tmp_path, monkeypatch):
    stages = (
        "model.tiny.base_steps=0",
        "model.tiny.base_sources=null",
        # not test_base_stage_is_built_once_and_cached's stage (2 steps on captions), which the cache
        # would share with this test's first
        "model.tiny.base_stages=[{steps: 3, sources: [shapes_captions]}, "
        "{steps: 2, sources: [shapes_detection]}]",
        "train.steps=1",
    )
    trained = []
    real_train = loop.train

    def spy(recipe, **kwargs):
        trained.append((recipe.model.id, recipe.train.steps, [s.name for s in recipe.data.sources]))
        return real_train(recipe, **kwargs)

    monkeypatch.setattr(loop, "train", spy)
    run = real_train(recipe_for(shapes_root, cache, tmp_path / "a", *stages), progress=False)
    (first_start, *_), second = trained
    assert [t[1:] for t in trained] == [(3, ["shapes_captions"]), (2, ["shapes_detection"])]
    assert Path(first_start).parent.name == "tiny"  # the first from the random weights...
    first_model = Path(second[0])
    assert first_model.name == "model" and run.base_model != str(first_model)  # ...the second from the first
    assert Path(run.base_model).parent.parent == first_model.parent.parent  # both in the base cache
    summaries = [
        json.loads((Path(m).parent / "summary.json").read_text()) for m in (first_model, run.base_model)
    ]
    assert [s["steps"] for s in summaries] == [3, 2]
    assert {k for e in summaries[1]["losses"] for k in e if k.startswith("loss/")} == {"loss/detection"}
    # both cached: a second run trains no stage
    trained.clear()
    real_train(recipe_for(shapes_root, cache, tmp_path / "b", *stages), progress=False)
    assert trained == []


def test_resuming_a_finished_run_records_nothing_twice(shapes_root, cache, tmp_path):
    recipe = recipe_for(shapes_root, cache, tmp_path / "a")
    first = loop.train(recipe, progress=False)
    again = loop.train(recipe, resume="auto", progress=False)  # what a second `make finetune` does
    assert again.val == first.val and [v["step"] for v in again.val] == [0, 6]
    assert again.losses == first.losses
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [v["step"] for v in saved["val"]] == [0, 6]


@pytest.mark.parametrize("family", ["paligemma", "florence2"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_is_exact_for_both_methods_and_families(
    shapes_root, cache, tmp_path, monkeypatch, family, method
):
    overrides = (f"model.family={family}", f"adapter.method={method}", "adapter.dropout=0.1")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    real = interrupt_after_forward(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingStopped, match="after step 5 of 6"):
        loop.train(recipe, progress=False)
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert losses(resumed) == losses(straight) and resumed.val == straight.val
    name = "model/model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_resume_refuses_a_changed_recipe_and_allows_extending(shapes_root, cache, tmp_path):
    run = tmp_path / "run"
    loop.train(recipe_for(shapes_root, cache, run, "train.steps=4", "train.save_every=2"), progress=False)
    changed = recipe_for(shapes_root, cache, run, "train.steps=4", "train.lr=0.01", "train.batch_size=2")
    with pytest.raises(UvftError) as e:
        loop.train(changed, resume="auto", progress=False)
    msg = str(e.value)
    assert "cannot resume" in msg and "train.batch_size: 4 -> 2" in msg and "train.lr: 0.0005 -> 0.01" in msg
    assert "lr: 0.0005" in (run / "recipe.yaml").read_text()  # what was trained is still what is recorded
    # extending a run (and changing how often it saves) is allowed, and recorded
    longer = recipe_for(shapes_root, cache, run, "train.steps=6", "train.save_every=3")
    summary = loop.train(longer, resume="auto", progress=False)
    assert summary.steps == 6 and [v["step"] for v in summary.val] == [0, 4, 6]
    assert "steps: 6" in (run / "recipe.yaml").read_text()


def test_resume_compares_with_the_recipe_the_checkpoint_was_trained_with(
    shapes_root, cache, tmp_path, caplog
):
    """With the run's recipe.yaml gone, a changed recipe is still refused: each checkpoint keeps the
    recipe it was trained with. A checkpoint from before that is compared with the run's, saying so."""
    run = tmp_path / "run"
    trained = recipe_for(shapes_root, cache, run, "train.steps=2", "train.save_every=1")
    loop.train(trained, progress=False)
    latest = run / "checkpoints" / "step-000002"
    assert (latest / "recipe.yaml").read_text() == dump(trained)
    assert "recipe.yaml" in json.loads((latest / "manifest.json").read_text())["files"]
    (run / "recipe.yaml").unlink()
    changed = (
        "train.steps=2",
        "train.save_every=1",
        "train.lr=0.01",
        "train.weight_decay=0.1",
        "adapter.dropout=0.2",
    )
    with pytest.raises(UvftError) as e:
        loop.train(recipe_for(shapes_root, cache, run, *changed), resume="auto", progress=False)
    assert str(e.value) == (
        f"cannot resume {latest} with a changed recipe: adapter.dropout: 0.0 -> 0.2; train.lr: 0.0005 -> "
        f"0.01; train.weight_decay: 0.0 -> 0.1 (compared with {latest}/recipe.yaml). These decide the run "
        "already trained; start over with --overwrite or another output_dir. What may change on resume: "
        "train.steps (to extend a run), save/log/eval settings, data.root, data.cache_dir, and "
        "train.batch_size with another process count that keeps the global batch (train.batch_size x "
        "processes)"
    )
    assert not (run / "recipe.yaml").exists()  # nothing was rewritten as if the run had used them

    # a checkpoint written before checkpoints kept their recipe (format 2): the run's recipe.yaml
    (latest / "recipe.yaml").unlink()
    state = json.loads((latest / "state.json").read_text())
    (latest / "state.json").write_text(json.dumps({**state, "format": 2}))
    ckpt.write_manifest(latest)
    (run / "recipe.yaml").write_text(dump(trained))
    with caplog.at_level("WARNING"), pytest.raises(UvftError, match=rf"compared with {run}/recipe\.yaml\)"):
        loop.train(recipe_for(shapes_root, cache, run, *changed), resume="auto", progress=False)
    assert f"{latest} was written before checkpoints kept their recipe: comparing with {run}/recipe.yaml" in (
        caplog.text
    )
    # without either, the recipe cannot be compared: resumed, with a warning that says so
    (run / "recipe.yaml").unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        summary = loop.train(
            recipe_for(shapes_root, cache, run, "train.steps=3", "train.save_every=1"),
            resume="auto",
            progress=False,
        )
    assert summary.steps == 3 and "the recipe it was trained with is unknown" in caplog.text
    # a checkpoint of the current format without its recipe was tampered with: damaged, skipped
    newest = run / "checkpoints" / "step-000003"
    (newest / "recipe.yaml").unlink()
    ckpt.write_manifest(newest)
    assert ckpt.verify_checkpoint(newest) == "recipe.yaml is missing"


def test_resume_after_the_data_changed_says_which_source_and_what_to_do(shapes_root, cache, tmp_path):
    data = tmp_path / "shapes"
    shutil.copytree(shapes_root, data)
    run = tmp_path / "run"
    loop.train(recipe_for(data, cache, run, "train.steps=2", "train.save_every=1"), progress=False)
    gone = sorted((data / "imagefolder/train").rglob("*.png"))[0]
    gone.unlink()  # an annotation edited under the run: the image-folder source has one image less
    with pytest.raises(UvftError) as e:
        loop.train(
            recipe_for(data, cache, run, "train.steps=4", "train.save_every=1"), resume="auto", progress=False
        )
    assert str(e.value) == (
        f"cannot resume from {run}/checkpoints/step-000002: the training data changed since this checkpoint "
        "(shapes_classes: 24 records then, 23 records now), so the run cannot continue the batches it "
        "was drawing; restore the data it trained on, or start over with --overwrite or another output_dir"
    )


def test_due_and_the_task_loss_meter():
    assert [s for s in range(1, 13) if loop.due(s, 4, 12)] == [4, 8]  # the last step has its own
    assert not any(loop.due(s, 0, 12) for s in range(1, 13))

    class One:  # one process: reduce is the identity
        def reduce(self, t, op):
            return t

    meter = TaskLossMeter(torch.device("cpu"))
    meter.add(["vqa", "caption", "vqa"], torch.tensor([2.0, 9.0, 4.0]), torch.tensor([1, 3, 2]))
    meter.add(["ocr", "region_to_segmentation"], torch.tensor([1.0, 5.0]), torch.tensor([4, 5]))
    # positions follow records.TASKS: classification caption vqa detection grounding segmentation ocr,
    # then the seven appended for Florence-2's other task tokens, region_to_segmentation last
    assert meter.state(One()) == [
        [0.0, 9.0, 6.0, 0.0, 0.0, 0.0, 1.0, *[0.0] * 6, 5.0],
        [0.0, 3.0, 3.0, 0.0, 0.0, 0.0, 4.0, *[0.0] * 6, 5.0],
    ]
    assert meter.means(One()) == {
        "caption": 3.0,
        "vqa": 2.0,
        "ocr": 0.25,
        "region_to_segmentation": 1.0,
        "all": 21 / 15,
    }
    assert meter.means(One()) == {}  # read, it starts again
    # a window saved when uvft had four tasks (or seven) fills their positions (new tasks were appended)
    meter.load([[0.0, 9.0, 6.0, 0.0], [0.0, 3.0, 3.0, 0.0]], main=True)
    assert meter.means(One()) == {"caption": 3.0, "vqa": 2.0, "all": 2.5}


def test_train_state_round_trips_through_a_checkpoint_dict():
    state = TrainState(step=7, samples=28, nonfinite_total=1, losses=[{"step": 5, "loss": 1.5}])
    saved = json.loads(json.dumps({**state.state_dict(), "sampler": {}, "window": None}))
    again = TrainState()
    again.load_state_dict(saved)
    assert again == state


def test_the_run_is_built_with_keywords_only():
    with pytest.raises(TypeError, match="positional"):
        Run(None, None)  # twenty fields, several of one type: an order is too easy to get wrong


def test_every_task_has_its_own_name_in_the_progress_bar():
    from pipeline import tasks
    from pipeline.train.loop import short_task

    shorts = [short_task(t) for t in tasks.names()]
    assert len(set(shorts)) == len(shorts), shorts
    assert [short_task(t) for t in ("detection", "region_to_category", "region_proposal")] == [
        "dete",
        "rtcate",
        "rprop",
    ]
