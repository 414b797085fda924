"""Latent quantization (QLAE; Hsu et al. 2023, "Disentanglement via latent
quantization").

Each latent dimension j has its own finite, learned scalar codebook
v_j = (v_j1, …, v_jV) ("values per latent"). The encoder's continuous code
z is quantized coordinate by coordinate to the nearest value,
q_j = argmin_{v ∈ v_j} |z_j − v|, and the decoder sees the straight-through
estimate ẑ = z + stop_gradient(q − z): the forward pass uses q, the
backward pass treats quantization as the identity. Two losses tie z and the
codebook together (VQ-VAE style, scalar per latent):

  quantization = mean (stop_gradient(z) − q)²   (moves the codebook),
  commitment   = mean (z − stop_gradient(q))²   (moves the encoder),

means over rows and latents. The published recipe (latent_quantization
configs/model_partial/quantized_ae.yaml) uses 10 values per latent
initialised evenly on [−0.5, 0.5], both weights 0.01 and a high AdamW
weight decay of 0.1 on the network weights; the codebook is not decayed
here (the trainer decays kernels only, `train.weight_decay_mask`).

`QuantizedConvAutoencoder` is the InfoMEC-suite conv autoencoder
(`conv_ae.ConvEncoder` / `conv_ae.StyleDecoder`, the same encoder and
decoder as the AE row of Table 2) with the quantizer at its bottleneck.

Layer names: as `conv_ae.ConvAutoencoder` ("enc_i", "features", "latent",
"style", "dec_i", "output") plus "latent_quantized" (q). "latent" is the
continuous code z, the representation we analyse for every Table 2 row
(Hsu et al. score q with a discrete MI estimator; we score z with the kNN
estimator used for every other row, so that one estimator serves the
table).
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax.models import conv_ae

# The published codebook: values per latent and their initial half-range.
NUM_VALUES = 10
INIT_RANGE = 0.5


def initial_codebook(latent_dim: int, num_values: int,
                     init_range: float = INIT_RANGE) -> jax.Array:
  """[latent_dim, num_values] codebook, each row linspace(-r, r, V).

  Examples:
    >>> initial_codebook(2, 3).tolist()
    [[-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5]]
  """
  row = jnp.linspace(-init_range, init_range, num_values, dtype=jnp.float32)
  return jnp.tile(row, (latent_dim, 1))


def nearest_values(z: jax.Array, codebook: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Each coordinate of z replaced by the nearest value of its codebook.

  Args:
    z: [..., d] continuous codes.
    codebook: [d, V] values of each latent dimension.

  Returns:
    (q [..., d], indices [..., d] int32). q is differentiable with respect
    to the codebook (the chosen value), not to z.

  Raises:
    ValueError: when z's last axis and the codebook's rows differ.

  Examples:
    >>> cb = jnp.array([[-1., 0., 1.], [0., 2., 4.]])
    >>> q, i = nearest_values(jnp.array([[0.4, 3.2]]), cb)
    >>> q.tolist(), i.tolist()
    ([[0.0, 4.0]], [[1, 2]])
  """
  if z.shape[-1] != codebook.shape[0]:
    raise ValueError(f"z has {z.shape[-1]} latents but the codebook has "
                     f"{codebook.shape[0]} rows [d, V].")
  idx = jnp.argmin(jnp.abs(z[..., None] - codebook), axis=-1)
  one_hot = jax.nn.one_hot(idx, codebook.shape[1], dtype=codebook.dtype)
  q = jnp.sum(one_hot * codebook, axis=-1)
  return q, idx.astype(jnp.int32)


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """q in the forward pass, the identity in z's gradient.

  Examples:
    >>> g = jax.grad(lambda z: straight_through(z, jnp.round(z)).sum())
    >>> g(jnp.array([0.3, 1.7])).tolist()
    [1.0, 1.0]
  """
  return z + jax.lax.stop_gradient(q - z)


