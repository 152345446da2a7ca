"""The processor's pixel values, made in one pass: each image resized once, straight from the
decoded picture, then mapped through a lookup table into a batch tensor allocated where it goes.

A PIL-backend image processor (the one transformers uses without torchvision, and the one the
tiny models build) turns each image into a numpy array, hands it back to PIL to resize, turns it
into an array again, rescales it in float64, normalises it in float32, and finally stacks the
batch: four full-size copies per image, most of them float. At Florence-2's 768 px that is most
of the data path's time. The result depends only on the resized uint8 pixel and its channel, so
`PixelPath` resizes with the same PIL call and looks every value up in a 3x256 table that the
processor itself computed: the same tensor to the bit (tests/models/test_pixels.py holds it to
the processor's own output on both families, every image mode and odd sizes).

The processor still makes the text (Florence-2's task prompts, PaliGemma's image tokens and
suffix): `processor_images` hands it a 1x1 stand-in per image, with its image steps turned
off, and the batch takes the prepared pixels instead of the stand-ins'. Processors this path does
not cover (a torchvision backend, shortest-edge resizing, cropping, padding) get `None` from
`PixelPath.of` and keep doing the work themselves.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

TABLE = "pixel_table"  # a batch with uint8 pixel_values carries its table here (see finish)

# the image processor's steps turned off for pixels PixelPath already made (see processor_images)
PREPARED = {
    "do_resize": False,
    "do_center_crop": False,
    "do_rescale": False,
    "do_normalize": False,
    "do_convert_rgb": False,
    "input_data_format": "channels_first",
}


class PixelPath:
    """An image processor's `pixel_values` for RGB PIL images (see the module doc). Picklable."""

    def __init__(self, height: int, width: int, resample: int, table: np.ndarray) -> None:
        self.height, self.width, self.resample = height, width, resample
        self.table = table  # (3, 256): the processor's output for each uint8 value of each channel

    @classmethod
    def of(cls, image_processor: Any) -> PixelPath | None:
        """The path for this image processor, or None where it does something the path does not."""
        ip = image_processor
        if getattr(ip, "backend", None) != "pil" or getattr(ip, "do_pad", False):
            return None
        size = ip.size
        height, width = getattr(size, "height", None), getattr(size, "width", None)
        if not (ip.do_resize and height and width):
            return None  # shortest-edge or no resizing: sizes vary by image
        if getattr(ip, "do_center_crop", False):
            crop = ip.crop_size
            if (getattr(crop, "height", None), getattr(crop, "width", None)) != (height, width):
                return None
        if not (ip.do_rescale or ip.do_normalize):
            return None  # uint8 out: nothing to gain
        values = np.tile(np.arange(256, dtype=np.uint8), (3, 1, 1))  # (3, 1, 256), channels first
        table = ip(
            [values],
            do_resize=False,
            do_center_crop=False,
            do_convert_rgb=False,
            input_data_format="channels_first",
            return_tensors="np",
        )["pixel_values"][0]
        if table.shape != (3, 1, 256):
            return None
        resample = ip.resample if ip.resample is not None else Image.Resampling.BILINEAR
        return cls(int(height), int(width), int(resample), np.ascontiguousarray(table[:, 0, :]))

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, height, width) pixel values; in a DataLoader worker, in shared memory already,
        so sending the batch to the main process copies nothing."""
        out = _batch_tensor((len(images), 3, self.height, self.width), self.table.dtype)
        view = out.numpy()
        for i, pixels in enumerate(self._resized(images)):
            for c in range(3):
                np.take(self.table[c], pixels[..., c], out=view[i, c])
        return out

    def resized(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, height, width) uint8: the resized pixels before the table, a quarter of the
        bytes, for `expand` to finish where the model is (Collator(defer_pixels=True))."""
        out = _batch_tensor((len(images), 3, self.height, self.width), np.dtype(np.uint8))
        view = out.numpy()
        for i, pixels in enumerate(self._resized(images)):
            view[i] = pixels.transpose(2, 0, 1)
        return out

    def _resized(self, images: Sequence[Image.Image]) -> Iterator[np.ndarray]:
        size = (self.width, self.height)
        for image in images:
            if image.mode != "RGB":
                raise ValueError(f"PixelPath takes RGB images (load_image makes them), got mode {image.mode}")
            yield np.asarray(image.resize(size, resample=self.resample))  # (H, W, 3) uint8


def expand(pixels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, 3, H, W) -> the processor's values, looked up in `table` (3, 256) on the
    device both are on: `PixelPath.__call__`'s result, to the bit."""
    out = torch.empty(pixels.shape, dtype=table.dtype, device=pixels.device)
    for c in range(3):
        index = pixels[:, c].reshape(-1).int()
        out[:, c] = table[c].index_select(0, index).view(pixels[:, c].shape)
    return out


def finish(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch ready for the model: pixels left as uint8 (the batch then carries TABLE, see
    Collator(defer_pixels=True)) expanded where the batch now is; any other batch as it is."""
    if TABLE not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k != TABLE}
    out["pixel_values"] = expand(batch["pixel_values"], batch[TABLE])
    return out


_PATHS: weakref.WeakKeyDictionary[Any, PixelPath | None] = weakref.WeakKeyDictionary()


def path_for(processor: Any) -> PixelPath | None:
    """The processor's PixelPath (worked out once per image processor), or None."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return None
    try:
        return _PATHS[ip]
    except KeyError:
        path = _PATHS[ip] = PixelPath.of(ip)
        return path


def prepare(processor: Any, images: Sequence[Image.Image]) -> Sequence[Image.Image] | torch.Tensor:
    """`images` (RGB) as the families' encode functions take them: the pixel values where the
    processor has a PixelPath, else the images themselves for the processor to do."""
    path = path_for(processor)
    return images if path is None else path(images)


def _batch_tensor(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, allocated in shared memory, as torch's
    default_collate does, instead of being copied there when the batch is sent."""
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch_dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=torch_dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=torch_dtype).new(storage).view(shape)


def processor_images(
    images: Sequence[Any] | torch.Tensor,
) -> tuple[list[Any], dict[str, Any], torch.Tensor | None]:
    """What a family hands its processor for `images`: (images, image kwargs, pixel values to put
    in the batch instead of the processor's, or None). PIL images go as they are; a tensor that
    PixelPath made goes as one 1x1 stand-in per image with the image steps off, since the
    processor needs an image per prompt only to place its image tokens."""
    if isinstance(images, torch.Tensor):
        stand_in = np.zeros((3, 1, 1), dtype=np.float32)
        return [stand_in] * len(images), dict(PREPARED), images
    return list(images), {}, None
