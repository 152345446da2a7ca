"""SourceContext: the re-export the build and tests use, and the caches a context makes for itself."""

from __future__ import annotations

from pathlib import Path

import pipeline.sources
from pipeline.records import Example
from pipeline.sources.context import SourceContext
from pipeline.sources.paths import Paths


def test_the_registry_re_exports_the_context() -> None:
    assert pipeline.sources.SourceContext is SourceContext


def test_a_context_without_shared_caches_makes_its_own(tmp_path: Path) -> None:
    one, two = SourceContext(name="a", split="train"), SourceContext(name="b", split="val")
    assert isinstance(one.paths, Paths) and one.paths is not two.paths
    assert one.image_checks == {} and one.image_checks is not two.image_checks
    shared = Paths()
    assert SourceContext(name="c", split="train", paths=shared).paths is shared


def test_example_names_source_and_split_and_counts(tmp_path: Path) -> None:
    ctx = SourceContext(name="coco", split="val")
    ex = ctx.example("7", tmp_path / "a.jpg", (4, 3), task="classification", label="cat")
    assert ex == Example(
        id="7",
        task="classification",
        image=str(tmp_path / "a.jpg"),
        image_size=(4, 3),
        source="coco",
        split="val",
        label="cat",
    )
    assert ctx.tally.examples == 1
