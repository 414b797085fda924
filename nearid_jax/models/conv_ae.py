"""Convolutional autoencoders of the InfoMEC benchmark family (Hsu et al. 2023).

Encoder: conv blocks (conv without bias -> instance norm -> LeakyReLU), a
flatten, dense ReLU layers ("features") and a linear head to the latents.
Decoder: a learned constant map (the "input map", initialised at 0.1) goes
through style-modulated transposed-conv blocks, each
    h <- InstanceNorm(LeakyReLU(ConvT(h))) * scale(w) + bias(w),
where [scale, bias] = ReLU(Dense(w)) and w is a dense ReLU MLP of z, then a
3x3 conv to per-pixel logits. This is the published architecture of the
latent-quantization code (which the paper's Table 2 baselines use); only the
framework differs. With `variational=True` the head emits 2 x latent_dim
numbers, the mean and softplus-scale of a diagonal Gaussian (β-VAE,
β-TCVAE); the reconstruction then decodes the mean.

Layer names (E conv blocks, D dense encoder layers, F transposed blocks):
  "enc_0" … "enc_{E-1}"   [n, h_i, w_i, c_i] encoder feature maps;
  "features"             [n, encoder_dense[-1]] the last dense layer;
  "latent"               [n, latent_dim] z (the mean when variational);
  "latent_sigma"         [n, latent_dim] posterior scale (variational only);
  "style"                [n, decoder_dense[-1]] w, the MLP of z;
  "dec_0" … "dec_{F-1}"  [n, h, w, c] decoder feature maps;
  "output"               [n, H, W, C] logits (sigmoid gives the image).
Spatial sides follow the strides: side_{i+1} = side_i / stride_i.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nearid_jax.models import conv
from nearid_jax.models import initializers

# The published encoder (configs/encoder_partial/image.yaml of Hsu et al.):
# four groups of (3x3 s1, 3x3 s1, 4x4 s2) with widths 32 -> 256, and the
# mirror-image decoder.
_FULL = dict(
    encoder_widths=(32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256),
    encoder_kernels=(3, 3, 4) * 4, encoder_strides=(1, 1, 2) * 4,
    encoder_dense=(256, 256),
    decoder_widths=(256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 32),
    decoder_kernels=(3, 3, 4) * 4, decoder_strides=(1, 1, 2) * 4,
    decoder_dense=(256, 256))
# CPU-friendly: three 4x4 stride-2 blocks each side (64x64 -> 8x8).
_SMALL = dict(
    encoder_widths=(16, 32, 64), encoder_kernels=(4, 4, 4),
    encoder_strides=(2, 2, 2), encoder_dense=(128,),
    decoder_widths=(64, 32, 16), decoder_kernels=(4, 4, 4),
    decoder_strides=(2, 2, 2), decoder_dense=(128,))
# Unit tests on 16x16 inputs: two stride-2 blocks each side (16 -> 4).
_TINY = dict(
    encoder_widths=(8, 16), encoder_kernels=(4, 4), encoder_strides=(2, 2),
    encoder_dense=(32,), decoder_widths=(16, 8), decoder_kernels=(4, 4),
    decoder_strides=(2, 2), decoder_dense=(32,))
SIZES = {"full": _FULL, "small": _SMALL, "tiny": _TINY}


def default_config(size: str = "small", latent_dim: int = 10,
                   variational: bool = False) -> ml_collections.ConfigDict:
  """The `model` part of an experiment config for a conv autoencoder.

  Args:
    size: "full" (the published widths, 12 blocks a side), "small" (CPU
      smoke runs on 64x64) or "tiny" (unit tests on 16x16).
    latent_dim: bottleneck width; the InfoMEC suite uses 2 x #factors.
    variational: Gaussian posterior head (β-VAE, β-TCVAE).

  Raises:
    ValueError: for an unknown size.

  Examples:
    >>> default_config("full").encoder_widths[-1]
    256
  """
  if size not in SIZES:
    raise ValueError(f"unknown conv autoencoder size {size!r}; choose one of "
                     f"{sorted(SIZES)}.")
  return ml_collections.ConfigDict(dict(
      name="conv_vae" if variational else "conv_ae", size=size,
      latent_dim=latent_dim, negative_slope=0.2, **SIZES[size]))


class ConvBlock(nn.Module):
  """Conv (no bias) -> instance norm (affine) -> LeakyReLU."""
  features: int
  kernel: int
  stride: int
  negative_slope: Any = 0.2

  @nn.compact
  def __call__(self, x):
    # Padding 1 as in the published blocks: 3x3/s1 keeps the side, 4x4/s2
    # halves it exactly.
    x = conv.Conv(self.features, (self.kernel,) * 2, (self.stride,) * 2,
                  padding=((1, 1), (1, 1)), name="conv")(x)
    x = nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-6,
                     name="norm")(x)
    return jax.nn.leaky_relu(x, self.negative_slope)


def _phase_taps(kernel: int, stride: int, pad: int, phase: int):
  """Kernel taps reaching output phase `phase` and their input offsets.

  A transposed conv (PyTorch semantics) gives out[s·m + a] = Σ_t
  in[m + d_t] · W[t] over the taps t with (a + p - t) divisible by s, with
  offset d_t = (a + p - t) / s. Returns (taps ordered by offset, d_min).
  """
  taps = [t for t in range(kernel) if (phase + pad - t) % stride == 0]
  offsets = [(phase + pad - t) // stride for t in taps]
  order = sorted(range(len(taps)), key=lambda i: offsets[i])
  return [taps[i] for i in order], min(offsets), max(offsets)


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int,
                   pad: int) -> jax.Array:
  """2-D transposed convolution with PyTorch's semantics, by phases.

  Output side L · stride for kernel k = stride + 2 · pad. Each of the
  stride² output phases is an ordinary convolution of the undilated input
  with a sub-kernel, and the phases are interleaved: the same numbers as
  the gradient of a strided conv, without multiplying the zeros of a
  dilated input (XLA:CPU differentiates input-dilated convolutions an
  order of magnitude more slowly).

  Args:
    x: [n, L, L', c_in].
    kernel: [k, k, c_in, c_out].
    stride: s.
    pad: PyTorch's padding p, with k = s + 2p.

  Returns:
    [n, s·L, s·L', c_out].
  """
  k = kernel.shape[0]
  if k != stride + 2 * pad:
    raise ValueError(f"transposed conv needs kernel = stride + 2 * padding, "
                     f"got kernel {k}, stride {stride}, padding {pad}.")
  n, h, w, _ = x.shape
  rows = []
  for a in range(stride):
    taps_a, lo_a, hi_a = _phase_taps(k, stride, pad, a)
    cols = []
    for b in range(stride):
      taps_b, lo_b, hi_b = _phase_taps(k, stride, pad, b)
      sub = kernel[jnp.asarray(taps_a)][:, jnp.asarray(taps_b)]
      cols.append(conv.conv2d(x, sub, (1, 1),
                              ((-lo_a, hi_a), (-lo_b, hi_b))))
    rows.append(jnp.stack(cols, axis=3))   # [n, h, w, s_b, c]
  out = jnp.stack(rows, axis=2)            # [n, h, s_a, w, s_b, c]
  return out.reshape(n, h * stride, w * stride, kernel.shape[-1])


class StyleBlock(nn.Module):
  """Transposed conv -> LeakyReLU -> instance norm -> style scale and bias."""
  features: int
  kernel: int
  stride: int
  negative_slope: Any = 0.2

  @nn.compact
  def __call__(self, x, w):
    # PyTorch/Equinox ConvTranspose2d(padding=1) as in the published
    # blocks: 4x4/s2 doubles the side, 3x3/s1 keeps it.
    kernel = self.param("kernel", initializers.lecun_normal_flat,
                        (self.kernel, self.kernel, x.shape[-1],
                         self.features))
    x = conv_transpose(x, kernel, self.stride, pad=1)
    x = jax.nn.leaky_relu(x, self.negative_slope)
    x = nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-6,
                     use_scale=False, use_bias=False)(x)
    # The published conditioning is a dense block with its default ReLU.
    style = jax.nn.relu(nn.Dense(2 * self.features, name="style")(w))
    scale, bias = jnp.split(style, 2, axis=-1)
    return x * scale[..., None, None, :] + bias[..., None, None, :]


class ConvEncoder(nn.Module):
  """The encoder: conv blocks -> flatten -> dense ReLU layers -> linear head.

  Used alone by contrastive objectives and inside ConvAutoencoder. Layer
  names: "enc_i", "features", "latent" (and "latent_sigma" when variational).

  Attributes:
    obs_shape: (H, W, C) of the images (kept for the model interface).
    latent_dim: width of z.
    encoder_widths, encoder_kernels, encoder_strides: per conv block.
    encoder_dense: widths of the dense ReLU layers after the flatten.
    negative_slope: LeakyReLU slope of the conv blocks (may be traced).
    variational: the head emits a Gaussian (mean, softplus scale).
  """
  obs_shape: Sequence[int]
  latent_dim: int
  encoder_widths: Sequence[int]
  encoder_kernels: Sequence[int]
  encoder_strides: Sequence[int]
  encoder_dense: Sequence[int]
  negative_slope: Any = 0.2
  variational: bool = False

  takes_train: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False):
    """Args: x: [n, H, W, C]; mask, train: unused (common interface).

    Returns:
      (z [n, latent_dim], {layer: activations}); when variational z is the
      posterior mean and reps["latent_sigma"] holds the scale.
    """
    del mask, train  # no masking, dropout or batch statistics
    reps = {}
    h = x
    for i, (c, k, s) in enumerate(zip(self.encoder_widths,
                                      self.encoder_kernels,
                                      self.encoder_strides)):
      h = reps[f"enc_{i}"] = ConvBlock(c, k, s, self.negative_slope,
                                       name=f"enc_{i}")(h)
    h = h.reshape(h.shape[0], -1)
    for i, c in enumerate(self.encoder_dense):
      h = jax.nn.relu(nn.Dense(c, name=f"dense_{i}")(h))
    reps["features"] = h
    out_dim = 2 * self.latent_dim if self.variational else self.latent_dim
    head = nn.Dense(out_dim, name="head")(h)
    if not self.variational:
      reps["latent"] = head
      return head, reps
    mean, raw = jnp.split(head, 2, axis=-1)
    reps["latent"], reps["latent_sigma"] = mean, jax.nn.softplus(raw)
    return mean, reps

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"enc_{i}" for i in range(len(self.encoder_widths)))
            + ("features", "latent")
            + (("latent_sigma",) if self.variational else ()))


class StyleDecoder(nn.Module):
  """z -> style MLP w; learned input map -> style blocks -> 3x3 conv logits.

  Attributes:
    obs_shape: (H, W, C) of the reconstruction.
    transition: (h, w) of the input map.
    decoder_widths, decoder_kernels, decoder_strides: per style block.
    decoder_dense: widths of the style MLP of z.
    negative_slope: LeakyReLU slope (may be traced).
  """
  obs_shape: Sequence[int]
  transition: Sequence[int]
  decoder_widths: Sequence[int]
  decoder_kernels: Sequence[int]
  decoder_strides: Sequence[int]
  decoder_dense: Sequence[int]
  negative_slope: Any = 0.2

  @nn.compact
  def __call__(self, z: jax.Array):
    """z: [n, latent_dim] -> (logits [n, H, W, C], {layer: activations})."""
    reps = {}
    w = z
    for i, c in enumerate(self.decoder_dense):
      w = jax.nn.relu(nn.Dense(c, name=f"dense_{i}")(w))
    reps["style"] = w
    shape = (*self.transition, self.decoder_widths[0])
    # A learned constant, like a bias: not weight-decayed (see
    # train.weight_decay_mask).
    input_map = self.param("input_map", nn.initializers.constant(0.1), shape)
    h = jnp.broadcast_to(input_map, (z.shape[0], *shape))
    for i, (c, k, s) in enumerate(zip(self.decoder_widths,
                                      self.decoder_kernels,
                                      self.decoder_strides)):
      h = reps[f"dec_{i}"] = StyleBlock(c, k, s, self.negative_slope,
                                        name=f"dec_{i}")(h, w)
    out = conv.Conv(self.obs_shape[-1], (3, 3), padding=((1, 1), (1, 1)),
                    name="output")(h)
    reps["output"] = out
    return out, reps


class ConvAutoencoder(nn.Module):
  """Conv encoder -> latent -> style-modulated transposed-conv decoder.

  Attributes:
    obs_shape: (H, W, C) of the images.
    latent_dim: width of z.
    encoder_widths, encoder_kernels, encoder_strides, encoder_dense: see
      ConvEncoder.
    decoder_widths, decoder_kernels, decoder_strides, decoder_dense: see
      StyleDecoder; the decoder strides must multiply to the encoder's.
    negative_slope: LeakyReLU slope of the conv blocks (may be traced).
    variational: Gaussian posterior head (β-VAE, β-TCVAE).

  Examples:
    >>> model = ConvAutoencoder((16, 16, 1), 4, **SIZES["tiny"])
    >>> x = jnp.zeros((2, 16, 16, 1))
    >>> out, reps = jax.eval_shape(model.init_with_output,
    ...                            jax.random.key(0), x)[0]
    >>> out.shape, reps["latent"].shape, reps["enc_1"].shape
    ((2, 16, 16, 1), (2, 4), (2, 4, 4, 16))
  """
  obs_shape: Sequence[int]
  latent_dim: int
  encoder_widths: Sequence[int]
  encoder_kernels: Sequence[int]
  encoder_strides: Sequence[int]
  encoder_dense: Sequence[int]
  decoder_widths: Sequence[int]
  decoder_kernels: Sequence[int]
  decoder_strides: Sequence[int]
  decoder_dense: Sequence[int]
  negative_slope: Any = 0.2
  variational: bool = False

  takes_train: ClassVar[bool] = True

  def setup(self):
    self.encoder = ConvEncoder(
        self.obs_shape, self.latent_dim, self.encoder_widths,
        self.encoder_kernels, self.encoder_strides, self.encoder_dense,
        self.negative_slope, self.variational)
    down = int(np.prod(self.encoder_strides))
    self.decoder = StyleDecoder(
        self.obs_shape, (self.obs_shape[0] // down, self.obs_shape[1] // down),
        self.decoder_widths, self.decoder_kernels, self.decoder_strides,
        self.decoder_dense, self.negative_slope)

  def encode(self, x: jax.Array, train: bool = False):
    """x: [n, H, W, C] -> (z [n, latent_dim], {layer: activations})."""
    return self.encoder(x, train=train)

  def decode_with_reps(self, z: jax.Array):
    """z: [n, latent_dim] -> (logits [n, H, W, C], {layer: activations})."""
    return self.decoder(z)

  def decode(self, z: jax.Array) -> jax.Array:
    """The decoder alone: z [..., latent_dim] -> logits [..., H, W, C]."""
    lead = z.shape[:-1]
    out, _ = self.decoder(z.reshape(-1, z.shape[-1]))
    return out.reshape(lead + out.shape[1:])

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False):
    """Reconstructs x from z (the posterior mean when variational).

    Args:
      x: [n, H, W, C] images in [0, 1].
      mask: unused (kept for the common model interface).
      train: unused (no batch statistics or dropout).

    Returns:
      (logits [n, H, W, C], {layer name: activations}).
    """
    del mask
    z, reps = self.encoder(x, train=train)
    out, dec_reps = self.decoder(z)
    return out, {**reps, **dec_reps}

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"enc_{i}" for i in range(len(self.encoder_widths)))
            + ("features", "latent")
            + (("latent_sigma",) if self.variational else ())
            + ("style",)
            + tuple(f"dec_{i}" for i in range(len(self.decoder_widths)))
            + ("output",))


def check_geometry(obs_shape: Sequence[int], config) -> None:
  """Raises ValueError when the strides do not fit the image side.

  Instance norm needs at least 2x2 maps, and the decoder must upsample back
  to exactly (H, W).
  """
  h, w = obs_shape[0], obs_shape[1]
  down = int(np.prod(config.encoder_strides))
  up = int(np.prod(config.get("decoder_strides", config.encoder_strides)))
  n = len(config.encoder_widths)
  if not (len(config.encoder_kernels) == len(config.encoder_strides) == n):
    raise ValueError(
        "config.model.encoder_widths, encoder_kernels and encoder_strides "
        f"must have the same length, got {n}, {len(config.encoder_kernels)}, "
        f"{len(config.encoder_strides)}.")
  if h % down or w % down or h // down < 2 or w // down < 2:
    raise ValueError(
        f"config.model: the encoder strides (product {down}) do not fit "
        f"{h}x{w} images (instance norm needs maps of at least 2x2 and the "
        "side must divide exactly); use a smaller size (e.g. 'tiny' for "
        "16x16, 'small' for 32x32 or 64x64) or set data.image_size.")
  if "decoder_strides" in config and up != down:
    raise ValueError(
        f"config.model.decoder_strides multiply to {up} but the encoder's to "
        f"{down}; the decoder must upsample back to {h}x{w}.")
  if "decoder_kernels" in config and any(
      k != s + 2 for k, s in zip(config.decoder_kernels,
                                 config.decoder_strides)):
    raise ValueError(
        "config.model.decoder_kernels must equal decoder_strides + 2 (the "
        "transposed convolutions use padding 1 and scale the side by the "
        f"stride), got kernels {tuple(config.decoder_kernels)} and strides "
        f"{tuple(config.decoder_strides)}.")
  if "decoder_widths" in config and not (
      len(config.decoder_kernels) == len(config.decoder_strides)
      == len(config.decoder_widths)):
    raise ValueError("config.model.decoder_widths, decoder_kernels and "
                     "decoder_strides must have the same length.")
