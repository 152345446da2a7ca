"""Fixtures for the source reader tests: tiny images and JSON files made in tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import SourceContext

MakeImage = Callable[..., Path]


@pytest.fixture
def ctx() -> SourceContext:
    return SourceContext(name="src", split="train")


def _pixels(size: tuple[int, int], mode: str) -> Image.Image:
    # noise, not a flat colour: a truncated file then really lacks scan data
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "P":
        return rgb.quantize(16)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    return rgb.convert(mode)


@pytest.fixture
def make_image(tmp_path: Path) -> MakeImage:
    """make_image("a/b.jpg", size=(32, 24), mode="RGB", orientation=None, root=tmp_path) -> path."""

    def make(
        rel: str,
        size: tuple[int, int] = (32, 24),
        mode: str = "RGB",
        orientation: int | None = None,
        root: Path | None = None,
        **save: Any,
    ) -> Path:
        path = (root or tmp_path) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = _pixels(size, mode)
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            save["exif"] = exif
        img.save(path, **save)
        return path

    return make


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    def write(rel: str, obj: Any) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        return path

    return write


@pytest.fixture
def bad_images(tmp_path: Path, make_image: MakeImage) -> Callable[[str, str], Path]:
    """bad_images(kind, rel) writes a broken image: kind in garbage, truncated, big."""

    def make(kind: str, rel: str) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "garbage":
            path.write_bytes(b"this is not an image at all" * 10)
        elif kind == "truncated":
            make_image(rel, **({"quality": 95} if path.suffix == ".jpg" else {}))
            data = path.read_bytes()
            path.write_bytes(data[: len(data) - 300])
        elif kind == "big":  # a "bomb" relative to the small max_image_pixels the test sets
            make_image(rel, size=(200, 200))
        else:
            raise ValueError(kind)
        return path

    return make
