"""Model registry: `build_model(config.model, spec, hparams)` -> Linen module.

Every model's `__call__(x, mask=None)` returns `(output, representations)`
with `representations` a dict {layer name: activations}; `layer_names()`
lists the names and `decode(z)` applies the part after the "latent" layer
(used for decoder Jacobians). `spec` describes the data (`obs_shape`,
`num_classes`, `latent_dim`); `hparams` holds the (possibly traced) values of
grid-able fields such as `negative_slope`.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import ml_collections

from nearid_jax.models import mlp

MODELS = ("mlp_ae", "mlp_classifier")


def build_model(config: ml_collections.ConfigDict, spec: Mapping[str, Any],
                hparams: Mapping[str, Any] | None = None,
                objective: str = "autoencoder") -> nn.Module:
  """Returns the Linen module named by `config.name`.

  Args:
    config: the `model` part of an experiment config.
    spec: data description with `obs_shape`, `num_classes`.
    hparams: traced overrides (e.g. {"negative_slope": x}); defaults to the
      config's values.
    objective: the objective the model serves ("masked_autoencoder" makes
      MLP autoencoders take the mask as an input).

  Raises:
    ValueError: for an unknown model name.
  """
  hparams = dict(hparams or {})
  slope = hparams.get("negative_slope", config.get("negative_slope", 0.2))
  if config.name == "mlp_ae":
    (out_dim,) = spec["obs_shape"]
    return mlp.MLPAutoencoder(
        encoder_widths=tuple(config.encoder_widths),
        latent_dim=config.latent_dim,
        decoder_widths=tuple(config.decoder_widths), out_dim=out_dim,
        activation=config.activation, negative_slope=slope,
        mask_input=objective == "masked_autoencoder")
  if config.name == "mlp_classifier":
    return mlp.MLPClassifier(
        encoder_widths=tuple(config.encoder_widths),
        latent_dim=config.latent_dim, num_classes=spec["num_classes"],
        activation=config.activation, negative_slope=slope)
  raise ValueError(f"config.model.name: unknown model {config.name!r}; "
                   f"choose one of {MODELS}.")
