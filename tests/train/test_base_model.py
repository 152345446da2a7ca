"""What a run starts from (pipeline.train.base_model.plan): the recipe's model id, the tiny model's
cached folder, or the recipe and cache folder of its base stage, decided without training."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from pipeline.recipe import load_recipe
from pipeline.train import base_model

ROOT = Path(__file__).resolve().parents[2]
# a handful of texts: the tiny model's tokenizer is built from the records' prompts and targets
RECORDS = {
    "train": {"prompt": ["caption en", "detect circle"], "target": ["a red circle", "circle"]},
    "val": {"prompt": ["caption en"], "target": ["a blue square"]},
}


class OneProcess:
    is_main_process = True

    @contextlib.contextmanager
    def main_process_first(self):
        yield


def _recipe(cache: Path, *overrides: str):
    return load_recipe(ROOT / "recipes/demo.yaml", [f"data.cache_dir={cache}", *overrides])


def test_a_model_id_is_the_base_model(tmp_path):
    plan = base_model.plan(_recipe(tmp_path, "model.id=some/model"), RECORDS, OneProcess())
    assert plan == base_model.BaseModel("some/model") and plan.trained
    assert list(tmp_path.iterdir()) == []  # nothing built


def test_the_tiny_model_is_built_once_in_its_cache_folder(tmp_path):
    recipe = _recipe(tmp_path, "model.tiny.base_steps=0")
    plan = base_model.plan(recipe, RECORDS, OneProcess())
    folder = Path(plan.path)
    assert plan.stages == () and plan.trained
    assert folder.parent == tmp_path / "tiny" and re.fullmatch(r"paligemma-[0-9a-f]{16}", folder.name)
    assert (folder / "config.json").is_file()
    built = (folder / "config.json").stat().st_mtime_ns
    again = base_model.plan(_recipe(tmp_path, "model.tiny.base_steps=0", "name=other"), RECORDS, OneProcess())
    assert again == plan and (folder / "config.json").stat().st_mtime_ns == built


@pytest.mark.parametrize("family", ["paligemma", "florence2"])
def test_the_base_stage_is_planned_not_trained(tmp_path, family):
    recipe = _recipe(tmp_path, f"model.family={family}", "model.tiny.base_steps=7")
    plan = base_model.plan(recipe, RECORDS, OneProcess())
    (stage,) = plan.stages
    assert not plan.trained
    out = Path(stage.output_dir)
    assert out.parent == tmp_path / "base" and re.fullmatch(rf"{family}-[0-9a-f]{{16}}", out.name)
    assert plan.path == str(out / "model") and not out.exists()  # nothing trained here
    tiny = Path(stage.model.id)
    assert tiny.parent == tmp_path / "tiny" and (tiny / "config.json").is_file()
    assert stage.name == "base" and stage.train.steps == 7 and stage.train.lr == recipe.model.tiny.base_lr
    assert stage.adapter.method == "full" and not stage.adapter.freeze_vision
    assert stage.train.val_every == 0 and stage.eval.every == 0 and stage.train.trackers == []
    assert {s.name for s in stage.data.sources} == set(recipe.model.tiny.base_sources)
    assert set(stage.mixture.weights or {}) <= set(recipe.model.tiny.base_sources)
    # once its output is there, the same plan is trained
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")
    assert base_model.plan(recipe, RECORDS, OneProcess()).trained


def test_the_base_stage_folder_is_keyed_by_what_decides_it(tmp_path):
    def stage_dir(*overrides: str) -> str:
        recipe = _recipe(tmp_path, "model.tiny.base_steps=7", *overrides)
        (stage,) = base_model.plan(recipe, RECORDS, OneProcess()).stages
        return stage.output_dir

    first = stage_dir()
    # the fine-tune's name, folder and adapter do not decide the base: it is shared
    assert stage_dir("name=other", f"output_dir={tmp_path / 'run'}", "adapter.r=4") == first
    assert stage_dir("model.tiny.base_lr=1e-3") != first
    assert stage_dir("model.tiny.base_steps=8") != first


def test_the_base_stage_is_keyed_by_the_mask_codes_it_trains_on(tmp_path):
    """PaliGemma's mask codes come from a codec the recipe's text does not pin (a refitted stand-in):
    other codes are another base stage; records without codes keep the key they had."""
    recipe = _recipe(tmp_path, "model.tiny.base_steps=7")

    def stage_dir(targets: list[str]) -> str:
        records = {**RECORDS, "train": {"prompt": ["segment x"] * len(targets), "target": targets}}
        return base_model.plan(recipe, records, OneProcess()).stages[0].output_dir

    plain = stage_dir(["a red circle", "circle"])
    assert base_model.mask_codes_key({"target": ["a red circle", "circle"]}) == ""
    coded = stage_dir(["a red circle", "<loc0001><loc0002><loc0003><loc0004>" + "<seg001>" * 16 + " x"])
    recoded = stage_dir(["a red circle", "<loc0001><loc0002><loc0003><loc0004>" + "<seg002>" * 16 + " x"])
    assert len({plain, coded, recoded}) == 3


def test_base_stages_chain_each_from_the_one_before(tmp_path):
    stages = "model.tiny.base_stages=[{steps: 5, sources: [shapes_detection]}, {steps: 3, sources: null}]"
    recipe = _recipe(tmp_path, "model.tiny.base_steps=0", "model.tiny.base_sources=null", stages)
    first, second = base_model.plan(recipe, RECORDS, OneProcess()).stages
    assert (first.train.steps, second.train.steps) == (5, 3)
    assert [s.name for s in first.data.sources] == ["shapes_detection"]
    assert first.mixture.weights == {"shapes_detection": 2.0}
    assert [s.name for s in second.data.sources] == [s.name for s in recipe.data.sources]  # every source
    assert Path(first.model.id).parent == tmp_path / "tiny"
    assert second.model.id == str(Path(first.output_dir) / "model")  # the second starts from the first
    plan = base_model.plan(recipe, RECORDS, OneProcess())
    assert plan.path == str(Path(second.output_dir) / "model") and not plan.trained
    # a stage's cache folder is that of the same stage alone: the first is shared with a one-stage base
    alone = _recipe(tmp_path, "model.tiny.base_steps=5", "model.tiny.base_sources=[shapes_detection]")
    assert base_model.plan(alone, RECORDS, OneProcess()).stages[0].output_dir == first.output_dir
    # the first stage trained, the plan is not until the second is too
    (Path(first.output_dir) / "model").mkdir(parents=True)
    (Path(first.output_dir) / "model" / "config.json").write_text("{}")
    assert base_model.stage_trained(first) and not base_model.plan(recipe, RECORDS, OneProcess()).trained
    # the later stage's settings do not decide the earlier one's folder
    other = _recipe(
        tmp_path,
        "model.tiny.base_steps=0",
        "model.tiny.base_sources=null",
        "model.tiny.base_stages=[{steps: 5, sources: [shapes_detection]}, {steps: 9}]",
    )
    again = base_model.plan(other, RECORDS, OneProcess()).stages
    assert again[0].output_dir == first.output_dir and again[1].output_dir != second.output_dir
