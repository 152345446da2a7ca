"""The mask codes of a build: which VQ-VAE makes them (`model.mask_vae`), and making them.

A family that writes a mask as codes (PaliGemma: `formats.pali.MASK_CODES`) needs every
segmentation Example's 16 codes before it can render it. The build hands those Examples to
`Pending` instead of rendering them; after its pass over the sources, `Pending.finish` resolves
the codec, encodes every mask in batches and gives the Examples back with their codes. The codes
then live in the records' targets, so they are made once per build and cached with the records.

`model.mask_vae` names the codec:
- `oid`: big_vision's `vae-oid.npz` (what PaliGemma was pretrained with), fetched once into the
  cache (`models.vqvae.fetch_oid`); the default when `model.id` names a checkpoint (a hub id or a
  folder outside the cache);
- a path to a `.npz` or `.safetensors` file in that layout;
- `stand-in`: a codec of the same architecture fitted on the training split's masks and cached
  under a key of those masks and the fitting code, the default for uvft's tiny model (and its
  base stages, cached in `data.cache_dir`), which stands in for PaliGemma as its codebook stands
  in for big_vision's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline import masks
from pipeline.errors import DataError, UvftError
from pipeline.models import vqvae
from pipeline.recipe import Recipe, expand_path
from pipeline.records import Example
from pipeline.tasks import SEGMENTATION

logger = logging.getLogger(__name__)

OID = "oid"
STAND_IN = "stand-in"
# the stand-in's fit: measured on the all-tasks demo's 30,645 referring masks, 300 steps of 32 gave a
# round trip of mIoU 0.976 on its validation masks (README, "PaliGemma's masks")
STAND_IN_FIT = {"steps": 400, "batch_size": 32, "lr": 1e-3, "seed": 0}
_BATCH = 256  # masks encoded at once


def choice(recipe: Recipe) -> str:
    """`model.mask_vae`, or its default: the stand-in for uvft's tiny model (`model.id` null, or a
    folder inside `data.cache_dir`, where the tiny model and its base stages live), big_vision's
    codec for any other checkpoint."""
    if recipe.model.mask_vae is not None:
        return recipe.model.mask_vae
    model_id = recipe.model.id
    if model_id is None:
        return STAND_IN
    cache = expand_path(recipe.data.cache_dir).resolve()
    return STAND_IN if cache in expand_path(model_id).resolve().parents else OID


def key(recipe: Recipe) -> str:
    """What of the codec decides the records (for the build's cache key), without loading it: the
    stand-in is decided by the training masks and uvft's code, both in the key already."""
    name = choice(recipe)
    if name == OID:
        return f"{OID}:{vqvae.OID_SHA256}"
    if name == STAND_IN:
        return f"{STAND_IN}:{json.dumps(STAND_IN_FIT, sort_keys=True)}"
    path = expand_path(name)
    try:
        return f"{path}:{vqvae.sha256(path)}"
    except OSError:
        return f"{path}:missing"


def wants_codes(fmt: Any, ex: Example) -> bool:
    return bool(fmt.MASK_CODES) and ex.task == SEGMENTATION


def window_mask(fmt: Any, ex: Example) -> torch.Tensor:
    """The Example's mask cropped to the window its codes are written with, 64x64 in [0, 1]."""
    box = fmt.mask_window(ex.polygons, ex.image_size)
    if box is None:
        raise DataError("the mask's polygons have no area inside the image", record=ex.id, field="polygons")
    return vqvae.crop(masks.rasterise(ex.polygons, ex.image_size), box)


@dataclass
class Pending:
    """Segmentation Examples waiting for their codes, in the order the build met them, with
    whatever the build wants back with each (its split, its stats row). A named codec (`oid`, a
    path) is read at the first Example, so a missing one stops the build before its pass ends."""

    recipe: Recipe
    fmt: Any
    items: list[tuple[Example, Any]] = field(default_factory=list)
    codec: tuple[vqvae.MaskVQVAE, dict[str, Any]] | None = None

    def add(self, ex: Example, ctx: Any) -> None:
        if not self.items and choice(self.recipe) != STAND_IN:
            self.codec = resolve(self.recipe, torch.zeros(0, vqvae.SIDE, vqvae.SIDE, dtype=torch.uint8))
        self.items.append((ex, ctx))

    def finish(self, *, progress: bool) -> tuple[dict[str, Any], Iterator[tuple[Example, Any]]]:
        """(what codec made the codes, for the build's stats; the Examples with their codes)."""
        if not self.items:
            return {}, iter(())
        items, self.items = self.items, []
        if self.codec is None:  # the stand-in: fitted on the training split's masks
            train = [ex for ex, ctx in items if ctx[0] == self.recipe.data.train_split]
            crops = self._crops(train, progress, "crop training masks")
            self.codec = resolve(self.recipe, crops, progress=progress)
        vae, info = self.codec
        bar = tqdm(total=len(items), desc="mask codes", unit=" mask", disable=not progress, leave=False)
        codes: list[list[int]] = []
        for i in range(0, len(items), _BATCH):  # cropped batch by batch: memory stays flat
            batch = self._crops([ex for ex, _ in items[i : i + _BATCH]], False, "")
            codes += vae.encode(batch.float() / 255).tolist()
            bar.update(len(batch))
        bar.close()
        coded = zip(items, codes, strict=True)
        return info, ((replace(ex, mask_codes=c), ctx) for (ex, ctx), c in coded)

    def _crops(self, examples: list[Example], progress: bool, desc: str) -> torch.Tensor:
        """The Examples' masks in their windows, 64x64, as uint8 (0..255: a quarter of float32's memory)."""
        out = torch.empty(len(examples), vqvae.SIDE, vqvae.SIDE, dtype=torch.uint8)
        for i, ex in enumerate(tqdm(examples, desc=desc, unit=" mask", disable=not progress, leave=False)):
            out[i] = (window_mask(self.fmt, ex) * 255).round().to(torch.uint8)
        return out


def resolve(
    recipe: Recipe, train_masks: torch.Tensor, *, progress: bool = True
) -> tuple[vqvae.MaskVQVAE, dict[str, Any]]:
    """The recipe's codec and its description (`{"name", "path", "sha256"}`, plus the fit's report
    for a stand-in fitted now); a stand-in is fitted on `train_masks` (uint8 64x64 crops) unless
    cached."""
    name = choice(recipe)
    cache = expand_path(recipe.data.cache_dir)
    if name == STAND_IN:
        path, report = stand_in(train_masks, cache, progress=progress)
        info: dict[str, Any] = {"name": STAND_IN, "path": str(path), "masks": len(train_masks), **report}
    else:
        path = vqvae.fetch_oid(cache) if name == OID else expand_path(name)
        if not path.is_file():
            raise UvftError(
                f"model.mask_vae: {path} is not a file; give a .npz or .safetensors in vae-oid.npz's "
                f"layout, {OID} (big_vision's, fetched once) or {STAND_IN} (fitted on the training masks)"
            )
        info = {"name": name, "path": str(path)}
    info["sha256"] = vqvae.sha256(path)
    return vqvae.load(path), info


def stand_in(masks: torch.Tensor, cache: Path, *, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The stand-in codec of these masks: read from the cache, or fitted and cached."""
    if len(masks) == 0:
        raise UvftError(
            "model.mask_vae: stand-in is fitted on the training split's segmentation masks, and it has "
            "none; name a codec (oid, or a .npz / .safetensors path)"
        )
    h = hashlib.sha256(Path(vqvae.__file__).read_bytes())
    h.update(json.dumps(STAND_IN_FIT, sort_keys=True).encode())
    h.update(masks.contiguous().numpy().tobytes())
    path = cache / "mask_vae" / f"stand-in-{h.hexdigest()[:16]}.safetensors"
    report_path = path.with_suffix(".json")
    if path.is_file() and report_path.is_file():
        return path, json.loads(report_path.read_text())
    logger.info("fitting the stand-in mask VQ-VAE on %d training masks (cached in %s)", len(masks), path)
    vae, fit = vqvae.fit(masks, **STAND_IN_FIT, progress=progress)
    report = {"fit": {**STAND_IN_FIT, "loss": round(fit.loss, 5), "codes_used": fit.codes_used}}
    vqvae.save(vae, path)
    report_path.write_text(json.dumps(report, indent=2))
    return path, report
