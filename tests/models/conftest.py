"""Fixtures for the model tests: tiny models built once per session from the text of the shared
`records` (tests/conftest.py), batches of them, and a few training steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline import models
from pipeline.data.collate import Collator

Records = dict[str, list[dict[str, Any]]]


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
