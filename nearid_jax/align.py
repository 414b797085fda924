"""Near-identifiability ε: maps between representations, and their errors.

The paper's central measurement (docs/paper.md §1-§3). Given two runs'
representations of the same inputs, a *target* Z_t [n, d_t] and a *source*
Z_s [n, d_s], we fit a map h from a class H on a random `fit_fraction` of the
rows and report, on the other rows, the ℓ2 error ‖z_t - h(z_s)‖ divided by
the diameter of the target: its mean (the paper's tables), its max (the L∞
of Definition 1) and its 99th percentile, plus the per-dimension R².

Classes (`kind`), every map affine, h(z) = M z + b:
  * "identity": h(z) = z (a floor-less reference; needs d_t = d_s).
  * "perm": signed permutation. Hungarian matching on -|corr(Z_t, Z_s)|, each
    sign from its matched correlation, plus a per-dimension translation.
    Default: translation only (`perm_scale=False`), our reading of the
    paper's Table 1 (§3 "plus per-dimension translation (and optionally
    per-dimension scale)"); `perm_scale=True` adds the least-squares slope
    per matched pair.
  * "rigid": orthogonal Procrustes with translation (SVD of the
    cross-covariance, reflections allowed).
  * "similarity": rigid plus one isotropic scale (Umeyama).
  * "linear": least-squares affine map, with optional ridge `alpha` on the
    centred fit rows (scikit-learn's `Ridge(alpha)`; 0 is plain least
    squares).
  * "ica": FastICA (`nearid_jax.ica`) of each run on the fit rows, sources
    matched by signed permutation (Hungarian on -|corr|), mapped back to the
    target's coordinates: h(z) = A_t P S W_s (z - m_s) + m_t, with W the
    un-mixing, A its inverse (the mixing) and m the fit-row means.

Conventions. `ε[i, j]` is the error of mapping run j (source) onto run i
(target), normalised by the diameter of run i; the diagonal is 0 (h is the
identity). All runs share one row split and one diameter subsample, so
`pairwise_epsilon(zs)[i, j]` equals `epsilon(zs[i], zs[j])` for the same key.
Every run's ICA starts from the same initial un-mixing, for the same reason.

Diameter (of the target, over all its n rows): "max" is the largest pairwise
distance, exact over every pair of up to `diameter_rows` (10⁴) rows, and
over every pair of a random subsample of that many rows beyond (so it may
underestimate the support's diameter slightly); "q99" is the 99th percentile
of pairwise distances over every pair of up to 2048 rows (2·10⁶ pairs; a
random subsample beyond), a variant robust to outliers.

Different dimensions (d_t != d_s; `dims=`): "linear" maps R^d_s -> R^d_t
directly and "ica" reduces both sides to min(d_t, d_s) components (its own
PCA step). For "rigid", "similarity" and "perm":
  * "pad" (default): zero-pad the smaller side to max(d_t, d_s). An isometric
    embedding when the source is smaller; when the target is smaller, its
    zero coordinates must be matched too, so variation of the source that
    the target lacks counts as error (the strict reading).
  * "pca": reduce the larger side to the smaller dimension by PCA on the fit
    rows. A reduced target is mapped back into its own coordinates, so the
    error (and the diameter) stay those of the full target.

Speed and memory. Everything a map needs is a function of the fit-row
covariances, so `pairwise_epsilon` computes per run (once) the centred fit
and evaluation rows, the covariance and its eigenvectors, the diameter and
the ICA, and per pair only the maps and the residuals; the cross-covariances
[d, d] of all pairs come from one product. Pairs are spread over the local
devices (on a CPU host, one XLA device per core when asked for with
`--xla_force_host_platform_device_count`, see `benchmarks/host_devices.py`)
and processed in chunks (`pair_chunk`; by default one pair at a time in
blocks of ~1k evaluation rows on CPU, ~2 GiB of intermediates per chunk on
accelerators), so memory beyond the two row copies is the cross-covariances
(R² d² floats) and one chunk's residuals (chunk · K · n_eval · d floats on
accelerators). R = 64, n = 10⁵,
d = 256 (float32) needs about 19 GiB at its peak, including the 6 GiB input
(`python -m benchmarks.align --memory` prints the compiled plan).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from nearid_jax import align
  >>> zt = jax.random.laplace(jax.random.key(0), (500, 3))
  >>> q = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (3, 3)))[0]
  >>> res = align.epsilon(zt, zt @ q.T + 1.0, "rigid", key=jax.random.key(2))
  >>> float(res["mean"]) < 1e-5
  True
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import flax.struct
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nearid_jax import assignment
from nearid_jax import ica as ica_lib
from nearid_jax import parallel
from nearid_jax import validation

__all__ = [
    "KINDS", "DEFAULT_KINDS", "AffineMap", "PairwiseEpsilon", "fit_map",
    "epsilon", "pairwise_epsilon", "ica_efficiency", "structural",
    "decoder_bi_lipschitz", "theorem1_factor",
]

KINDS = ("identity", "perm", "rigid", "similarity", "linear", "ica")
DEFAULT_KINDS = ("perm", "rigid", "linear", "ica")
DIMS = ("pad", "pca")
DIAMETERS = ("max", "q99")
Q99_ROWS = 2048  # rows whose pairs give the "q99" diameter (2·10⁶ pairs)
_HIGHEST = lax.Precision.HIGHEST
# Intermediate memory per chunk of pairs (bytes). On CPU small blocks stay
# in cache (one pair at a time, ~1k evaluation rows per block); accelerators
# want large batches.
_CPU_BUDGET = 4 << 20
_ACCEL_BUDGET = 2 << 30


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


def _one_lapack_thread(fn):
  """Runs a host entry point with single-threaded BLAS/LAPACK, and waits.

  See `parallel.single_threaded_blas` (a batch of 64x64 SVDs ran 8-10x
  faster with one OpenBLAS thread on a 2-core machine, 100x under load).
  The limit is process-wide while the call runs, so the result is waited
  for inside it.
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with parallel.single_threaded_blas():
      return jax.block_until_ready(fn(*args, **kwargs))
  return wrapper


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
    return _mm(jnp.asarray(z), self.matrix.T) + self.offset


@dataclasses.dataclass(frozen=True)
class _Options:
  """Static settings of one alignment program."""
  kinds: tuple[str, ...]
  ridge: float
  perm_scale: bool
  dims: str
  n_fit: int


@flax.struct.dataclass
class _Runs:
  """Per-run quantities of a stack of runs (leading [R] axis everywhere).

  Attributes:
    xf: [R, n_fit, d] fit rows, centred by their mean.
    xe: [R, n_eval, d] evaluation rows, centred by the fit mean.
    mean: [R, d] fit-row mean.
    cov: [R, d, d] fit-row covariance.
    evals: [R, d] its eigenvalues, descending; `evecs` [R, d, d] columns.
    sst: [R, d] evaluation-row sum of squares about the evaluation mean.
    diameter: [R] diameter (see module docstring).
    nonfinite: [R] count of NaN/Inf values.
    constant: [R, d] bool, column constant over all rows.
    rank: [R] numerical rank of `cov`.
  """
  xf: jax.Array
  xe: jax.Array
  mean: jax.Array
  cov: jax.Array
  evals: jax.Array
  evecs: jax.Array
  sst: jax.Array
  diameter: jax.Array
  nonfinite: jax.Array
  constant: jax.Array
  rank: jax.Array

  def valid(self, need_rank: bool) -> jax.Array:
    ok = (self.nonfinite == 0) & ~jnp.any(self.constant, axis=-1)
    if need_rank:
      ok &= self.rank == self.cov.shape[-1]
    return ok


class _ICAMaps(NamedTuple):
  """ICA of a stack of runs: unmixing [R, k, d], mixing [R, d, k]."""
  unmixing: jax.Array
  mixing: jax.Array


# ---------------------------------------------------------------------------
# Per-run statistics.


