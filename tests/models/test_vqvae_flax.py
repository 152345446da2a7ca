"""The PyTorch mask VQ-VAE (pipeline/models/vqvae.py) equals a JAX/Flax reproduction of big_vision's own
code: the encoder of `pp/proj/paligemma/segmentation.py` (TensorFlow there; `lax.conv_general_dilated`
with `padding="SAME"` here, which pads as TF does) and the decoder of
`evaluators/proj/paligemma/segmentation.py` (its flax.linen modules, params as its `_get_params` builds).

On CPU in float32, random weights in `vae-oid.npz`'s key layout and shapes; nothing is downloaded. A
second layout with 3x3 stride-2 encoder convolutions (TF SAME pads those 0 before, 1 after) proves the
padding port beyond the 4x4 case; negative controls show that the checks can fail."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

jax = pytest.importorskip("jax")
pytest.importorskip("flax")

import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402

from pipeline.models import vqvae  # noqa: E402

Arrays = dict[str, np.ndarray]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _highest_precision() -> Iterator[None]:
    # XLA may otherwise run float32 matmuls/convolutions in reduced-precision passes
    with jax.default_matmul_precision("highest"):
        yield


def blobs(n: int, seed: int = 0) -> np.ndarray:
    """`n` soft masks [n, 64, 64] in [0, 1]: ellipses and rectangles with edges of random softness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    out = np.zeros((n, 64, 64), np.float32)
    for i in range(n):
        (cx, cy), (rx, ry) = rng.uniform(8, 56, 2), rng.uniform(4, 30, 2)
        if i % 2:  # signed distance to the boundary, roughly in pixels
            d = (1 - np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)) * min(rx, ry)
        else:
            d = np.minimum(rx - np.abs(xx - cx), ry - np.abs(yy - cy))
        out[i] = 1 / (1 + np.exp(-d / rng.uniform(0.05, 3)))
    return out


MASKS = blobs(16)


# ------------------------------------------------------- big_vision's encoder (TF there, JAX here)


def _conv_tf(ckpt: Arrays, x: jax.Array, strides: int, layer: str) -> jax.Array:
    kernel = np.transpose(ckpt[layer + ".weight"], (2, 3, 1, 0))
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, kernel, (strides, strides), "SAME", dimension_numbers=dims)
    return y + ckpt[layer + ".bias"]


def _resblock_tf(ckpt: Arrays, x: jax.Array, layer: str) -> jax.Array:
    y = jax.nn.relu(_conv_tf(ckpt, x, 1, layer + ".0"))
    y = jax.nn.relu(_conv_tf(ckpt, y, 1, layer + ".2"))
    return _conv_tf(ckpt, y, 1, layer + ".4") + x


def jax_vectors(ckpt: Arrays, masks: np.ndarray) -> jax.Array:
    x = 2.0 * (jnp.asarray(masks)[..., None] - 0.5)  # _norm
    for n in range(4):
        x = jax.nn.relu(_conv_tf(ckpt, x, 2, f"encoder.{2 * n}"))
    for n in range(2):
        x = _resblock_tf(ckpt, x, f"encoder.{8 + n}.net")
    return _conv_tf(ckpt, x, 1, "encoder.10")


def jax_codes(ckpt: Arrays, encoder_output: jax.Array) -> np.ndarray:
    emb = ckpt["_vq_vae._embedding"]
    flat = encoder_output.reshape(-1, emb.shape[1])
    distances = jnp.sum(flat**2, axis=1, keepdims=True) + jnp.sum(emb**2, axis=1) - 2 * flat @ emb.T
    return np.asarray(jnp.argmin(distances, axis=1).reshape(-1, 16))


# ------------------------------------------------------------------- big_vision's decoder (Flax)


class ResBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        original_x = x
        x = nn.relu(nn.Conv(features=self.features, kernel_size=(3, 3), padding=1)(x))
        x = nn.relu(nn.Conv(features=self.features, kernel_size=(3, 3), padding=1)(x))
        return nn.Conv(features=self.features, kernel_size=(1, 1), padding=0)(x) + original_x


