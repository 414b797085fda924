"""Vision Transformer masked autoencoders (He et al. 2022), any channel count.

Encoder: non-overlapping p x p patches embedded by a linear map of their
pixels (so a token depends on its own patch only), fixed 2-D sin-cos
positions, a class token (position 0), pre-norm Transformer blocks and a
final LayerNorm. During training the encoder sees ONLY the visible patches:
they are gathered before the first block, so masked pixels cannot reach
the encoder. A light decoder maps the encoded tokens to its own width, fills
the masked positions with a learned mask token, adds its own sin-cos
positions, runs a few blocks and predicts the p x p x C pixels of every
patch. The loss (objectives.patch_masked_autoencoder) is on the masked
patches only, with per-patch normalised targets.

Visible patches are given as indices `visible: [n, V]` (not a 0/1 mask)
because V is the compiled shape of the encoder's token sequence.

Layer names (L encoder blocks, T patches, V visible, d width):
  "patch_embed"       [n, V, d] patch embeddings with positions;
  "block_i"           [n, 1 + V, d] tokens after block i (class token first);
  "block_i/cls"       [n, d] the class token after block i;
  "block_i/mean"      [n, d] the mean of the patch tokens after block i;
  "latent"            [n, d] the class token after the final LayerNorm;
  "patch_mean"        [n, d] the mean patch token after the final LayerNorm;
  "output"            [n, T, p * p * C] predicted pixels of every patch.
With no `visible` given (evaluation) V = T: the whole image is encoded.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nearid_jax.models import initializers

# (width, depth, heads, decoder width, decoder depth, decoder heads, patch).
# ViT-S/16 and ViT-B/16 encoders as in Dosovitskiy et al.; the B decoder is
# MAE's default (512 wide, 8 blocks); the S decoder halves it.
SIZES = {
    "tiny": (32, 2, 2, 32, 1, 2, 4),
    "small_cpu": (64, 4, 4, 64, 2, 4, 8),
    "vit_s16": (384, 12, 6, 256, 4, 8, 16),
    "vit_b16": (768, 12, 12, 512, 8, 16, 16),
}


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """The `model` part of an experiment config for a ViT masked autoencoder.

  Args:
    size: "tiny" (CPU tests, patch 4), "small_cpu" (CPU smoke runs on 64x64,
      patch 8), "vit_s16" or "vit_b16".

  Raises:
    ValueError: for an unknown size.

  Examples:
    >>> default_config("vit_b16").width
    768
  """
  if size not in SIZES:
    raise ValueError(f"unknown ViT size {size!r}; choose one of "
                     f"{sorted(SIZES)}.")
  w, d, h, dw, dd, dh, p = SIZES[size]
  return ml_collections.ConfigDict(dict(
      name="vit_mae", size=size, patch_size=p, width=w, depth=d, num_heads=h,
      mlp_ratio=4.0, decoder_width=dw, decoder_depth=dd, decoder_heads=dh))


def sincos_2d(height: int, width: int, dim: int) -> np.ndarray:
  """Fixed 2-D sin-cos positions, [height * width, dim] (row-major grid).

  As in the MAE reference code: the first half of the channels encodes the
  column, the second half the row, each as [sin(pos · ω_k), cos(pos · ω_k)]
  with ω_k = 10000^(-k / (dim / 4)), k = 0 … dim/4 - 1. Inner products then
  depend on offsets only: <e(p), e(q)> = Σ_k cos((c_p - c_q) ω_k) +
  cos((r_p - r_q) ω_k).

  Raises:
    ValueError: when dim is not a multiple of 4.
  """
  if dim % 4:
    raise ValueError(f"the ViT width must be a multiple of 4 for 2-D sin-cos "
                     f"positions, got {dim}.")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")

  def embed(pos):
    angles = pos.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([embed(cols), embed(rows)], axis=1).astype(np.float32)


def patchify(x: jax.Array, patch: int) -> jax.Array:
  """[n, H, W, C] -> [n, T, p * p * C], patches in row-major order."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, height: int,
               width: int) -> jax.Array:
  """Inverse of `patchify`: [n, T, p * p * C] -> [n, H, W, C]."""
  n = patches.shape[0]
  gh, gw = height // patch, width // patch
  c = patches.shape[-1] // (patch * patch)
  x = patches.reshape(n, gh, gw, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, height, width, c)


class Block(nn.Module):
  """Pre-norm Transformer block: x + MHA(LN(x)); x + MLP(LN(x))."""
  num_heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    y = nn.LayerNorm(epsilon=1e-6, name="norm1")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        name="attn")(y, y)
    x = x + y
    y = nn.LayerNorm(epsilon=1e-6, name="norm2")(x)
    y = nn.Dense(int(d * self.mlp_ratio), name="mlp_in",
                 kernel_init=nn.initializers.xavier_uniform())(y)
    y = nn.Dense(d, name="mlp_out",
                 kernel_init=nn.initializers.xavier_uniform())(nn.gelu(y))
    return x + y


