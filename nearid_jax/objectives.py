"""The objective families as pure losses.

Each factory takes a Linen model and returns a pure function

    loss(variables, batch, key, train=True) -> (loss, aux)

where `variables` is the model's Flax variable dict ({"params": ...} plus
any mutable collections), `batch` a dict with "x" (and "label" for
classifiers, "x_pos" for InfoNCE) and `aux` a dict of scalar diagnostics.
`key` drives every random draw of the loss (masks, posterior samples), so
each run and step gets its own. With `train=True` a model with batch
statistics normalises with the batch and returns its updated collections in
`aux["model_state"]`; with `train=False` (evaluation) it uses its running
averages. The trainer differentiates with respect to `variables["params"]`
only. Regularisers that act on weights (weight decay) live in the
optimizer, not here, so that the loss stays the quantity whose minimisers
the paper's theorems are about.

Families: the autoencoder (MSE, or per-pixel sigmoid cross-entropy for
images in [0, 1]), the masked autoencoder (masked coordinates for MLPs,
masked patches for ViTs), the classifier, the VAE-family baselines of the
paper's Table 2 (β-VAE, β-TCVAE, BioAE), latent quantization (QLAE,
Hsu et al. 2023) and InfoNCE. The VAE-family
weights follow Hsu et al. (2023): reconstruction is a mean over pixels, the
KL / total-correlation terms are sums over latents divided by the number of
pixels, so that β = 1 is the ELBO divided by the number of pixels.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

Loss = Callable[..., tuple[jax.Array, dict]]
OBJECTIVES = ("autoencoder", "masked_autoencoder", "classifier", "beta_vae",
              "beta_tcvae", "bioae", "qlae", "infonce")
RECONSTRUCTIONS = ("mse", "sigmoid_ce")
# Hsu et al.'s quantization and commitment weights (both 0.01).
QLAE_WEIGHT = 0.01


def default_config() -> ml_collections.ConfigDict:
  """The `objective` part of an experiment config, every field with a default.

  Fields: name (one of OBJECTIVES); mask_ratio (masked autoencoders);
  reconstruction ("mse" or "sigmoid_ce", autoencoder-family losses);
  norm_pix_loss (ViT MAE: normalise each target patch); beta (KL weight of
  β-VAE, total-correlation weight of β-TCVAE; grid-able); dataset_size
  (β-TCVAE's N in the minibatch-weighted-sampling estimator, 0: the data's
  number of distinct examples); nonnegative_weight and activity_weight
  (BioAE); temperature (InfoNCE). QLAE reads quantization_weight and
  commitment_weight when the config has them (experiments/configs/qlae.py
  sets both), else QLAE_WEIGHT: they are not defaults here, so that
  workdirs of the other objectives keep resuming under an unchanged config.
  """
  return ml_collections.ConfigDict(dict(
      name="autoencoder", mask_ratio=0.5, reconstruction="mse",
      norm_pix_loss=True, beta=1.0, dataset_size=0, nonnegative_weight=1.0,
      activity_weight=0.01, temperature=0.1))


def apply_model(model, variables, x: jax.Array, *, train: bool, **kwargs):
  """Applies `model` in train or eval mode.

  Returns:
    (output, reps, new_state) with new_state the updated non-param
    collections (train mode, stateful models) or None.
  """
  if getattr(model, "takes_train", False):
    kwargs["train"] = train
  state_cols = [c for c in variables if c != "params"]
  if train and state_cols:
    (out, reps), new_state = model.apply(variables, x, mutable=state_cols,
                                         **kwargs)
    return out, reps, dict(new_state)
  out, reps = model.apply(variables, x, **kwargs)
  return out, reps, None


def _with_state(aux: dict, new_state) -> dict:
  if new_state is not None:
    aux["model_state"] = new_state
  return aux


def reconstruction_error(out: jax.Array, x: jax.Array,
                         kind: str = "mse") -> jax.Array:
  """Per-example error, a mean over coordinates: [n, ...] -> [n].

  "mse": squared error of `out` as the reconstruction; "sigmoid_ce":
  binary cross-entropy of logits `out` against intensities x in [0, 1].
  """
  axes = tuple(range(1, x.ndim))
  if kind == "mse":
    return jnp.mean(jnp.square(out - x), axis=axes)
  if kind == "sigmoid_ce":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(out, x), axis=axes)
  raise ValueError(f"config.objective.reconstruction: unknown {kind!r}; "
                   f"choose one of {RECONSTRUCTIONS}.")


def _recon_aux(out, x, kind, err) -> dict:
  if kind == "mse":
    return {"mse": err}
  # The MSE of the decoded intensities, comparable across reconstructions.
  return {"bce": err, "mse": jnp.mean(jnp.square(jax.nn.sigmoid(out) - x))}


def autoencoder(model, reconstruction: str = "mse") -> Loss:
  """Reconstruction error, averaged over rows and coordinates.

  "mse" (default) is the mean squared error; "sigmoid_ce" treats the output
  as per-pixel logits (the InfoMEC-suite convention for images in [0, 1]).

  Examples:
    >>> from nearid_jax.models.mlp import MLPAutoencoder
    >>> model = MLPAutoencoder((8,), 2, (8,), out_dim=4)
    >>> x = jnp.ones((3, 4))
    >>> variables = model.init(jax.random.key(0), x)
    >>> loss, aux = autoencoder(model)(variables, {"x": x}, jax.random.key(1))
    >>> loss.shape, sorted(aux)
    ((), ['mse'])
  """
  def loss(variables, batch, key, train=True):
    del key  # deterministic
    out, _, new_state = apply_model(model, variables, batch["x"],
                                    train=train)
    if reconstruction == "mse":  # as before the other reconstructions
      err = jnp.mean(jnp.square(out - batch["x"]))
    else:
      err = jnp.mean(reconstruction_error(out, batch["x"], reconstruction))
    return err, _with_state(_recon_aux(out, batch["x"], reconstruction, err),
                            new_state)
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
  def loss(variables, batch, key, train=True):
    del train  # MLPs have no batch statistics
    x = batch["x"]
    m = random_mask(key, x.shape, mask_ratio)
    out, _ = model.apply(variables, x, mask=m)
    err = jnp.square(out - x)
    n_hidden = jnp.maximum(m.sum(), 1.0)
    mse_masked = jnp.sum(err * m) / n_hidden
    mse_visible = jnp.sum(err * (1 - m)) / jnp.maximum((1 - m).sum(), 1.0)
    return mse_masked, {"mse_masked": mse_masked, "mse_visible": mse_visible}
  return loss


def patch_masked_autoencoder(model, mask_ratio: float,
                             norm_pix_loss: bool = True) -> Loss:
  """MAE on patches: reconstruct the hidden patches from the visible ones.

  Each row hides a fresh uniformly random set of round(mask_ratio · T) of
  the T patches (at least one stays visible); the model's encoder sees the
  visible patches only. The loss is the mean squared error on the hidden
  patches, each target patch normalised by its own mean and variance when
  `norm_pix_loss` (He et al. 2022). `mask_ratio` is a Python float: the
  number of visible patches is a compiled shape.

  Args:
    model: a ViTMAE (anything with `patch_size`, `num_patches` and a
      `visible` argument).
    mask_ratio: fraction of patches hidden, in (0, 1).
    norm_pix_loss: normalise each target patch.
  """
  from nearid_jax.models import vit  # pylint: disable=g-import-not-at-top
  n_patches = model.num_patches
  n_visible = max(1, n_patches - int(round(float(mask_ratio) * n_patches)))

  def loss(variables, batch, key, train=True):
    x = batch["x"]
    n = x.shape[0]
    order = jnp.argsort(jax.random.uniform(key, (n, n_patches)), axis=1)
    visible = jnp.sort(order[:, :n_visible], axis=1)
    pred, _, new_state = apply_model(model, variables, x, train=train,
                                     visible=visible)
    target = vit.patchify(x, model.patch_size)
    if norm_pix_loss:
      mean = target.mean(-1, keepdims=True)
      var = target.var(-1, keepdims=True)
      target = (target - mean) / jnp.sqrt(var + 1e-6)
    hidden = jnp.ones((n, n_patches)).at[jnp.arange(n)[:, None],
                                         visible].set(0.0)
    per_patch = jnp.mean(jnp.square(pred - target), axis=-1)
    mse_masked = jnp.sum(per_patch * hidden) / jnp.maximum(hidden.sum(), 1.0)
    mse_visible = jnp.sum(per_patch * (1 - hidden)) / jnp.maximum(
        (1 - hidden).sum(), 1.0)
    return mse_masked, _with_state(
        {"mse_masked": mse_masked, "mse_visible": mse_visible}, new_state)
  return loss


def classifier(model) -> Loss:
  """Softmax cross-entropy on integer labels."""
  def loss(variables, batch, key, train=True):
    del key
    logits, _, new_state = apply_model(model, variables, batch["x"],
                                       train=train)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return ce, _with_state({"cross_entropy": ce, "accuracy": acc}, new_state)
  return loss


def gaussian_kl(mean: jax.Array, sigma: jax.Array) -> jax.Array:
  """KL(N(mean, diag σ²) || N(0, I)) per row: [n, d] -> [n]."""
  return jnp.sum(-jnp.log(sigma) + 0.5 * (jnp.square(mean)
                                          + jnp.square(sigma) - 1.0), -1)


def _encode_sample(model, variables, x, key):
  """Posterior mean, scale and one reparameterised sample z."""
  mean, reps = model.apply(variables, x, method="encode")
  sigma = reps["latent_sigma"]
  z = mean + sigma * jax.random.normal(key, mean.shape, mean.dtype)
  return mean, sigma, z


def beta_vae(model, beta: Any, reconstruction: str = "sigmoid_ce") -> Loss:
  """β-VAE: reconstruction + β · KL(q(z|x) || N(0, I)) / #pixels.

  The reconstruction decodes one posterior sample per row. `beta` may be a
  traced scalar (grids). The model needs `encode` returning the posterior
  mean and reps["latent_sigma"] (models "conv_vae").
  """
  def loss(variables, batch, key, train=True):
    del train
    x = batch["x"]
    mean, sigma, z = _encode_sample(model, variables, x, key)
    out = model.apply(variables, z, method="decode")
    rec = jnp.mean(reconstruction_error(out, x, reconstruction))
    kl = jnp.mean(gaussian_kl(mean, sigma))
    x_dim = math.prod(x.shape[1:])
    total = rec + beta * kl / x_dim
    return total, {"reconstruction": rec, "kl": kl}
  return loss


def _log_normal(z, mean, sigma):
  return (-0.5 * jnp.square((z - mean) / sigma) - jnp.log(sigma)
          - 0.5 * math.log(2.0 * math.pi))


def tc_decomposition(z: jax.Array, mean: jax.Array, sigma: jax.Array,
                     dataset_size: int) -> dict[str, jax.Array]:
  """The ELBO's KL split into MI, TC and dimension-wise KL (Chen et al. 2018).

  Minibatch-weighted sampling: with M rows from a data set of N,
  log q(z_i) ≈ logsumexp_j log q(z_i | x_j) − log(N M), and the same per
  latent for the marginals q(z_ik).

  Args:
    z: [M, d] posterior samples (row i from q(z | x_i)).
    mean, sigma: [M, d] posterior parameters.
    dataset_size: N.

  Returns:
    {"mutual_information", "total_correlation", "dimension_wise_kl"}: [M]
    each, summing to log q(z|x) − log p(z) per row.
  """
  m = z.shape[0]
  log_qz_x = jnp.sum(_log_normal(z, mean, sigma), -1)
  log_pz = jnp.sum(_log_normal(z, 0.0, 1.0), -1)
  # [i, j, k]: log q(z_ik | x_j).
  mat = _log_normal(z[:, None, :], mean[None], sigma[None])
  log_nm = math.log(dataset_size * m)
  log_qz = jax.nn.logsumexp(mat.sum(-1), axis=1) - log_nm
  log_prod = jnp.sum(jax.nn.logsumexp(mat, axis=1) - log_nm, axis=-1)
  return {"mutual_information": log_qz_x - log_qz,
          "total_correlation": log_qz - log_prod,
          "dimension_wise_kl": log_prod - log_pz}


def beta_tcvae(model, beta: Any, dataset_size: int,
               reconstruction: str = "sigmoid_ce") -> Loss:
  """β-TCVAE: reconstruction + (MI + β · TC + dimension-wise KL) / #pixels.

  The three terms come from `tc_decomposition` (minibatch-weighted
  sampling over the batch); `beta` may be traced.
  """
  def loss(variables, batch, key, train=True):
    del train
    x = batch["x"]
    mean, sigma, z = _encode_sample(model, variables, x, key)
    out = model.apply(variables, z, method="decode")
    rec = jnp.mean(reconstruction_error(out, x, reconstruction))
    parts = {k: jnp.mean(v) for k, v in
             tc_decomposition(z, mean, sigma, dataset_size).items()}
    x_dim = math.prod(x.shape[1:])
    total = rec + (parts["mutual_information"]
                   + beta * parts["total_correlation"]
                   + parts["dimension_wise_kl"]) / x_dim
    return total, {"reconstruction": rec, **parts}
  return loss


def bioae(model, nonnegative_weight: float, activity_weight: float,
          reconstruction: str = "sigmoid_ce") -> Loss:
  """BioAE (Whittington et al. 2023): reconstruction + latent penalties.

  Loss = reconstruction + nonnegative_weight · mean(max(−z, 0)) +
  activity_weight · mean(z²), means over latents and rows. (BioAE's l2
  weight penalty is the optimizer's weight decay.)
  """
  def loss(variables, batch, key, train=True):
    del key
    out, reps, new_state = apply_model(model, variables, batch["x"],
                                       train=train)
    z = reps["latent"]
    rec = jnp.mean(reconstruction_error(out, batch["x"], reconstruction))
    nonneg = jnp.mean(jax.nn.relu(-z))
    activity = jnp.mean(jnp.square(z))
    total = rec + nonnegative_weight * nonneg + activity_weight * activity
    return total, _with_state({"reconstruction": rec, "nonnegative": nonneg,
                               "activity": activity}, new_state)
  return loss


def qlae(model, quantization_weight: float, commitment_weight: float,
         reconstruction: str = "sigmoid_ce") -> Loss:
  """QLAE (Hsu et al. 2023): reconstruction through quantized latents.

  Loss = reconstruction (the decoder sees the straight-through quantized
  code) + quantization_weight · mean(sg(z) − q)² + commitment_weight ·
  mean(z − sg(q))² (`models.quantize.quantization_losses`). The model
  needs reps["latent"] (continuous z) and reps["latent_quantized"] (q),
  e.g. "conv_qlae". The published high weight decay lives in the
  optimizer.

  Examples:
    >>> from nearid_jax.models import conv_ae, quantize
    >>> model = quantize.QuantizedConvAutoencoder((16, 16, 1), 2,
    ...                                           **conv_ae.SIZES["tiny"])
    >>> x = jnp.full((2, 16, 16, 1), 0.5)
    >>> v = model.init(jax.random.key(0), x)
    >>> loss, aux = qlae(model, 0.01, 0.01)(v, {"x": x}, None)
    >>> sorted(aux)
    ['commitment', 'quantization', 'reconstruction']
  """
  from nearid_jax.models import quantize  # pylint: disable=g-import-not-at-top

  def loss(variables, batch, key, train=True):
    del key  # deterministic
    out, reps, new_state = apply_model(model, variables, batch["x"],
                                       train=train)
    rec = jnp.mean(reconstruction_error(out, batch["x"], reconstruction))
    parts = quantize.quantization_losses(reps["latent"],
                                         reps["latent_quantized"])
    total = (rec + quantization_weight * parts["quantization"]
             + commitment_weight * parts["commitment"])
    return total, _with_state({"reconstruction": rec, **parts}, new_state)
  return loss


def infonce(model, temperature: float) -> Loss:
  """Symmetric InfoNCE between x and its positive x_pos (batch["x_pos"]).

  Embeddings are L2-normalised; the other rows of the batch are the
  negatives. Contrastive objectives with positives from small factor
  changes identify the factors up to simple maps (Zimmermann et al. 2021).
  """
  def loss(variables, batch, key, train=True):
    del key
    n = batch["x"].shape[0]
    both = jnp.concatenate([batch["x"], batch["x_pos"]], axis=0)
    z, _, new_state = apply_model(model, variables, both, train=train)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)
    logits = z[:n] @ z[n:].T / temperature
    labels = jnp.arange(n)
    ce = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean() + optax.softmax_cross_entropy_with_integer_labels(
            logits.T, labels).mean())
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return ce, _with_state({"infonce": ce, "pair_accuracy": acc}, new_state)
  return loss


def build_loss(name: str, model, hparams: Mapping[str, Any],
               config: Mapping[str, Any] | None = None,
               spec: Mapping[str, Any] | None = None) -> Loss:
  """The loss named `name` for `model`.

  Args:
    name: one of OBJECTIVES.
    model: the Linen model.
    hparams: traced knobs ("mask_ratio", "beta"), overriding `config`.
    config: the `objective` part of the experiment config (see
      `default_config`); None for the defaults.
    spec: the data spec (β-TCVAE reads "num_examples" when
      config.dataset_size is 0).

  Raises:
    ValueError: for an unknown name or a missing dataset size.
  """
  cfg = default_config()
  if config is not None:
    cfg.update(dict(config))
  rec = cfg.reconstruction
  if name == "autoencoder":
    return autoencoder(model, rec)
  if name == "masked_autoencoder":
    if hasattr(model, "num_patches"):
      # Patch models compile the number of visible patches: the ratio
      # must be a Python number (train.validate_config forbids grids).
      return patch_masked_autoencoder(model, cfg.mask_ratio,
                                      cfg.norm_pix_loss)
    return masked_autoencoder(model, hparams.get("mask_ratio",
                                                 cfg.mask_ratio))
  if name == "classifier":
    return classifier(model)
  beta = hparams.get("beta", cfg.beta)
  if name == "beta_vae":
    return beta_vae(model, beta, rec)
  if name == "beta_tcvae":
    size = cfg.dataset_size or (spec or {}).get("num_examples", 0)
    if not size:
      raise ValueError(
          "config.objective.dataset_size: β-TCVAE needs the data set size N "
          "of its estimator and the data do not state one; set "
          "--config.objective.dataset_size.")
    return beta_tcvae(model, beta, int(size), rec)
  if name == "bioae":
    return bioae(model, cfg.nonnegative_weight, cfg.activity_weight, rec)
  if name == "qlae":
    return qlae(model, cfg.get("quantization_weight", QLAE_WEIGHT),
                cfg.get("commitment_weight", QLAE_WEIGHT), rec)
  if name == "infonce":
    return infonce(model, cfg.temperature)
  raise ValueError(f"config.objective.name: unknown objective {name!r}; "
                   f"choose one of {OBJECTIVES}.")
