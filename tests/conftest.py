"""Fixtures shared by the test packages: one record of each task in each family, on two images
made here (one square, one not: the processors resize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from tiny_runs import TrainedRun, train_tiny_run

from pipeline import formats
from pipeline.records import Example, Object, Record

Records = dict[str, list[dict[str, Any]]]


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> str:
    img = Image.new("RGB", size, (240, 240, 240))
    w, h = size
    ImageDraw.Draw(img).ellipse((w // 8, h // 4, w // 2, 3 * h // 4), fill=color)
    ImageDraw.Draw(img).rectangle((w // 2, 2, w - 4, h // 3), fill=(20, 20, 200))
    img.save(path)
    return str(path)


def make_examples(folder: Path) -> list[Example]:
    a = _image(folder / "a.png", (64, 64), (200, 30, 30))
    b = _image(folder / "b.png", (96, 48), (30, 160, 30))  # not square: the processor resizes
    return [
        Example(id="cls", task="classification", image=a, image_size=(64, 64), label="circle"),
        Example(id="cap", task="caption", image=a, image_size=(64, 64), caption="A red circle."),
        Example(
            id="vqa",
            task="vqa",
            image=b,
            image_size=(96, 48),
            question="what color is the circle?",
            answer="green",
        ),
        Example(
            id="det",
            task="detection",
            image=b,
            image_size=(96, 48),
            objects=[Object((12, 12, 48, 36), "circle"), Object((48, 2, 92, 16), "square")],
            categories=["circle", "square"],
        ),
    ]


@pytest.fixture(scope="session")
def records(tmp_path_factory: pytest.TempPathFactory) -> Records:
    examples = make_examples(tmp_path_factory.mktemp("images"))
    out: Records = {}
    for family in ("florence2", "paligemma"):
        fmt = formats.get(family)
        out[family] = [Record.from_example(ex, family, *fmt.render(ex)).to_dict() for ex in examples]
    return out


@pytest.fixture(scope="session", params=["paligemma", "florence2"])
def trained_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A tiny LoRA run of each family, trained and evaluated once per session (tests/tiny_runs.py)."""
    return train_tiny_run(tmp_path_factory.mktemp(f"run-{request.param}"), request.param)