def quantization_losses(z: jax.Array, q: jax.Array) -> dict[str, jax.Array]:
  """The two VQ terms (means over every element).

  Returns:
    {"quantization": mean (sg(z) − q)² (gradient to the codebook only),
     "commitment": mean (z − sg(q))² (gradient to the encoder only)}.

  Examples:
    >>> out = quantization_losses(jnp.array([[0.5, 1.0]]),
    ...                           jnp.array([[0.0, 0.0]]))
    >>> round(float(out["quantization"]), 4), round(float(out["commitment"]), 4)
    (0.625, 0.625)
  """
  sg = jax.lax.stop_gradient
  return {"quantization": jnp.mean(jnp.square(sg(z) - q)),
          "commitment": jnp.mean(jnp.square(z - sg(q)))}


class LatentQuantizer(nn.Module):
  """A learned scalar codebook per latent and straight-through quantization.

  Attributes:
    num_values: V, values per latent.
    init_range: the codebook starts at linspace(-init_range, init_range, V).
  """
  num_values: int = NUM_VALUES
  init_range: float = INIT_RANGE

  @nn.compact
  def __call__(self, z: jax.Array) -> dict[str, jax.Array]:
    """z: [n, d] -> {"quantized": q, "z_hat": straight-through q,
    "indices": [n, d] int32}."""
    codebook = self.param(
        "values", lambda _, shape: initial_codebook(*shape, self.init_range),
        (z.shape[-1], self.num_values))
    q, idx = nearest_values(z, codebook)
    return {"quantized": q, "z_hat": straight_through(z, q), "indices": idx}


class QuantizedConvAutoencoder(nn.Module):
  """Conv encoder -> latent quantizer -> style decoder (QLAE).

  Attributes: as `conv_ae.ConvAutoencoder` (without `variational`), plus
  num_values (V) and init_range of the codebook.

  Examples:
    >>> model = QuantizedConvAutoencoder((16, 16, 1), 4,
    ...                                  **conv_ae.SIZES["tiny"])
    >>> x = jnp.zeros((2, 16, 16, 1))
    >>> (out, reps), v = model.init_with_output(jax.random.key(0), x)
    >>> out.shape, reps["latent_quantized"].shape, v["params"]["quantizer"][
    ...     "values"].shape
    ((2, 16, 16, 1), (2, 4), (4, 10))
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
  num_values: int = NUM_VALUES
  init_range: float = INIT_RANGE

  takes_train: ClassVar[bool] = True

  def setup(self):
    self.encoder = conv_ae.ConvEncoder(
        self.obs_shape, self.latent_dim, self.encoder_widths,
        self.encoder_kernels, self.encoder_strides, self.encoder_dense,
        self.negative_slope)
    self.quantizer = LatentQuantizer(self.num_values, self.init_range)
    down = int(np.prod(self.encoder_strides))
    self.decoder = conv_ae.StyleDecoder(
        self.obs_shape, (self.obs_shape[0] // down, self.obs_shape[1] // down),
        self.decoder_widths, self.decoder_kernels, self.decoder_strides,
        self.decoder_dense, self.negative_slope)

  def encode(self, x: jax.Array, train: bool = False):
    """x: [n, H, W, C] -> (continuous z [n, d], {layer: activations})."""
    return self.encoder(x, train=train)

  def decode(self, z: jax.Array) -> jax.Array:
    """The decoder alone, z [..., d] -> logits [..., H, W, C].

    No quantization: under the straight-through estimator the decoder's
    Jacobian is the model's (used for bi-Lipschitz estimates).
    """
    lead = z.shape[:-1]
    out, _ = self.decoder(z.reshape(-1, z.shape[-1]))
    return out.reshape(lead + out.shape[1:])

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               train: bool = False):
    """Reconstructs x from the quantized code.

    Returns:
      (logits [n, H, W, C], {layer: activations}) with "latent" the
      continuous z and "latent_quantized" q.
    """
    del mask
    z, reps = self.encoder(x, train=train)
    quant = self.quantizer(z)
    reps["latent_quantized"] = quant["quantized"]
    out, dec_reps = self.decoder(quant["z_hat"])
    return out, {**reps, **dec_reps}

  def layer_names(self) -> tuple[str, ...]:
    return (tuple(f"enc_{i}" for i in range(len(self.encoder_widths)))
            + ("features", "latent", "latent_quantized", "style")
            + tuple(f"dec_{i}" for i in range(len(self.decoder_widths)))
            + ("output",))
