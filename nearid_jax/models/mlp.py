"""MLP encoders, decoders and heads for vector data.

Every model returns `(output, representations)` from `__call__`, where
`representations` maps each named layer to its activations, so any layer can
be analysed, not only the bottleneck: the paper's Theorem 1 covers
intermediate layers. Unused entries cost nothing under `jax.jit` (XLA drops
them).

Layer names, for `encoder_widths` of length E and `decoder_widths` of
length F: "enc_0" … "enc_{E-1}", "latent", "dec_0" … "dec_{F-1}", and
"output" (autoencoders) or "logits" (classifiers).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = ("leaky_relu", "relu", "gelu", "silu", "tanh", "elu")


def activation_fn(name: str, negative_slope: Any = 0.2) -> Callable:
  """Returns the activation `name`; `negative_slope` may be a traced scalar."""
  if name == "leaky_relu":
    return lambda x: jax.nn.leaky_relu(x, negative_slope)
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of "
                     f"{ACTIVATIONS}.")
  return getattr(jax.nn, name)


class MLPAutoencoder(nn.Module):
  """x -> encoder MLP -> latent (linear) -> decoder MLP -> output (linear).

  Attributes:
    encoder_widths: hidden widths of the encoder.
    latent_dim: width of the linear bottleneck ("latent").
    decoder_widths: hidden widths of the decoder.
    out_dim: width of the reconstruction.
    activation: one of ACTIVATIONS.
    negative_slope: LeakyReLU slope; may be a traced scalar (grids).
    mask_input: if True the input is [x ⊙ (1 - m), m] for a mask m (masked
      autoencoders); with no mask given, m = 0 (the full input is seen).
    obs_shape: for image-shaped inputs (e.g. (8, 8, 1) digits): the
      trailing axes of x that are flattened on input and restored on the
      output (out_dim must be their product); None for vectors.
  """
  encoder_widths: Sequence[int]
  latent_dim: int
  decoder_widths: Sequence[int]
  out_dim: int
  activation: str = "leaky_relu"
  negative_slope: Any = 0.2
  mask_input: bool = False
  obs_shape: Sequence[int] | None = None

  def _flat(self, x):
    if self.obs_shape is None or x is None:
      return x
    return x.reshape(x.shape[:x.ndim - len(self.obs_shape)] + (-1,))

  def _unflat(self, y):
    if self.obs_shape is None:
      return y
    return y.reshape(y.shape[:-1] + tuple(self.obs_shape))

  def setup(self):
    # List attributes are named enc_0, enc_1, ... by Linen: the parameter
    # names equal the layer names.
    self.enc = [nn.Dense(w) for w in self.encoder_widths]
    self.latent = nn.Dense(self.latent_dim)
    self.dec = [nn.Dense(w) for w in self.decoder_widths]
    self.output = nn.Dense(self.out_dim)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None):
    """Args: x: [..., D]; mask: [..., D] in {0, 1} (1 = hidden) or None.

    Returns:
      (reconstruction [..., out_dim], {layer name: activations}).
    """
    act = activation_fn(self.activation, self.negative_slope)
    x, mask = self._flat(x), self._flat(mask)
    if self.mask_input:
      m = jnp.zeros_like(x) if mask is None else mask.astype(x.dtype)
      h = jnp.concatenate([x * (1.0 - m), m], axis=-1)
    else:
      h = x
    reps = {}
    for i, layer in enumerate(self.enc):
      h = reps[f"enc_{i}"] = act(layer(h))
    h = reps["latent"] = self.latent(h)
    for i, layer in enumerate(self.dec):
      h = reps[f"dec_{i}"] = act(layer(h))
    out = reps["output"] = self._unflat(self.output(h))
    return out, reps

  def decode(self, z: jax.Array) -> jax.Array:
    """The decoder alone, latent [..., latent_dim] -> output (for Jacobians)."""
    act = activation_fn(self.activation, self.negative_slope)
    h = z
    for layer in self.dec:
      h = act(layer(h))
    return self._unflat(self.output(h))

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"enc_{i}" for i in range(len(self.encoder_widths)))
            + ("latent",)
            + tuple(f"dec_{i}" for i in range(len(self.decoder_widths)))
            + ("output",))


class MLPClassifier(nn.Module):
  """x -> encoder MLP -> latent (penultimate, activated) -> linear logits.

  Attributes:
    encoder_widths: hidden widths before the penultimate layer.
    latent_dim: width of the penultimate representation ("latent").
    num_classes: number of logits.
    activation, negative_slope: as in MLPAutoencoder.
  """
  encoder_widths: Sequence[int]
  latent_dim: int
  num_classes: int
  activation: str = "leaky_relu"
  negative_slope: Any = 0.2

  def setup(self):
    self.enc = [nn.Dense(w) for w in self.encoder_widths]
    self.latent = nn.Dense(self.latent_dim)
    self.logits = nn.Dense(self.num_classes)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None):
    del mask  # classifiers see the whole input
    act = activation_fn(self.activation, self.negative_slope)
    h = x
    reps = {}
    for i, layer in enumerate(self.enc):
      h = reps[f"enc_{i}"] = act(layer(h))
    h = reps["latent"] = act(self.latent(h))
    out = reps["logits"] = self.logits(h)
    return out, reps

  def decode(self, z: jax.Array) -> jax.Array:
    """The head alone: penultimate representation -> logits."""
    return self.logits(z)

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"enc_{i}" for i in range(len(self.encoder_widths)))
            + ("latent", "logits"))