class Decoder(nn.Module):
    pad: int = 2  # big_vision's; the negative control changes it

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = 128
        x = nn.relu(nn.Conv(features=dim, kernel_size=(1, 1), padding=0)(x))
        for _ in range(2):
            x = ResBlock(features=dim)(x)
        for _ in range(4):
            x = nn.ConvTranspose(dim, (4, 4), strides=(2, 2), padding=self.pad, transpose_kernel=True)(x)
            x = nn.relu(x)
            dim //= 2
        return nn.Conv(features=1, kernel_size=(1, 1), padding=0)(x)


def _get_params(ckpt: Arrays) -> dict:
    def conv(name: str) -> dict:
        return {"bias": ckpt[name + ".bias"], "kernel": np.transpose(ckpt[name + ".weight"], (2, 3, 1, 0))}

    def resblock(name: str) -> dict:
        return {"Conv_0": conv(name + ".0"), "Conv_1": conv(name + ".2"), "Conv_2": conv(name + ".4")}

    ups = {f"ConvTranspose_{i}": conv(f"decoder.{4 + 2 * i}") for i in range(4)}
    blocks = {"ResBlock_0": resblock("decoder.2.net"), "ResBlock_1": resblock("decoder.3.net")}
    return {"Conv_0": conv("decoder.0"), **blocks, **ups, "Conv_1": conv("decoder.12")}


def flax_logits(ckpt: Arrays, codes: np.ndarray, pad: int = 2) -> np.ndarray:
    quantized = jnp.take(ckpt["_vq_vae._embedding"], codes.reshape(-1), axis=0).reshape(len(codes), 4, 4, -1)
    return np.asarray(Decoder(pad).apply({"params": _get_params(ckpt)}, quantized))[..., 0]


# ------------------------------------------------------------------------------------ tests


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a**2).sum(1)[:, None] + (b**2).sum(1) - 2 * a @ b.T


@functools.cache  # shared by the tests, which do not modify it
def checkpoint(layout: str, seed: int = 0) -> Arrays:
    """`vqvae.new`'s random arrays; "3x3": the four stride-2 encoder convs with 3x3 kernels instead.

    The codebook is k-means centres of the encoder's outputs on MASKS (as a trained codebook sits
    among them): a random codebook is nearly equidistant from every output, so float rounding would
    decide the argmin, while here the nearest code is well separated (test_encoder asserts it)."""
    arrays = vqvae.new(seed=seed).arrays()
    rng = np.random.default_rng(seed)
    if layout == "3x3":
        for layer in vqvae.ENCODER_CONVS:
            out, inp = arrays[layer + ".weight"].shape[:2]
            arrays[layer + ".weight"] = (rng.uniform(-1, 1, (out, inp, 3, 3)) / np.sqrt(inp * 9)).astype("f4")
    z = vqvae.MaskVQVAE(arrays).vectors(torch.from_numpy(MASKS)).detach().numpy()
    z = z.reshape(-1, z.shape[-1]).astype(np.float64)
    picks, far = [0], sqdist(z, z[:1])[:, 0]  # farthest-point start: no two centres on near-duplicates
    while len(picks) < len(arrays[vqvae.CODEBOOK]):
        picks.append(int(far.argmax()))
        far = np.minimum(far, sqdist(z, z[picks[-1:]])[:, 0])
    centres = z[picks]
    for _ in range(10):  # Lloyd's iterations; an empty cluster keeps its centre
        member = np.eye(len(centres))[sqdist(z, centres).argmin(1)]
        count = member.sum(0)[:, None]
        centres = np.where(count > 0, member.T @ z / np.maximum(count, 1), centres)
    arrays[vqvae.CODEBOOK] = centres.astype(np.float32)
    # PyTorch's default init fades the signal through the decoder (logits 0.2 +- 0.002, all > 0): these
    # gains (a stride-2 transposed conv sees a quarter of its taps; the codebook's vectors are small and
    # alike) make the logits O(1), of both signs and dependent on the codes
    for layer in (vqvae.DECODER_IN, *vqvae.DECODER_BLOCKS, *vqvae.DECODER_UPS, vqvae.DECODER_OUT):
        gain = 25 if layer == vqvae.DECODER_IN else 5 if layer in vqvae.DECODER_UPS else 2.5
        for key in [k for k in arrays if k.startswith(layer + ".") and k.endswith(".weight")]:
            arrays[key] *= gain
    arrays[vqvae.DECODER_OUT + ".bias"][:] = 0
    return arrays


