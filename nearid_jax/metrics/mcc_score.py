"""Mean correlation coefficient after Hungarian matching (MCC).

corr[j, k] is the Pearson correlation between latent j and the numeric
values of factor k (method="pearson"), or between their average ranks
(method="spearman", ties share the mean rank as in scipy.stats.spearmanr).
A constant column has correlation 0. Latents are matched one-to-one to
factors by the linear sum assignment on -|corr| (`nearid_jax.assignment`,
on device); MCC is the mean |corr| over the min(d, K) matched pairs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nearid_jax import assignment
from nearid_jax import parallel
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models


def correlation_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
  """[p, q] Pearson correlations between columns of a [n, p] and b [n, q]."""
  a = a - jnp.mean(a, axis=0)
  b = b - jnp.mean(b, axis=0)
  na = jnp.sqrt(jnp.sum(a * a, axis=0))
  nb = jnp.sqrt(jnp.sum(b * b, axis=0))
  cov = jnp.dot(a.T, b, precision=jax.lax.Precision.HIGHEST)
  denom = na[:, None] * nb[None, :]
  return jnp.where(denom > 0, cov / jnp.where(denom > 0, denom, 1.0), 0.0)


def rank_columns(a: jax.Array) -> jax.Array:
  """Average ranks (1-based, ties averaged) of each column of [n, p]."""
  return jax.vmap(linear_models.average_ranks_x2, in_axes=1, out_axes=1)(
      a).astype(jnp.float32) * 0.5


def _run(z, v, spearman):
  if spearman:
    z = rank_columns(z)          # v comes ranked (once for all runs)
  corr = correlation_matrix(z, v)                  # [d, K]
  rows, cols = assignment.linear_sum_assignment(-jnp.abs(corr))
  return {"mcc": jnp.mean(jnp.abs(corr[rows, cols]))}


@functools.partial(parallel.jit, static_argnames=("spearman",))
def _runs(z, v, spearman):
  if spearman:
    v = jax.vmap(rank_columns)(v)
  v = jnp.broadcast_to(v, z.shape[:2] + v.shape[2:])
  return parallel.map_runs(lambda a, b: _run(a, b, spearman), z, v)


def mcc(z, factors, *, method: str = "pearson") -> dict:
  """Mean absolute correlation of Hungarian-matched latents and factors.

  Args:
    z: [n, d] codes or [R, n, d].
    factors: [n, K] or [R, n, K] factor values (numeric; the values, not
      their class indices, are correlated).
    method: "pearson" or "spearman".

  Returns:
    {"mcc": float} (or [R] array).

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).normal(size=(500, 3))
    >>> round(mcc(-2.0 * u[:, [2, 0, 1]], u)["mcc"], 4)
    1.0
  """
  if method not in ("pearson", "spearman"):
    raise ValueError(f"method must be 'pearson' or 'spearman', got "
                     f"{method!r}.")
  zr, batched = inputs.as_runs("z", z)
  r, n, _ = zr.shape
  fac = inputs.encode_factors("factors", factors, n, r, warn=False)
  out = _runs(zr, jnp.asarray(fac.values), method == "spearman")
  return inputs.to_host(out, batched)
