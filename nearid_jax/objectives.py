"""The three objective families as pure losses.

Each factory takes a Linen model and returns a pure function

    loss(variables, batch, key) -> (loss, aux)

where `variables` is the model's Flax variable dict ({"params": ...} plus
any mutable collections), `batch` a dict with "x" (and "label" for
classifiers) and `aux` a dict of scalar diagnostics. The trainer
differentiates with respect to `variables["params"]` only. Regularisers that
act on weights (weight decay) live in the optimizer, not here, so that the
loss stays the quantity whose minimisers the paper's theorems are about.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Loss = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]
OBJECTIVES = ("autoencoder", "masked_autoencoder", "classifier")


def autoencoder(model) -> Loss:
  """Mean squared reconstruction error, averaged over rows and coordinates.

  Examples:
    >>> from nearid_jax.models.mlp import MLPAutoencoder
    >>> model = MLPAutoencoder((8,), 2, (8,), out_dim=4)
    >>> x = jnp.ones((3, 4))
    >>> variables = model.init(jax.random.key(0), x)
    >>> loss, aux = autoencoder(model)(variables, {"x": x}, jax.random.key(1))
    >>> loss.shape, sorted(aux)
    ((), ['mse'])
  """
  def loss(variables, batch, key):
    del key  # deterministic
    out, _ = model.apply(variables, batch["x"])
    mse = jnp.mean(jnp.square(out - batch["x"]))
    return mse, {"mse": mse}
  return loss


def random_mask(key: jax.Array, shape: tuple[int, ...],
                mask_ratio: Any) -> jax.Array:
  """A {0, 1} mask hiding exactly round(mask_ratio · d) of the last axis.

  Exactly, not Bernoulli: every row hides the same number of coordinates, so
  the loss scale does not fluctuate. `mask_ratio` may be traced (grids).
  """
  d = shape[-1]
  n_mask = jnp.round(jnp.asarray(mask_ratio) * d)
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, shape), axis=-1),
                      axis=-1)
  return (ranks < n_mask).astype(jnp.float32)


def masked_autoencoder(model, mask_ratio: Any) -> Loss:
  """Reconstruct hidden input coordinates from the visible ones.

  A fresh mask per row and step hides round(mask_ratio · D) coordinates; the
  loss is the mean squared error on the hidden coordinates only.
  """
  def loss(variables, batch, key):
    x = batch["x"]
    m = random_mask(key, x.shape, mask_ratio)
    out, _ = model.apply(variables, x, mask=m)
    err = jnp.square(out - x)
    n_hidden = jnp.maximum(m.sum(), 1.0)
    mse_masked = jnp.sum(err * m) / n_hidden
    mse_visible = jnp.sum(err * (1 - m)) / jnp.maximum((1 - m).sum(), 1.0)
    return mse_masked, {"mse_masked": mse_masked, "mse_visible": mse_visible}
  return loss


def classifier(model) -> Loss:
  """Softmax cross-entropy on integer labels."""
  def loss(variables, batch, key):
    del key
    logits, _ = model.apply(variables, batch["x"])
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return ce, {"cross_entropy": ce, "accuracy": acc}
  return loss


def build_loss(name: str, model, hparams: dict[str, Any]) -> Loss:
  """The loss named `name` for `model`; `hparams` holds traced knobs."""
  if name == "autoencoder":
    return autoencoder(model)
  if name == "masked_autoencoder":
    return masked_autoencoder(model, hparams["mask_ratio"])
  if name == "classifier":
    return classifier(model)
  raise ValueError(f"config.objective.name: unknown objective {name!r}; "
                   f"choose one of {OBJECTIVES}.")
