"""FastICA in JAX: batched over runs, jittable, chunked over rows.

Whitening + contrast-function ICA turns a representation that is identifiable
up to a linear map into one identifiable up to a signed permutation
(docs/paper.md, Theorem 2); `nearid_jax.align` uses it to map one run onto
another.

The algorithm is Hyvärinen's fixed point (Hyvärinen & Oja 2000) with
scikit-learn's conventions, so that results and tolerances mean the same thing
as `sklearn.decomposition.FastICA(whiten="unit-variance")`:

  * whitening by PCA (eigenvectors signed so their first entry is positive),
    whitened data with unit variance, optional reduction to `n_components`;
  * `parallel`: W <- sym(E[g(W x) x^T] - diag(E[g'(W x)]) W), stopping when
    max_i | |(W_new W^T)_ii| - 1 | < tol; `deflation`: one row at a time with
    Gram-Schmidt against the rows already found;
  * a user contrast `fun(y) -> (g(y), mean g'(y))` takes y: [m, c] (components
    by samples, as in scikit-learn) and returns the mean over the last axis.

What we add: one compiled program for a stack of runs (`x: [R, n, d]`), each
converging on its own; the per-iteration moments accumulated over row chunks
(memory O(chunk * k) beyond the data, and cache-resident on CPU); restarts
kept by their negentropy; a deterministic sign for each component; and input
checks on the host before anything compiles (under `jax.jit` invalid runs
come back with `valid=False` and NaN outputs instead).

Batched use: `fastica(x, key)` with `x: [R, n, d]` fits R runs in one program
(`key` a single key, split into R, or `[R]` keys); `jax.vmap(fastica)` works
as well and gives the same numbers, without the host-side checks. Under
`jax.vmap` the whitening and the solver are `custom_vmap` functions whose
batching rule is the batched implementation (runs spread over devices and,
on CPU, fitted one after another so each stops when it converges), not a
batched while loop that iterates every run until the slowest converges.

Iteration counts against scikit-learn. Given the same `w_init` both take
the same number of iterations (same criterion, same symmetric start
`sym(w_init)`, and the Newton-Schulz polar factor is the same matrix as
scikit-learn's eigh-based `(W W^T)^(-1/2) W`); the trajectories differ only
by float32 rounding, which can move the crossing of `tol` by one iteration
either way. With random starts the counts differ by the draw alone (JAX's
and NumPy's generators): on n = 10^5, d = 48 data of five source families
(12 seeds), 8.6 iterations on average for us, 9.0 for scikit-learn; a
single draw ranged 7-14. So there is no systematic gap to close: a
benchmark must fix `w_init` for both (`benchmarks/ica.py` does).

What does save iterations is where they run: for large n (>= 25,000 rows,
`warm_start="auto"`) the parallel algorithm first iterates on a strided
subsample of the rows and then finishes on all rows, where it needs about
two steps; the answer is still the full data's fixed point to `tol`. That
takes the cost from ~8-10 full-data iterations to ~4-7 at n = 1e5
(`benchmarks/ica.py`); `warm_start=None` is scikit-learn's schedule.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import flax.struct
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel
from nearid_jax import validation

__all__ = [
    "ConvergenceWarning", "ICAResult", "fastica", "transform",
    "inverse_transform", "amari_distance",
]

_HIGHEST = lax.Precision.HIGHEST


class ConvergenceWarning(UserWarning):
  """FastICA stopped at `max_iter` before reaching `tol` in some runs."""


@flax.struct.dataclass
class ICAResult:
  """A fitted ICA model (leading [R] axis on every field for a batch of runs).

  Attributes:
    sources: [n, k] recovered sources, zero mean and unit variance.
    unmixing: [k, d] sources = (x - mean) @ unmixing.T.
    mixing: [d, k] x ~= sources @ mixing.T + mean (exact when k = d).
    mean: [d] column means of the training data.
    whitening: [k, d] PCA whitening matrix (unit-variance whitened data are
      (x - mean) @ whitening.T); unmixing = diag(1/std) rotation @ whitening.
    n_iter: [] int32, fixed-point iterations (deflation: the most any
      component needed; with a warm start, those on the subsample and on
      all rows together).
    converged: [] bool, the convergence measure fell below `tol`.
    delta: [] final convergence measure, max_i | |(W_new W^T)_ii| - 1 |
      (scikit-learn's `lim`).
    objective: [] negentropy approximation sum_i (E G(s_i) - E G(nu))^2 of the
      kept solution (for a callable contrast, the squared Stein discrepancy
      sum_i (E[s_i g(s_i)] - E[g'(s_i)])^2); restarts keep the largest.
    rank: [] int32, numerical rank of the covariance.
    valid: [] bool, False when the input held NaN/Inf or its covariance had
      rank below k (then every float output is NaN). Always True for results
      of a host call, which raises instead.
  """
  sources: jax.Array
  unmixing: jax.Array
  mixing: jax.Array
  mean: jax.Array
  whitening: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  delta: jax.Array
  objective: jax.Array
  rank: jax.Array
  valid: jax.Array


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static (compile-time) settings of one fit."""
  n_components: int
  algorithm: str
  fun: Any  # "logcosh" | "exp" | "cube" | callable
  whiten_solver: str
  n_restarts: int
  chunk_size: int
  has_w_init: bool
  row_shards: int = 1  # devices one run's rows are split over
  warm_stride: int = 1  # parallel: first iterate on every s-th row


# ---------------------------------------------------------------------------
# Contrasts.


def _contrast(fun, alpha):
  """Returns `g(y) -> (g(y), sum over the last axis of g'(y))` for y [m, c]."""
  if fun == "logcosh":
    def g(y):
      t = jnp.tanh(alpha * y)
      # g' = alpha (1 - tanh^2), summed without materialising it.
      return t, alpha * (y.shape[-1] - jnp.sum(t * t, axis=-1))
  elif fun == "exp":
    def g(y):
      e = jnp.exp(-0.5 * y * y)
      return y * e, jnp.sum((1 - y * y) * e, axis=-1)
  elif fun == "cube":
    def g(y):
      return y * y * y, 3 * jnp.sum(y * y, axis=-1)
  else:
    def g(y):
      gy, gp_mean = fun(y)
      return gy, gp_mean * y.shape[-1]
  return g


def _logcosh(u):
  a = jnp.abs(u)
  return a + jnp.log1p(jnp.exp(-2 * a)) - np.log(2.0)


# Contrast functions G with G' = g, for the negentropy objective.
_BIG_G = {
    "logcosh": lambda y, alpha: _logcosh(alpha * y) / alpha,
    "exp": lambda y, alpha: -jnp.exp(-0.5 * y * y),
    "cube": lambda y, alpha: 0.25 * y ** 4,
}


def _negentropy_terms(fun, alpha):
  """Returns `h(y) -> [t, m]` row sums (y: [m, c]) that `_objective` uses."""
  if callable(fun):
    def h(y):
      gy, gp_mean = fun(y)
      return jnp.stack([jnp.sum(y * gy, axis=-1), gp_mean * y.shape[-1]])
    return h
  return lambda y: jnp.sum(_BIG_G[fun](y, alpha), axis=-1)[None]


def _objective(fun, alpha, sums, n, dtype):
  """Negentropy objective from the row sums of `_negentropy_terms`."""
  means = sums / n
  if callable(fun):
    # Stein's identity: E[nu g(nu)] = E[g'(nu)] for a standard normal nu.
    return jnp.sum((means[0] - means[1]) ** 2)
  nodes, weights = np.polynomial.hermite_e.hermegauss(80)
  e_gauss = jnp.sum(jnp.asarray(weights / np.sqrt(2 * np.pi), dtype)
                    * _BIG_G[fun](jnp.asarray(nodes, dtype), alpha))
  return jnp.sum((means[0] - e_gauss) ** 2)


# ---------------------------------------------------------------------------
# Row-chunked reductions.


def _auto_chunk(n: int, k: int, runs_per_device: int = 1) -> int:
  """Rows per chunk for k columns (`parallel.Policy.chunk_elems` per run).

  The runs a device vmaps together (`Policy.runs_per_group`; 0: all its
  `runs_per_device`) share the budget.
  """
  p = parallel.policy()
  together = min(p.runs_per_group or runs_per_device, runs_per_device)
  return int(max(256, min(n, p.chunk_elems // (k * together))))


def _warm_stride(warm_start, n: int, k: int, algorithm: str) -> int:
  """The row stride of the warm start (1: none); see `fastica`."""
  if algorithm != "parallel" or warm_start is None:
    return 1
  if warm_start == "auto":
    # Measured (benchmarks/ica.py, n = 1e5): the subsample stage needs more
    # iterations the fewer rows per component it has (d = 64: 18 at 390
    # rows per component, 53 at 195), and the full-data stage about 2, so
    # the cost in full-data iterations, i1 / s + 2, is lowest near 300 k
    # rows in the subsample; below 12,500 rows it is not worth a stage.
    s = min(8, n // (320 * k), n // 12_500)
    return s if s >= 2 else 1
  if n // int(warm_start) <= k:
    raise ValueError(f"warm_start={warm_start} leaves {n // int(warm_start)} "
                     f"of n={n} rows for k={k} components; use a smaller "
                     f"stride, or warm_start=None.")
  return int(warm_start)


# ---------------------------------------------------------------------------
# Whitening.


def _rank_rtol(d: int, dtype, solver: str) -> float:
  """Eigenvalue ratio lambda_i / lambda_max below which a direction is noise.

  `eigh` forms the covariance in `dtype`: an exactly singular direction comes
  out at about 0.1-0.3 eps (measured, d <= 256), so 4 eps separates it from
  real variance while keeping condition numbers (std ratios) up to ~1400 in
  float32. `svd` works on the centred data: its floor is about eps^2 in
  eigenvalue terms.
  """
  eps = float(np.finfo(dtype).eps)
  return 4 * eps if solver == "eigh" else d * (4 * eps) ** 2


def _whiten(x, solver: str, chunk: int, shards: int = 1):
  """Mean, eigenvalues (descending), eigenvectors [d, d] of the covariance.

  shards > 1 splits the rows over that many devices (`parallel.Rows`).
  """
  n, _ = x.shape
  rows = parallel.Rows(x, shards, chunk)
  if solver == "eigh":
    # One pass over the data for the sum and the Gram matrix, of rows
    # shifted by the mean of the first rows: with |shift - mean|^2 ~
    # var / 4096, G/n - dm dm^T cancels nothing (as accurate as centring
    # first) and the data are read once instead of twice.
    shift = jnp.mean(x[:min(n, 4096)], axis=0)

    def stats(xc):
      xc = xc - shift
      return jnp.sum(xc, axis=0), jnp.matmul(xc.T, xc, precision=_HIGHEST)
    s1, gram = rows.sum(stats)
    dm = s1 / n
    mean = shift + dm
    cov = gram / n - jnp.outer(dm, dm)
    lam, u = jnp.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]
  else:
    mean = rows.sum(lambda xc: jnp.sum(xc, axis=0)) / n
    # QR first so the SVD is of a [d, d] factor; the singular values are
    # those of the centred data, without squaring its condition number.
    # Split rows: the R factors of the blocks, stacked, have the same R
    # factor as all rows (tall-skinny QR).
    qr_r = lambda a: jnp.linalg.qr(a - mean, mode="r")  # noqa: E731
    r = rows.blocks(qr_r)
    if shards > 1:
      r = jnp.linalg.qr(jnp.concatenate([r, rows.tail - mean]), mode="r")
    _, s, vt = jnp.linalg.svd(r, full_matrices=False)
    lam, u = s * s / n, vt.T
  # scikit-learn's convention: each eigenvector's first entry is positive.
  u = u * jnp.where(u[:1] < 0, -1, 1).astype(u.dtype)
  return mean, lam, u


# ---------------------------------------------------------------------------
# Fixed-point solvers in the whitened space (xw: [n, k], unit variance).


def _sym_decorrelation(w):
  """(w w^T)^(-1/2) w, the orthogonal polar factor of w [k, k].

  By the Newton-Schulz iteration x <- 1.5 x - 0.5 x x^T x (matrix products
  only) rather than scikit-learn's eigh of w w^T: the same matrix, more
  accurate (the eigh route squares the condition number), and no LAPACK call
  inside the loop (on CPU those are ~50x slower than the arithmetic when
  the cores are shared; on GPU they are slow for small matrices).
  """
  eye = jnp.eye(w.shape[0], dtype=w.dtype)
  # sqrt(||w w^T||_inf) >= sigma_max, so the scaled singular values are <= 1
  # (the iteration converges for all of them in (0, sqrt(3))).
  x = w * lax.rsqrt(jnp.max(jnp.sum(
      jnp.abs(jnp.matmul(w, w.T, precision=_HIGHEST)), axis=1)))

  def step(x):
    a = jnp.matmul(x, x.T, precision=_HIGHEST)
    return (jnp.matmul(1.5 * eye - 0.5 * a, x, precision=_HIGHEST),
            jnp.max(jnp.abs(a - eye)))

  def cond(state):
    i, _, res = state
    return (i < 100) & (res > np.sqrt(np.finfo(w.dtype).eps))

  def body(state):
    i, x, _ = state
    x, res = step(x)
    return i + 1, x, res

  init = (jnp.zeros((), jnp.int32), x, jnp.full((), jnp.inf, w.dtype))
  _, x, _ = lax.while_loop(cond, body, init)
  # Convergence is quadratic: two more steps reach rounding level.
  return step(step(x)[0])[0]


# Most iterations of the subsample stage of a warm start (measured: 10-36 at
# the "auto" strides, n = 1e5, d = 32-64).
_WARM_MAX_ITER = 40


def _iterate_parallel(xw: parallel.Rows, w0, tol, max_iter, g):
  """Symmetric fixed-point iterations from an orthogonal w0 until tol."""
  n = xw.n

  def update(w):
    def moments(xc):
      y = jnp.matmul(w, xc.T, precision=_HIGHEST)  # [k, c]
      gy, gp = g(y)
      return jnp.matmul(gy, xc, precision=_HIGHEST), gp
    gx, gp = xw.sum(moments)
    return _sym_decorrelation(gx / n - (gp / n)[:, None] * w)

  def cond(state):
    i, _, lim = state
    return (i < max_iter) & (lim >= tol)

  def body(state):
    i, w, _ = state
    w1 = update(w)
    lim = jnp.max(jnp.abs(jnp.abs(jnp.sum(w1 * w, axis=1)) - 1))
    return i + 1, w1, lim

  init = (jnp.zeros((), jnp.int32), w0, jnp.full((), jnp.inf, w0.dtype))
  n_iter, w, lim = lax.while_loop(cond, body, init)
  return w, n_iter, lim


def _solve_parallel(xw: parallel.Rows, w_init, tol, max_iter, g,
                    warm_stride: int = 1):
  """Symmetric FastICA; with warm_stride > 1, first on every warm_stride-th
  row until tol, then on all rows from there (`fastica(warm_start=...)`).

  The second stage ends by the same criterion on all rows, and returns the
  iterate of its last full-data step: the fixed point of the full data to
  the same tol, whatever the start. max_iter bounds both stages together
  (the first stops one short so the second always runs). The first stage
  also stops after `_WARM_MAX_ITER` iterations: a subsample that wanders
  (too few rows per component for its own fixed point) then costs at most
  that many subsample iterations before the full data take over.
  """
  w = _sym_decorrelation(w_init)
  if warm_stride == 1:
    return _iterate_parallel(xw, w, tol, max_iter, g)
  w, i1, _ = _iterate_parallel(xw.every(warm_stride), w, tol,
                               jnp.minimum(max_iter - 1, _WARM_MAX_ITER), g)
  w, i2, lim = _iterate_parallel(xw, w, tol, max_iter - i1, g)
  return w, i1 + i2, lim


def _solve_deflation(xw: parallel.Rows, w_init, tol, max_iter, g):
  n, k = xw.n, w_init.shape[0]

  def component(j, carry):
    big_w, n_iter_max, lim_max = carry
    w = w_init[j]
    w = w / jnp.sqrt(jnp.sum(w * w))

    def update(w):
      def moments(xc):
        y = jnp.matmul(w[None], xc.T, precision=_HIGHEST)  # [1, c]
        gy, gp = g(y)
        return jnp.matmul(gy, xc, precision=_HIGHEST)[0], gp[0]
      gx, gp = xw.sum(moments)
      w1 = gx / n - gp / n * w
      # Rows >= j of big_w are still zero, so this is Gram-Schmidt against
      # the components already found.
      w1 = w1 - jnp.matmul(jnp.matmul(w1, big_w.T, precision=_HIGHEST), big_w,
                           precision=_HIGHEST)
      return w1 / jnp.sqrt(jnp.sum(w1 * w1))

    def cond(state):
      i, _, lim = state
      return (i < max_iter) & (lim >= tol)

    def body(state):
      i, w, _ = state
      w1 = update(w)
      return i + 1, w1, jnp.abs(jnp.abs(jnp.sum(w1 * w)) - 1)

    init = (jnp.zeros((), jnp.int32), w, jnp.full((), jnp.inf, w.dtype))
    i, w, lim = lax.while_loop(cond, body, init)
    # NaN-aware maximum, so an invalid run reports NaN rather than hiding it.
    lim_max = jnp.where(jnp.isnan(lim) | (lim > lim_max), lim, lim_max)
    return big_w.at[j].set(w), jnp.maximum(n_iter_max, i), lim_max

  init = (jnp.zeros((k, k), w_init.dtype), jnp.zeros((), jnp.int32),
          jnp.zeros((), w_init.dtype))
  return lax.fori_loop(0, k, component, init)


# ---------------------------------------------------------------------------
# One run, pure.


def _finish(x, key, w_init, tol, max_iter, alpha, mean, lam, u,
            cfg: _Config) -> ICAResult:
  """FastICA of one run x [n, d] given its whitening statistics."""
  n, d = x.shape
  k = cfg.n_components
  dtype = x.dtype

  rtol = _rank_rtol(d, dtype, cfg.whiten_solver)
  rank = jnp.sum(lam > lam[0] * rtol).astype(jnp.int32)
  valid = jnp.all(jnp.isfinite(lam)) & (lam[k - 1] > lam[0] * rtol)
  # Keep the arithmetic finite on rank-deficient runs (NaN/Inf in x makes
  # every iterate NaN, which stops the loops at once); outputs become NaN.
  lam_k = jnp.where(valid, lam[:k], 1)
  u_k = jnp.where(valid, u[:, :k], jnp.eye(d, k, dtype=dtype))
  whitening = (u_k * lax.rsqrt(lam_k)).T  # [k, d]
  xw = parallel.Rows(x, cfg.row_shards, cfg.chunk_size).apply(
      lambda xc: jnp.matmul(xc - mean, whitening.T, precision=_HIGHEST))

  g = _contrast(cfg.fun, alpha)
  solve = (functools.partial(_solve_parallel, warm_stride=cfg.warm_stride)
           if cfg.algorithm == "parallel" else _solve_deflation)
  h = _negentropy_terms(cfg.fun, alpha)
  if cfg.has_w_init:
    inits = w_init.astype(dtype)[None]
  else:
    inits = jax.random.normal(key, (cfg.n_restarts, k, k), dtype)
  if cfg.n_restarts == 1:
    ws, n_iters, lims = jax.tree.map(
        lambda a: a[None], solve(xw, inits[0], tol, max_iter, g))
  else:
    ws, n_iters, lims = jax.vmap(
        lambda w0: solve(xw, w0, tol, max_iter, g))(inits)

  # One pass over the data for the moments of every candidate's outputs
  # (mean, variance, third moment, contrast), without materialising them.
  n_cand = ws.shape[0]

  def moments(xc):
    # One 2-D product for all candidates (a batched dot is slower on CPU),
    # rows by components: the sums then run down columns, which XLA:CPU
    # vectorises (half the time of sums along rows at n = 1e5, d = 48-64).
    y = jnp.matmul(xc, ws.reshape(n_cand * k, k).T, precision=_HIGHEST)
    y2 = y * y
    sums = [jnp.sum(y, 0), jnp.sum(y2, 0), jnp.sum(y2 * y, 0)]
    if callable(cfg.fun):  # a user contrast takes [components, samples]
      hs = jax.vmap(h)(y.T.reshape(n_cand, k, -1))
    else:
      hs = jnp.sum(_BIG_G[cfg.fun](y, alpha), 0).reshape(n_cand, 1, k)
    return tuple(a.reshape(n_cand, k) for a in sums) + (hs,)
  s1, s2, s3, hs = xw.sum(moments)
  objs = jax.vmap(lambda t: _objective(cfg.fun, alpha, t, n, dtype))(hs)
  best = jnp.argmax(jnp.where(jnp.isnan(objs), -jnp.inf, objs))
  w, n_iter, lim, objective = ws[best], n_iters[best], lims[best], objs[best]
  mu, m2, m3 = s1[best] / n, s2[best] / n, s3[best] / n
  var = m2 - mu * mu
  std = jnp.sqrt(var)
  skew = (m3 - 3 * mu * var - mu ** 3) / (var * std)

  # pinv(unmixing) in closed form: whitening^+ = u_k sqrt(lam_k) and w is
  # orthogonal.
  mixing = jnp.matmul(u_k * jnp.sqrt(lam_k), w.T, precision=_HIGHEST) * std
  # Deterministic sign: positive skewness or, when the skewness is
  # numerically zero (symmetric sources), a positive largest-|loading| entry.
  big = jnp.take_along_axis(
      mixing, jnp.argmax(jnp.abs(mixing), axis=0)[None], axis=0)[0]
  skew_tol = float(np.sqrt(np.finfo(dtype).eps))
  sign = jnp.where(jnp.abs(skew) > skew_tol, jnp.sign(skew), jnp.sign(big))
  sign = jnp.where(sign == 0, 1, sign).astype(dtype)
  # Unit-variance sources (scikit-learn's whiten="unit-variance"); NaN
  # everywhere for an invalid run.
  scale = jnp.where(valid, sign / std, jnp.nan)
  w_out = w * scale[:, None]
  sources = xw.apply(
      lambda xc: jnp.matmul(xc, w_out.T, precision=_HIGHEST)).concat()
  unmixing = jnp.matmul(w_out, whitening, precision=_HIGHEST)
  mixing = mixing * jnp.where(valid, sign, jnp.nan)
  nan = lambda a: jnp.where(valid, a, jnp.nan)  # noqa: E731
  return ICAResult(
      sources=sources, unmixing=unmixing, mixing=mixing, mean=mean,
      whitening=nan(whitening), n_iter=n_iter, converged=valid & (lim < tol),
      delta=nan(lim), objective=nan(objective), rank=rank, valid=valid)


def _fit_one(x, key, w_init, tol, max_iter, alpha, cfg: _Config) -> ICAResult:
  """FastICA of one run x [n, d]; pure, jittable and vmappable."""
  mean, lam, u = _whiten(x, cfg.whiten_solver, cfg.chunk_size,
                         cfg.row_shards)
  return _finish(x, key, w_init, tol, max_iter, alpha, mean, lam, u, cfg)


def _over_runs(fn, batched, in_axes):
  """fn mapped over the leading run axis of the args marked 0 in in_axes.

  `parallel.map_runs` spreads the runs over the devices and, within a
  device, maps them one at a time on CPU (a batched product of small
  matrices is slower there than the same products one run at a time, and
  each run iterates until it alone converges) or vmaps them on
  accelerators (`parallel.Policy.runs_per_group`).
  """
  if not batched:
    return fn
  return lambda *args: parallel.map_runs(fn, *args, in_axes=in_axes)


def _vmap_as_runs(one, runs):
  """`one` (a one-run function of arrays), whose `jax.vmap` is `runs`.

  A user's `jax.vmap(fastica)` would otherwise batch the solver's while
  loop, so that every run iterates until the slowest has converged, and
  bypass the batched path's scheduling (runs spread over devices, one at a
  time on CPU): measured 1.3x scikit-learn's loop where the batched call
  gave 2.8x. `runs(*args, in_axes=...)` gets the args with their run axis
  first (in_axes 0) or unbatched (None).
  """
  @jax.custom_batching.custom_vmap
  def fn(*args):
    return one(*args)

  @fn.def_vmap
  def _rule(axis_size, in_batched, *args):
    del axis_size
    axes = tuple(0 if any(jax.tree.leaves(b)) else None for b in in_batched)
    out = runs(*args, in_axes=axes)
    return out, jax.tree.map(lambda _: True, out)
  return fn


@functools.partial(parallel.jit,
                   static_argnames=("solver", "chunk", "batch", "shards"))
def _whiten_jit(x, *, solver, chunk, batch, shards):
  fn = functools.partial(_whiten, solver=solver, chunk=chunk, shards=shards)
  if not batch:
    # Rows are not split for a stack of runs (map_runs splits the runs).
    per_run = functools.partial(_whiten, solver=solver, chunk=chunk)
    fn = _vmap_as_runs(fn, lambda *a, in_axes: _over_runs(
        per_run, True, in_axes)(*a))
  return _over_runs(fn, batch, (0,))(x)


@functools.partial(parallel.jit, static_argnames=("cfg", "batch"))
def _finish_jit(x, key, w_init, tol, max_iter, alpha, mean, lam, u, *, cfg,
                batch):
  fn = functools.partial(_finish, cfg=cfg)
  if not batch:
    # Keys cross custom_vmap as raw key data.
    per_run = functools.partial(_finish, cfg=dataclasses.replace(
        cfg, row_shards=1))
    unwrap = lambda f: lambda x, k, *a: f(  # noqa: E731
        x, jax.random.wrap_key_data(k, impl=jax.random.key_impl(key)), *a)
    fn = _vmap_as_runs(unwrap(fn), lambda *a, in_axes: _over_runs(
        unwrap(per_run), True, in_axes)(*a))
    return fn(x, jax.random.key_data(key), w_init, tol, max_iter, alpha,
              mean, lam, u)
  w_axis = 0 if (w_init is not None and w_init.ndim == 3) else None
  fn = _over_runs(fn, batch, (0, 0, w_axis, None, None, None, 0, 0, 0))
  return fn(x, key, w_init, tol, max_iter, alpha, mean, lam, u)


# ---------------------------------------------------------------------------
# Host-side checks.


def _check_rank(x, lam: np.ndarray, k, solver: str, dtype) -> int:
  """Raises on constant or rank-deficient runs; returns the smallest rank.

  Args:
    x: [n, d] or [R, n, d] concrete input (read only on the error path).
    lam: [d] or [R, d] covariance eigenvalues, descending.
    k: requested components (None: all d; "auto": the rank, returned).
    solver: whitening solver, which sets the noise floor.
    dtype: compute dtype.
  """
  batched = lam.ndim == 2
  lams = lam if batched else lam[None]
  d = lams.shape[-1]
  rtol = _rank_rtol(d, dtype, solver)
  ranks = []
  need = d if k in (None, "auto") else k
  for r, lr in enumerate(lams):
    rank = int(np.sum(lr > lr[0] * rtol)) if lr[0] > 0 else 0
    ranks.append(rank)
    if k == "auto" or rank >= need:
      continue
    where = f" in run {r}" if batched else ""
    xr = np.asarray(x[r] if batched else x)
    const = np.flatnonzero(np.ptp(xr, axis=0) == 0)
    if const.size:
      raise ValueError(
          f"x has {const.size} zero-variance (constant) column(s){where}: "
          f"{validation._short_list(const)}; the covariance has numerical "
          f"rank {rank} of {d}. Drop those columns, or pass "
          f"n_components={rank} (or n_components='auto') to reduce by PCA.")
    if rank == 0:
      raise ValueError(
          f"x has no variance float arithmetic resolves{where}: its "
          f"covariance has numerical rank 0 of {d} (eigenvalues "
          f"{lr[0]:.2e} ... {lr[-1]:.2e}). Check the input's scale and "
          f"values.")
    hint = (" or whiten_solver='svd' (which resolves smaller variances),"
            if solver == "eigh" else "")
    raise ValueError(
        f"x has a rank-deficient covariance{where}: numerical rank {rank} of "
        f"{d} (smallest eigenvalue ratio {lr[-1] / lr[0]:.2e}, noise floor "
        f"{rtol:.1e}), fewer than the {need} components asked for. Pass "
        f"n_components={rank},{hint} or n_components='auto' to reduce to "
        f"the numerical rank automatically.")
  return min(ranks)


@jax.jit
def _finite_and_max_abs(x):
  return jnp.all(jnp.isfinite(x)), jnp.max(jnp.abs(x))


def _scaled_back(res: ICAResult, exponent: int) -> ICAResult:
  """The result for x from the fit of x * 2^-exponent (exact)."""
  c = 2.0 ** -exponent
  return res.replace(unmixing=res.unmixing * c, whitening=res.whitening * c,
                     mixing=res.mixing / c, mean=res.mean / c)


def _as_keys(key, n_runs):
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if n_runs is None:
    if key.shape != ():
      raise ValueError(f"key must be a single key for x [n, d], got shape "
                       f"{key.shape}.")
    return key
  if key.shape == ():
    return jax.random.split(key, n_runs)
  if key.shape != (n_runs,):
    raise ValueError(f"key must be one key or [R={n_runs}] keys for x "
                     f"[R, n, d], got shape {key.shape}.")
  return key


# ---------------------------------------------------------------------------
# Public API.


def fastica(x, key, *, n_components: int | str | None = None,
            algorithm: str = "parallel", fun: str | Callable = "logcosh",
            fun_alpha: float = 1.0, whiten_solver: str = "eigh",
            tol: float = 1e-4, max_iter: int = 200, w_init=None,
            n_restarts: int = 1, chunk_size: int | None = None,
            warm_start: int | str | None = "auto") -> ICAResult:
  """FastICA of one run or of a stack of runs, in one compiled program.

  With concrete input this checks it on the host before compiling (raising
  on NaN/Inf, too few rows, constant columns, a rank-deficient covariance,
  integer dtypes) and warns, naming the runs, when some did not converge.
  Under `jax.jit`/`jax.vmap` (x a tracer) those checks are skipped and
  invalid runs come back with `valid=False` and NaN outputs instead.

  Args:
    x: [n, d] float array (one run) or [R, n, d] (R runs, fitted
      independently, each converging on its own). float32, or float64 with
      `jax_enable_x64`.
    key: a `jax.random.key`; for [R, n, d] one key (split into R) or [R]
      keys. Draws `w_init` (and the restarts) when `w_init` is None.
    n_components: k <= d components (PCA reduction before ICA); None: d;
      "auto": the numerical rank of the covariance (host call only; the
      smallest over runs for a stack).
    algorithm: "parallel" (symmetric decorrelation) or "deflation".
    fun: "logcosh", "exp", "cube", or a callable `y -> (g(y), mean g'(y))`
      with y: [m, c] and the mean over the last axis (scikit-learn's form).
    fun_alpha: alpha of logcosh, in [1, 2].
    whiten_solver: "eigh" (covariance eigendecomposition; fast for n >> d)
      or "svd" (of the centred data; stable for nearly degenerate data).
    tol: stop when max_i | |(W_new W^T)_ii| - 1 | < tol (scikit-learn's).
    max_iter: most fixed-point iterations (per component for deflation).
    w_init: [k, k] initial un-mixing in the whitened space (or [R, k, k] for
      a stack); None draws a standard normal one from `key`.
    n_restarts: random initialisations fitted together; the one with the
      largest negentropy objective is kept. Needs w_init=None.
    chunk_size: rows per chunk of the moment accumulation; None picks one
      (CPU: cache sized; accelerators: large).
    warm_start: "parallel" only: an int s >= 2 first iterates on every s-th
      (whitened) row until `tol`, then goes on from there on all rows to the
      same `tol`, so the answer is the full data's fixed point (at n = 1e5,
      d = 32-64 the two solutions differ by an Amari distance of ~3e-5, ten
      times below their distance to the true mixing) for fewer full-data
      iterations (`n_iter` counts both stages); None: all rows from the
      start, as scikit-learn. "auto": s = min(8, n // (320 k), n // 12500)
      when that is >= 2 (so never below n = 25,000 rows), else None.

  Returns:
    An `ICAResult` (fields with a leading [R] axis for a stack).

  Raises:
    TypeError: x is not a floating-point array.
    ValueError: bad shapes or options, NaN/Inf in x (count and where),
      n < d, constant columns or a rank-deficient covariance (with the
      numerical rank and what to pass instead).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from nearid_jax import ica
    >>> s = jax.random.laplace(jax.random.key(0), (2000, 3))
    >>> x = s @ jnp.array([[1., 2, 0], [0, 1, 1], [1, 0, 3]]).T
    >>> res = ica.fastica(x, jax.random.key(1))
    >>> res.sources.shape, res.unmixing.shape, bool(res.converged)
    ((2000, 3), (3, 3), True)
    >>> float(ica.amari_distance(res.unmixing, jnp.array(
    ...     [[1., 2, 0], [0, 1, 1], [1, 0, 3]]))) < 0.05
    True
  """
  with parallel.single_threaded_blas():
    return _fastica(x, key, n_components=n_components, algorithm=algorithm,
                    fun=fun, fun_alpha=fun_alpha, whiten_solver=whiten_solver,
                    tol=tol, max_iter=max_iter, w_init=w_init,
                    n_restarts=n_restarts, chunk_size=chunk_size,
                    warm_start=warm_start)


def _fastica(x, key, *, n_components, algorithm, fun, fun_alpha,
             whiten_solver, tol, max_iter, w_init, n_restarts,
             chunk_size, warm_start) -> ICAResult:
  """fastica, inside single_threaded_blas."""
  validation.check_float("x", x)
  validation.check_ndim("x", x, (2, 3), "([n, d] one run or [R, n, d] runs)")
  if algorithm not in ("parallel", "deflation"):
    raise ValueError(f"algorithm must be 'parallel' or 'deflation', got "
                     f"{algorithm!r}.")
  if not (callable(fun) or fun in ("logcosh", "exp", "cube")):
    raise ValueError(f"fun must be 'logcosh', 'exp', 'cube' or a callable, "
                     f"got {fun!r}.")
  if whiten_solver not in ("eigh", "svd"):
    raise ValueError(f"whiten_solver must be 'eigh' or 'svd', got "
                     f"{whiten_solver!r}.")
  if not 1 <= fun_alpha <= 2:
    raise ValueError(f"fun_alpha must be in [1, 2], got {fun_alpha}.")
  if not (tol > 0 and int(max_iter) >= 1 and int(n_restarts) >= 1):
    raise ValueError(f"need tol > 0, max_iter >= 1, n_restarts >= 1; got "
                     f"tol={tol}, max_iter={max_iter}, n_restarts="
                     f"{n_restarts}.")
  if w_init is not None and n_restarts != 1:
    raise ValueError("w_init fixes the start: pass n_restarts=1 with it.")
  if not (warm_start is None or warm_start == "auto" or (
      isinstance(warm_start, (int, np.integer))
      and not isinstance(warm_start, bool) and warm_start >= 1)):
    raise ValueError(f"warm_start must be 'auto', None or a row stride >= 1, "
                     f"got {warm_start!r}.")

  batched = np.ndim(x) == 3
  n_runs = np.shape(x)[0] if batched else None
  n, d = np.shape(x)[-2:]
  if n_components is not None and n_components != "auto":
    if not 1 <= int(n_components) <= d:
      raise ValueError(f"n_components must be in [1, d={d}] or 'auto', got "
                       f"{n_components}.")
  want = d if n_components in (None, "auto") else int(n_components)
  if n < d and n_components is None:
    raise ValueError(
        f"x has n={n} rows but d={d} columns: the covariance of fewer "
        f"samples than dimensions is singular. Use more rows (n >> d), or "
        f"reduce with n_components <= {max(n - 1, 1)} or n_components='auto'.")
  if n <= (1 if n_components == "auto" else want):
    raise ValueError(f"x has n={n} rows, too few for {want} components; "
                     f"need n > n_components.")

  concrete = validation.is_concrete(x)
  # One run's rows are split over the devices (each core of a CPU host run
  # with one XLA device per core, or several GPUs); a stack of runs is
  # split by runs instead, padded to a multiple of the devices once here
  # and cut back at the end (`parallel.RunLayout`).
  shards = 1 if batched else parallel.row_shards(n, d)
  layout = parallel.run_layout(n_runs) if batched else None
  if batched:
    xj = layout.place(x) if concrete else layout.pad(x)
  elif concrete:
    # Concrete data go straight to the devices that use them; device_put,
    # unlike jnp.asarray, aliases a 64-byte aligned host array on CPU
    # instead of copying it (a 25 MB copy costs about as much as an
    # iteration).
    xj = jax.device_put(x if isinstance(x, (np.ndarray, jax.Array))
                        else np.asarray(x), parallel.row_sharding(n, shards))
  else:
    xj = jnp.asarray(x)
  if xj.dtype not in (jnp.float32, jnp.float64):
    xj = xj.astype(jnp.float32)  # half precision: compute in float32
  if not concrete and n_components == "auto":
    raise ValueError("n_components='auto' needs concrete x (the rank sets "
                     "the output shape); call fastica outside jit, or pass "
                     "an int.")
  exponent = 0
  if concrete:
    # One pass on the device, before any compilation; the input is only
    # copied to the host when it holds non-finite values (to say where).
    finite, biggest = _finite_and_max_abs(xj)
    if not finite:
      validation.check_finite("x", np.asarray(x),
                              run_axis=0 if batched else None,
                              row_axis=1 if batched else 0)
    exponent = validation.range_exponent(float(biggest))
    if exponent:
      # Out of float range for the moments: fit x * 2^-exponent, exactly,
      # and scale the results back.
      xj = xj * jnp.asarray(2.0 ** -exponent, xj.dtype)
  keys = _as_keys(key, n_runs)
  if batched:
    keys = layout.pad(keys)
  if chunk_size is None:
    chunk_size = _auto_chunk(n, d, layout.per_device if batched else 1)
  cfg = _Config(n_components=want, algorithm=algorithm, fun=fun,
                whiten_solver=whiten_solver, n_restarts=int(n_restarts),
                chunk_size=int(chunk_size), has_w_init=w_init is not None,
                row_shards=shards)
  # The whitening statistics come first (a small program) so the rank is
  # checked on the host before the ICA program is compiled; the ICA reuses
  # them rather than recomputing.
  batch = batched
  mean, lam, u = _whiten_jit(xj, solver=whiten_solver, chunk=cfg.chunk_size,
                             batch=batch, shards=shards)
  k = want
  if concrete:
    lam_runs = np.asarray(lam)[:n_runs] if batched else np.asarray(lam)
    rank = _check_rank(x, lam_runs, n_components, whiten_solver,
                       np.dtype(xj.dtype))
    if n_components == "auto":
      k = rank
      if k < d:
        warnings.warn(f"n_components='auto': reducing to the numerical rank "
                      f"k={k} of d={d}.", stacklevel=3)
      cfg = dataclasses.replace(cfg, n_components=k)
  cfg = dataclasses.replace(
      cfg, warm_stride=_warm_stride(warm_start, n, k, algorithm))
  if w_init is not None:
    w_init = jnp.asarray(w_init)
    shapes = [(k, k)] + ([(n_runs, k, k)] if batched else [])
    if tuple(w_init.shape) not in shapes:
      raise ValueError(f"w_init must have shape {' or '.join(map(str, shapes))}"
                       f", got {tuple(w_init.shape)}.")
    if w_init.ndim == 3:
      w_init = layout.pad(w_init)
  res = _finish_jit(xj, keys, w_init, jnp.asarray(tol, xj.dtype),
                    jnp.asarray(max_iter, jnp.int32),
                    jnp.asarray(fun_alpha, xj.dtype), mean, lam, u, cfg=cfg,
                    batch=batch)
  if batched:
    res = layout.unpad(res)
  if exponent:
    res = _scaled_back(res, exponent)
  # (A traced key or w_init gives traced results even for concrete x.)
  if concrete and validation.is_concrete(res.converged):
    conv = np.atleast_1d(np.asarray(res.converged))
    if not conv.all():
      which = (f" in run(s) {validation._short_list(np.flatnonzero(~conv))} "
               f"of {conv.size}" if batched else "")
      delta = np.atleast_1d(np.asarray(res.delta))[~conv]
      warnings.warn(
          f"FastICA did not converge{which} within max_iter={max_iter} "
          f"(final delta {np.max(delta):.2e} >= tol={tol}); increase "
          f"max_iter or tol, or try n_restarts > 1.", ConvergenceWarning,
          stacklevel=3)
  return res


def transform(result: ICAResult, x_new) -> jax.Array:
  """Sources of new data: (x_new - mean) @ unmixing.T.

  Args:
    result: a fitted `ICAResult` (one run, or R runs with x_new [R, m, d]).
    x_new: [m, d] float array ([R, m, d] for a batched result).

  Returns:
    [m, k] sources ([R, m, k]).
  """
  x_new = jnp.asarray(x_new)
  return jnp.einsum("...nd,...kd->...nk", x_new - result.mean[..., None, :],
                    result.unmixing, precision=_HIGHEST)


def inverse_transform(result: ICAResult, s) -> jax.Array:
  """Data from sources: s @ mixing.T + mean.

  Args:
    result: a fitted `ICAResult`.
    s: [m, k] sources ([R, m, k] for a batched result).

  Returns:
    [m, d] reconstruction ([R, m, d]).
  """
  s = jnp.asarray(s)
  return jnp.einsum("...nk,...dk->...nd", s, result.mixing,
                    precision=_HIGHEST) + result.mean[..., None, :]


def amari_distance(unmixing, mixing) -> jax.Array:
  """Amari distance of P = unmixing @ mixing from a scaled permutation.

  0 exactly when P is a permutation times a diagonal; normalised to [0, 1]
  as in Moreau et al. / python-picard's `amari_distance`.

  Args:
    unmixing: [k, d] estimated un-mixing.
    mixing: [d, k] true mixing.

  Returns:
    [] the distance.
  """
  p = jnp.abs(jnp.matmul(unmixing, mixing, precision=_HIGHEST))
  k = p.shape[0]
  rows = jnp.sum(jnp.sum(p, axis=1) / jnp.max(p, axis=1) - 1)
  cols = jnp.sum(jnp.sum(p, axis=0) / jnp.max(p, axis=0) - 1)
  return (rows + cols) / (2 * k * (k - 1))