class ViTMAE(nn.Module):
  """A ViT encoder with a light decoder for masked-patch reconstruction.

  Attributes:
    obs_shape: (H, W, C); H and W multiples of `patch_size`; any C.
    patch_size: side p of a square patch.
    width, depth, num_heads, mlp_ratio: the encoder.
    decoder_width, decoder_depth, decoder_heads: the decoder.

  Examples:
    >>> model = ViTMAE((16, 16, 5), 4, 32, 1, 2, decoder_width=32,
    ...                decoder_depth=1, decoder_heads=2)
    >>> x = jnp.zeros((2, 16, 16, 5))
    >>> visible = jnp.tile(jnp.arange(4), (2, 1))  # 4 of the 16 patches
    >>> (out, reps), _ = jax.eval_shape(
    ...     lambda k: model.init_with_output(k, x, visible=visible),
    ...     jax.random.key(0))
    >>> out.shape, reps["block_0"].shape, reps["latent"].shape
    ((2, 16, 80), (2, 5, 32), (2, 32))
  """
  obs_shape: Sequence[int]
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  decoder_width: int = 32
  decoder_depth: int = 1
  decoder_heads: int = 2

  takes_train: ClassVar[bool] = True

  @property
  def grid(self) -> tuple[int, int]:
    return (self.obs_shape[0] // self.patch_size,
            self.obs_shape[1] // self.patch_size)

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False, visible: jax.Array | None = None):
    """Encodes the visible patches and predicts the pixels of all patches.

    Args:
      x: [n, H, W, C] images.
      mask: unused; masking is given by `visible` (see the module doc).
      train: unused (no dropout).
      visible: [n, V] int indices of the visible patches (each row distinct
        values in [0, T)), or None for all patches.

    Returns:
      (predicted patches [n, T, p * p * C], {layer name: activations}).
    """
    del mask, train
    n = x.shape[0]
    t, p = self.num_patches, self.patch_size
    reps = {}
    patches = patchify(x, p)
    pos = jnp.broadcast_to(jnp.asarray(sincos_2d(*self.grid, self.width)),
                           (n, t, self.width))
    if visible is not None:  # the hidden patches go no further than here
      patches = jnp.take_along_axis(patches, visible[..., None], axis=1)
      pos = jnp.take_along_axis(pos, visible[..., None], axis=1)
    # A linear map of each flattened patch (a conv with stride p).
    tokens = nn.Dense(self.width, name="patch_embed")(patches) + pos
    reps["patch_embed"] = tokens
    cls = self.param("cls_token", initializers.normal_flat(0.02),
                     (1, 1, self.width))
    h = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.width)), tokens],
                        axis=1)
    for i in range(self.depth):
      h = Block(self.num_heads, self.mlp_ratio, name=f"block_{i}")(h)
      reps[f"block_{i}"] = h
      reps[f"block_{i}/cls"] = h[:, 0]
      reps[f"block_{i}/mean"] = h[:, 1:].mean(axis=1)
    h = nn.LayerNorm(epsilon=1e-6, name="norm")(h)
    reps["latent"] = h[:, 0]
    reps["patch_mean"] = h[:, 1:].mean(axis=1)
    out = reps["output"] = self._decode(h, visible)
    return out, reps

  def _decode(self, h: jax.Array, visible: jax.Array | None) -> jax.Array:
    n, t, dw = h.shape[0], self.num_patches, self.decoder_width
    h = nn.Dense(dw, name="decoder_embed")(h)
    mask_token = self.param("mask_token", initializers.normal_flat(0.02),
                            (1, 1, dw))
    if visible is None:
      patches = h[:, 1:]
    else:
      # Masked positions get the mask token; visible ones their encoding.
      rows = jnp.arange(n)[:, None]
      patches = jnp.broadcast_to(mask_token, (n, t, dw)).at[
          rows, visible].set(h[:, 1:])
    patches = patches + jnp.asarray(sincos_2d(*self.grid, dw))
    d = jnp.concatenate([h[:, :1], patches], axis=1)
    for i in range(self.decoder_depth):
      d = Block(self.decoder_heads, self.mlp_ratio, name=f"decoder_{i}")(d)
    d = nn.LayerNorm(epsilon=1e-6, name="decoder_norm")(d)
    c = self.obs_shape[-1]
    return nn.Dense(self.patch_size ** 2 * c, name="decoder_pred")(d[:, 1:])

  def layer_names(self) -> tuple[str, ...]:
    blocks = tuple(name for i in range(self.depth)
                   for name in (f"block_{i}", f"block_{i}/cls",
                                f"block_{i}/mean"))
    return (("patch_embed",) + blocks + ("latent", "patch_mean", "output"))


def check_geometry(obs_shape: Sequence[int], config) -> None:
  """Raises ValueError when the patch size does not tile the image."""
  h, w = obs_shape[0], obs_shape[1]
  p = config.patch_size
  if p < 1 or h % p or w % p:
    raise ValueError(
        f"config.model.patch_size = {p} does not tile {h}x{w} images; choose "
        "a divisor of the image side (or set data.image_size).")
  for field, heads in (("width", "num_heads"),
                       ("decoder_width", "decoder_heads")):
    if config[field] % config[heads] or config[field] % 4:
      raise ValueError(
          f"config.model.{field} = {config[field]} must be a multiple of 4 "
          f"(2-D sin-cos positions) and of {heads} = {config[heads]}.")
