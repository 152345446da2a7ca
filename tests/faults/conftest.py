"""Fixtures of the fault suite, made once per session: a small shapes set, a cache, and the
uninterrupted run (fault_runs.run_args) every interrupted one is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_runs import outcome, run_args

from pipeline.demo import shapes


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    shapes.generate(root, n_train=24, n_val=8, seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def straight(shapes_root: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every trial is compared with."""
    from pipeline.recipe import load_recipe
    from pipeline.train import loop

    out = tmp_path_factory.mktemp("straight") / "run"
    args = run_args(shapes_root, cache, out)
    loop.train(load_recipe(args[0], args[1:]), progress=False)
    return out


@pytest.fixture(scope="session")
def reference(straight: Path) -> dict:
    return outcome(straight)
