"""The tiny models' geometry priors: smooth location-token embeddings, 2-D sine-cosine patch positions."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline import models
from pipeline.formats.loc import FLORENCE, PALI
from pipeline.models.common import sincos_2d


def test_sincos_2d_encodes_row_and_column():
    table = sincos_2d(3, 8)
    assert table.shape == (9, 8)
    # (row, col) = (0, 0): sin 0 = 0, cos 0 = 1 for both halves
    assert table[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # raster order: index 5 is row 1, column 2; the first frequency is 1
    assert table[5, 0].item() == pytest.approx(math.sin(1.0))
    assert table[5, 4].item() == pytest.approx(math.sin(2.0))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(3, 6)


@pytest.mark.parametrize(("family", "loc"), [("florence2", FLORENCE), ("paligemma", PALI)])
def test_location_embeddings_vary_smoothly_with_the_bin(family, loc, tiny_path):
    model, processor = models.get(family).load(tiny_path(family))
    emb = model.get_input_embeddings().weight.detach()
    ids = processor.tokenizer.convert_tokens_to_ids(loc.tokens())
    locs = torch.nn.functional.normalize(emb[ids].float(), dim=1)
    near = (locs[:-1] * locs[1:]).sum(1)  # cosine of neighbouring bins
    far = (locs[: loc.bins // 2] * locs[loc.bins // 2 :]).sum(1)  # half the range apart
    assert near.min() > 0.9 and far.mean() < 0.5
    # same scale as the other (random) rows: nothing else in the model has to adapt
    others = emb[: min(ids)].norm(dim=1).mean()
    assert emb[ids].norm(dim=1).mean() == pytest.approx(others.item(), rel=0.01)


def test_paligemma_patch_positions_are_sincos(tiny_path):
    model, _ = models.get("paligemma").load(tiny_path("paligemma"))
    pos = model.model.vision_tower.embeddings.position_embedding.weight
    side = math.isqrt(pos.shape[0])
    assert torch.allclose(pos, sincos_2d(side, pos.shape[1]).float())


def test_without_the_prior_the_locations_stay_random(tmp_path):
    out = models.get("paligemma").build_tiny(tmp_path, ["detect a"], geometry_prior=False, layers=1)
    model, processor = models.get("paligemma").load(out)
    ids = processor.tokenizer.convert_tokens_to_ids(PALI.tokens())
    emb = torch.nn.functional.normalize(model.get_input_embeddings().weight[ids], dim=1)
    assert (emb[:-1] * emb[1:]).sum(1).mean() < 0.3
