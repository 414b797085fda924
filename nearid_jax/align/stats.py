"""Per-run statistics: the row split, moments, rank, spreads and diameters.

Everything a map needs is a function of the fit-row moments, so each run's
moments are computed once (`prepare`) and shared by all its pairs.

Scale. Moments are taken in a scale-safe way: input whose largest magnitude
lies outside [2^-16, 2^16] is first multiplied by a power of two (exact in
floating point) that brings it to ~1, so that squares neither overflow nor
underflow (codes of magnitude 1e30 or 1e-30 in float32); the caller undoes
the factor where a result has units (diameters, offsets). Rank and the
linear map's inverse are taken after standardising each column (the
correlation matrix), so a latent with a tiny but real spread (a near-dead
unit) is not mistaken for a collinear one.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel

Q99_ROWS = 2048  # rows whose pairs give the "q99" diameter (2·10⁶ pairs)
_HIGHEST = lax.Precision.HIGHEST
# Magnitudes kept as they are; outside, inputs are rescaled by 2^-exponent.
_SAFE_EXPONENT = 16


def mm(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


@flax.struct.dataclass
class Runs:
  """Per-run quantities of a stack of runs (leading [R] axis everywhere).

  All in the run's scaled coordinates (see the module docstring).

  Attributes:
    xf: [R, n_fit, d] fit rows, centred by their mean.
    xe: [R, n_eval, d] evaluation rows, centred by the fit mean.
    mean: [R, d] fit-row mean.
    cov: [R, d, d] fit-row covariance.
    sd: [R, d] fit-row standard deviations (sqrt of cov's diagonal).
    lin: [R, d, d] or None: the standardised inverse Q of the linear map,
      M = ((c / sd) Q) / sd for a cross-covariance c (pseudo-inverse of the
      correlation matrix, or of it plus the ridge term).
    evals, evecs: [R, d], [R, d, d] covariance eigenpairs, descending (None
      unless PCA reduction was asked for).
    sst: [R, d] evaluation-row sum of squares about the evaluation mean.
    diameter: [R] diameter (see the package docstring).
    nonfinite: [R] count of NaN/Inf values.
    constant: [R, d] bool, column constant over all rows.
    spread: [R, d] sd / the run's largest sd.
    rank: [R] numerical rank of the correlation matrix.
    corr_ratio: [R] smallest / largest correlation-matrix eigenvalue.
  """
  xf: jax.Array
  xe: jax.Array
  mean: jax.Array
  cov: jax.Array
  sd: jax.Array
  lin: jax.Array | None
  evals: jax.Array | None
  evecs: jax.Array | None
  sst: jax.Array
  diameter: jax.Array
  nonfinite: jax.Array
  constant: jax.Array
  spread: jax.Array
  rank: jax.Array
  corr_ratio: jax.Array

  def valid(self, need_rank: bool) -> jax.Array:
    ok = (self.nonfinite == 0) & ~jnp.any(self.constant, axis=-1)
    if need_rank:
      ok &= self.rank == self.cov.shape[-1]
      ok &= ~jnp.any(self.spread < dead_spread(self.xf.dtype), axis=-1)
    return ok


def dead_spread(dtype) -> float:
  """Spread (sd / the run's largest sd) below which a latent is dead.

  100 machine epsilons (float32: 1.2e-5, float64: 2.2e-14): a column whose
  variation is that small next to the data's magnitude is quantised to
  fewer than ~100 levels, so no moment of it can be trusted.
  """
  return 100 * float(np.finfo(dtype).eps)


@jax.jit  # one fused pass over the data instead of four eager ones
def scale_exponent(*zs) -> jax.Array:
  """int32 e such that z * 2^-e has magnitude ~1, or 0 where it already is
  within [2^-16, 2^16] (so that ordinary data is left bit for bit)."""
  m = functools.reduce(jnp.maximum, [
      jnp.max(jnp.where(jnp.isfinite(z), jnp.abs(z), 0)) for z in zs])
  _, e = jnp.frexp(m)
  e = e.astype(jnp.int32)
  ok = (m == 0) | (jnp.abs(e) <= _SAFE_EXPONENT)
  return jnp.where(ok, 0, e)


def rescale(z, e):
  """z * 2^-e, exactly."""
  return jnp.ldexp(z, -e.astype(jnp.int32)) if e is not None else z


def unscale(x, e):
  """x * 2^e (a length back in the input's units)."""
  return jnp.ldexp(x, jnp.asarray(e, jnp.int32))


def split(key, n: int, n_fit: int):
  """Sorted fit and evaluation row indices (one split for every run)."""
  perm = jax.random.permutation(key, n)
  return jnp.sort(perm[:n_fit]), jnp.sort(perm[n_fit:])


def diameter_max(s: jax.Array, block: int = 1024) -> jax.Array:
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
    d2 = sq[i][:, None] + sq[j][None, :] - 2 * mm(sp[i], sp[j].T)
    return jnp.max(d2)
  d2 = lax.map(one, (jnp.asarray(bi), jnp.asarray(bj)))
  return jnp.sqrt(jnp.maximum(jnp.max(d2), 0))


def diameter_q99(s: jax.Array) -> jax.Array:
  """99th percentile (linear interpolation) of the pairwise distances."""
  m = s.shape[0]
  s = s - jnp.mean(s, axis=0)
  sq = jnp.sum(s * s, axis=1)
  d2 = sq[:, None] + sq[None, :] - 2 * mm(s, s.T)
  iu, ju = np.triu_indices(m, 1)
  return jnp.quantile(jnp.sqrt(jnp.maximum(d2[iu, ju], 0)), 0.99)


def _sym_inverse(a):
  """Pseudo-inverse of a symmetric PSD matrix from its eigenpairs."""
  lam, v = jnp.linalg.eigh(a)
  inv = jnp.where(lam > 0, 1 / jnp.where(lam > 0, lam, 1), 0)
  return mm(v * inv, v.T)


def run_stats(z, fit_idx, eval_idx, diam_idx, diameter: str, *,
              ridge: float | None, pca: bool, ridge_scale=1.0) -> Runs:
  """Statistics of one run z [n, d] (vmapped over runs by the caller).

  ridge: None when no linear map is fitted; else its penalty, in the
  scaled coordinates times `ridge_scale` (traced: 2^-2e for scale e).
  """
  n, d = z.shape
  xf = z[fit_idx]
  mean = jnp.mean(xf, axis=0)
  xf = xf - mean
  xe = z[eval_idx] - mean
  n_fit = xf.shape[0]
  cov = mm(xf.T, xf) / n_fit
  sd = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0))
  pos = sd > 0
  sd1 = jnp.where(pos, sd, 1)
  corr = cov / (sd1[:, None] * sd1[None, :])
  # A constant column (the run is invalid anyway) gets a unit diagonal so
  # that it does not count against the others' rank.
  corr = jnp.where(pos[:, None] & pos[None, :], corr,
                   jnp.eye(d, dtype=cov.dtype))
  lam = jnp.linalg.eigvalsh(corr)[::-1]
  eps = float(np.finfo(z.dtype).eps)
  rank = jnp.sum(lam > lam[0] * d * eps).astype(jnp.int32)
  rank = jnp.where(lam[0] > 0, rank, 0)
  corr_ratio = lam[-1] / jnp.where(lam[0] > 0, lam[0], 1)
  lin = None
  if ridge is not None:
    if ridge > 0:
      # (Σ + a I)^-1 = D^-1 (R + a D^-2)^-1 D^-1 with D = diag(sd).
      a = ridge / n_fit * ridge_scale
      lin = _sym_inverse(corr + jnp.diag(a / (sd1 * sd1)))
    else:
      lin = _sym_inverse(corr)
  evals = evecs = None
  if pca:
    evals, evecs = jnp.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]
  sst = jnp.sum((xe - jnp.mean(xe, axis=0)) ** 2, axis=0)
  finite = jnp.isfinite(z)
  nonfinite = jnp.sum(~finite).astype(jnp.int32)
  constant = jnp.max(z, axis=0) == jnp.min(z, axis=0)
  top = jnp.max(sd)
  spread = sd / jnp.where(top > 0, top, 1)
  zs = jnp.where(finite, z, 0)[diam_idx]
  diam = (diameter_max(zs) if diameter == "max" else diameter_q99(zs))
  return Runs(xf=xf, xe=xe, mean=mean, cov=cov, sd=sd, lin=lin, evals=evals,
              evecs=evecs, sst=sst, diameter=diam, nonfinite=nonfinite,
              constant=constant, spread=spread, rank=rank,
              corr_ratio=corr_ratio)