@pytest.mark.parametrize("layout", ["4x4", "3x3"])
def test_encoder(layout: str) -> None:
    ckpt = checkpoint(layout)
    vae = vqvae.MaskVQVAE(ckpt)
    ours = vae.vectors(torch.from_numpy(MASKS)).detach().numpy()
    ref = np.asarray(jax_vectors(ckpt, MASKS))
    diff = np.abs(ours - ref).max()
    assert diff < TOL, f"encoder outputs differ by {diff:.3g}"
    # exact equality of codes is meaningful where the nearest code is no float-rounding tie: float32
    # rounds a squared distance to ~1e-7 of |x|^2, and a gap of 1e-5 of it cannot flip the argmin
    flat = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    d = np.sort(sqdist(flat, ckpt[vqvae.CODEBOOK]), axis=1)
    gap, bound = (d[:, 1] - d[:, 0]).min(), 1e-5 * (flat**2).sum(1).max()
    assert gap > bound, f"nearest codes nearly tied (gap {gap:.3g} <= {bound:.3g})"
    codes = vae.encode(torch.from_numpy(MASKS)).numpy()
    np.testing.assert_array_equal(codes, jax_codes(ckpt, jnp.asarray(ref)))
    assert len(np.unique(codes)) > 64  # the masks use many codes, not one


@pytest.mark.parametrize("layout", ["4x4", "3x3"])
def test_decoder(layout: str) -> None:
    ckpt = checkpoint(layout)
    codes = np.random.default_rng(1).integers(0, 128, (16, 16))
    ours = vqvae.MaskVQVAE(ckpt).decode(torch.from_numpy(codes)).numpy()
    ref = flax_logits(ckpt, codes)
    assert ours.shape == ref.shape == (16, 64, 64)
    diff, tol = np.abs(ours - ref).max(), TOL * max(1.0, np.abs(ref).max())
    assert diff < tol, f"decoder logits differ by {diff:.3g} (tolerance {tol:.3g})"
    assert 0.2 < (ref > 0).mean() < 0.8  # masks of both signs: the threshold is exercised
    # the masks are identical except where a logit is within the tolerance of 0 (a sign either way)
    sure = np.abs(ref) > tol
    assert sure.mean() > 0.999
    np.testing.assert_array_equal((ours > 0)[sure], (ref > 0)[sure])


def test_negative_controls(monkeypatch: pytest.MonkeyPatch) -> None:
    # flax's ConvTranspose with padding 1 instead of big_vision's 2 upsamples to another size
    codes = np.random.default_rng(1).integers(0, 128, (2, 16))
    assert flax_logits(checkpoint("4x4"), codes, pad=1).shape != (2, 64, 64)
    # the 3x3 encoder padded symmetrically (PyTorch's padding=1) keeps the shape, not the values
    ckpt, masks = checkpoint("3x3"), MASKS[:4]
    ref = np.asarray(jax_vectors(ckpt, masks))
    symmetric = lambda x, k, s: F.pad(x, [(k[1] - 1) // 2] * 2 + [(k[0] - 1) // 2] * 2)  # noqa: E731
    monkeypatch.setattr(vqvae, "_same_pad", symmetric)
    wrong = vqvae.MaskVQVAE(ckpt).vectors(torch.from_numpy(masks)).detach().numpy()
    assert wrong.shape == ref.shape
    assert np.abs(wrong - ref).max() > 1000 * TOL
