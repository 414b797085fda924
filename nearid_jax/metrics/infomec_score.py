"""InfoMEC (Hsu et al. 2023): InfoM(odularity), InfoE(xplicitness), InfoC.

Definitions, following the authors' code (kylehkhsu/latent_quantization,
disentangle/metrics/infomec.py), for continuous latents:

* NMI[k, j] = I(z_j; s_k) / H(s_k): I from sklearn's `mutual_info_classif`
  (kNN estimator of Ross 2014 with n_neighbors = 10) on the standardised
  latent z_j; H(s_k) the plug-in entropy (nats) of factor k.
* Active latents: range(z_j) > max_j range(z_j) / 20 (ranges of the raw
  latents).
* InfoM = (mean over active j of max_k NMI / sum_k NMI - 1/K) / (1 - 1/K).
* InfoC = (mean over k of max_{active j} NMI / sum_{active j} NMI - 1/J) /
  (1 - 1/J), J = number of active latents.
* InfoE = mean over k of (H_null - H_pred) / H_null: H_pred is the log loss
  (nats, unweighted, on the fitting data) of an unpenalised multinomial
  logistic regression (lbfgs, 100 iterations, tol 1e-4, class_weight
  "balanced", fit on all n standardised latents); H_null is the log loss of
  the same model with no features, which under balanced class weights
  predicts the uniform distribution: log C_k.

Note that InfoM and InfoC are ratios of NMIs: for a code of pure noise the
NMIs are all near 0 (the kNN estimate is clipped at 0), yet their max/sum
ratios need not be small, so noise can score a high InfoM (the reference
code behaves identically); read them together with InfoE.

Conventions where the reference gives 0/0 (it returns NaN there): a latent
(factor) whose NMI column (row) sums to 0 contributes the uninformative ratio
1/K (1/J), i.e. 0 after normalisation; with K = 1 factor InfoM is 1 by
definition, with J = 1 active latent InfoC is 1.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nearid_jax.metrics import information
from nearid_jax import parallel
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models


def nmi_matrix(z: jax.Array, noise: jax.Array, labels: jax.Array,
               num_classes: tuple[int, ...], n_neighbors: int = 10
               ) -> jax.Array:
  """[K, d] normalised mutual information of one run (jittable).

  Args:
    z: [n, d] float codes.
    noise: [n, d] standard normal tie-breakers.
    labels: [n, K] int factor classes.
    num_classes: K static class counts.
    n_neighbors: kNN k.
  """
  zs, _, _ = inputs.standardize(z)
  c_max = max(num_classes)
  mi = information.knn_mutual_info_matrix(zs, noise, labels, c_max,
                                          n_neighbors)      # [d, K]
  h = information.discrete_entropy(labels, c_max)           # [K]
  return mi.T / h[:, None]


def _ratio_score(nmi, axis, count_other, mask):
  """mean over the kept slices of (max / sum - 1/count) / (1 - 1/count)."""
  s = jnp.sum(nmi, axis=axis)
  mx = jnp.max(nmi, axis=axis)
  ratio = jnp.where(s > 0, mx / jnp.where(s > 0, s, 1.0), 1.0 / count_other)
  mean = jnp.sum(jnp.where(mask, ratio, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  return jnp.where(count_other > 1,
                   (mean - 1.0 / count_other) / (1.0 - 1.0 / count_other),
                   1.0)


def _infomec_run(z, noise, labels, num_classes, n_neighbors, max_iter):
  k = labels.shape[1]
  nmi = nmi_matrix(z, noise, labels, num_classes, n_neighbors)   # [K, d]
  ranges = jnp.max(z, axis=0) - jnp.min(z, axis=0)
  active = ranges > jnp.max(ranges) / 20.0
  pruned = jnp.where(active[None, :], nmi, 0.0)
  num_active = jnp.sum(active).astype(jnp.float32)
  infom = _ratio_score(pruned, 0, jnp.float32(k), active)
  infoc = _ratio_score(pruned, 1, num_active, jnp.ones((k,), bool))

  zs, _, _ = inputs.standardize(z)

  def explicitness(y, cmask):
    sw = linear_models.balanced_weights(y, cmask)
    w, b = linear_models.fit_logistic(zs, y, cmask, sw, l2=0.0,
                                      max_iter=max_iter)
    logp = jax.nn.log_softmax(
        linear_models.logistic_logits(zs, w, b, cmask), axis=-1)
    ll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
    h_null = jnp.log(jnp.sum(cmask).astype(jnp.float32))
    return (h_null - ll) / h_null

  infoe = jnp.mean(inputs.map_factors(explicitness, (labels,), num_classes))
  return {"infom": infom, "infoe": infoe, "infoc": infoc,
          "num_active": num_active}


@functools.partial(parallel.jit, static_argnames=(
    "num_classes", "n_neighbors", "max_iter"))
def _infomec_runs(z, key, labels, num_classes, n_neighbors, max_iter):
  noise = jax.random.normal(key, z.shape, z.dtype)
  return parallel.map_runs(
      lambda *a: _infomec_run(*a, num_classes, n_neighbors, max_iter),
      z, noise, labels)


def infomec(z, factors, *, key=None, n_neighbors: int = 10,
            max_iter: int = 100) -> dict:
  """InfoM, InfoE and InfoC of one or R runs (Hsu et al. 2023).

  See the module docstring for the exact definitions and conventions.
  Evaluate on 10,000 samples to match the published protocol.

  Args:
    z: [n, d] codes, or [R, n, d] for R runs.
    factors: [n, K] (or [R, n, K]) factors; see `metrics.inputs`.
    key: PRNG key for the kNN tie-breaking noise (default key(0)).
    n_neighbors: k of the kNN MI estimator.
    max_iter: L-BFGS iterations of the InfoE logistic regressions.

  Returns:
    dict with "infom", "infoe", "infoc" and "num_active" (number of active
    latents): floats for one run, [R] arrays for R runs.

  Raises:
    ValueError / TypeError: bad shapes, NaN/Inf, no informative factor,
      fewer samples than classes.

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).integers(0, 4, (500, 2))
    >>> z = (u[:, ::-1] * [2.0, -1.0]).astype(np.float32)
    >>> s = infomec(z, u)
    >>> bool(s["infom"] > 0.95 and s["infoc"] > 0.95 and s["infoe"] > 0.9)
    True
  """
  zr, batched = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  fac = inputs.encode_factors("factors", factors, n, r)
  inputs.check_enough_rows(n, fac, "z")
  labels = jnp.broadcast_to(jnp.asarray(fac.labels), (r, n, fac.num_factors))
  out = _infomec_runs(zr, inputs.default_key(key), labels, fac.num_classes,
                      n_neighbors, max_iter)
  return inputs.to_host(out, batched)