def _diameter_rows(key, n, diameter, diameter_rows):
  rows = diameter_rows if diameter == "max" else Q99_ROWS
  if n <= rows:
    return jnp.arange(n)
  return jax.random.permutation(jax.random.split(key, 3)[1], n)[:rows]


@functools.partial(parallel.jit, static_argnames=(
    "n_fit", "diameter", "diameter_rows", "ridge", "pca", "ordered"))
def prepare(z, key, exponent, *, n_fit: int, diameter: str,
            diameter_rows: int, ridge: float | None = None, pca: bool = False,
            ordered: bool = False) -> Runs:
  """Splits rows and computes `Runs` for a stack z [R, n, d].

  Args:
    z: [R, n, d] runs.
    key: the call's key (its first subkey splits the rows, its second
      draws the diameter subsample).
    exponent: int32 scale exponent (`scale_exponent`): z * 2^-exponent is
      what the statistics describe.
    ordered: the first n_fit rows are the fit rows (for `fit_map`).
  """
  n = z.shape[1]
  z = rescale(z, exponent)
  if ordered:
    fit_idx, eval_idx = jnp.arange(n_fit), jnp.arange(n_fit, n)
  else:
    fit_idx, eval_idx = split(jax.random.split(key, 3)[0], n, n_fit)
  diam_idx = _diameter_rows(key, n, diameter, diameter_rows)
  ridge_scale = jnp.ldexp(jnp.ones((), z.dtype), -2 * exponent)
  fn = functools.partial(run_stats, diameter=diameter, ridge=ridge, pca=pca,
                         ridge_scale=ridge_scale)
  if ordered:
    return lax.map(lambda zr: fn(zr, fit_idx, eval_idx, diam_idx), z)
  # Runs spread over the local devices, one after another within a device
  # for the diameter's [block, m] distance blocks.
  return parallel.map_runs(fn, z, fit_idx, eval_idx, diam_idx,
                           in_axes=(0, None, None, None))
