"""Fixtures for the model tests: four records per family (one per task) on images made here, and
tiny models built once per session from the records' text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from pipeline import formats, models
from pipeline.data.collate import Collator
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


def texts(recs: list[dict[str, Any]]) -> list[str]:
    return [t for r in recs for t in (r["prompt"], r["target"])]


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory, records: Records) -> Callable[[str], Path]:
    """tiny_path(family) -> the folder of a tiny model built once per session."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            out = tmp_path_factory.mktemp(f"tiny-{family}")
            built[family] = models.get(family).build_tiny(out, texts(records[family]), seed=0)
        return built[family]

    return get


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="session")
def batch_of(records: Records) -> Callable[[str, Any], dict[str, torch.Tensor]]:
    """batch_of(family, processor) -> the four records collated (model inputs only)."""

    def make(family: str, processor: Any) -> dict[str, torch.Tensor]:
        return model_inputs(Collator(processor, family)(records[family]))

    return make


def train_steps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-3
) -> list[float]:
    """Loss of `batch` before and after each of `steps` AdamW steps on it (eval mode for the losses)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        model.eval()
        with torch.no_grad():
            losses.append(model(**batch).loss.item())
        model.train()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        losses.append(model(**batch).loss.item())
    return losses
