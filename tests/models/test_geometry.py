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


def test_florence2_position_table_is_sincos(tiny_path):
    model, _ = models.get("florence2").load(tiny_path("florence2"))
    table = model.model.multi_modal_projector.image_position_embed
    for emb in (table.row_embeddings, table.column_embeddings):
        n, dim = emb.weight.shape
        # one axis of sincos_2d's table: the rows at column 0, first half of the channels
        assert torch.allclose(emb.weight, sincos_2d(n, 2 * dim)[::n, :dim].float())


def test_florence2_position_table_scale_multiplies_the_waves(tmp_path):
    """model.tiny.size.image_position_scale: the same waves, quieter (the table is added to DaViT's
    output before the projector's LayerNorm, so it sets how much of an image token is place)."""
    family = models.get("florence2")
    small = {"layers": 1, "d_model": 64, "heads": 2, "ffn": 128, "vision_dims": (32, 64)}
    tables = {}
    for scale in (1.0, 0.4):
        out = family.build_tiny(tmp_path / str(scale), ["<OD>"], image_position_scale=scale, **small)
        model, _ = family.load(out)
        embed = model.model.multi_modal_projector.image_position_embed
        tables[scale] = [e.weight.detach() for e in (embed.row_embeddings, embed.column_embeddings)]
    for full, quiet in zip(tables[1.0], tables[0.4], strict=True):
        n, dim = full.shape
        assert torch.allclose(full, sincos_2d(n, 2 * dim)[::n, :dim].float())
        assert torch.allclose(quiet, 0.4 * full, atol=1e-7)
        assert float(quiet.abs().max()) == pytest.approx(0.4, abs=1e-3)  # unit waves, times 0.4


def _square_at(x: int, y: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([x, y, x + 15, y + 15], fill=(220, 30, 30))
    return image


def _set_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chamfer distance between two sets of token vectors (each token to its nearest in the other)."""
    d = torch.cdist(a, b)
    return float((d.min(1).values.mean() + d.min(0).values.mean()) / 2)


@pytest.mark.parametrize(("prior", "bounds"), [(True, (0.06, 1.0)), (False, (0.0, 0.05))])
def test_florence2_encoder_tells_where_the_shape_is(tmp_path, prior, bounds):
    """The decoder reads the encoder's output through cross-attention, which has no positions of its
    own: it sees a set of tokens. The same square 32 px apart (a multiple of DaViT's stride and
    window) must give different sets, so the image tokens must say where they are. Without the
    position prior they hardly do (the random table is 4% of DaViT's output): the two sets are
    3.3-3.6% of a token distance apart, against 8-10% with it (measured on this size and seed)."""
    family = models.get("florence2")
    small = {"layers": 1, "d_model": 64, "heads": 2, "ffn": 128, "vision_dims": (32, 64)}
    out = family.build_tiny(tmp_path, ["<OD>", "a red square"], geometry_prior=prior, **small)
    model, processor = family.load(out)
    model.eval()
    inputs = family.encode_prompts(
        processor, ["<OD>"] * 3, [_square_at(8, 8), _square_at(40, 40), _square_at(40, 8)]
    )
    with torch.no_grad():
        enc = model(**inputs, decoder_input_ids=torch.full((3, 1), processor.tokenizer.eos_token_id))
    tokens = enc.encoder_last_hidden_state
    token_distance = float(torch.cdist(tokens[0], tokens[0]).mean())
    for moved in (1, 2):  # diagonally, and along one axis
        apart = _set_distance(tokens[0], tokens[moved]) / token_distance
        assert bounds[0] < apart < bounds[1], (moved, apart)


@pytest.mark.parametrize("prior", [True, False])
def test_florence2_text_positions_start_as_waves_when_asked(tmp_path, prior):
    """model.tiny.size.text_position_prior: BART's position tables (encoder, decoder) become
    sine-cosine waves of the position on the random rows' scale; without it they stay random
    (std 0.02, as BART initialises them), so neighbouring positions are no more alike than far ones."""
    from pipeline.models.florence2 import sincos_1d

    family = models.get("florence2")
    small = {"layers": 1, "d_model": 64, "heads": 2, "ffn": 128, "vision_dims": (32, 64)}
    out = family.build_tiny(tmp_path, ["<OD>", "a red square"], text_position_prior=prior, **small)
    model, _ = family.load(out)
    lm = model.model.language_model
    for table in (lm.encoder.embed_positions.weight.detach(), lm.decoder.embed_positions.weight.detach()):
        rows = table[2:]  # BART's offset of 2: position p is row p + 2
        unit = torch.nn.functional.normalize(rows, dim=1)
        near = float((unit[:-1] * unit[1:]).sum(1).mean())  # cosine of neighbouring positions
        if prior:
            waves = sincos_1d(rows.shape[0], rows.shape[1])
            scale = float(rows.norm(dim=1).mean() / waves.norm(dim=1).mean())
            assert torch.allclose(rows, (waves * scale).float(), atol=1e-6)
            assert scale * float(waves.norm(dim=1).mean()) == pytest.approx(0.02 * math.sqrt(64), rel=0.05)
            assert near > 0.9
        else:
            assert float(rows.std()) == pytest.approx(0.02, rel=0.05) and abs(near) < 0.05
