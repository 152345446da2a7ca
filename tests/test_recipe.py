"""Recipes: every shipped recipe validates; bad keys and values fail naming their path; overrides."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from yaml_bombs import BILLION_LAUGHS, demo_recipe_with_bomb

from pipeline import safe_yaml
from pipeline.errors import RecipeError
from pipeline.recipe import Recipe, TinySection, apply_overrides, dump, load_recipe, load_yaml, reader_params

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"demo.yaml", "florence2_base_multitask_lora.yaml", "paligemma2_3b_multitask_lora.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path: Path):
    recipe = load_recipe(path)
    assert recipe.model.family in ("florence2", "paligemma")
    assert recipe.data.sources


def test_real_recipes_name_hub_checkpoints():
    assert (
        load_recipe(ROOT / "recipes/florence2_base_multitask_lora.yaml").model.id
        == "microsoft/Florence-2-base"
    )
    assert (
        load_recipe(ROOT / "recipes/paligemma2_3b_multitask_lora.yaml").model.id
        == "google/paligemma2-3b-pt-224"
    )


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _demo_raw() -> dict:
    return yaml.safe_load((ROOT / "recipes/demo.yaml").read_text())


def test_misspelt_key_names_its_path(tmp_path: Path):
    raw = _demo_raw()
    raw["model"]["famliy"] = "florence2"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "model.famliy"
    assert str(e.value) == f"{tmp_path / 'r.yaml'}: model.famliy: no such key; did you mean model.family?"


def test_misspelt_keys_get_the_close_match_at_their_level(tmp_path: Path):
    raw = _demo_raw()
    raw["train"]["trian_steps"] = 10
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert str(e.value) == f"{tmp_path / 'r.yaml'}: train.trian_steps: no such key; did you mean train.steps?"
    raw = _demo_raw()
    raw["data"]["sources"][2]["optoins"] = {}  # inside a list item: the item's keys
    with pytest.raises(
        RecipeError,
        match=r"data\.sources\.2\.optoins: no such key; did you mean data\.sources\.2\.options\?$",
    ):
        load_recipe(_write(tmp_path, raw))
    demo = ROOT / "recipes/demo.yaml"
    cases = [
        ("trian.steps=10", "trian: no such key; did you mean train?"),
        ("train.trian_steps=10", "train.trian_steps: no such key; did you mean train.steps?"),
        ("model.tiny.sise.layers=1", "model.tiny.sise: no such key; did you mean model.tiny.size?"),
        # nothing close: the keys of that level (read from the schema: sections gain keys)
        (
            "model.tiny.xyzzy=1",
            f"model.tiny.xyzzy: no such key; model.tiny takes: {', '.join(TinySection.model_fields)}",
        ),
        ("xyzzy=1", f"xyzzy: no such key; a recipe takes: {', '.join(Recipe.model_fields)}"),
        (
            "data.sources.0.options.kep_negatives=false",
            "data.sources.0.options.kep_negatives: coco_detection takes no parameter 'kep_negatives'; "
            "did you mean keep_negatives? it takes: annotations, images, keep_negatives, "
            "negatives_per_image, seed, task",
        ),
        (
            "data.sources.shapes_vq.name=x",
            "data.sources.shapes_vq: no list item named 'shapes_vq'; did you mean shapes_vqa? "
            "names: shapes_detection, shapes_captions, shapes_vqa, shapes_classes",
        ),
    ]
    for override, message in cases:
        with pytest.raises(RecipeError) as e:
            load_recipe(demo, [override])
        assert str(e.value) == f"{demo}: {message}", override


def test_bad_value_names_its_path(tmp_path: Path):
    raw = _demo_raw()
    raw["model"]["family"] = "llava"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "model.family"


def test_unknown_reader_parameter_names_its_path(tmp_path: Path):
    raw = _demo_raw()
    raw["data"]["sources"][0]["splits"]["train"]["annotatons"] = "x.json"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "data.sources.0.splits.train.annotatons"


def test_missing_reader_parameter(tmp_path: Path):
    raw = _demo_raw()
    del raw["data"]["sources"][0]["splits"]["val"]["annotations"]
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "data.sources.0.splits.val"
    assert "annotations" in str(e.value)


def test_unknown_format(tmp_path: Path):
    raw = _demo_raw()
    raw["data"]["sources"][1]["format"] = "coco_keypoints"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "data.sources.1.format"
    assert "coco_captions" in str(e.value)  # lists the known readers


def test_duplicate_source_names(tmp_path: Path):
    raw = _demo_raw()
    raw["data"]["sources"][1]["name"] = raw["data"]["sources"][0]["name"]
    with pytest.raises(RecipeError, match="duplicate source name"):
        load_recipe(_write(tmp_path, raw))


@pytest.mark.parametrize("strategy", ["uniform", "temperature", "proportional"])
def test_mixture_weights_without_strategy_weights_are_refused_naming_the_key(strategy: str):
    # the sampler would refuse them only when training starts; the recipe says so at load time
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes/demo.yaml", [f"mixture.strategy={strategy}"])
    assert e.value.path == "mixture.weights"
    assert str(e.value) == (
        f"{ROOT / 'recipes/demo.yaml'}: mixture.weights: only strategy 'weights' uses them, and "
        f"mixture.strategy is {strategy!r}: set mixture.strategy=weights to use them, or "
        "mixture.weights=null to drop them"
    )
    assert load_recipe(ROOT / "recipes/demo.yaml", [f"mixture.strategy={strategy}", "mixture.weights=null"])


def test_validators_messages_name_their_key_without_pydantics_prefix(tmp_path: Path):
    raw = _demo_raw()
    raw["data"]["sources"][1]["name"] = raw["data"]["sources"][0]["name"]
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == "data.sources.1.name"
    assert (
        str(e.value)
        == f"{tmp_path / 'r.yaml'}: data.sources.1.name: duplicate source name 'shapes_detection'"
    )
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes/demo.yaml", ["mixture.weights={nope: 1}"])
    assert e.value.path == "mixture.weights" and "Value error" not in str(e.value)


def test_yaml_errors_are_one_line(tmp_path: Path):
    p = tmp_path / "cut.yaml"
    p.write_text("name: demo\nmodel: {family: florence2\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert (
        str(e.value)
        == f"{p}: not valid YAML (line 3, column 1: expected ',' or '}}', but got '<stream end>')"
    )


def test_yaml_is_loaded_safely(tmp_path: Path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_overrides_set_typed_values():
    r = load_recipe(
        ROOT / "recipes/demo.yaml", ["model.family=florence2", "data.seed=3", "data.demo.n_val=7"]
    )
    assert r.model.family == "florence2"
    assert r.data.seed == 3
    assert r.data.demo is not None and r.data.demo.n_val == 7


def test_override_list_items_by_name_and_index():
    raw = apply_overrides(
        _demo_raw(),
        [
            "data.sources.shapes_vqa.options.image_pattern={image_id}.jpg",
            "data.sources.0.options.keep_negatives=false",
        ],
    )
    assert raw["data"]["sources"][2]["options"]["image_pattern"] == "{image_id}.jpg"
    assert raw["data"]["sources"][0]["options"]["keep_negatives"] is False


def test_bad_overrides():
    with pytest.raises(RecipeError, match=r"key\.path=value"):
        apply_overrides(_demo_raw(), ["model.family"])
    with pytest.raises(RecipeError, match="no list item named 'nope'"):
        apply_overrides(_demo_raw(), ["data.sources.nope.name=x"])
    with pytest.raises(RecipeError, match="out of range"):
        apply_overrides(_demo_raw(), ["data.sources.9.name=x"])
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes/demo.yaml", ["data.sed=3"])
    assert e.value.path == "data.sed"


def test_eval_metric_names_a_task():
    r = load_recipe(ROOT / "recipes/demo.yaml", ["eval.metric=classification.closed_set.accuracy"])
    assert r.eval.metric == "classification.closed_set.accuracy"
    for bad in ("det.map_50", "vqa", "accuracy"):
        with pytest.raises(RecipeError, match=r"use 'mean' or '<task>\.<key>'") as e:
            load_recipe(ROOT / "recipes/demo.yaml", [f"eval.metric={bad}"])
        assert e.value.path == "eval.metric"


def test_reader_paths_resolve_against_data_root(tmp_path: Path):
    from pipeline import sources

    reader = sources.get("coco_detection")
    params = reader_params(
        reader, {"annotations": "a/x.json", "images": str(tmp_path / "abs")}, tmp_path / "root"
    )
    assert params["annotations"] == tmp_path / "root" / "a/x.json"
    assert params["images"] == tmp_path / "abs"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_launch_configs_load(path: Path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    assert config.distributed_type in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    assert config.num_processes > 1


def test_accelerate_configs_ship():
    import yaml

    folder = ROOT / "recipes/accelerate"
    configs = {p.name: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}
    kinds = {name: c["distributed_type"] for name, c in configs.items()}
    assert kinds == {
        "ddp.yaml": "MULTI_GPU",
        "fsdp.yaml": "FSDP",  # uvft answers it with train.sharding=fsdp2
        "multinode.yaml": "MULTI_GPU",
        "deepspeed_zero2.yaml": "DEEPSPEED",
        "deepspeed_zero3.yaml": "DEEPSPEED",
    }
    assert configs["fsdp.yaml"]["fsdp_config"]["fsdp_version"] == 2
    assert configs["multinode.yaml"]["num_machines"] == 2
    zero3 = configs["deepspeed_zero3.yaml"]["deepspeed_config"]
    assert zero3["zero_stage"] == 3
    assert zero3["zero3_save_16bit_model"] is True  # the final adapter is gathered from the partitions


def test_mixed_precision_no_survives_yaml():
    r = load_recipe(ROOT / "recipes/demo.yaml", ["train.mixed_precision=no"])
    assert r.train.mixed_precision == "no"


def test_an_unfrozen_vision_tower_needs_a_full_fine_tune():
    # with LoRA nothing would train it (peft freezes what it does not wrap): refused, not ignored
    with pytest.raises(RecipeError, match=r"adapter.freeze_vision: false trains the vision tower only with "):
        load_recipe(ROOT / "recipes/demo.yaml", ["adapter.freeze_vision=false"])
    full = load_recipe(ROOT / "recipes/demo.yaml", ["adapter.method=full", "adapter.freeze_vision=false"])
    assert (full.adapter.method, full.adapter.freeze_vision) == ("full", False)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=true", "train.steps"),
        ("adapter.r=on", "adapter.r"),
        ("train.lr=true", "train.lr"),
        ("mixture.temperature=no", "mixture.temperature"),
        ("train.max_target_tokens=yes", "train.max_target_tokens"),
        ("data.demo.shape_size=[true,0.5]", "data.demo.shape_size.0"),
    ],
)
def test_booleans_are_not_numbers(override: str, key: str):
    # pydantic's lax mode would read true as 1 (one training step, LoRA rank 1, lr 1.0)
    with pytest.raises(RecipeError, match=rf"{re.escape(key)}: .*must be a number, not (True|False)"):
        load_recipe(ROOT / "recipes/demo.yaml", [override])
    # numbers written the ways YAML gives them still load
    recipe = load_recipe(ROOT / "recipes/demo.yaml", ["train.steps=10", "train.lr=1e-4", "adapter.dropout=0"])
    assert (recipe.train.steps, recipe.train.lr, recipe.adapter.dropout) == (10, 1e-4, 0.0)


def test_keys_added_later_stay_out_of_dumps_at_their_defaults():
    """train.epochs, eval.seed and data.val_fraction are left out of a dump while they hold their
    defaults: a recipe that does not use them dumps as before (cached base stages keyed on the dump
    stay valid; runs saved before the keys existed still resume), and in it once set."""
    from pipeline.recipe import changes, dump

    plain = load_recipe(ROOT / "recipes/demo.yaml")
    text = dump(plain)
    assert "epochs" not in text and "val_fraction" not in text and "extra_tasks" not in text
    assert "\n  seed: 0\n  train_split: train\n" in text  # data.seed, an old key: always there
    eval_part = text.split("\neval:\n")[1]
    assert "seed" not in eval_part
    new_keys = ["train.epochs=2", "data.val_fraction=0.1", "eval.seed=3"]
    given = load_recipe(ROOT / "recipes/demo.yaml", new_keys)
    assert [k for k, _, _ in changes(plain, given)] == ["data.val_fraction", "eval.seed", "train.epochs"]
    assert "  epochs: 2.0\n" in dump(given) and "  val_fraction: 0.1\n" in dump(given)


# ---------------------------------------------------------------------------- YAML bounds

BOMB_REFUSED = (
    "the YAML expands to more than 100000 values through aliases (&anchor/*alias); a recipe needs far fewer"
)


def test_anchors_aliases_and_merge_keys_still_load(tmp_path: Path):
    text = (ROOT / "recipes/demo.yaml").read_text()
    det = "        train: {annotations: annotations/instances_train.json, images: images/train}\n"
    assert det in text
    aliased = text.replace(
        det,
        "        train: &det {annotations: annotations/instances_train.json, images: images/train}\n"
        "        test: {<<: *det, images: images/val}\n",
    )
    path = tmp_path / "aliased.yaml"
    path.write_text(aliased)
    recipe = load_recipe(path)
    splits = recipe.data.sources[0].splits
    assert splits["test"] == {"annotations": "annotations/instances_train.json", "images": "images/val"}
    del splits["test"]
    assert recipe == load_recipe(ROOT / "recipes/demo.yaml")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    size: {}", "    size: {hidden: BOMB}"),
        (
            'options: {image_pattern: "{image_id:06d}.png"}',
            'options: {image_pattern: "{image_id:06d}.png", x: BOMB}',
        ),
    ],
    ids=["model.tiny.size", "a source's options"],
)
def test_an_alias_bomb_inside_a_value_is_refused_at_once(tmp_path: Path, old: str, new: str):
    # safe_load built it in microseconds; `uvft check` then ran out of memory expanding it
    path = demo_recipe_with_bomb(tmp_path, old, new)
    started = time.monotonic()
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: {BOMB_REFUSED}"
    assert time.monotonic() - started < 1.0


def test_an_alias_bomb_in_an_override_names_the_key():
    with pytest.raises(RecipeError) as err:
        load_recipe(ROOT / "recipes/demo.yaml", [f"model.tiny.size={{hidden: {BILLION_LAUGHS}}}"])
    assert str(err.value) == f"{ROOT / 'recipes/demo.yaml'}: model.tiny.size: {BOMB_REFUSED}"


def test_aliases_that_never_end_or_nest_too_deep_are_refused(tmp_path: Path):
    demo = (ROOT / "recipes/demo.yaml").read_text()
    chain = ", ".join(["&a0 [1]", *(f"&a{i} [*a{i - 1}]" for i in range(1, 70))])  # 70 levels, 140 values
    cases = {
        "    size: &s {hidden: *s}": "an alias (&anchor/*alias) stands inside the value it names: it would "
        "expand without end",
        f"    size: {{hidden: [{chain}]}}": "the YAML nests deeper than 64 levels; a recipe needs a handful",
        "    size: "
        + "[" * 2000
        + "]" * 2000: "the YAML nests deeper than 64 levels; a recipe needs a handful",
    }
    for line, message in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(demo.replace("    size: {}", line, 1))
        with pytest.raises(RecipeError) as err:
            load_recipe(path)
        assert str(err.value) == f"{path}: {message}"


def test_a_big_document_without_aliases_is_said_to_hold_too_much(monkeypatch):
    monkeypatch.setattr(safe_yaml, "MAX_YAML_VALUES", 20)
    error = RecipeError  # the message alone
    with pytest.raises(RecipeError, match=r"^the YAML holds more than 20 values; a recipe needs far fewer$"):
        load_yaml("[" + ", ".join(["1"] * 20) + "]", error)
    with pytest.raises(RecipeError, match=r"^the YAML expands to more than 20 values through aliases"):
        load_yaml("[&a [1, 2, 3, 4, 5], *a, *a, *a, *a]", error)
    assert load_yaml("[" + ", ".join(["1"] * 19) + "]", error) == [1] * 19  # 20 values: the list and 19


# --- by_family: settings for one model family only ------------------------------------------------


def _with_family_block(block: dict) -> dict:
    raw = _demo_raw()
    raw.pop("by_family", None)
    raw["by_family"] = {"florence2": block}
    return raw


def test_a_family_block_applies_to_its_family_only(tmp_path: Path):
    path = _write(
        tmp_path, _with_family_block({"train.lr": 1e-3, "model": {"tiny": {"base_schedule": "constant"}}})
    )
    pali = load_recipe(path)
    assert (pali.train.lr, pali.model.tiny.base_schedule) == (5e-4, None)
    f2 = load_recipe(path, ["model.family=florence2"])
    assert (f2.train.lr, f2.model.tiny.base_schedule) == (1e-3, "constant")
    assert "by_family" not in dump_text(f2)  # the run folder keeps the recipe it ran


def dump_text(recipe: Recipe) -> str:
    from pipeline.recipe import dump

    return dump(recipe)


def test_the_command_line_wins_over_a_family_block(tmp_path: Path, caplog):
    path = _write(tmp_path, _with_family_block({"train.lr": 1e-3, "train.steps": 1800}))
    with caplog.at_level("INFO", logger="pipeline.recipe"):
        recipe = load_recipe(path, ["model.family=florence2", "train.lr=2e-4"])
    assert (recipe.train.lr, recipe.train.steps) == (2e-4, 1800)
    # the log says what the block set, not what the command line overrode
    assert caplog.messages == ["by_family.florence2 sets train.steps=1800"]


def test_a_family_block_merges_key_by_key(tmp_path: Path):
    path = _write(tmp_path, _with_family_block({"mixture.weights.shapes_vqa": 4.0}))
    weights = load_recipe(path, ["model.family=florence2"]).mixture.weights
    assert weights == {
        "shapes_detection": 2.0,
        "shapes_captions": 1.0,
        "shapes_vqa": 4.0,
        "shapes_classes": 1.0,
    }


def test_every_family_block_is_checked_whichever_family_runs(tmp_path: Path):
    path = _write(tmp_path, _with_family_block({"train.lr": -1}))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)  # runs paligemma: the florence2 block is wrong all the same
    assert e.value.path == "train.lr"
    assert str(e.value).endswith("(with by_family.florence2)")
    path = _write(tmp_path, _with_family_block({"train.lr_warmup": 5}))
    with pytest.raises(RecipeError, match=r"train\.lr_warmup: no such key.*\(with by_family\.florence2\)$"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("blocks", "path", "message"),
    [
        ({"florence": {}}, "by_family.florence", "unknown model family; families: florence2, paligemma"),
        ({"florence2": ["train.lr=1"]}, "by_family.florence2", "a mapping of recipe keys to values"),
        ({"florence2": {"model.family": "paligemma"}}, "by_family.florence2", "the family is what chooses"),
        ({"florence2": {"train.steps.x": 1}}, "by_family.florence2.train.steps.x", "inside a scalar"),
    ],
)
def test_a_bad_family_block_names_its_key(tmp_path: Path, blocks: dict, path: str, message: str):
    raw = _demo_raw()
    raw["by_family"] = blocks
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, raw))
    assert e.value.path == path
    assert message in e.value.message


def test_base_schedule_sets_the_base_stage_only(tmp_path: Path):
    from pipeline.train.base_model import _base_stage

    recipe = load_recipe(ROOT / "recipes/demo.yaml", ["model.tiny.base_schedule=constant"])
    (step,) = recipe.model.tiny.stages()
    stage = _base_stage(recipe, step, tmp_path / "tiny")
    assert (stage.train.schedule, recipe.train.schedule) == ("constant", "cosine")
    default = load_recipe(ROOT / "recipes/demo.yaml")
    assert _base_stage(default, step, tmp_path / "tiny").train.schedule == "cosine"
    assert "base_schedule" not in dump_text(default)  # omitted at its default: cached base stages stay valid
    assert "base_stages" not in dump_text(default)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.tiny.base_stages=[]"], "model.tiny.base_stages: give at least one stage, or null for none"),
        (
            ["model.tiny.base_stages=[{steps: 5}]"],
            "model.tiny: base_stages is given: leave base_steps (0) and base_sources (null) out",
        ),
        (
            [
                "model.tiny.base_steps=0",
                "model.tiny.base_sources=null",
                "model.tiny.base_stages=[{steps: 0}]",
            ],
            "model.tiny.base_stages.0.steps",
        ),
        (
            [
                "model.tiny.base_steps=0",
                "model.tiny.base_sources=null",
                "model.tiny.base_stages=[{steps: 5, sources: [nope]}]",
            ],
            "model.tiny.base_stages[0].sources: unknown source 'nope'",
        ),
    ],
)
def test_base_stages_are_checked(overrides: list[str], message: str):
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes/demo.yaml", overrides)
    assert message in str(e.value)


def test_base_stages_or_one_stage_say_the_same():
    one = load_recipe(ROOT / "recipes/demo.yaml").model.tiny
    listed = load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            "model.tiny.base_steps=0",
            "model.tiny.base_sources=null",
            "model.tiny.base_stages=[{steps: 2800, sources: [shapes_captions, shapes_detection]}, "
            "{steps: 10}]",
        ],
    ).model.tiny
    assert one.stages() == listed.stages()[:1] and listed.stages()[1].sources is None
    assert load_recipe(ROOT / "recipes/demo.yaml", ["model.tiny.base_steps=0"]).model.tiny.stages() == []


def test_sharding_is_fsdp2_or_null_and_refuses_fp16():
    assert load_recipe(ROOT / "recipes/demo.yaml").train.sharding is None
    assert load_recipe(ROOT / "recipes/demo.yaml", ["train.sharding=fsdp2"]).train.sharding == "fsdp2"
    with pytest.raises(RecipeError, match=r"train.sharding: Input should be 'fsdp2'"):
        load_recipe(ROOT / "recipes/demo.yaml", ["train.sharding=fsdp1"])
    with pytest.raises(
        RecipeError, match=r"fp16 needs a sharded gradient scaler .* set train.mixed_precision=bf16"
    ):
        load_recipe(ROOT / "recipes/demo.yaml", ["train.sharding=fsdp2", "train.mixed_precision=fp16"])
    # null at its default: a recipe's dump (and every cache key made from it) is what it was
    assert "sharding" not in dump(load_recipe(ROOT / "recipes/demo.yaml"))
