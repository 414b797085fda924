"""Fitting each map class from moments (one pair; vmapped by the callers).

Every map is affine, h(z) = M z + b, and is fitted on centred coordinates
from the fit-row moments of a target run t and a source run s (`Runs`) and
their cross-covariance c [d_t, d_s]: one small function per class below.
`rel` is the ratio of the source's to the target's scale factor (see
`stats`): the classes that cannot rescale (identity, perm, rigid) carry it
so that ε stays in the target's units; the others absorb it in their fit.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import assignment
from nearid_jax import ica as ica_lib
from nearid_jax import parallel
from nearid_jax import validation
from nearid_jax.align import devices
from nearid_jax.align import options as options_lib
from nearid_jax.align.stats import Runs, mm


class AffineMap(NamedTuple):
  """h(z) = z @ matrix.T + offset, mapping source rows to target rows.

  Attributes:
    matrix: [d_out, d_s] float array (d_out = d_t, or max(d_t, d_s) when a
      smaller target is zero-padded).
    offset: [d_out] float array.
  """
  matrix: jax.Array
  offset: jax.Array

  def __call__(self, z):
    return mm(jnp.asarray(z), self.matrix.T) + self.offset


class ICAMaps(NamedTuple):
  """ICA of a stack of runs: unmixing [R, k, d], mixing [R, d, k]."""
  unmixing: jax.Array
  mixing: jax.Array


# --- ICA of the runs ----------------------------------------------------------


def ica_key(key):
  return jax.random.split(key, 3)[2]


def ica_options(options: dict | None) -> tuple:
  opts = {"max_iter": 400, "tol": 1e-4}
  opts.update(options or {})
  return tuple(sorted(opts.items()))


@functools.partial(parallel.jit,
                   static_argnames=("n_components", "options"))
def fit_ica(xf, sd, key, *, n_components: int, options: tuple) -> Any:
  """FastICA of every run of xf [R, n_fit, d], all from the same start.

  With as many components as columns, each column is standardised first
  (sd [R, d]): the sources are the same in exact arithmetic, and a latent
  with a tiny spread is whitened from its own scale instead of being lost
  under the rounding of the largest. With fewer components the PCA step
  of FastICA works on the raw scale, as its reduction means to.
  """
  keys = jax.random.split(key, 1)[jnp.zeros(xf.shape[0], jnp.int32)]
  std = n_components == xf.shape[-1]
  sd1 = jnp.where(sd > 0, sd, 1)
  x = xf / sd1[:, None, :] if std else xf
  res = ica_lib.fastica(x, keys, n_components=n_components, **dict(options))
  unmixing, mixing = res.unmixing, res.mixing
  if std:
    unmixing = unmixing / sd1[:, None, :]
    mixing = mixing * sd1[:, :, None]
  return ICAMaps(unmixing, mixing), res.converged, res.valid


def factor_ica(runs: Runs) -> ICAMaps:
  """The factors' own "ICA": their fit-row standardisation (no rotation).

  The factors are the sources already; unit variance on the fit rows makes
  them commensurate with the ICA sources of the runs.
  """
  sd = runs.sd
  return ICAMaps(jax.vmap(jnp.diag)(1 / sd), jax.vmap(jnp.diag)(sd))


# --- a square problem for the geometric classes -------------------------------


class Adapted(NamedTuple):
  """The geometric kinds' problem in a common dimension k."""
  c: jax.Array        # [k, k] cross-covariance target x source
  var_t: jax.Array    # [k] target variances
  var_s: jax.Array    # [k] source variances
  tr_s: jax.Array     # [] total source variance
  embed: Callable     # [k, k] map -> [d_out, d_s] map


def d_out(dt: int, ds: int, dims: str) -> int:
  return max(dt, ds) if dims == "pad" else dt


def adapt(c, t: Runs, s: Runs, dims: str) -> Adapted:
  """Brings c [d_t, d_s] and the variances to a square problem."""
  dt, ds = c.shape
  var_t, var_s = jnp.diagonal(t.cov), jnp.diagonal(s.cov)
  tr_s = jnp.sum(var_s)
  if dt == ds:
    return Adapted(c, var_t, var_s, tr_s, lambda m: m)
  if dims == "pad":
    k = max(dt, ds)
    c = jnp.pad(c, ((0, k - dt), (0, k - ds)))
    return Adapted(c, jnp.pad(var_t, (0, k - dt)),
                   jnp.pad(var_s, (0, k - ds)), tr_s, lambda m: m[:, :ds])
  if dt > ds:  # reduce the target to its top d_s principal axes
    v = t.evecs[:, :ds]
    return Adapted(mm(v.T, c), t.evals[:ds], var_s, tr_s,
                   lambda m: mm(v, m))
  v = s.evecs[:, :dt]  # reduce the source to its top d_t principal axes
  return Adapted(mm(c, v), var_t, s.evals[:dt], jnp.sum(s.evals[:dt]),
                 lambda m: mm(m, v.T))


def safe_corr(c, var_t, var_s):
  """c / sqrt(var_t var_s'), 0 where a variance is 0 (padding)."""
  den = jnp.sqrt(var_t[:, None] * var_s[None, :])
  return jnp.where(den > 0, c / jnp.where(den > 0, den, 1), 0)


def ica_corr(c, t: Runs, s: Runs, ica_t, ica_s):
  """Correlation of the target's and the source's ICA sources [k, k]."""
  wt, ws = ica_t.unmixing, ica_s.unmixing
  cross = mm(mm(wt, c), ws.T)
  vt = jnp.sum(mm(wt, t.cov) * wt, axis=1)
  vs = jnp.sum(mm(ws, s.cov) * ws, axis=1)
  return safe_corr(cross, vt, vs)


