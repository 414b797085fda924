"""Affine R^2 from the codes to each standardised factor.

For each factor k, the factor values are standardised with the fit split's
mean and std, an affine least-squares map from the codes is fitted on the fit
split (`numpy.linalg.lstsq` semantics: minimum-norm for rank-deficient
codes), and scored on the score split with sklearn's r2_score
(1 - SS_res / SS_tot, SS_tot about the score split's mean). The result is
the mean over factors ("r2") — the affine decodability of the factors.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from nearid_jax.metrics import inputs


def _run(z_tr, z_te, v_tr, v_te):
  mean = jnp.mean(v_tr, axis=0)
  std = jnp.std(v_tr, axis=0)
  std = jnp.where(std > 0, std, 1.0)
  t_tr = (v_tr - mean) / std
  t_te = (v_te - mean) / std
  zm = jnp.mean(z_tr, axis=0)
  x_tr = z_tr - zm
  coef, _, _, _ = jnp.linalg.lstsq(x_tr, t_tr - jnp.mean(t_tr, axis=0))
  pred = jnp.dot(z_te - zm, coef, precision=jax.lax.Precision.HIGHEST) + (
      jnp.mean(t_tr, axis=0))
  ss_res = jnp.sum((t_te - pred) ** 2, axis=0)
  ss_tot = jnp.sum((t_te - jnp.mean(t_te, axis=0)) ** 2, axis=0)
  r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0),
                 jnp.where(ss_res > 0, 0.0, 1.0))
  return {"r2": jnp.mean(r2)}


_runs = jax.jit(jax.vmap(_run))


def r2(z, factors, *, key=None,
       test_fraction: float = inputs.DEFAULT_TEST_FRACTION, z_test=None,
       factors_test=None) -> dict:
  """Mean affine R^2 of the standardised factors, fitted and scored apart.

  Args:
    z: [n, d] codes or [R, n, d].
    factors: [n, K] or [R, n, K] numeric factor values.
    key: PRNG key of the fit/score split (default key(0)).
    test_fraction: fraction of rows scored when splitting.
    z_test: optional explicit score codes (then all of z is fitted).
    factors_test: their factors.

  Returns:
    {"r2": float} (or [R] array).

  Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> u = rng.normal(size=(600, 2))
    >>> z = u @ rng.normal(size=(2, 4)) + 1.0
    >>> round(r2(z.astype(np.float32), u)["r2"], 4)
    1.0
  """
  zr, batched = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  fac = inputs.encode_factors("factors", factors, n, r, warn=False)
  sp = inputs.split(zr, fac, key=inputs.default_key(key),
                    test_fraction=test_fraction, z_test=z_test,
                    factors_test=factors_test)
  v_tr = jnp.broadcast_to(sp.values_train, (r,) + sp.values_train.shape[1:])
  v_te = jnp.broadcast_to(sp.values_test, (r,) + sp.values_test.shape[1:])
  return inputs.to_host(_runs(sp.z_train, sp.z_test, v_tr, v_te), batched)
