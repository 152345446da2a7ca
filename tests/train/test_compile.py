"""train.compile: the step's forward and loss under torch.compile. Off by default; on, the run's
losses equal the eager run's to float rounding, a machine without a C++ compiler is told so before
anything loads, and a run may be resumed with compile switched either way. (Resume and the fault
suite with it on: tests/faults/test_compile_faults.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from loop_runs import losses, recipe_for

from pipeline.errors import UvftError
from pipeline.recipe import dump, load_recipe
from pipeline.runtime import make_accelerator
from pipeline.train import loop, setup

ROOT = Path(__file__).resolve().parents[2]

# Inductor fuses and reorders float32 arithmetic: the same step, rounded differently. Over six
# steps of the tiny model the losses (~7) agree to well within this.
LOSS_TOLERANCE = 1e-4


def test_compile_is_off_by_default_and_left_out_of_a_default_recipe():
    recipe = load_recipe(ROOT / "recipes/demo.yaml")
    assert recipe.train.compile is False
    assert "compile" not in dump(recipe)  # recipes written before the key existed compare equal
    assert "compile: true" in dump(load_recipe(ROOT / "recipes/demo.yaml", ["train.compile=true"]))


def test_without_compile_nothing_is_compiled():
    recipe = load_recipe(ROOT / "recipes/demo.yaml")
    assert setup.compiled_losses(recipe, make_accelerator(recipe, cpu=True, log=False)) is None


def test_a_machine_without_a_cpp_compiler_is_told_before_anything_loads():
    from torch._inductor import config

    with (
        config.patch({"cpp.cxx": ("/nonexistent/g++",)}),
        pytest.raises(
            UvftError, match=r"train.compile needs a C\+\+ compiler on the CPU .*train.compile=false"
        ),
    ):
        setup.check_compiler(torch.device("cpu"))


def test_a_run_without_a_cpp_compiler_stops_before_its_records_are_built(tmp_path):
    from torch._inductor import config

    missing = [
        f"data.root={tmp_path / 'nothing here'}",
        f"output_dir={tmp_path / 'run'}",
        "train.compile=true",
    ]
    with config.patch({"cpp.cxx": ("/nonexistent/g++",)}), pytest.raises(UvftError, match=r"C\+\+ compiler"):
        loop.train(load_recipe(ROOT / "recipes/demo.yaml", missing), progress=False, cpu=True)
    assert not (tmp_path / "nothing here").exists()  # the demo data was not generated, nor records built


def test_compile_may_change_when_a_run_is_resumed(tmp_path):
    eager = load_recipe(ROOT / "recipes/demo.yaml")
    (tmp_path / "recipe.yaml").write_text(dump(eager))
    setup.check_resume_recipe(load_recipe(ROOT / "recipes/demo.yaml", ["train.compile=true"]), tmp_path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_run_does(shapes_root, cache, tmp_path):
    eager = loop.train(recipe_for(shapes_root, cache, tmp_path / "eager"), progress=False)
    compiled = loop.train(
        recipe_for(shapes_root, cache, tmp_path / "compiled", "train.compile=true"), progress=False
    )
    a, b = losses(eager), losses(compiled)
    assert len(a) == len(b) == 6 and all(math.isfinite(x) for x in b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < LOSS_TOLERANCE, (a, b)
    held_out = [v["all"] for v in eager.val], [v["all"] for v in compiled.val]
    assert max(abs(x - y) for x, y in zip(*held_out, strict=True)) < LOSS_TOLERANCE
    assert (tmp_path / "compiled" / "adapter_model.safetensors").is_file()
    # the run asked for deterministic algorithms (its kernels reproduce); the process has them back as before
    assert not torch.are_deterministic_algorithms_enabled()
