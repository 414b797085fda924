"""Unsupervised Disentanglement Ranking (Duan et al. 2020), disentanglement_lib.

UDR needs no factors: it scores each of R runs by how similar its
representation is to the other runs'. Following disentanglement_lib
`compute_udr_sklearn`:
1. each run's codes are standardised (per latent, over the n rows; a
   constant latent gets std 1); with `kl` given, latents whose mean KL is
   <= 0.01 are zeroed and those <= `kl_threshold` are left out of the
   score;
2. for every ordered pair (i, j), i != j, a similarity matrix S [d_i, d_j]:
   "lasso": |coefficients| of a multi-output `Lasso(alpha=0.1)` regressing
   run j's codes on run i's (on device by coordinate descent);
   "spearman": |Spearman correlation| between every latent pair;
3. the relative-strength score of S: (mean over columns of max^2 / sum +
   mean over rows of max^2 / sum) / 2 (a zero column or row counts 0);
4. run i's UDR is the median over j != i of score(j, i).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import validation
from nearid_jax.metrics import inputs
from nearid_jax.metrics import linear_models
from nearid_jax.metrics import mcc_score


def relative_strength(sim: jax.Array, row_mask: jax.Array,
                      col_mask: jax.Array) -> jax.Array:
  """disentanglement_lib's relative-strength score of |similarity| [p, q]."""
  s = jnp.where(row_mask[:, None] & col_mask[None, :], sim, 0.0)

  def side(a, axis, mask):
    tot = jnp.sum(a, axis=axis)
    val = jnp.where(tot > 0, jnp.max(a, axis=axis) ** 2 /
                    jnp.where(tot > 0, tot, 1.0), 0.0)
    return jnp.sum(jnp.where(mask, val, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

  return 0.5 * (side(s, 0, col_mask) + side(s, 1, row_mask))


def _similarity(xi, xj, method, alpha):
  n = xi.shape[0]
  if method == "spearman":
    return jnp.abs(mcc_score.correlation_matrix(
        mcc_score.rank_columns(xi), mcc_score.rank_columns(xj)))
  hi = jax.lax.Precision.HIGHEST
  xc = xi - jnp.mean(xi, 0)
  yc = xj - jnp.mean(xj, 0)
  gram = jnp.dot(xc.T, xc, precision=hi) / n
  xty = jnp.dot(xc.T, yc, precision=hi) / n
  return jnp.abs(linear_models.fit_lasso_gram(gram, xty, alpha))


@functools.partial(jax.jit, static_argnames=("method",))
def _udr(z, keep_in, keep_score, method, alpha):
  r = z.shape[0]
  x, _, _ = inputs.standardize(z)
  x = x * keep_in[:, None, :]
  ii, jj = np.nonzero(~np.eye(r, dtype=bool))

  def pair(i, j):
    sim = _similarity(x[i], x[j], method, alpha)
    return relative_strength(sim, keep_score[i], keep_score[j])

  scores = jax.vmap(pair)(jnp.asarray(ii), jnp.asarray(jj))
  pairwise = jnp.zeros((r, r)).at[ii, jj].set(scores)
  # Column i without the diagonal: score(j, i) for j != i.
  off = jnp.asarray(np.stack([np.delete(np.arange(r), i) for i in range(r)]))
  per_model = jnp.median(pairwise.T[jnp.arange(r)[:, None], off], axis=1)
  return per_model, pairwise


def udr(zs, *, method: str = "lasso", kl=None, kl_threshold: float = 0.01,
        alpha: float = 0.1) -> dict:
  """UDR score of each of R >= 2 runs.

  Args:
    zs: [R, n, d] codes of R runs on the same n inputs.
    method: "lasso" (disentanglement_lib's default) or "spearman".
    kl: optional [R, d] mean KL divergence of each latent (VAEs); without it
      every latent counts.
    kl_threshold: latents with KL <= this are left out of the score.
    alpha: Lasso strength.

  Returns:
    {"udr": [R] array, "pairwise": [R, R] array with score(i, j) off the
    diagonal (0 on it)}.

  Examples:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).normal(size=(400, 3))
    >>> zs = np.stack([u, -u[:, [1, 2, 0]], 2 * u[:, [2, 0, 1]]])
    >>> np.round(udr(zs.astype(np.float32))["udr"], 2).tolist()  # shrinkage
    [0.9, 0.9, 0.9]
  """
  if method not in ("lasso", "spearman"):
    raise ValueError(f"method must be 'lasso' or 'spearman', got {method!r}.")
  z, batched = inputs.as_runs("zs", zs)
  if not batched or z.shape[0] < 2:
    raise ValueError("udr compares runs: zs must be [R, n, d] with R >= 2.")
  r, _, d = z.shape
  if kl is None:
    keep_in = jnp.ones((r, d), jnp.float32)
    keep_score = jnp.ones((r, d), bool)
  else:
    kl = np.asarray(kl, np.float64)
    if kl.shape != (r, d):
      raise ValueError(f"kl must be [R, d] = {(r, d)}, got {kl.shape}.")
    validation.check_finite("kl", kl, run_axis=0)
    keep_in = jnp.asarray(kl > 0.01, jnp.float32)
    keep_score = jnp.asarray(kl > kl_threshold)
  per_model, pairwise = _udr(z, keep_in, keep_score, method, alpha)
  return {"udr": np.asarray(per_model, np.float64),
          "pairwise": np.asarray(pairwise, np.float64)}