def match(c, t: Runs, s: Runs, ica_t, ica_s, opts: options_lib.Options):
  """Signed-permutation matchings the kinds need: {"perm"/"ica": SP}."""
  out = {}
  if "perm" in opts.kinds:
    a = adapt(c, t, s, opts.dims)
    out["perm"] = assignment.match_signed_permutation(
        safe_corr(a.c, a.var_t, a.var_s))
  if "ica" in opts.kinds:
    out["ica"] = assignment.match_signed_permutation(
        ica_corr(c, t, s, ica_t, ica_s))
  return out


# --- one function per class ---------------------------------------------------
# Each returns (M [d_out, d_s], c0 [d_out]): the prediction of a centred
# target row is `xs_centred @ M.T + c0`.


def _pad_rows(m, rows: int):
  return jnp.pad(m, ((0, rows - m.shape[0]), (0, 0)))


def fit_identity(c, t: Runs, s: Runs, rel, rows: int):
  """h(z) = z: no fit; the offset undoes the centring."""
  dt, ds = c.shape
  m = jnp.eye(rows, ds, dtype=c.dtype) * rel
  return m, mm(m, s.mean) - jnp.pad(t.mean, (0, rows - dt))


def fit_linear(c, s: Runs, rows: int):
  """Least squares (with the ridge folded into s.lin), from standardised
  moments: M = ((c / sd) Q) / sd."""
  sd1 = jnp.where(s.sd > 0, s.sd, 1)
  m = mm(c / sd1[None, :], s.lin) / sd1[None, :]
  return _pad_rows(m, rows), jnp.zeros((rows,), c.dtype)


def fit_ica_map(ica_t, ica_s, sp, rows: int):
  """Sources matched by signed permutation, back in target coordinates."""
  k = sp.perm.shape[0]
  ps = assignment.signed_permutation_matrix(sp.perm, sp.signs, k)
  m = mm(ica_t.mixing, mm(ps, ica_s.unmixing))
  return _pad_rows(m, rows), jnp.zeros((rows,), m.dtype)


def fit_perm(a: Adapted, sp, perm_scale: bool, rel, rows: int):
  """Signed permutation (optionally with a least-squares slope per pair)."""
  k = a.c.shape[0]
  if perm_scale:
    cols = jnp.clip(sp.perm, 0, k - 1)
    vs = a.var_s[cols]
    slope = jnp.where(vs > 0, a.c[jnp.arange(k), cols]
                      / jnp.where(vs > 0, vs, 1), 0)
    vals = jnp.where(sp.perm >= 0, slope, 0)
  else:
    vals = sp.signs * rel
  ma = assignment.signed_permutation_matrix(sp.perm, vals, k)
  return a.embed(ma), jnp.zeros((rows,), ma.dtype)


def fit_rigid(a: Adapted, rel, rows: int):
  """Orthogonal Procrustes: U V^T from the SVD of the cross-covariance."""
  u, _, vt = jnp.linalg.svd(a.c)
  ma = mm(u, vt) * rel
  return a.embed(ma), jnp.zeros((rows,), ma.dtype)


def fit_similarity(a: Adapted, rows: int):
  """Rigid times one isotropic scale (Umeyama)."""
  u, sv, vt = jnp.linalg.svd(a.c)
  ma = mm(u, vt) * jnp.where(a.tr_s > 0, jnp.sum(sv) / a.tr_s, 0)
  return a.embed(ma), jnp.zeros((rows,), ma.dtype)


def fit_maps(c, t: Runs, s: Runs, ica_t, ica_s, matches,
             opts: options_lib.Options, rel=None):
  """Maps of every kind for one pair, on centred coordinates.

  Returns:
    matrices [K, d_out, d_s] and centred offsets [K, d_out] (non-zero only
    for "identity", which fits no translation).
  """
  dt, ds = c.shape
  rows = d_out(dt, ds, opts.dims)
  rel = jnp.ones((), c.dtype) if rel is None else rel.astype(c.dtype)
  geometric = {"perm", "rigid", "similarity"} & set(opts.kinds)
  a = adapt(c, t, s, opts.dims) if geometric else None
  fits = {
      "identity": lambda: fit_identity(c, t, s, rel, rows),
      "linear": lambda: fit_linear(c, s, rows),
      "ica": lambda: fit_ica_map(ica_t, ica_s, matches.get("ica"), rows),
      "perm": lambda: fit_perm(a, matches.get("perm"), opts.perm_scale, rel,
                               rows),
      "rigid": lambda: fit_rigid(a, rel, rows),
      "similarity": lambda: fit_similarity(a, rows),
  }
  mats, offs = zip(*(fits[k]() for k in opts.kinds))
  return jnp.stack(mats), jnp.stack(offs)


def run_ica(runs: Runs, key, k: int, options, name: str, concrete):
  """FastICA maps of the runs (k components) and their validity; warns
  (host input) naming the runs that did not converge."""
  maps, converged, valid = fit_ica(
      runs.xf, runs.sd, ica_key(key), n_components=k,
      options=ica_options(options))
  if concrete:
    conv = np.asarray(converged)
    if not conv.all():
      warnings.warn(
          f"FastICA did not converge for {name} run(s) "
          f"{validation._short_list(np.flatnonzero(~conv))}; their 'ica' "  # pylint: disable=protected-access
          "ε may be too high. Pass ica_options={'max_iter': ...} or "
          "{'n_restarts': 3}.", ica_lib.ConvergenceWarning, stacklevel=3)
  return maps, valid
