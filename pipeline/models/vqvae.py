"""PaliGemma's mask codec: big_vision's VQ-VAE (`vae-oid.npz`) in PyTorch, and the geometry around it.

PaliGemma writes a mask as its box and 16 `<segNNN>` codes: the mask is cropped to its box, resized
to 64x64, encoded to a 4x4 grid of 512-d vectors, each replaced by the index of its nearest of 128
codebook vectors (big_vision `pp/proj/paligemma/segmentation.py`); decoding looks the 16 vectors up,
upsamples them back to 64x64 logits, resizes those into the box and thresholds at 0 (big_vision's
segmentation evaluator). The weights are one file whose arrays are in PyTorch layout, keys as
`KEYS` lists them (`encoder.N.weight` / `.bias` of `Conv2d`s, `decoder.N` of `ConvTranspose2d`s for
the four upsampling layers, `_vq_vae._embedding` the codebook). The network is built from the
arrays' shapes, so a file with other widths or kernel sizes loads as it is.

Two details of big_vision's that a PyTorch port must keep (tests/models/test_vqvae_flax.py checks
both against a JAX implementation written from big_vision's code):
- the encoder's convolutions pad as TensorFlow's `padding="SAME"` does: for a stride of 2 and an
  odd kernel the extra row and column go after, not before (`_same_pad`);
- the decoder's `flax.linen.ConvTranspose(kernel 4, stride 2, padding=2, transpose_kernel=True)` is
  PyTorch's `conv_transpose2d(stride=2, padding=1)` (flax pads the dilated input by 2 where PyTorch
  removes k - 1 - 2 = 1 from the output's edges).

`load` reads `.npz` (never pickles) or `.safetensors`; `fetch_oid` downloads big_vision's file from
the Hugging Face Space that serves it, checking its sha256. `fit` trains a codec of the same
architecture on a set of masks (the demo's stand-in for `vae-oid.npz`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UvftError
from pipeline.masks import to_rle
from pipeline.records import Box, ImageSize

logger = logging.getLogger(__name__)

SIDE = 64  # a mask is encoded at 64x64
GRID = 4  # into a 4x4 grid of codes
NUM_CODES = GRID * GRID
CODEBOOK = "_vq_vae._embedding"
ENCODER_CONVS = ("encoder.0", "encoder.2", "encoder.4", "encoder.6")  # stride 2, each then ReLU
ENCODER_BLOCKS = ("encoder.8.net", "encoder.9.net")
ENCODER_OUT = "encoder.10"  # stride 1, no ReLU: the vectors the codebook quantises
DECODER_IN = "decoder.0"  # 1x1, then ReLU
DECODER_BLOCKS = ("decoder.2.net", "decoder.3.net")
DECODER_UPS = ("decoder.4", "decoder.6", "decoder.8", "decoder.10")  # transposed, stride 2, each then ReLU
DECODER_OUT = "decoder.12"  # 1x1 to one channel: logits, > 0 inside the mask
BLOCK_CONVS = (".0", ".2", ".4")  # a residual block: 3x3, ReLU, 3x3, ReLU, 1x1, plus its input


def _layers() -> list[str]:
    blocks = [b + c for b in (*ENCODER_BLOCKS, *DECODER_BLOCKS) for c in BLOCK_CONVS]
    return [*ENCODER_CONVS, *blocks[:6], ENCODER_OUT, DECODER_IN, *blocks[6:], *DECODER_UPS, DECODER_OUT]


KEYS = (*(f"{n}.{p}" for n in _layers() for p in ("weight", "bias")), CODEBOOK)

# big_vision's file: distributed in its bucket (gs://big_vision/paligemma/vae-oid.npz) and in the
# Hugging Face Space of PaliGemma's demo, which `hf_hub_download(repo_type="space")` can fetch
OID_SPACE = "big-vision/paligemma-hf"
OID_FILE = "vae-oid.npz"
OID_SHA256 = "5586010257b8536dddefab65e7755077f21d5672d5674dacf911f73ae95a4447"
OID_SIZE = 8_479_556


# ---------------------------------------------------------------------------------------- network


def _same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: int) -> torch.Tensor:
    """Pad as TensorFlow's "SAME": output side ceil(n / stride), the odd pixel after."""
    pads = []
    for n, k in zip(reversed(x.shape[-2:]), reversed(kernel), strict=True):  # F.pad: last axis first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class MaskVQVAE(nn.Module):
    """Encoder, codebook and decoder of a `vae-oid.npz`-layout checkpoint (arrays by `KEYS`)."""

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        super().__init__()
        missing = [k for k in KEYS if k not in arrays]
        if missing:
            more = " ..." if len(missing) > 4 else ""
            raise UvftError(f"mask VQ-VAE checkpoint lacks {', '.join(missing[:4])}{more}")
        # ParameterDict keys cannot hold "."; arrays beyond KEYS (an EMA codebook's statistics) are not read
        tensors = {k: torch.tensor(np.asarray(arrays[k], dtype=np.float32)) for k in KEYS}
        self.params = nn.ParameterDict({k.replace(".", "/"): nn.Parameter(t) for k, t in tensors.items()})
        codebook = self.codebook
        if codebook.ndim != 2 or self.w(ENCODER_OUT).shape[0] != codebook.shape[1]:
            raise UvftError(
                f"mask VQ-VAE checkpoint: codebook {tuple(codebook.shape)} does not match the encoder's "
                f"{self.w(ENCODER_OUT).shape[0]}-d output"
            )

    def w(self, layer: str) -> nn.Parameter:
        return self.params[f"{layer}/weight".replace(".", "/")]

    def b(self, layer: str) -> nn.Parameter:
        return self.params[f"{layer}/bias".replace(".", "/")]

    @property
    def codebook(self) -> nn.Parameter:
        return self.params[CODEBOOK.replace(".", "/")]

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights in the file's layout (keys and PyTorch shapes)."""
        return {k: self.params[k.replace(".", "/")].detach().cpu().numpy().copy() for k in KEYS}

    def _conv(self, x: torch.Tensor, layer: str, stride: int = 1) -> torch.Tensor:
        w = self.w(layer)
        return F.conv2d(_same_pad(x, tuple(w.shape[-2:]), stride), w, self.b(layer), stride=stride)

    def _block(self, x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.relu(self._conv(x, name + ".0"))
        y = F.relu(self._conv(y, name + ".2"))
        return self._conv(y, name + ".4") + x

    def vectors(self, masks: torch.Tensor) -> torch.Tensor:
        """The encoder's output of masks `[B, 64, 64]` in [0, 1]: `[B, 4, 4, D]` (NHWC, as big_vision)."""
        x = (2.0 * (masks - 0.5)).unsqueeze(1)
        for layer in ENCODER_CONVS:
            x = F.relu(self._conv(x, layer, stride=2))
        for block in ENCODER_BLOCKS:
            x = self._block(x, block)
        return self._conv(x, ENCODER_OUT).permute(0, 2, 3, 1)

    def quantise(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (squared distance, the first of ties) of each of
        `[B, 4, 4, D]`, row-major: `[B, 16]`."""
        flat = vectors.reshape(-1, vectors.shape[-1])
        e = self.codebook
        d = (flat**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * flat @ e.T
        return d.argmin(1).reshape(vectors.shape[0], -1)

    @torch.no_grad()
    def encode(self, masks: torch.Tensor) -> torch.Tensor:
        """Codes `[B, 16]` (int64, in range(num_codes)) of masks `[B, 64, 64]` in [0, 1]."""
        return self.quantise(self.vectors(masks.float()))

    def logits(self, quantised: torch.Tensor) -> torch.Tensor:
        """The decoder's output `[B, 64, 64]` of `[B, 4, 4, D]` codebook vectors (> 0: inside)."""
        x = quantised.permute(0, 3, 1, 2)
        x = F.relu(self._conv(x, DECODER_IN))
        for block in DECODER_BLOCKS:
            x = self._block(x, block)
        for layer in DECODER_UPS:
            x = F.relu(F.conv_transpose2d(x, self.w(layer), self.b(layer), stride=2, padding=1))
        return self._conv(x, DECODER_OUT)[:, 0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Mask logits `[B, 64, 64]` of codes `[B, 16]` (big_vision: in [-1, 1], the mask where > 0)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        q = self.codebook[codes.reshape(-1)].reshape(codes.shape[0], GRID, GRID, -1)
        return self.logits(q)


def new(*, seed: int = 0, dim: int = 512, codes: int = 128) -> MaskVQVAE:
    """A randomly initialised codec with `vae-oid.npz`'s layout: 4x4 stride-2 convolutions 1 -> 16
    -> 32 -> 64 -> 128, residual blocks at 128, a 1x1 to `dim`; the decoder big_vision's (1x1 to
    128, two blocks, transposed 4x4 convolutions 128 -> 128 -> 64 -> 32 -> 16, 1x1 to one channel)."""
    g = torch.Generator().manual_seed(seed)

    def conv(out: int, inp: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        bound = 1 / math.sqrt(inp * k * k)  # PyTorch's default (kaiming-uniform with a = sqrt(5))
        w = (torch.rand(out, inp, k, k, generator=g) * 2 - 1) * bound
        b = (torch.rand(out, generator=g) * 2 - 1) * bound
        return w.numpy(), b.numpy()

    shapes: dict[str, tuple[int, int, int]] = {}
    for layer, (out, inp) in zip(ENCODER_CONVS, ((16, 1), (32, 16), (64, 32), (128, 64)), strict=True):
        shapes[layer] = (out, inp, 4)
    for block in (*ENCODER_BLOCKS, *DECODER_BLOCKS):
        shapes |= {block + ".0": (128, 128, 3), block + ".2": (128, 128, 3), block + ".4": (128, 128, 1)}
    shapes[ENCODER_OUT] = (dim, 128, 1)
    shapes[DECODER_IN] = (128, dim, 1)
    for layer, (inp, out) in zip(DECODER_UPS, ((128, 128), (128, 64), (64, 32), (32, 16)), strict=True):
        shapes[layer] = (out, inp, 4)
    shapes[DECODER_OUT] = (1, 16, 1)
    arrays: dict[str, np.ndarray] = {}
    for layer, (out, inp, k) in shapes.items():
        w, arrays[layer + ".bias"] = conv(out, inp, k)
        # ConvTranspose2d keeps its weight as [in, out, k, k]
        arrays[layer + ".weight"] = w.transpose(1, 0, 2, 3).copy() if layer in DECODER_UPS else w
    arrays[CODEBOOK] = ((torch.rand(codes, dim, generator=g) * 2 - 1) / codes).numpy()
    return MaskVQVAE(arrays)


# ------------------------------------------------------------------------------------ files


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(path: str | Path) -> MaskVQVAE:
    """A codec from a `.npz` (arrays only: pickles are refused) or a `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise UvftError(f"mask VQ-VAE file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays: Mapping[str, Any] = load_file(str(path))
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise UvftError(f"mask VQ-VAE file {path} is not a readable .npz of arrays: {e}") from None
    else:
        raise UvftError(f"mask VQ-VAE file {path}: expected a .npz or .safetensors file")
    try:
        return MaskVQVAE(arrays)
    except UvftError as e:
        raise UvftError(f"{path}: {e}") from None


def save(vae: MaskVQVAE, path: str | Path) -> Path:
    """Write the codec as safetensors, keys and shapes as in `vae-oid.npz`."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(vae.arrays(), str(tmp))
    tmp.replace(path)
    return path


def fetch_oid(cache_dir: str | Path) -> Path:
    """big_vision's `vae-oid.npz`: from `cache_dir` when it is there, else downloaded from the
    Hugging Face Space that serves it; its sha256 is checked either way."""
    target = Path(cache_dir) / "mask_vae" / OID_FILE
    if not target.is_file():
        try:
            from huggingface_hub import hf_hub_download

            got = Path(hf_hub_download(OID_SPACE, OID_FILE, repo_type="space"))
        except Exception as e:  # offline, no such repo, a proxy's error page: all say the same to a user
            raise UvftError(
                f"the mask VQ-VAE {OID_FILE} is not in {target.parent} and could not be downloaded from "
                f"the Hugging Face Space {OID_SPACE} ({type(e).__name__}: {e}). Either download it "
                f"(`huggingface-cli download {OID_SPACE} {OID_FILE} --repo-type space`, or "
                f"gs://big_vision/paligemma/{OID_FILE}) and set model.mask_vae to its path, or copy it "
                f"to {target}"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(got.read_bytes())
        tmp.replace(target)
    digest = sha256(target)
    if digest != OID_SHA256:
        raise UvftError(
            f"{target}: sha256 {digest} is not {OID_FILE}'s ({OID_SHA256}); delete it to download it again"
        )
    return target


# ---------------------------------------------------------------------------------- geometry


def pixel_box(box: Box, size: ImageSize) -> tuple[int, int, int, int]:
    """The pixel window of an xyxy box: corners rounded (as big_vision crops), clipped to the
    image, at least one pixel each way."""
    w, h = size
    x1 = min(max(round(box[0]), 0), w - 1)
    y1 = min(max(round(box[1]), 0), h - 1)
    x2 = min(max(round(box[2]), x1 + 1), w)
    y2 = min(max(round(box[3]), y1 + 1), h)
    return x1, y1, x2, y2


def crop(mask: np.ndarray, box: Box) -> torch.Tensor:
    """A full-image boolean mask `[H, W]` cropped to `box` and resized to 64x64 in [0, 1]
    (bilinear with antialiasing, as big_vision's `tf.image.resize(..., antialias=True)`)."""
    h, w = mask.shape
    x1, y1, x2, y2 = pixel_box(box, (w, h))
    window = torch.as_tensor(np.ascontiguousarray(mask[y1:y2, x1:x2]), dtype=torch.float32)[None, None]
    resized = F.interpolate(window, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
    return resized[0, 0]


def paste(logits: np.ndarray | torch.Tensor, box: Box, size: ImageSize) -> np.ndarray:
    """A decoded 64x64 mask's logits resized into `box` (PIL bilinear, as big_vision's evaluator)
    and thresholded at 0: the boolean mask `[H, W]` of an image of `size`."""
    from PIL import Image

    w, h = size
    x1, y1, x2, y2 = pixel_box(box, size)
    m64 = np.asarray(torch.as_tensor(logits).detach().cpu(), dtype=np.float32)
    inside = np.asarray(Image.fromarray(m64).resize((x2 - x1, y2 - y1), resample=Image.BILINEAR)) > 0.0
    out = np.zeros((h, w), dtype=bool)
    out[y1:y2, x1:x2] = inside
    return out


# ---------------------------------------------------------------------------------- fitting


class _UnitView:
    """uint8 masks read as float in [0, 1] a batch at a time (the whole set stays a quarter the size)."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.masks[index].float() / 255


@dataclass
class FitReport:
    steps: int
    masks: int
    loss: float  # the last 50 steps' mean reconstruction loss
    codes_used: int  # codebook entries the training masks use at the end


def fit(
    masks: torch.Tensor,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    beta: float = 0.25,
    progress: bool = True,
) -> tuple[MaskVQVAE, FitReport]:
    """Train a codec of `vae-oid.npz`'s architecture on masks `[N, 64, 64]` in [0, 1], or uint8 in
    0..255 (crops to their boxes): binary cross-entropy of the decoder's logits, the codebook and
    commitment losses of VQ-VAE (van den Oord et al. 2017) with the straight-through gradient, the
    codebook started from encoder outputs and unused entries restarted on them every 100 steps."""
    from tqdm.auto import tqdm

    if len(masks) == 0:
        raise UvftError("no masks to fit the mask VQ-VAE on")
    if masks.dtype == torch.uint8:
        masks = _UnitView(masks)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vae = new(seed=seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    n = len(masks)

    def batches() -> Iterator[torch.Tensor]:
        while True:
            yield from torch.randperm(n, generator=g).split(batch_size)

    it = batches()
    with torch.no_grad():  # start the codebook on what the encoder says
        z = vae.vectors(masks[next(it)]).reshape(-1, vae.codebook.shape[1])
        vae.codebook.copy_(z[torch.randint(len(z), (vae.num_codes,), generator=g)])
    used = torch.zeros(vae.num_codes, dtype=torch.bool)
    losses: list[float] = []
    bar = tqdm(range(steps), desc="fit mask VQ-VAE", unit=" step", disable=not progress)
    for step in bar:
        x = masks[next(it)]
        z = vae.vectors(x)
        codes = vae.quantise(z.detach())
        e = vae.codebook[codes.reshape(-1)].reshape(z.shape)
        q = z + (e - z).detach()  # straight through
        recon = F.binary_cross_entropy_with_logits(vae.logits(q), x)
        loss = recon + F.mse_loss(e, z.detach()) + beta * F.mse_loss(z, e.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        used[codes.unique()] = True
        losses.append(recon.item())
        if (step + 1) % 100 == 0 and step + 1 < steps:
            dead = (~used).nonzero().flatten()
            if len(dead):
                with torch.no_grad():
                    flat = z.detach().reshape(-1, z.shape[-1])
                    vae.codebook[dead] = flat[torch.randint(len(flat), (len(dead),), generator=g)]
            used.zero_()
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}", dead=len(dead))
    bar.close()
    with torch.no_grad():
        final = torch.cat([vae.encode(masks[i : i + 256]) for i in range(0, n, 256)])
    report = FitReport(steps, n, float(np.mean(losses[-50:])), int(final.unique().numel()))
    return vae.eval().requires_grad_(False), report


# ------------------------------------------------------------------------------- a model's codec

MASK_VAE_FILE = "mask_vae.safetensors"  # beside a trained model's weights, when it writes masks as codes


def in_folder(folder: str | Path | None) -> MaskVQVAE | None:
    """The codec saved with a trained model (`MASK_VAE_FILE` in its folder), or None."""
    if folder is None or not (Path(folder) / MASK_VAE_FILE).is_file():
        return None
    return load(Path(folder) / MASK_VAE_FILE)


def keep_with(path: str | Path, folder: str | Path) -> Path:
    """Save the codec at `path` beside a model's weights (as safetensors), so that whoever loads
    the model decodes its masks with the codes' own codebook."""
    return save(load(path), Path(folder) / MASK_VAE_FILE)


def decode_mask(
    vae: MaskVQVAE, boxes: Sequence[Box], codes: Sequence[Sequence[int]], size: ImageSize
) -> dict:
    """The union of decoded masks, each pasted into its box, on an image of `size`: a COCO RLE."""
    w, h = size
    mask = np.zeros((h, w), dtype=bool)
    if len(codes):
        logits = vae.decode(torch.as_tensor([list(c) for c in codes], dtype=torch.long))
        for box, m64 in zip(boxes, logits, strict=True):
            mask |= paste(m64, box, size)
    return to_rle(mask)
