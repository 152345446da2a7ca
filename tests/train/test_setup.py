"""A run's set-up says what it will do and refuses what it cannot: train.epochs as steps, the start
banner, a data set without a validation split stopped before a model is built."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.data.build import build
from pipeline.demo import shapes
from pipeline.errors import UvftError
from pipeline.recipe import load_recipe
from pipeline.train import loop, setup

ROOT = Path(__file__).resolve().parents[2]


def _recipe(*overrides: str):
    return load_recipe(ROOT / "recipes/demo.yaml", list(overrides))


def test_epochs_decide_the_steps():
    recipe = _recipe("train.epochs=2.5", "train.batch_size=4", "train.grad_accum=2")
    # 2.5 passes over 100 records in global batches of 4 x 2 x 1 process: ceil(31.25)
    assert setup.with_epochs(recipe, 100, 1).train.steps == 32
    assert setup.with_epochs(recipe, 100, 2).train.steps == 16  # two processes, batches twice as large
    plain = _recipe("train.steps=7")
    assert setup.with_epochs(plain, 100, 1) is plain


class _Split(list):
    def __getitem__(self, key):  # a Dataset's column by name, a row by index
        return [r[key] for r in self] if isinstance(key, str) else super().__getitem__(key)


def test_the_banner_says_what_the_run_will_do():
    recipe = _recipe("train.steps=100", "train.batch_size=16", "train.lr=5e-4")
    train = _Split([{"task": "caption"}] * 150 + [{"task": "classification"}] * 50)
    text = setup.banner(recipe, train, 40, (600_000, 1_750_000), 1)
    assert text.splitlines() == [
        "run demo: fine-tune paligemma on 2 tasks",
        "  model    uvft's tiny PaliGemma stand-in (model.id: null): random weights, not a pretrained "
        "model, after a 2,800-step base stage (1,750,000 parameters)",
        "  adapter  LoRA r=32, alpha=64, preset all_linear (600,000 trainable, 34.3%)",
        "  records  train 200 (classification 50, caption 150); val 40",
        "  steps    100 = 8.00 epochs of the training records; global batch 16 "
        "(16 x 1 accumulation x 1 process)",
        "  lr       0.0005, cosine, 50 warmup steps",
        f"  output   {recipe.run_dir}",
    ]
    short = setup.banner(_recipe("train.steps=20", "train.warmup_steps=50"), train, 40, (3, 3), 1)
    assert short.splitlines()[-1] == "  note     the warmup (50 steps) is as long as the run"
    hub = _recipe("model.id=google/paligemma2-3b-pt-224", "adapter.method=full")
    lines = setup.banner(hub, train, 40, (3, 3), 2).splitlines()
    assert lines[1] == "  model    PaliGemma google/paligemma2-3b-pt-224 (3 parameters)"
    assert lines[2].startswith("  adapter  full fine-tune")
    assert "global batch 32 (16 x 1 accumulation x 2 processes)" in lines[4]


def test_a_train_only_data_set_stops_before_a_model_is_built(tmp_path: Path, monkeypatch):
    data = tmp_path / "shapes"
    shapes.generate(data, n_train=12, n_val=2, seed=3, progress=False)
    train_only = [
        f"data.root={data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.demo=null",
        f"output_dir={tmp_path / 'run'}",
        "model.tiny.base_steps=0",
        "train.num_workers=0",
        "train.trackers=[]",
        "data.sources=[{name: classes, format: image_folder, splits: {train: {root: imagefolder/train}}}]",
        "mixture.strategy=proportional",
        "mixture.weights=null",
        "model.tiny.base_sources=null",
    ]

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(setup, "build_model", no_model)
    with pytest.raises(
        UvftError,
        match=r"train.val_split 'val' is not a split of the records \(train\).*data\.val_fraction=0\.1",
    ):
        loop.train(_recipe(*train_only), progress=False)
    monkeypatch.undo()
    carved = _recipe(*train_only, "data.val_fraction=0.25", "train.epochs=1", "train.batch_size=3")
    summary = loop.train(carved, progress=False)
    n_train = len(build(carved, progress=False).load()["train"])
    assert 0 < n_train < 12 and summary.steps == math.ceil(n_train / 3)  # one pass in batches of 3


def test_resuming_over_a_run_whose_recipe_is_an_alias_bomb_is_refused_by_name(tmp_path: Path):
    from yaml_bombs import BILLION_LAUGHS

    (tmp_path / "recipe.yaml").write_text(f"name: {BILLION_LAUGHS}\n")
    with pytest.raises(UvftError) as err:
        setup.check_resume_recipe(_recipe(), tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'recipe.yaml'}: the YAML expands to more than 100000 values through aliases "
        "(&anchor/*alias); a recipe needs far fewer"
    )


def test_a_resume_may_change_the_batch_size_only_with_the_process_count_that_keeps_the_global_batch(
    tmp_path: Path, monkeypatch
):
    import json

    from pipeline.recipe import dump

    checkpoint = tmp_path / "run" / "checkpoints" / "step-000004"
    checkpoint.mkdir(parents=True)
    saved = _recipe(f"output_dir={tmp_path / 'run'}", "train.batch_size=4", "train.sharding=fsdp2")
    (checkpoint / "recipe.yaml").write_text(dump(saved))
    (checkpoint / "state.json").write_text(json.dumps({"step": 4, "processes": 2}))
    monkeypatch.setenv("WORLD_SIZE", "1")
    setup.check_resume_recipe(
        saved.model_copy(update={"train": saved.train.model_copy(update={"batch_size": 8})}), checkpoint
    )
    monkeypatch.setenv("WORLD_SIZE", "4")
    setup.check_resume_recipe(
        saved.model_copy(update={"train": saved.train.model_copy(update={"batch_size": 2})}), checkpoint
    )
    for world, batch, hint in (
        ("1", 4, "train.batch_size=8"),
        ("2", 8, "train.batch_size=4"),
        ("3", 3, "another"),
    ):
        monkeypatch.setenv("WORLD_SIZE", world)
        changed = saved.model_copy(update={"train": saved.train.model_copy(update={"batch_size": batch})})
        with pytest.raises(
            UvftError,
            match=rf"its global batch was 8 \(train.batch_size 4 x 2 processes\), .* resume with {hint}",
        ):
            setup.check_resume_recipe(changed, checkpoint)
    # a checkpoint that does not say how many processes wrote it keeps the batch size it had
    (checkpoint / "state.json").write_text(json.dumps({"step": 4}))
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(
        UvftError, match=r"train.batch_size changed \(4 -> 8\); resume with train.batch_size=4"
    ):
        setup.check_resume_recipe(
            saved.model_copy(update={"train": saved.train.model_copy(update={"batch_size": 8})}), checkpoint
        )
