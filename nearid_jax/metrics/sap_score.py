"""Separated Attribute Predictability (Kumar et al. 2018), disentanglement_lib.

Score matrix S[j, k] for every (latent, factor) pair:
* discrete factors (disentanglement_lib's default, continuous_factors=False):
  accuracy on the score split of `LinearSVC(C=0.01, class_weight="balanced")`
  fitted on the single raw latent z_j of the fit split (solved exactly on
  device, see `linear_models.fit_linear_svc_1d`);
* continuous_factors=True: the squared correlation cov(z_j, v_k)^2 /
  (var z_j var v_k) on the fit split (ddof 1), 0 when var z_j <= 1e-12.
SAP = mean over factors of the gap between the two largest S[:, k]. Needs
d >= 2.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nearid_jax import parallel
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models
from nearid_jax.metrics import sorting


def _svc_accuracy(x_tr, y_tr, x_te, y_te, cmask, order):
  params = linear_models.fit_linear_svc_1d(x_tr, y_tr, cmask, order=order)
  return jnp.mean(linear_models.predict_linear_svc_1d(params, x_te) == y_te)


def _gap(score):
  top = -jnp.sort(-score, axis=0)
  return jnp.mean(top[0] - top[1])


def _run_discrete(z_tr, z_te, y_tr, y_te, num_classes):
  def per_latent(x_tr, x_te):
    # The order the SVC uses.
    order = sorting.stable_argsort(x_tr - jnp.mean(x_tr))
    return inputs.map_factors(
        lambda a, b, m: _svc_accuracy(x_tr, a, x_te, b, m, order),
        (y_tr, y_te), num_classes)                        # [K]

  score = jax.vmap(per_latent, in_axes=(1, 1))(z_tr, z_te)  # [d, K]
  return {"sap": _gap(score)}


def _run_continuous(z_tr, v_tr):
  n = z_tr.shape[0]
  zc = z_tr - jnp.mean(z_tr, 0)
  vc = v_tr - jnp.mean(v_tr, 0)
  cov = jnp.dot(zc.T, vc, precision=jax.lax.Precision.HIGHEST) / (n - 1)
  var_z = jnp.sum(zc * zc, 0) / (n - 1)
  var_v = jnp.sum(vc * vc, 0) / (n - 1)
  score = jnp.where(var_z[:, None] > 1e-12,
                    cov ** 2 / (jnp.where(var_z > 1e-12, var_z, 1.0)[:, None]
                                * var_v[None, :]), 0.0)
  return {"sap": _gap(score)}


@functools.partial(parallel.jit, static_argnames=("num_classes",))
def _runs_discrete(z_tr, z_te, y_tr, y_te, num_classes):
  return parallel.map_runs(
      lambda *a: _run_discrete(*a, num_classes), z_tr, z_te, y_tr, y_te)


_runs_continuous = jax.jit(jax.vmap(_run_continuous))


def sap(z, factors, *, key=None, continuous_factors: bool = False,
        test_fraction: float = inputs.DEFAULT_TEST_FRACTION, z_test=None,
        factors_test=None) -> dict:
  """SAP score of one or R runs.

  Args:
    z: [n, d] codes or [R, n, d] (d >= 2).
    factors: [n, K] or [R, n, K] factors.
    key: PRNG key of the fit/score split (default key(0)).
    continuous_factors: use the correlation score instead of classification
      (then only the fit split is used).
    test_fraction: fraction of rows scored when splitting.
    z_test: optional explicit score codes (then all of z is fitted).
    factors_test: their factors.

  Returns:
    {"sap": float} (or [R] array).

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).integers(0, 2, (900, 2))
    >>> z = np.concatenate([u, np.zeros((900, 1))], 1).astype(np.float32)
    >>> round(sap(z, u)["sap"], 1)  # accuracy 1 vs chance 0.5
    0.5
  """
  zr, batched = inputs.as_runs("z", z)
  r, n, d = zr.shape
  if d < 2:
    raise ValueError(f"SAP needs at least 2 latents, z has {d}.")
  fac = inputs.encode_factors("factors", factors, n, r)
  sp = inputs.split(zr, fac, key=inputs.default_key(key),
                    test_fraction=test_fraction, z_test=z_test,
                    factors_test=factors_test)
  if continuous_factors:
    v = jnp.broadcast_to(sp.values_train, (r,) + sp.values_train.shape[1:])
    return inputs.to_host(_runs_continuous(sp.z_train, v), batched)
  y_tr, y_te = sp.run_labels()
  out = _runs_discrete(sp.z_train, sp.z_test, y_tr, y_te, fac.num_classes)
  return inputs.to_host(out, batched)
