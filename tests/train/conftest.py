"""Fixtures of the training tests: one small shapes set per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.demo import shapes


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    shapes.generate(root, n_train=24, n_val=8, seed=3, progress=False)
    return root
