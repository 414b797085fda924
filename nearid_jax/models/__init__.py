"""Model registry: `build_model(config.model, spec, hparams)` -> Linen module.

Every model's `__call__(x, mask=None)` returns `(output, representations)`
with `representations` a dict {layer name: activations}; `layer_names()`
lists the names and `decode(z)` applies the part after the "latent" layer
(used for decoder Jacobians). `spec` describes the data (`obs_shape`,
`num_classes`, `latent_dim`); `hparams` holds the (possibly traced) values of
grid-able fields such as `negative_slope`.

Image models (`spec["obs_shape"]` = (H, W, C)): "conv_ae" and "conv_vae"
(conv_ae.py, the InfoMEC-family autoencoder and its Gaussian-posterior
variant for β-VAE / β-TCVAE), "conv_qlae" (quantize.py, the same
encoder/decoder with a latent quantizer: QLAE), "conv_encoder" (its encoder alone, for
InfoNCE), "vit_mae" (vit.py), "cnn_classifier" and "resnet_classifier"
(resnet.py). Models that take a `train` flag (batch statistics) say so with
the class attribute `takes_train = True`.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import ml_collections
import numpy as np

from nearid_jax.models import conv_ae
from nearid_jax.models import mlp
from nearid_jax.models import quantize
from nearid_jax.models import resnet
from nearid_jax.models import vit

MODELS = ("mlp_ae", "mlp_classifier", "conv_ae", "conv_vae", "conv_qlae",
          "conv_encoder", "vit_mae", "cnn_classifier", "resnet_classifier")
# The objectives each model can serve (objectives.OBJECTIVES names).
MODEL_OBJECTIVES = {
    "mlp_ae": ("autoencoder", "masked_autoencoder", "bioae"),
    "mlp_classifier": ("classifier",),
    "conv_ae": ("autoencoder", "bioae"),
    "conv_vae": ("beta_vae", "beta_tcvae"),
    "conv_qlae": ("qlae",),
    "conv_encoder": ("infonce",),
    "vit_mae": ("masked_autoencoder",),
    "cnn_classifier": ("classifier",),
    "resnet_classifier": ("classifier",),
}


def check_objective(model_name: str, objective: str) -> None:
  """Raises ValueError when `model_name` cannot serve `objective`."""
  allowed = MODEL_OBJECTIVES.get(model_name)
  if allowed is not None and objective not in allowed:
    users = sorted(m for m, objs in MODEL_OBJECTIVES.items()
                   if objective in objs)
    raise ValueError(
        f"config.model.name: {model_name!r} cannot serve the {objective!r} "
        f"objective (it serves {list(allowed)}); use one of {users}.")


def _image_shape(config, spec) -> tuple[int, int, int]:
  shape = tuple(spec["obs_shape"])
  if len(shape) != 3:
    raise ValueError(
        f"config.model.name: {config.name!r} needs images [H, W, C] but the "
        f"data have observations of shape {shape}; use an image dataset "
        "(data.name='images') or an MLP model.")
  return shape


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
    obs = tuple(spec["obs_shape"])
    out_dim = int(np.prod(obs))
    return mlp.MLPAutoencoder(
        obs_shape=obs if len(obs) > 1 else None,
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
  if config.name in ("conv_ae", "conv_vae", "conv_qlae"):
    shape = _image_shape(config, spec)
    conv_ae.check_geometry(shape, config)
    kwargs = dict(
        obs_shape=shape, latent_dim=config.latent_dim,
        encoder_widths=tuple(config.encoder_widths),
        encoder_kernels=tuple(config.encoder_kernels),
        encoder_strides=tuple(config.encoder_strides),
        encoder_dense=tuple(config.encoder_dense),
        decoder_widths=tuple(config.decoder_widths),
        decoder_kernels=tuple(config.decoder_kernels),
        decoder_strides=tuple(config.decoder_strides),
        decoder_dense=tuple(config.decoder_dense), negative_slope=slope)
    if config.name == "conv_qlae":
      return quantize.QuantizedConvAutoencoder(
          num_values=config.get("num_values", quantize.NUM_VALUES), **kwargs)
    return conv_ae.ConvAutoencoder(variational=config.name == "conv_vae",
                                   **kwargs)
  if config.name == "conv_encoder":
    shape = _image_shape(config, spec)
    conv_ae.check_geometry(shape, config)
    return conv_ae.ConvEncoder(
        obs_shape=shape, latent_dim=config.latent_dim,
        encoder_widths=tuple(config.encoder_widths),
        encoder_kernels=tuple(config.encoder_kernels),
        encoder_strides=tuple(config.encoder_strides),
        encoder_dense=tuple(config.encoder_dense), negative_slope=slope)
  if config.name == "vit_mae":
    shape = _image_shape(config, spec)
    vit.check_geometry(shape, config)
    return vit.ViTMAE(
        obs_shape=shape, patch_size=config.patch_size, width=config.width,
        depth=config.depth, num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio, decoder_width=config.decoder_width,
        decoder_depth=config.decoder_depth,
        decoder_heads=config.decoder_heads)
  if config.name == "cnn_classifier":
    _image_shape(config, spec)
    return resnet.CNNClassifier(
        num_classes=spec["num_classes"], widths=tuple(config.widths),
        strides=tuple(config.strides), latent_dim=config.latent_dim,
        norm=config.norm, negative_slope=slope)
  if config.name == "resnet_classifier":
    _image_shape(config, spec)
    return resnet.ResNetClassifier(
        num_classes=spec["num_classes"],
        stage_sizes=tuple(config.stage_sizes), width=config.width,
        norm=config.norm, stem=config.stem, negative_slope=slope)
  raise ValueError(f"config.model.name: unknown model {config.name!r}; "
                   f"choose one of {MODELS}.")
