"""The fast pixel path gives the image processor's own pixel values to the bit, on both families,
and the batches the collator makes with it equal the ones the processor makes alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.collate import Collator
from pipeline.models import florence2, paligemma, pixels
from pipeline.models.pixels import PixelPath, processor_images
from pipeline.sources.images import load_image

SIZES = [(480, 640), (64, 64), (33, 97), (1, 1), (700, 20)]  # (h, w): down, same, odd, up, tall


def _processors():
    dims = {"vision_dims": (32, 64, 128, 256), "vision_depths": (1, 1, 1, 1), "vision_heads": (1, 2, 4, 8)}
    big = florence2.Size(**dims)
    texts = ["a cat", "caption en", "<CAPTION>"]
    return {
        "florence2 64": ("florence2", florence2.build_processor(texts, image_size=64)),
        "florence2 768": ("florence2", florence2.build_processor(texts, image_size=768, size=big)),
        "paligemma 64": ("paligemma", paligemma.build_processor(texts, image_size=64)),
        "paligemma 224": (
            "paligemma",
            paligemma.build_processor(texts, image_size=224, size=paligemma.Size(patch_size=14)),
        ),
    }


PROCESSORS = _processors()


def _images(tmp_path) -> list[str]:
    """Files as users have them: photos of several sizes, a grey PNG, a palette GIF, an RGBA PNG."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    for mode, name in [("L", "grey.png"), ("P", "palette.gif"), ("RGBA", "alpha.png")]:
        img = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).convert(mode)
        img.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_pixel_values_equal_the_processors_to_the_bit(tmp_path, name):
    _, processor = PROCESSORS[name]
    images = [load_image(p) for p in _images(tmp_path)]
    path = PixelPath.of(processor.image_processor)
    assert path is not None
    expected = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    got = path(images)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_collated_batches_equal_the_processor_path(tmp_path, name):
    family, processor = PROCESSORS[name]
    records = [
        {"image": p, "prompt": "<CAPTION>" if family == "florence2" else "caption en", "target": t}
        | {"task": "caption", "id": str(i)}
        for i, (p, t) in enumerate(zip(_images(tmp_path), ["a cat", "a cat a cat", "cat"] * 3, strict=False))
    ]
    fast = Collator(processor, family)(records)
    plain = copy.deepcopy(processor)
    pixels._PATHS[plain.image_processor] = None  # this processor does its own image steps
    slow = Collator(plain, family)(records)
    assert fast.keys() == slow.keys()
    for key, value in fast.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == slow[key].dtype and torch.equal(value, slow[key]), key
        else:
            assert value == slow[key], key


@pytest.mark.parametrize("name", ["florence2 64", "paligemma 224"])
def test_deferred_pixels_finish_as_the_processors(tmp_path, name):
    """The training loop's batches: uint8 pixels and their table, finished on the model's device."""
    family, processor = PROCESSORS[name]
    records = [
        {"image": p, "prompt": "<CAPTION>" if family == "florence2" else "caption en", "target": "a cat"}
        | {"task": "caption", "id": str(i)}
        for i, p in enumerate(_images(tmp_path))
    ]
    deferred = Collator(processor, family, defer_pixels=True)(records)
    size = processor.image_processor.size
    assert deferred["pixel_values"].dtype == torch.uint8
    assert deferred["pixel_values"].shape == (len(records), 3, size.height, size.width)
    assert deferred[pixels.TABLE].shape == (3, 256)
    ready = pixels.finish(deferred)
    assert pixels.TABLE not in ready and pixels.TABLE in deferred  # the collated batch is left as it was
    plain = Collator(processor, family)(records)
    assert ready.keys() == plain.keys()
    for key, value in plain.items():
        assert torch.equal(ready[key], value) if isinstance(value, torch.Tensor) else ready[key] == value, key
    assert pixels.finish(plain) is plain  # a batch made ready already passes as it is


def test_generation_inputs_use_the_same_pixels(tmp_path):
    _, processor = PROCESSORS["paligemma 64"]
    images = [load_image(p) for p in _images(tmp_path)[:3]]
    enc = paligemma.encode_prompts(processor, ["caption en"] * 3, pixels.prepare(processor, images))
    ref = processor(text=["<image>caption en"] * 3, images=images, padding="longest", return_tensors="pt")
    assert torch.equal(enc["pixel_values"], ref["pixel_values"])
    assert torch.equal(enc["input_ids"], ref["input_ids"])


def test_processors_it_does_not_cover_keep_their_own_steps():
    _, processor = PROCESSORS["florence2 64"]
    ip = processor.image_processor

    def variant(**changes):
        other = copy.deepcopy(ip)
        for k, v in changes.items():
            setattr(other, k, v)
        return other

    assert PixelPath.of(variant(do_center_crop=True, crop_size={"height": 32, "width": 32})) is None
    assert PixelPath.of(variant(do_resize=False)) is None
    assert PixelPath.of(variant(do_rescale=False, do_normalize=False)) is None
    assert PixelPath.of(variant(do_pad=True)) is None

    class Torchvision:
        backend = "torchvision"

    assert PixelPath.of(Torchvision()) is None
    images = [Image.new("RGB", (8, 8))]
    assert pixels.prepare(object(), images) is images  # no image processor: the images as they are


def test_only_rgb_images_are_taken():
    _, processor = PROCESSORS["florence2 64"]
    path = PixelPath.of(processor.image_processor)
    with pytest.raises(ValueError, match=r"RGB images .* got mode L"):
        path([Image.new("L", (8, 8))])


def test_pil_images_go_to_the_processor_as_they_are():
    images = [Image.new("RGB", (8, 8))]
    assert processor_images(images) == (images, {}, None)


def test_a_worker_batch_is_made_in_shared_memory(tmp_path):
    """Allocated where it goes, as default_collate does: sending it to the trainer copies nothing."""
    family, processor = PROCESSORS["florence2 64"]
    records = [
        {"image": p, "prompt": "<CAPTION>", "target": "a cat", "task": "caption", "id": str(i)}
        for i, p in enumerate(_images(tmp_path))
    ]
    for defer in (False, True):
        collate = Collator(processor, family, defer_pixels=defer)
        expected = collate(records[:4])["pixel_values"]
        assert not expected.is_shared()
        loader = torch.utils.data.DataLoader(records[:4], batch_size=4, collate_fn=collate, num_workers=1)
        (batch,) = list(loader)
        assert batch["pixel_values"].is_shared()
        assert torch.equal(batch["pixel_values"], expected)