def _split(key, n: int, n_fit: int):
  """Sorted fit and evaluation row indices (one split for every run)."""
  perm = jax.random.permutation(key, n)
  return jnp.sort(perm[:n_fit]), jnp.sort(perm[n_fit:])


def _diameter_max(s: jax.Array, block: int = 1024) -> jax.Array:
  """Largest pairwise distance among the rows of s [m, d], exactly.

  Distances come from Gram blocks [block, block]; only blocks on or above
  the diagonal are computed (the distance matrix is symmetric), about half
  the work of the full matrix.
  """
  m, d = s.shape
  s = s - jnp.mean(s, axis=0)  # smaller norms, smaller cancellation
  block = min(block, m)
  nb = -(-m // block)
  # Padding rows repeat row 0; a duplicate row does not change the maximum.
  sp = jnp.concatenate([s, jnp.broadcast_to(s[:1], (nb * block - m, d))])
  sp = sp.reshape(nb, block, d)
  sq = jnp.sum(sp * sp, axis=-1)
  bi, bj = np.triu_indices(nb)

  def one(ij):
    i, j = ij
    d2 = sq[i][:, None] + sq[j][None, :] - 2 * _mm(sp[i], sp[j].T)
    return jnp.max(d2)
  d2 = lax.map(one, (jnp.asarray(bi), jnp.asarray(bj)))
  return jnp.sqrt(jnp.maximum(jnp.max(d2), 0))


def _diameter_q99(s: jax.Array) -> jax.Array:
  """99th percentile (linear interpolation) of the pairwise distances."""
  m = s.shape[0]
  s = s - jnp.mean(s, axis=0)
  sq = jnp.sum(s * s, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2 * _mm(s, s.T)
  iu, ju = np.triu_indices(m, 1)
  return jnp.quantile(jnp.sqrt(jnp.maximum(d2[iu, ju], 0)), 0.99)


def _run_stats(z, fit_idx, eval_idx, diam_idx, diameter: str) -> _Runs:
  """Statistics of one run z [n, d] (vmapped over runs by the caller)."""
  n, d = z.shape
  xf = z[fit_idx]
  mean = jnp.mean(xf, axis=0)
  xf = xf - mean
  xe = z[eval_idx] - mean
  cov = _mm(xf.T, xf) / xf.shape[0]
  evals, evecs = jnp.linalg.eigh(cov)
  evals, evecs = evals[::-1], evecs[:, ::-1]
  eps = float(np.finfo(z.dtype).eps)
  rank = jnp.sum(evals > evals[0] * d * eps).astype(jnp.int32)
  rank = jnp.where(evals[0] > 0, rank, 0)
  sst = jnp.sum((xe - jnp.mean(xe, axis=0)) ** 2, axis=0)
  finite = jnp.isfinite(z)
  nonfinite = jnp.sum(~finite).astype(jnp.int32)
  constant = jnp.max(z, axis=0) == jnp.min(z, axis=0)
  zs = jnp.where(finite, z, 0)[diam_idx]
  diam = (_diameter_max(zs) if diameter == "max" else _diameter_q99(zs))
  return _Runs(xf=xf, xe=xe, mean=mean, cov=cov, evals=evals, evecs=evecs,
               sst=sst, diameter=diam, nonfinite=nonfinite, constant=constant,
               rank=rank)


@functools.partial(jax.jit, static_argnames=("n_fit", "diameter",
                                             "diameter_rows"))
def _prepare(z, key, *, n_fit: int, diameter: str, diameter_rows: int):
  """Splits rows and computes `_Runs` for a stack z [R, n, d]."""
  n = z.shape[1]
  k_split, k_diam, _ = jax.random.split(key, 3)
  fit_idx, eval_idx = _split(k_split, n, n_fit)
  rows = diameter_rows if diameter == "max" else Q99_ROWS
  if n <= rows:
    diam_idx = jnp.arange(n)
  else:
    diam_idx = jax.random.permutation(k_diam, n)[:rows]
  # Runs spread over the local devices, one after another within a device
  # for the diameter's [block, m] distance blocks.
  return parallel.map_runs(
      lambda zr, fi, ei, di: _run_stats(zr, fi, ei, di, diameter),
      z, fit_idx, eval_idx, diam_idx, in_axes=(0, None, None, None))


def _ica_key(key):
  return jax.random.split(key, 3)[2]


@functools.partial(jax.jit, static_argnames=("n_components", "options"))
def _fit_ica(xf, key, *, n_components: int, options: tuple) -> Any:
  """FastICA of every run of xf [R, n_fit, d], all from the same start."""
  keys = jax.random.split(key, 1)[jnp.zeros(xf.shape[0], jnp.int32)]
  res = ica_lib.fastica(xf, keys, n_components=n_components, **dict(options))
  return _ICAMaps(res.unmixing, res.mixing), res.converged, res.valid


# ---------------------------------------------------------------------------
# Fitting maps from moments (one pair; vmapped by the callers).


class _Adapted(NamedTuple):
  """The geometric kinds' problem in a common dimension k."""
  c: jax.Array        # [k, k] cross-covariance target x source
  var_t: jax.Array    # [k] target variances
  var_s: jax.Array    # [k] source variances
  tr_s: jax.Array     # [] total source variance
  embed: Callable     # [k, k] map -> [d_out, d_s] map


def _d_out(dt: int, ds: int, dims: str) -> int:
  return max(dt, ds) if dims == "pad" else dt


def _adapt(c, t: _Runs, s: _Runs, dims: str) -> _Adapted:
  """Brings c [d_t, d_s] and the variances to a square problem."""
  dt, ds = c.shape
  var_t, var_s = jnp.diagonal(t.cov), jnp.diagonal(s.cov)
  tr_s = jnp.sum(var_s)
  if dt == ds:
    return _Adapted(c, var_t, var_s, tr_s, lambda m: m)
  if dims == "pad":
    k = max(dt, ds)
    c = jnp.pad(c, ((0, k - dt), (0, k - ds)))
    return _Adapted(c, jnp.pad(var_t, (0, k - dt)),
                    jnp.pad(var_s, (0, k - ds)), tr_s, lambda m: m[:, :ds])
  if dt > ds:  # reduce the target to its top d_s principal axes
    v = t.evecs[:, :ds]
    return _Adapted(_mm(v.T, c), t.evals[:ds], var_s, tr_s,
                    lambda m: _mm(v, m))
  v = s.evecs[:, :dt]  # reduce the source to its top d_t principal axes
  return _Adapted(_mm(c, v), var_t, s.evals[:dt], jnp.sum(s.evals[:dt]),
                  lambda m: _mm(m, v.T))


def _safe_corr(c, var_t, var_s):
  """c / sqrt(var_t var_s'), 0 where a variance is 0 (padding)."""
  den = jnp.sqrt(var_t[:, None] * var_s[None, :])
  return jnp.where(den > 0, c / jnp.where(den > 0, den, 1), 0)


def _ica_corr(c, t: _Runs, s: _Runs, ica_t, ica_s):
  """Correlation of the target's and the source's ICA sources [k, k]."""
  wt, ws = ica_t.unmixing, ica_s.unmixing
  cross = _mm(_mm(wt, c), ws.T)
  vt = jnp.sum(_mm(wt, t.cov) * wt, axis=1)
  vs = jnp.sum(_mm(ws, s.cov) * ws, axis=1)
  return _safe_corr(cross, vt, vs)


def _match(c, t: _Runs, s: _Runs, ica_t, ica_s, opts: _Options):
  """Signed-permutation matchings the kinds need: {"perm"/"ica": SP}."""
  out = {}
  if "perm" in opts.kinds:
    a = _adapt(c, t, s, opts.dims)
    out["perm"] = assignment.match_signed_permutation(
        _safe_corr(a.c, a.var_t, a.var_s))
  if "ica" in opts.kinds:
    out["ica"] = assignment.match_signed_permutation(
        _ica_corr(c, t, s, ica_t, ica_s))
  return out


def _fit_maps(c, t: _Runs, s: _Runs, ica_t, ica_s, matches,
              opts: _Options):
  """Maps of every kind for one pair, on centred coordinates.

  Returns:
    matrices [K, d_out, d_s] and centred offsets [K, d_out]: the prediction
    of a centred target row is `xs_centred @ M.T + c0` (c0 is non-zero only
    for "identity", which fits no translation).
  """
  dt, ds = c.shape
  d_out = _d_out(dt, ds, opts.dims)
  pad_rows = lambda m: jnp.pad(m, ((0, d_out - m.shape[0]), (0, 0)))  # noqa: E731
  mats, offs = [], []
  zero = jnp.zeros((d_out,), c.dtype)
  for kind in opts.kinds:
    off = zero
    if kind == "linear":
      lam = s.evals + opts.ridge / opts.n_fit
      inv = jnp.where(lam > 0, 1 / jnp.where(lam > 0, lam, 1), 0)
      m = pad_rows(_mm(_mm(c, s.evecs) * inv, s.evecs.T))
    elif kind == "ica":
      sp = matches["ica"]
      k = sp.perm.shape[0]
      ps = assignment.signed_permutation_matrix(sp.perm, sp.signs, k)
      m = pad_rows(_mm(ica_t.mixing, _mm(ps, ica_s.unmixing)))
    elif kind == "identity":
      m = jnp.eye(d_out, ds, dtype=c.dtype)
      off = (_mm(m, s.mean) - jnp.pad(t.mean, (0, d_out - dt)))
    else:
      a = _adapt(c, t, s, opts.dims)
      if kind == "perm":
        sp = matches["perm"]
        k = a.c.shape[0]
        if opts.perm_scale:
          cols = jnp.clip(sp.perm, 0, k - 1)
          vs = a.var_s[cols]
          slope = jnp.where(vs > 0, a.c[jnp.arange(k), cols]
                            / jnp.where(vs > 0, vs, 1), 0)
          vals = jnp.where(sp.perm >= 0, slope, 0)
        else:
          vals = sp.signs
        ma = assignment.signed_permutation_matrix(sp.perm, vals, k)
      else:  # rigid, similarity
        u, sv, vt = jnp.linalg.svd(a.c)
        ma = _mm(u, vt)
        if kind == "similarity":
          ma = ma * jnp.where(a.tr_s > 0, jnp.sum(sv) / a.tr_s, 0)
      m = a.embed(ma)
    mats.append(m)
    offs.append(off)
  return jnp.stack(mats), jnp.stack(offs)


def _upper_quantile(v, q: float):
  """q-quantile along the last axis of non-negative values, numpy's "linear"
  method, exactly.

  The two order statistics around rank q (n - 1) are found by bisection on
  the float bit patterns (monotone for v >= 0): one count over the row per
  bit, no sort. On CPU this is ~10x cheaper per pair than `lax.top_k` of the
  top 1% (which dominated the pairs program), and it vectorises the same
  way on every backend.
  """
  v = jnp.abs(v)  # -0.0 -> +0.0, so the bit patterns are all >= 0
  n = v.shape[-1]
  h = q * (n - 1)
  lo = int(math.floor(h))
  frac = h - lo
  itype = jnp.int64 if v.dtype == jnp.float64 else jnp.int32
  bits = lax.bitcast_convert_type(v, itype)

  def body(_, carry):
    # count(bits <= low) < lo + 1 <= count(bits <= high)
    low, high = carry
    mid = low + (high - low) // 2
    ok = jnp.sum(bits <= mid[..., None], axis=-1) >= lo + 1
    return jnp.where(ok, low, mid), jnp.where(ok, mid, high)
  init = (jnp.full(v.shape[:-1], -1, itype), jnp.max(bits, axis=-1))
  _, high = lax.fori_loop(0, 8 * v.dtype.itemsize, body, init)
  v_lo = lax.bitcast_convert_type(high, v.dtype)
  if frac == 0 or lo + 1 > n - 1:
    return v_lo
  count = jnp.sum(v <= v_lo[..., None], axis=-1)
  above = jnp.min(jnp.where(v > v_lo[..., None], v, jnp.inf), axis=-1)
  v_hi = jnp.where(count >= lo + 2, v_lo, above)
  return v_lo + frac * (v_hi - v_lo)


def _pair_errors(xe_t, xe_s, t, s, mats, offs, diameter, sst_t, rows: int,
                 gathers=None):
  """ε statistics of one pair: ({mean,max,q99}: [K], r2: [K, d_t]).

  The evaluation rows of target run t and source run s are read straight
  from the stacks xe_t [R_t, n_eval, d_t] and xe_s [R_s, n_eval, d_s], in
  blocks of `rows` rows: each block's prediction and residuals ([rows, K,
  d_out]) stay in cache between the product that makes them and the
  reductions that read them. One pair's whole [n_eval, K, d_out] residual
  (25 MB at n_eval = 25000, d = 64) made the pass memory-bound on CPU; on
  accelerators `rows` is n_eval (one block). The last block is shifted back
  to end at n_eval (no padding copy); rows it shares with the block before
  are written twice with the same norms and left out of the sums.

  `gathers` maps a kind's position to (index [d_out], value [d_out]) when
  its matrix is a (scaled) signed permutation: its prediction
  xe_s[:, index] * value is then a gather, not a matmul.
  """
  _, n_eval, dt = xe_t.shape
  n_kinds, d_out, ds = mats.shape
  gathers = gathers or {}
  dense = [k for k in range(n_kinds) if k not in gathers]
  # One [rows, d_s] x [d_s, K d_out] product for the dense kinds: a wide
  # matmul runs far closer to the machine's peak than K narrow ones.
  w = (mats[jnp.asarray(dense)].reshape(len(dense) * d_out, ds).T
       if dense else None)
  n_blocks = -(-n_eval // rows)

  def block(i, carry):
    norms, ss = carry
    start = jnp.minimum(i * rows, n_eval - rows)
    xt = lax.dynamic_slice(xe_t, (t, start, 0), (1, rows, dt))[0]
    xs = lax.dynamic_slice(xe_s, (s, start, 0), (1, rows, ds))[0]
    preds = {}
    if dense:
      out = _mm(xs, w).reshape(rows, len(dense), d_out)
      preds = {k: out[:, j] for j, k in enumerate(dense)}
    for k, (idx, val) in gathers.items():
      preds[k] = xs[:, idx] * val
    pred = jnp.stack([preds[k] for k in range(n_kinds)], axis=1)
    target = jnp.pad(xt, ((0, 0), (0, d_out - dt)))
    sq = (target[:, None] - pred - offs) ** 2  # [rows, K, d_out]
    norms = lax.dynamic_update_slice_in_dim(
        norms, jnp.sqrt(jnp.sum(sq, axis=-1)).T, start, axis=1)
    fresh = start + jnp.arange(rows) >= i * rows  # not in the block before
    ss += jnp.sum(jnp.where(fresh[:, None, None], sq[..., :dt], 0), axis=0)
    return norms, ss
  init = (jnp.zeros((n_kinds, n_eval), mats.dtype),
          jnp.zeros((n_kinds, dt), mats.dtype))
  norms, ss = lax.fori_loop(0, n_blocks, block, init)
  r2 = 1 - ss / jnp.where(sst_t > 0, sst_t, jnp.nan)
  return {"mean": jnp.mean(norms, axis=-1) / diameter,
          "max": jnp.max(norms, axis=-1) / diameter,
          "q99": _upper_quantile(norms, 0.99) / diameter,
          "r2": r2}


def _take(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _cross_covariances(xt, xs):
  """sum_n xt[t, n, :]^T xs[s, n, :] for every t, s: [R_t, R_s, d_t, d_s].

  Summed over blocks of rows: the product wants each side as one
  [rows, R d] matrix, a transposed copy of its input, which for the whole
  input would double the fit rows in memory (6 GiB at R = 64, n = 10⁵,
  d = 256); per block the copies stay within the chunk budget.
  """
  _, n, dt = xt.shape
  rs, _, ds = xs.shape
  block = max(1, min(n, _budget() // (4 * (xt.shape[0] * dt + rs * ds))))
  full = n // block

  def product(a, b):
    return jnp.einsum("tnd,sne->tsde", a, b, precision=_HIGHEST)

  def body(i, acc):
    rows = lambda x: lax.dynamic_slice_in_dim(x, i * block, block, axis=1)  # noqa: E731
    return acc + product(rows(xt), rows(xs))
  acc = jnp.zeros((xt.shape[0], rs, dt, ds), xt.dtype)
  acc = lax.fori_loop(0, full, body, acc)
  if full * block < n:  # the remaining rows, a static slice
    acc += product(xt[:, full * block:], xs[:, full * block:])
  return acc


def _pair_groups(n_runs: int) -> int:
  """Devices (groups) the pairs among n_runs source runs are spread over.

  As many as `parallel.map_runs` gives the runs themselves (the per-run
  statistics and the ICA use it): one program holding both (e.g.
  `pairwise_epsilon` under jit) must use one set of devices. The pair list
  is padded to a multiple.
  """
  return parallel.run_shards(n_runs)


def _pairs(*args, opts: _Options, chunk: int, rows: int):
  """`_pairs_program` with its concrete inputs on the devices it uses.

  Inputs computed by other spread-out programs (e.g. the ICA of R runs,
  on the largest divisor of R devices) come committed to their own devices;
  a program spread over other devices refuses them, so they are copied
  (replicated) to the pairs' devices first. Tracers (under an outer jit)
  and uncommitted arrays are passed as they are.
  """
  src = args[0] if args[1] is None else args[1]
  groups = _pair_groups(src.xf.shape[0])
  devices = jax.local_devices()[:groups]

  def move(a):
    if (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
        and a.committed and a.sharding.device_set != set(devices)):
      return jax.device_put(a, jax.sharding.NamedSharding(
          parallel.local_mesh(groups, "pairs"), P()))
    return a
  return _to_one_device(_pairs_program(
      *jax.tree.map(move, args), opts=opts, chunk=chunk, rows=rows))


def _to_one_device(tree):
  """Concrete arrays committed to devices, made plain (uncommitted).

  The small results of spread-out programs (ICA maps, ε) are combined
  eagerly afterwards and fed to other spread-out programs (metrics); arrays
  committed to different device sets cannot meet, so these become ordinary
  uncommitted arrays (through the host: they are small, [R, d, d] at most).
  """
  def move(a):
    if (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
        and a.committed):
      return jnp.asarray(np.asarray(a))
    return a
  return jax.tree.map(move, tree)


@functools.partial(jax.jit, static_argnames=("opts", "chunk", "rows"))
def _pairs_program(tgt: _Runs, src: _Runs | None, ica_t, ica_s, pair_t,
                   pair_s, valid_t, valid_s, *, opts: _Options, chunk: int,
                   rows: int):
  """ε of the pairs (tgt[pair_t[p]], src[pair_s[p]]) in one program.

  Args:
    tgt, src: per-run statistics of the target and source runs; src None:
      the sources are the targets (pairs among one set of runs).
    ica_t, ica_s: their `_ICAMaps` (None without "ica"; ica_s is ignored
      when src is None).
    pair_t, pair_s: [P] int32 run indices of each pair.
    valid_t, valid_s: [R_t], [R_s] bool; pairs with an invalid run are NaN.
    opts: static settings.
    chunk: pairs evaluated together (vmapped) within a device.
    rows: evaluation rows per block (see `_pair_errors`).
  """
  same = src is None
  if same:
    src, ica_s = tgt, ica_t
  # Phase 1: every target x source cross-covariance in one product (all
  # pairs' [d_t, d_s] blocks, the diagonal too): one large matmul instead of
  # a [n_fit, d] gather of both runs per pair (3x faster on CPU for R=16).
  cross = _cross_covariances(tgt.xf, src.xf) / opts.n_fit
  n_pairs = pair_t.shape[0]
  groups = _pair_groups(src.xf.shape[0])
  if groups > 1:
    # Split the product over the devices that evaluate the pairs, along its
    # longer run axis (uneven splits are padded by the compiler). Left
    # unconstrained, every device computed the whole product (its inputs
    # are replicated for the pairs), which cost 2x its time on 2 cores.
    mesh = parallel.local_mesh(groups, "pairs")
    spec = (P("pairs") if cross.shape[0] >= cross.shape[1]
            else P(None, "pairs"))
    cross = lax.with_sharding_constraint(
        cross, jax.sharding.NamedSharding(mesh, spec))
  per_group = -(-n_pairs // groups)
  pad = groups * per_group - n_pairs  # < groups extra copies of pair 0
  pt = jnp.concatenate([pair_t, jnp.zeros((pad,), pair_t.dtype)])
  ps = jnp.concatenate([pair_s, jnp.zeros((pad,), pair_s.dtype)])
  cs = cross[pt, ps].reshape(groups, per_group, *cross.shape[2:])
  has_ica = ica_t is not None
  # The devices need the evaluation rows and the small per-run statistics,
  # not the fit rows (only phase 1 reads them): each device gets its own
  # copy of what it is passed, so pass no more, and one copy of the runs
  # when targets and sources are the same runs.
  strip = lambda r: r.replace(xf=r.xf[:, :0])  # noqa: E731
  shared = [strip(tgt), ica_t if has_ica else jnp.zeros((1,))]
  if not same:
    shared += [strip(src), ica_s if has_ica else jnp.zeros((1,))]

  def group(c_g, t_g, s_g, valid_t, valid_s, *shared):
    tgt, ica_t = shared[:2]
    src, ica_s = (tgt, ica_t) if same else shared[2:]
    if not has_ica:
      ica_t = ica_s = None

    def stats_of(t, s):
      return (_take(tgt, t), _take(src, s),
              None if ica_t is None else _take(ica_t, t),
              None if ica_s is None else _take(ica_s, s))

    # Phase 2: every matching of the group at once, so the assignment
    # solver's sequential loops run once for the group, not once per chunk.
    def match(c, t, s):
      return _match(c, *stats_of(t, s), opts)
    matches = jax.vmap(match)(c_g, t_g, s_g)

    # Phase 3: maps and residuals, chunked over pairs.
    def evaluate(args):
      c, m, t, s = args
      st, ss, it, is_ = stats_of(t, s)
      mats, offs = _fit_maps(c, st, ss, it, is_, m, opts)
      gathers = {}
      if "perm" in opts.kinds and c.shape[0] == c.shape[1]:
        j = opts.kinds.index("perm")
        idx = jnp.clip(m["perm"].perm, 0, c.shape[1] - 1)
        gathers[j] = (idx, mats[j][jnp.arange(c.shape[0]), idx])
      out = _pair_errors(tgt.xe, src.xe, t, s, mats, offs, st.diameter,
                         st.sst, rows, gathers)
      ok = valid_t[t] & valid_s[s]
      return jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), out)
    return lax.map(evaluate, (c_g, matches, t_g, s_g), batch_size=chunk)

  # Phases 2-3 of each group of pairs on its own device.
  out = parallel.map_runs(
      group, cs, pt.reshape(groups, per_group), ps.reshape(groups, per_group),
      valid_t, valid_s, *shared,
      in_axes=(0, 0, 0) + (None,) * (2 + len(shared)))
  return jax.tree.map(
      lambda v: v.reshape(groups * per_group, *v.shape[2:])[:n_pairs], out)


@functools.partial(jax.jit, static_argnames=("opts",))
def _maps_one(tgt: _Runs, src: _Runs, ica_t, ica_s, *, opts: _Options):
  """Maps of one pair fitted on all of its (fit) rows."""
  c = _mm(tgt.xf[0].T, src.xf[0]) / opts.n_fit
  args = (_take(tgt, 0), _take(src, 0),
          None if ica_t is None else _take(ica_t, 0),
          None if ica_s is None else _take(ica_s, 0))
  matches = _match(c, *args, opts)
  return _fit_maps(c, *args, matches, opts)


# ---------------------------------------------------------------------------
# Host side: checks, chunk sizes, assembly.


def _check_kinds(kinds) -> tuple[str, ...]:
  if isinstance(kinds, str):
    kinds = (kinds,)
  kinds = tuple(kinds)
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise ValueError(f"unknown alignment kind(s) {bad or '(none given)'}; "
                     f"choose from {KINDS}.")
  if len(set(kinds)) != len(kinds):
    raise ValueError(f"kinds has duplicates: {kinds}.")
  return kinds


def _check_options(fit_fraction, diameter, dims, ridge, diameter_rows):
  if not (isinstance(fit_fraction, (int, float)) and 0 < fit_fraction < 1):
    raise ValueError(f"fit_fraction must be in (0, 1) (the share of rows the "
                     f"map is fitted on; the rest evaluate it), got "
                     f"{fit_fraction!r}.")
  if diameter not in DIAMETERS:
    raise ValueError(f"diameter must be one of {DIAMETERS}, got "
                     f"{diameter!r}.")
  if dims not in DIMS:
    raise ValueError(f"dims must be one of {DIMS}, got {dims!r}.")
  if not ridge >= 0:
    raise ValueError(f"ridge must be >= 0, got {ridge!r}.")
  if int(diameter_rows) < 2:
    raise ValueError(f"diameter_rows must be >= 2, got {diameter_rows}.")


def _as_stack(name: str, zs) -> jax.Array:
  """[R, n, d] float array from an array or a list of [n, d] runs."""
  if isinstance(zs, (list, tuple)):
    if not zs:
      raise ValueError(f"{name} is empty; pass [R, n, d] with R >= 1.")
    shapes = [tuple(np.shape(z)) for z in zs]
    for r, (z, shp) in enumerate(zip(zs, shapes)):
      validation.check_float(f"{name}[{r}]", z)
      validation.check_ndim(f"{name}[{r}]", z, (2,), "[n, d]")
    rows = [s[0] for s in shapes]
    if len(set(rows)) > 1:
      odd = [r for r, m in enumerate(rows) if m != rows[0]]
      raise ValueError(
          f"{name}: runs have different row counts ({rows[0]} in run 0, "
          f"{[rows[r] for r in odd]} in run(s) {odd}); every run must "
          "represent the same inputs, row for row.")
    dims = [s[1] for s in shapes]
    if len(set(dims)) > 1:
      raise ValueError(
          f"{name}: runs have different dimensions {dims}; pairwise_epsilon "
          "needs one d for all runs. Use epsilon(z_target, z_source, ...) "
          "per pair for runs of different widths.")
    zs = jnp.stack([jnp.asarray(z) for z in zs])
  validation.check_float(name, zs)
  validation.check_ndim(name, zs, (3,), "[R, n, d]")
  return zs if isinstance(zs, jax.Array) else jnp.asarray(zs)


def _n_fit(n: int, d: int, fit_fraction: float, what: str) -> int:
  n_fit = int(round(fit_fraction * n))
  n_eval = n - n_fit
  if n_fit <= d or n_eval < 2:
    raise ValueError(
        f"{what} has n={n} rows for d={d} dimensions: the fit split "
        f"(fit_fraction={fit_fraction}) gets {n_fit} rows and the evaluation "
        f"split {n_eval}; fitting needs more rows than dimensions (n_fit > "
        f"{d}) and evaluating at least 2. Use more rows, or reduce the "
        "dimension first.")
  return n_fit


def _host_checks(name: str, z, runs: _Runs, need_rank: bool,
                 batched: bool = True) -> None:
  """Raises naming the run and the problem (concrete input only)."""
  nonfinite = np.asarray(runs.nonfinite)
  if nonfinite.any():
    validation.check_finite(name, np.asarray(z),
                            run_axis=0 if batched else None,
                            row_axis=1 if batched else 0)
  const = np.asarray(runs.constant)
  for r in np.flatnonzero(const.any(axis=1)):
    cols = np.flatnonzero(const[r])
    where = f" in run {r}" if batched else ""
    raise ValueError(
        f"{name} has {cols.size} constant column(s){where}: "
        f"{validation._short_list(cols)} (e.g. dead units). No map can be "
        "fitted to or from a dimension without variance; drop those columns "
        "(the same ones for every run), e.g. z[..., keep].")  # pylint: disable=protected-access
  if need_rank:
    rank = np.asarray(runs.rank)
    d = runs.cov.shape[-1]
    for r in np.flatnonzero(rank < d):
      where = f" in run {r}" if batched else ""
      raise ValueError(
          f"{name} has a rank-deficient covariance{where}: numerical rank "
          f"{rank[r]} of {d} on the fit rows (collinear columns), so the "
          "'linear' and 'ica' fits are not unique. Pass ridge > 0 for "
          "'linear', or reduce the representation by PCA to its rank first.")


def _budget() -> int:
  return _CPU_BUDGET if jax.default_backend() == "cpu" else _ACCEL_BUDGET


def _chunks(n_pairs, n_eval, d_t, d_s, n_kinds, pair_chunk):
  """(pairs per chunk, evaluation rows per block) for `_pairs`.

  One block's intermediates (two row blocks, the prediction, the residual
  and its square) are kept within the budget: on CPU a few MiB of rows
  (~1k), so that they stay in cache; on accelerators all rows, and as many
  pairs per chunk as fit.
  """
  d_out = max(d_t, d_s)
  per_row = 4 * (d_t + d_s + 3 * n_kinds * d_out)
  rows = max(1, min(n_eval, _budget() // per_row))
  if pair_chunk is not None:
    if int(pair_chunk) < 1:
      raise ValueError(f"pair_chunk must be >= 1, got {pair_chunk}.")
    return min(int(pair_chunk), n_pairs), rows
  per_pair = rows * per_row + 4 * n_kinds * n_eval  # + the norms
  return max(1, min(n_pairs, _budget() // per_pair)), rows


def _ica_options(ica_options: dict | None) -> tuple:
  opts = {"max_iter": 400, "tol": 1e-4}
  opts.update(ica_options or {})
  return tuple(sorted(opts.items()))


def _run_ica(runs: _Runs, key, k: int, ica_options, name: str, concrete):
  maps, converged, valid = _to_one_device(_fit_ica(
      runs.xf, _ica_key(key), n_components=k,
      options=_ica_options(ica_options)))
  if concrete:
    conv = np.asarray(converged)
    if not conv.all():
      warnings.warn(
          f"FastICA did not converge for {name} run(s) "
          f"{validation._short_list(np.flatnonzero(~conv))}; their 'ica' "  # pylint: disable=protected-access
          "ε may be too high. Pass ica_options={'max_iter': ...} or "
          "{'n_restarts': 3}.", ica_lib.ConvergenceWarning, stacklevel=3)
  return maps, valid


def _factor_ica(runs: _Runs) -> _ICAMaps:
  """The factors' own "ICA": their fit-row standardisation (no rotation).

  The factors are the sources already; unit variance on the fit rows makes
  them commensurate with the ICA sources of the runs.
  """
  sd = jnp.sqrt(jnp.diagonal(runs.cov, axis1=-2, axis2=-1))
  return _ICAMaps(jax.vmap(jnp.diag)(1 / sd), jax.vmap(jnp.diag)(sd))


# ---------------------------------------------------------------------------
# Public API.


@flax.struct.dataclass
class PairwiseEpsilon:
  """ε for all ordered pairs of R runs (rows: target, columns: source).

  A pytree, so `pairwise_epsilon` can run under `jax.jit`.

  Attributes:
    epsilon: {kind: {"mean": [R, R], "max": [R, R], "q99": [R, R],
      "r2": [R, R, d]}}; ε normalised by the target's diameter, diagonal 0
      (R² 1); NaN for pairs involving an invalid run.
    diameter: [R] diameter of each run.
    valid: [R] bool; False for runs with NaN/Inf, constant columns or (for
      'linear' without ridge, and 'ica') a singular covariance, or whose ICA
      failed. Host calls raise on such input instead; under `jax.jit` the
      runs are flagged here.
    settings: the settings used, as (name, value) pairs (see `info`).
  """
  epsilon: dict
  diameter: jax.Array
  valid: jax.Array
  settings: tuple = flax.struct.field(pytree_node=False)

  def __getitem__(self, kind: str) -> dict:
    return self.epsilon[kind]

  @property
  def info(self) -> dict:
    """The settings as a dict (kinds, split sizes, diameter, options)."""
    return dict(self.settings)


def _need_rank(kinds, ridge):
  return "ica" in kinds or ("linear" in kinds and ridge == 0)


@_one_lapack_thread
def pairwise_epsilon(zs, kinds: Sequence[str] = DEFAULT_KINDS, *, key,
                     fit_fraction: float = 0.5, diameter: str = "max",
                     ridge: float = 0.0, perm_scale: bool = False,
                     ica_options: dict | None = None,
                     diameter_rows: int = 10_000,
                     pair_chunk: int | None = None) -> PairwiseEpsilon:
  """ε between every ordered pair of runs, in one batched program.

  Per run (once): the row split (shared by all runs), centring, covariance
  and eigenvectors, diameter, and for "ica" one FastICA on the fit rows.
  Per pair: the cross-covariance, every matching (all pairs at once), the
  maps and the evaluation-row residuals, chunked over pairs.

  Args:
    zs: [R, n, d] float array (or a list of R [n, d] arrays): R runs'
      representations of the same n inputs, row for row.
    kinds: alignment classes, from KINDS.
    key: a `jax.random.key` for the row split, the diameter subsample and the
      ICA start.
    fit_fraction: share of rows the maps are fitted on, in (0, 1).
    diameter: "max" or "q99" (see the module docstring).
    ridge: ridge penalty of "linear" (scikit-learn `Ridge(alpha)` scale).
    perm_scale: "perm" also fits a per-dimension scale.
    ica_options: keyword arguments for `nearid_jax.ica.fastica` (default
      max_iter=400, tol=1e-4).
    diameter_rows: rows over whose pairs "max" is exact (subsample beyond).
    pair_chunk: pairs per chunk (within a device); None: one pair at a
      time on CPU, chunks of ~2 GiB of intermediates on accelerators.

  Returns:
    A `PairwiseEpsilon`; `res["rigid"]["mean"]` is the [R, R] matrix.

  Raises:
    TypeError: non-float input.
    ValueError: bad shapes or options, runs with different row counts,
      NaN/Inf (count and runs), constant columns, too few rows, a singular
      covariance for 'linear' (without ridge) or 'ica'.

  Examples:
    >>> import jax
    >>> zs = jax.random.laplace(jax.random.key(0), (3, 400, 2))
    >>> res = pairwise_epsilon(zs, ("rigid", "linear"), key=jax.random.key(1))
    >>> res["rigid"]["mean"].shape
    (3, 3)
  """
  kinds = _check_kinds(kinds)
  _check_options(fit_fraction, diameter, "pad", ridge, diameter_rows)
  zs = _as_stack("zs", zs)
  r, n, d = zs.shape
  n_fit = _n_fit(n, d, fit_fraction, "zs")
  concrete = validation.is_concrete(zs)
  runs = _prepare(zs, key, n_fit=n_fit, diameter=diameter,
                  diameter_rows=int(diameter_rows))
  need_rank = _need_rank(kinds, ridge)
  if concrete:
    _host_checks("zs", zs, runs, need_rank)
  valid = runs.valid(need_rank)
  maps = None
  if "ica" in kinds:
    maps, ica_valid = _run_ica(runs, key, d, ica_options, "zs", concrete)
    valid &= ica_valid
  opts = _Options(kinds, float(ridge), bool(perm_scale), "pad", n_fit)
  ti, si = np.nonzero(~np.eye(r, dtype=bool))
  stats = ("mean", "max", "q99", "r2")
  eps = {k: {s: jnp.zeros((r, r), zs.dtype) for s in stats[:3]}
         for k in kinds}
  for k in kinds:
    eps[k]["r2"] = jnp.ones((r, r, d), zs.dtype)
  if len(ti):
    chunk, rows = _chunks(len(ti), n - n_fit, d, d, len(kinds), pair_chunk)
    ti, si = jnp.asarray(ti, jnp.int32), jnp.asarray(si, jnp.int32)
    out = _pairs(runs, None, maps, None, ti, si, valid, valid, opts=opts,
                 chunk=chunk, rows=rows)
    for j, k in enumerate(kinds):
      for s in stats:
        eps[k][s] = eps[k][s].at[ti, si].set(out[s][:, j])
  ok = valid[:, None] & valid[None, :]
  eps = jax.tree.map(
      lambda v: jnp.where(ok.reshape(ok.shape + (1,) * (v.ndim - 2)), v,
                          jnp.nan), eps)
  settings = (("kinds", kinds), ("n_fit", n_fit), ("n_eval", n - n_fit),
              ("diameter", diameter), ("diameter_rows", int(diameter_rows)),
              ("perm_scale", bool(perm_scale)), ("ridge", float(ridge)),
              ("convention", "epsilon[i, j]: source run j mapped onto target "
               "run i, divided by the diameter of run i"))
  return PairwiseEpsilon(epsilon=eps, diameter=runs.diameter, valid=valid,
                         settings=settings)


def _single(z_target, z_source, kinds, key, fit_fraction, diameter, dims,
            ridge, perm_scale, ica_options, diameter_rows, *, fit_all=False):
  """Prepared runs, ICA and options for one (target, source) pair."""
  kinds = _check_kinds(kinds)
  _check_options(fit_fraction if not fit_all else 0.5, diameter, dims, ridge,
                 diameter_rows)
  for name, z in (("z_target", z_target), ("z_source", z_source)):
    validation.check_float(name, z)
    validation.check_ndim(name, z, (2,), "[n, d]")
  (nt, dt), (ns, ds) = np.shape(z_target), np.shape(z_source)
  if nt != ns:
    raise ValueError(
        f"z_target has {nt} rows but z_source has {ns}; both must represent "
        "the same inputs, row for row.")
  if "identity" in kinds and dt != ds:
    raise ValueError(f"'identity' compares coordinates directly and needs "
                     f"equal dimensions, got d_target={dt}, d_source={ds}.")
  if fit_all:
    # Every row is a fit row; two copies make a formal evaluation split.
    n_fit = nt
    if n_fit <= max(dt, ds):
      raise ValueError(f"fit_map needs more rows than dimensions, got n={nt} "
                       f"rows for d_target={dt}, d_source={ds}.")
    z_target = jnp.concatenate([jnp.asarray(z_target)] * 2)
    z_source = jnp.concatenate([jnp.asarray(z_source)] * 2)
  else:
    n_fit = _n_fit(nt, max(dt, ds), fit_fraction, "z_target/z_source")
  concrete = (validation.is_concrete(z_target)
              and validation.is_concrete(z_source))
  zt = jnp.asarray(z_target)[None]
  zsrc = jnp.asarray(z_source)[None]
  prep = functools.partial(_prepare_ordered if fit_all else _prepare,
                           n_fit=n_fit, diameter=diameter,
                           diameter_rows=int(diameter_rows))
  tgt, src = prep(zt, key), prep(zsrc, key)
  need_rank = _need_rank(kinds, ridge)
  if concrete:
    _host_checks("z_target", z_target, tgt, need_rank, batched=False)
    _host_checks("z_source", z_source, src, need_rank, batched=False)
  valid = tgt.valid(need_rank) & src.valid(need_rank)
  ica_t = ica_s = None
  if "ica" in kinds:
    k = min(dt, ds)
    ica_t, vt = _run_ica(tgt, key, k, ica_options, "z_target", concrete)
    ica_s, vs = _run_ica(src, key, k, ica_options, "z_source", concrete)
    valid &= vt & vs
  opts = _Options(kinds, float(ridge), bool(perm_scale), dims, n_fit)
  return tgt, src, ica_t, ica_s, valid, opts


@functools.partial(jax.jit, static_argnames=("n_fit", "diameter",
                                             "diameter_rows"))
def _prepare_ordered(z, key, *, n_fit: int, diameter: str,
                     diameter_rows: int):
  """`_prepare` with the first n_fit rows as the fit rows (for fit_map)."""
  n = z.shape[1]
  fit_idx, eval_idx = jnp.arange(n_fit), jnp.arange(n_fit, n)
  k_diam = jax.random.split(key, 3)[1]
  rows = diameter_rows if diameter == "max" else Q99_ROWS
  diam_idx = (jnp.arange(n) if n <= rows
              else jax.random.permutation(k_diam, n)[:rows])
  return lax.map(
      lambda zr: _run_stats(zr, fit_idx, eval_idx, diam_idx, diameter), z)


@_one_lapack_thread
def epsilon(z_target, z_source, kind: str | Sequence[str] = "rigid", *, key,
            fit_fraction: float = 0.5, diameter: str = "max",
            dims: str = "pad", ridge: float = 0.0, perm_scale: bool = False,
            ica_options: dict | None = None,
            diameter_rows: int = 10_000) -> dict:
  """ε of mapping one source representation onto one target.

  Fits the map of class `kind` on a random `fit_fraction` of the rows and
  evaluates it on the rest.

  Args:
    z_target: [n, d_t] float array.
    z_source: [n, d_s] float array, the same n inputs row for row.
    kind: one of KINDS, or a sequence of them.
    key: a `jax.random.key` (row split, diameter subsample, ICA start).
    fit_fraction: share of rows the map is fitted on, in (0, 1).
    diameter: "max" or "q99" (module docstring).
    dims: "pad" or "pca", for d_t != d_s (module docstring).
    ridge: ridge penalty of "linear".
    perm_scale: "perm" also fits a per-dimension scale.
    ica_options: keyword arguments for `nearid_jax.ica.fastica`.
    diameter_rows: rows over whose pairs "max" is exact.

  Returns:
    {"mean", "max", "q99": float ε (ℓ2 error / target diameter), "r2": [d_t]
    per-dimension R² on the evaluation rows, "diameter": float, "dims": the
    dimension handling used ("equal", "pad" or "pca")}; for a sequence of
    kinds, {kind: that dict}.

  Raises:
    TypeError, ValueError: as `pairwise_epsilon`, naming z_target or
      z_source.

  Examples:
    >>> import jax
    >>> zt = jax.random.laplace(jax.random.key(0), (400, 2))
    >>> res = epsilon(zt, -zt[:, ::-1] + 3.0, "perm", key=jax.random.key(1))
    >>> float(res["mean"]) < 1e-6
    True
  """
  tgt, src, ica_t, ica_s, valid, opts = _single(
      z_target, z_source, kind, key, fit_fraction, diameter, dims, ridge,
      perm_scale, ica_options, diameter_rows)
  one = jnp.zeros((1,), jnp.int32)
  chunk, rows = _chunks(1, tgt.xe.shape[1], tgt.xe.shape[2],
                        src.xe.shape[2], len(opts.kinds), 1)
  out = _pairs(tgt, src, ica_t, ica_s, one, one, valid, valid, opts=opts,
               chunk=chunk, rows=rows)
  dt, ds = np.shape(z_target)[1], np.shape(z_source)[1]
  how = "equal" if dt == ds else dims
  res = {}
  for j, k in enumerate(opts.kinds):
    res[k] = {s: out[s][0, j] for s in ("mean", "max", "q99", "r2")}
    res[k].update(diameter=tgt.diameter[0], dims=how)
  return res[kind] if isinstance(kind, str) else res


@_one_lapack_thread
def fit_map(z_target, z_source, kind: str = "rigid", *, key=None,
            dims: str = "pad", ridge: float = 0.0, perm_scale: bool = False,
            ica_options: dict | None = None) -> AffineMap:
  """Fits h in class `kind` with h(z_source) ≈ z_target on all given rows.

  Args:
    z_target: [n, d_t] float array.
    z_source: [n, d_s] float array.
    kind: one of KINDS.
    key: a `jax.random.key` for the ICA start ("ica" only; default key 0).
    dims: "pad" or "pca" for d_t != d_s.
    ridge: ridge penalty of "linear".
    perm_scale: "perm" also fits a per-dimension scale.
    ica_options: keyword arguments for `nearid_jax.ica.fastica`.

  Returns:
    An `AffineMap`; `h(z_source)` predicts the target (with zero columns
    appended when dims="pad" and d_t < d_s).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> zs = jax.random.normal(jax.random.key(0), (100, 2))
    >>> h = fit_map(2 * zs + 1, zs, "linear")
    >>> jnp.allclose(h.matrix, 2 * jnp.eye(2), atol=1e-4).item()
    True
  """
  if not isinstance(kind, str):
    raise ValueError(f"fit_map fits one kind, got {kind!r}.")
  key = jax.random.key(0) if key is None else key
  tgt, src, ica_t, ica_s, _, opts = _single(
      z_target, z_source, kind, key, 0.5, "max", dims, ridge, perm_scale,
      ica_options, 2, fit_all=True)
  mats, offs = _maps_one(tgt, src, ica_t, ica_s, opts=opts)
  m = mats[0]
  d_out = m.shape[0]
  mean_t = jnp.pad(tgt.mean[0], (0, d_out - tgt.mean.shape[1]))
  return AffineMap(m, offs[0] + mean_t - _mm(m, src.mean[0]))


def ica_efficiency(perm, rigid, ica):
  """ICA efficiency (perm - ica) / (perm - rigid), elementwise.

  1 when ICA closes the whole gap between the signed-permutation and the
  rigid error, 0 when it does not help; NaN where perm == rigid (e.g. the
  diagonal of pairwise matrices).

  Args:
    perm, rigid, ica: ε arrays of the same shape.

  Returns:
    An array of that shape.

  Examples:
    >>> round(float(ica_efficiency(0.2, 0.1, 0.125)), 6)
    0.75
  """
  perm, rigid, ica = (np.asarray(a, np.float64) for a in (perm, rigid, ica))
  gap = perm - rigid
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(gap != 0, (perm - ica) / np.where(gap != 0, gap, 1),
                    np.nan)


@_one_lapack_thread
def structural(zs, factors, kinds: Sequence[str] = DEFAULT_KINDS, *, key,
               fit_fraction: float = 0.5, diameter: str = "max",
               dims: str = "pad", ridge: float = 0.0,
               perm_scale: bool = False, ica_options: dict | None = None,
               diameter_rows: int = 10_000,
               with_metrics: bool = True,
               suite: Sequence[str] = ()) -> dict:
  """Structural near-identifiability: each run against the true factors.

  The target is the standardised factors u (zero mean, unit variance over
  all rows); each run is a source. For "ica" the run is ICA'd (k
  components, fitted on the fit rows) and matched to u by signed
  permutation. MCC and R² come from `nearid_jax.metrics` (the project's one
  implementation), scored on the evaluation rows.

  Args:
    zs: [R, n, d] float array (or a list of [n, d]).
    factors: [n, k] float array, the ground-truth factors u.
    kinds: alignment classes ("identity" needs d = k).
    key: a `jax.random.key`.
    fit_fraction, diameter, dims, ridge, perm_scale, ica_options,
      diameter_rows: as in `epsilon`.
    with_metrics: also compute MCC (raw and after ICA, Pearson and Spearman)
      and affine R².
    suite: names of `nearid_jax.metrics.ALL_METRICS` (e.g. "infomec",
      "dci", "mig") to compute with `metrics.evaluate_all` on the evaluation
      rows, raw and after ICA (needs `with_metrics`). Continuous factors are
      discretised as the metrics document.

  Returns:
    {"epsilon": {kind: {"mean"/"max"/"q99": [R], "r2": [R, k]}},
     "diameter": [] (of u), "valid": [R] bool, and with metrics "mcc_raw",
     "mcc_raw_spearman", "mcc_ica", "mcc_ica_spearman", "r2": [R] each,
     and with a suite "suite": {"raw": table, "ica": table} of
     `metrics.evaluate_all` tables, column -> [R]; or, when the metrics
     refuse these rows (e.g. fewer evaluation rows than a factor has
     classes), "suite_error": the reason, so that ε is not lost}.
    Without metrics the function is jittable (invalid runs then come back
    NaN with valid=False instead of raising).

  Raises:
    ValueError: as `pairwise_epsilon`, for `factors` too; "ica" with d < k.

  Examples:
    >>> import jax
    >>> u = jax.random.laplace(jax.random.key(0), (400, 2))
    >>> res = structural(u[None] * 3.0, u, ("rigid", "linear"),
    ...                  key=jax.random.key(1), with_metrics=False)
    >>> float(res["epsilon"]["linear"]["mean"][0]) < 1e-5
    True
  """
  kinds = _check_kinds(kinds)
  _check_options(fit_fraction, diameter, dims, ridge, diameter_rows)
  zs = _as_stack("zs", zs)
  validation.check_float("factors", factors)
  validation.check_ndim("factors", factors, (2,), "[n, k]")
  r, n, d = zs.shape
  nu, k = np.shape(factors)
  if nu != n:
    raise ValueError(f"factors has {nu} rows but zs has {n}; they must "
                     "describe the same inputs, row for row.")
  if "ica" in kinds and d < k:
    raise ValueError(f"'ica' needs at least as many dimensions as factors, "
                     f"got d={d} < k={k}.")
  if "identity" in kinds and d != k:
    raise ValueError(f"'identity' needs d = k, got d={d}, k={k}.")
  n_fit = _n_fit(n, max(d, k), fit_fraction, "zs/factors")
  concrete = validation.is_concrete(zs) and validation.is_concrete(factors)
  u = jnp.asarray(factors)
  if concrete:
    validation.check_finite("factors", np.asarray(u), row_axis=0)
    sd = np.asarray(jnp.std(u, axis=0))
    if np.any(sd == 0):
      raise ValueError(f"factors has constant column(s) "
                       f"{np.flatnonzero(sd == 0).tolist()}; drop them.")
  u = (u - jnp.mean(u, axis=0)) / jnp.std(u, axis=0)
  prep = functools.partial(_prepare, n_fit=n_fit, diameter=diameter,
                           diameter_rows=int(diameter_rows))
  tgt, src = prep(u[None], key), prep(zs, key)
  need_rank = _need_rank(kinds, ridge)
  if concrete:
    _host_checks("zs", zs, src, need_rank)
  valid_s = src.valid(need_rank)
  valid_t = tgt.valid(False)
  ica_t = ica_s = None
  if "ica" in kinds:
    ica_s, iv = _run_ica(src, key, k, ica_options, "zs", concrete)
    valid_s &= iv
    ica_t = _factor_ica(tgt)
  opts = _Options(kinds, float(ridge), bool(perm_scale), dims, n_fit)
  pt = jnp.zeros((r,), jnp.int32)
  ps = jnp.arange(r, dtype=jnp.int32)
  chunk, rows = _chunks(r, n - n_fit, k, d, len(kinds), None)
  out = _pairs(tgt, src, ica_t, ica_s, pt, ps, valid_t, valid_s, opts=opts,
               chunk=chunk, rows=rows)
  res = {"epsilon": {kk: {s: out[s][:, j] for s in ("mean", "max", "q99",
                                                    "r2")}
                     for j, kk in enumerate(kinds)},
         "diameter": tgt.diameter[0], "valid": valid_s}
  if with_metrics:
    res.update(_structural_metrics(src, tgt, key, ica_options, k,
                                   ica_s if "ica" in kinds else None,
                                   concrete, tuple(suite)))
  elif suite:
    raise ValueError("suite needs with_metrics=True.")
  return res


def _structural_metrics(src: _Runs, tgt: _Runs, key, ica_options, k,
                        ica_s, concrete, suite) -> dict:
  """MCC (raw / after ICA; Pearson / Spearman), affine R² and the optional
  metric suite per run."""
  from nearid_jax import metrics  # pylint: disable=g-import-not-at-top
  if ica_s is None:
    ica_s, _ = _run_ica(src, key, k, ica_options, "zs", concrete)
  u_eval = tgt.xe[0]  # u is standardised; centring by its fit mean is moot
  sources = jnp.einsum("rnd,rkd->rnk", src.xe, ica_s.unmixing,
                       precision=_HIGHEST)
  k_r2 = jax.random.fold_in(key, 7)
  out = {}
  for name, z in (("raw", src.xe), ("ica", sources)):
    out[f"mcc_{name}"] = np.asarray(
        metrics.mcc(z, u_eval, method="pearson")["mcc"])
    out[f"mcc_{name}_spearman"] = np.asarray(
        metrics.mcc(z, u_eval, method="spearman")["mcc"])
  # R² on all rows (metrics.r2 makes its own fit/score split).
  all_rows = jnp.concatenate([src.xf, src.xe], axis=1)
  u_all = jnp.concatenate([tgt.xf[0], tgt.xe[0]], axis=0)
  out["r2"] = np.asarray(metrics.r2(all_rows, u_all, key=k_r2)["r2"])
  if suite:
    k_suite = jax.random.fold_in(key, 8)
    try:
      out["suite"] = {name: metrics.evaluate_all(z, u_eval, key=k_suite,
                                                 metrics=suite)
                      for name, z in (("raw", src.xe), ("ica", sources))}
    except ValueError as e:  # e.g. fewer evaluation rows than classes
      out["suite_error"] = str(e)
  return out


def decoder_bi_lipschitz(decode: Callable, z) -> dict:
  """Bi-Lipschitz estimate of a decoder (or head) from its Jacobians.

  With σ_max(x), σ_min(x) the extreme singular values of the [D, k]
  Jacobian of `decode` at each evaluation point, 1 + L = max(max_x σ_max,
  1 / min_x σ_min) (docs/paper.md Theorem 1). Pure: vmap it over runs.

  Args:
    decode: function [k] -> [D] (one point), D >= k for an injective
      decoder (else σ_min = 0 and 1 + L = inf).
    z: [m, k] evaluation points (e.g. the run's latent codes).

  Returns:
    {"one_plus_l": [], "sigma_max": [m], "sigma_min": [m]}.

  Examples:
    >>> import jax.numpy as jnp
    >>> w = jnp.array([[2., 0.], [0., 0.5], [0., 0.]])
    >>> out = decoder_bi_lipschitz(lambda v: w @ v, jnp.ones((4, 2)))
    >>> float(out["one_plus_l"])
    2.0
  """
  # pylint: disable-next=g-import-not-at-top
  from nearid_jax.models import conv as conv_lib
  z = jnp.asarray(z)
  # Our conv layers' CPU custom VJP is reverse-mode only; trace them as
  # lax convolutions here so that jacfwd (k columns, not D rows) works.
  with conv_lib.forward_mode():
    jac = jax.vmap(jax.jacfwd(decode))(z)  # [m, D, k]
  sv = jnp.linalg.svd(jac, compute_uv=False)  # [m, min(D, k)]
  smax = sv[:, 0]
  smin = sv[:, -1] if jac.shape[1] >= jac.shape[2] else jnp.zeros_like(smax)
  one_plus_l = jnp.maximum(jnp.max(smax), 1 / jnp.min(smin))
  return {"one_plus_l": one_plus_l, "sigma_max": smax, "sigma_min": smin}


def theorem1_factor(one_plus_l):
  """sqrt(2L + L²) for 1 + L (Theorem 1's ε ∝ this · diameter)."""
  l = np.asarray(one_plus_l, np.float64) - 1
  return np.sqrt(np.maximum(2 * l + l * l, 0))
