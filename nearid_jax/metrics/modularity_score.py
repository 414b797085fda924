"""Modularity and explicitness (Ridgeway & Mozer 2018), disentanglement_lib.

* Modularity: from the [d, K] binned mutual information matrix (20
  equal-width bins per latent, as MIG) of all rows of z — disentanglement_lib
  computes it on its training sample, which is what z is when an explicit
  test set is passed — per latent
  1 - (sum_k I^2 - max_k I^2) / (max_k I^2 (K - 1)), 0 for a latent with no
  information; mean over latents. With K = 1 factor every informative latent
  is modular (1).
* Explicitness: latents standardised with the fit split's mean and std (a
  constant latent gets std 1), one multinomial `LogisticRegression()` per
  factor with sklearn's defaults (L2, C = 1, lbfgs, 100 iterations), scored
  by macro one-vs-rest ROC-AUC of the predicted probabilities on the fit
  split ("explicitness_train") and on the score split
  ("explicitness_test"); mean over factors.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nearid_jax import parallel
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models
from nearid_jax.metrics import mig_score


def modularity_from_mi(mi: jax.Array) -> jax.Array:
  """Modularity of a [d, K] mutual information matrix."""
  k = mi.shape[1]
  sq = mi * mi
  mx = jnp.max(sq, axis=1)
  if k == 1:
    per = jnp.ones_like(mx)
  else:
    per = 1.0 - (jnp.sum(sq, axis=1) - mx) / (
        jnp.where(mx > 0, mx, 1.0) * (k - 1.0))
  return jnp.mean(jnp.where(mx > 0, per, 0.0))


def _run(z_mi, y_mi, z_tr, z_te, y_tr, y_te, num_classes, num_bins,
         max_iter):
  mi = mig_score.binned_mutual_info(z_mi, y_mi, num_classes, num_bins)
  modularity = modularity_from_mi(mi)
  x_tr, mean, std = inputs.standardize(z_tr)
  x_te, _, _ = inputs.standardize(z_te, mean, std)
  n_tr = z_tr.shape[0]

  def per_factor(ytr, yte, cmask):
    w, b = linear_models.fit_logistic(x_tr, ytr, cmask, l2=1.0 / n_tr,
                                      max_iter=max_iter)
    p_tr = jax.nn.softmax(linear_models.logistic_logits(x_tr, w, b, cmask))
    p_te = jax.nn.softmax(linear_models.logistic_logits(x_te, w, b, cmask))
    return (linear_models.roc_auc_macro(p_tr, ytr, cmask),
            linear_models.roc_auc_macro(p_te, yte, cmask))

  auc_tr, auc_te = inputs.map_factors(per_factor, (y_tr, y_te), num_classes)
  return {"modularity": modularity, "explicitness_train": jnp.mean(auc_tr),
          "explicitness_test": jnp.mean(auc_te)}


@functools.partial(parallel.jit, static_argnames=(
    "num_classes", "num_bins", "max_iter"))
def _runs(z_mi, y_mi, z_tr, z_te, y_tr, y_te, num_classes, num_bins,
          max_iter):
  return parallel.map_runs(
      lambda *a: _run(*a, num_classes, num_bins, max_iter),
      z_mi, y_mi, z_tr, z_te, y_tr, y_te)


def modularity_explicitness(z, factors, *, key=None,
                            test_fraction: float = inputs.DEFAULT_TEST_FRACTION,
                            z_test=None, factors_test=None,
                            num_bins: int = 20, max_iter: int = 100) -> dict:
  """Modularity and explicitness of one or R runs.

  Args:
    z: [n, d] codes or [R, n, d].
    factors: [n, K] or [R, n, K] factors.
    key: PRNG key of the fit/score split (default key(0)); unused with
      `z_test`.
    test_fraction: fraction of rows scored when splitting.
    z_test: optional explicit score codes (then all of z is fitted).
    factors_test: their factors.
    num_bins: bins per latent for the mutual information.
    max_iter: L-BFGS iterations of the logistic regressions.

  Returns:
    dict with "modularity", "explicitness_train", "explicitness_test".

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).integers(0, 3, (600, 2))
    >>> s = modularity_explicitness(u[:, ::-1].astype(np.float32), u)
    >>> round(s["modularity"], 3), s["explicitness_test"] > 0.99
    (1.0, True)
  """
  zr, batched = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  fac = inputs.encode_factors("factors", factors, n, r)
  sp = inputs.split(zr, fac, key=inputs.default_key(key),
                    test_fraction=test_fraction, z_test=z_test,
                    factors_test=factors_test)
  y_tr, y_te = sp.run_labels()
  y_mi = jnp.broadcast_to(jnp.asarray(fac.labels), (r, n, fac.num_factors))
  out = _runs(zr, y_mi, sp.z_train, sp.z_test, y_tr, y_te, fac.num_classes,
              num_bins, max_iter)
  return inputs.to_host(out, batched)
