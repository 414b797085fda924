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

Scale and dead latents. ε does not depend on the units: input whose
magnitude is outside [2^-16, 2^16] (e.g. codes x1e30 or x1e-30 in float32)
is rescaled by a power of two before any moment is taken, rank is decided
on the standardised columns (the correlation matrix), the linear map is
fitted from standardised moments and FastICA with as many components as
columns runs on standardised columns. A latent with a tiny but real spread
(a near-dead unit) is therefore kept; one below `dead_spread` (100 machine
epsilons of the largest spread) is dropped for every kind when a class
that inverts a covariance ("linear" without ridge, "ica") is asked for,
with a warning and a note naming it (`checks`). The package's modules:
`stats` (per-run moments, split, diameters), `maps` (one function per map
class), `pairs` (the all-pairs engine), `checks` (host-side input checks),
`lipschitz` (Theorem 1 tools) and `devices` (what alignment asks of the
execution layer, `nearid_jax.parallel`).

Speed and memory. Everything a map needs is a function of the fit-row
covariances, so `pairwise_epsilon` computes per run (once) the centred fit
and evaluation rows, the covariance and its eigenvectors, the diameter and
the ICA, and per pair only the maps and the residuals; the cross-covariances
[d, d] of all pairs come from one product. Runs and pairs are spread over
the local devices by the execution layer (`nearid_jax.parallel`; on a CPU
host, one XLA device per core when asked for with
`--xla_force_host_platform_device_count`, see `benchmarks/host_devices.py`)
and pairs processed in chunks (`pair_chunk`; by default within
`parallel.Policy.chunk_bytes`: one pair at a time in blocks of ~1k
evaluation rows on CPU, ~2 GiB of intermediates per chunk on accelerators), so memory beyond the two row copies is the cross-covariances
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

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nearid_jax import parallel
from nearid_jax import validation
from nearid_jax.align import checks
from nearid_jax.align import maps as maps_lib
from nearid_jax.align import pairs as pairs_lib
from nearid_jax.align import stats
from nearid_jax.align.lipschitz import decoder_bi_lipschitz
from nearid_jax.align.lipschitz import theorem1_factor
from nearid_jax.align.maps import AffineMap
from nearid_jax.align.options import DEFAULT_KINDS
from nearid_jax.align.options import DIAMETERS
from nearid_jax.align.options import DIMS
from nearid_jax.align.options import KINDS
from nearid_jax.align.options import need_rank as _need_rank
from nearid_jax.align.options import Options
from nearid_jax.align.stats import dead_spread
from nearid_jax.align.stats import Q99_ROWS
from nearid_jax.align.structural import Structural
from nearid_jax.align.structural import structural

__all__ = [
    "KINDS", "DEFAULT_KINDS", "DIMS", "DIAMETERS", "Q99_ROWS", "AffineMap",
    "PairwiseEpsilon", "Structural", "fit_map", "epsilon",
    "pairwise_epsilon", "ica_efficiency", "structural",
    "decoder_bi_lipschitz", "theorem1_factor", "dead_spread",
]

_STATS = ("mean", "max", "q99", "r2")


def _single(z_target, z_source, kinds, key, fit_fraction, diameter, dims,
            ridge, perm_scale, ica_options, diameter_rows, *, fit_all=False):
  """Prepared runs, ICA and options for one (target, source) pair."""
  kinds = checks.check_kinds(kinds)
  checks.check_options(fit_fraction if not fit_all else 0.5, diameter, dims,
                       ridge, diameter_rows)
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
    n_fit = checks.n_fit_rows(nt, max(dt, ds), fit_fraction,
                              "z_target/z_source")
  concrete = (validation.is_concrete(z_target)
              and validation.is_concrete(z_source))
  zt, zsrc = jnp.asarray(z_target), jnp.asarray(z_source)
  e_t, e_s = stats.scale_exponent(zt), stats.scale_exponent(zsrc)
  need_rank = _need_rank(kinds, ridge)

  def prep_for(target: bool):
    def prep(z):
      # Covariance eigenpairs only for a PCA reduction of the wider side
      # (read at call time: the widths change when dead columns go).
      other = zsrc if target else zt
      return stats.prepare(
          z, key, e_t if target else e_s, n_fit=n_fit, diameter=diameter,
          diameter_rows=int(diameter_rows),
          ridge=float(ridge) if "linear" in kinds else None,
          pca=dims == "pca" and z.shape[-1] != other.shape[-1],
          ordered=fit_all)
    return prep
  tgt, src = prep_for(True)(zt[None]), prep_for(False)(zsrc[None])
  notes = []
  if concrete:
    zt, tgt, _, note_t = checks.screen("z_target", zt, tgt, prep_for(True),
                                       need_rank, batched=False)
    zsrc, src, _, note_s = checks.screen("z_source", zsrc, src,
                                         prep_for(False), need_rank,
                                         batched=False)
    notes = note_t + note_s
    if fit_all and notes:
      raise ValueError(" ".join(notes).replace("dropped", "has")
                       + " fit_map returns a map of all columns: drop them "
                       "first (z[:, keep]), or use epsilon().")
    if notes and dims == "pca" and zt.shape[-1] != zsrc.shape[-1]:
      # The covariance eigenpairs were not needed before the drop.
      tgt, src = prep_for(True)(zt[None]), prep_for(False)(zsrc[None])
    if "identity" in kinds and zt.shape[-1] != zsrc.shape[-1]:
      raise ValueError(" ".join(notes) + " 'identity' then compares "
                       "columns of different widths; leave it out of the "
                       "kinds, or drop the same columns from both inputs.")
  valid = tgt.valid(need_rank) & src.valid(need_rank)
  ica_t = ica_s = None
  if "ica" in kinds:
    k = min(zt.shape[-1], zsrc.shape[-1])
    ica_t, vt = maps_lib.run_ica(tgt, key, k, ica_options, "z_target",
                                 concrete)
    ica_s, vs = maps_lib.run_ica(src, key, k, ica_options, "z_source",
                                 concrete)
    valid &= vt & vs
  opts = Options(kinds, float(ridge), bool(perm_scale), dims, n_fit)
  rel = jnp.ldexp(jnp.ones((), zt.dtype), e_s - e_t)
  return dict(tgt=tgt, src=src, ica_t=ica_t, ica_s=ica_s, valid=valid,
              opts=opts, rel=rel, e_t=e_t, e_s=e_s, notes=tuple(notes),
              dt=zt.shape[-1], ds=zsrc.shape[-1])


@parallel.host_call
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
    dimension handling used ("equal", "pad" or "pca"), "notes": tuple of
    str (e.g. dead columns dropped; d_t and d_s are then the kept widths)};
    for a sequence of kinds, {kind: that dict}.

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
  p = _single(z_target, z_source, kind, key, fit_fraction, diameter, dims,
              ridge, perm_scale, ica_options, diameter_rows)
  tgt, src, opts = p["tgt"], p["src"], p["opts"]
  one = jnp.zeros((1,), jnp.int32)
  chunk, rows = pairs_lib.chunks(1, tgt.xe.shape[1], tgt.xe.shape[2],
                                 src.xe.shape[2], len(opts.kinds), 1)
  out = pairs_lib.pairs(tgt, src, p["ica_t"], p["ica_s"], one, one,
                        p["valid"], p["valid"], p["rel"], opts=opts,
                        chunk=chunk, rows=rows)
  how = "equal" if p["dt"] == p["ds"] else dims
  diam = stats.unscale(tgt.diameter[0], p["e_t"])
  res = {}
  for j, k in enumerate(opts.kinds):
    res[k] = {s: out[s][0, j] for s in _STATS}
    res[k].update(diameter=diam, dims=how, notes=p["notes"])
  return res[kind] if isinstance(kind, str) else res


@parallel.host_call
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

  Raises:
    ValueError: as `epsilon`; also for dead columns (a map of all columns
      cannot be fitted from them).

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
  p = _single(z_target, z_source, kind, key, 0.5, "max", dims, ridge,
              perm_scale, ica_options, 2, fit_all=True)
  tgt, src = p["tgt"], p["src"]
  mats, offs = pairs_lib.maps_one(tgt, src, p["ica_t"], p["ica_s"], p["rel"],
                                  opts=p["opts"])
  m = mats[0]
  rows = m.shape[0]
  mean_t = jnp.pad(tgt.mean[0], (0, rows - tgt.mean.shape[1]))
  # Back from the scaled coordinates: h(z) = 2^e_t h'(2^-e_s z).
  offset = stats.unscale(offs[0] + mean_t - stats.mm(m, src.mean[0]), p["e_t"])
  return AffineMap(stats.unscale(m, p["e_t"] - p["e_s"]), offset)


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
      'linear' without ridge, and 'ica') a singular correlation matrix or a
      dead column, or whose ICA failed. Host calls raise on such input (or
      drop dead columns) instead; under `jax.jit` the runs are flagged here.
    settings: the settings used, as (name, value) pairs (see `info`),
      including "dropped_columns" and "notes".
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


@functools.partial(jax.jit, static_argnames=("kinds", "d", "dtype"))
def _pair_matrices(out, valid, *, kinds, d, dtype):
  """{kind: {stat: [R, R] (r2: [R, R, d])}} from the per-pair results of
  all ordered pairs (row-major, diagonal left out): the diagonal is a run
  against itself (0, r2 = 1), NaN wherever a run is invalid. One program,
  not an eager scatter per (kind, stat)."""
  r = valid.shape[0]
  ti, si = np.nonzero(~np.eye(r, dtype=bool))
  eps = {}
  for j, k in enumerate(kinds):
    eps[k] = {}
    for s in _STATS:
      shape = (r, r, d) if s == "r2" else (r, r)
      m = jnp.full(shape, 1 if s == "r2" else 0, dtype)
      if out is not None:
        m = m.at[ti, si].set(out[s][:, j].astype(dtype))
      ok = valid[:, None] & valid[None, :]
      eps[k][s] = jnp.where(ok.reshape(ok.shape + (1,) * (m.ndim - 2)), m,
                            jnp.nan)
  return eps


@parallel.host_call
def pairwise_epsilon(zs, kinds: Sequence[str] = DEFAULT_KINDS, *, key,
                     fit_fraction: float = 0.5, diameter: str = "max",
                     ridge: float = 0.0, perm_scale: bool = False,
                     ica_options: dict | None = None,
                     diameter_rows: int = 10_000,
                     pair_chunk: int | None = None) -> PairwiseEpsilon:
  """ε between every ordered pair of runs, in one batched program.

  Per run (once): the row split (shared by all runs), centring, covariance
  and its standardised inverse, diameter, and for "ica" one FastICA on the
  fit rows. Per pair: the cross-covariance, every matching (all pairs at
  once), the maps and the evaluation-row residuals, chunked over pairs.

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
      correlation matrix for 'linear' (without ridge) or 'ica' (its
      eigenvalue ratio and the columns' spreads stated), no usable column.

  Examples:
    >>> import jax
    >>> zs = jax.random.laplace(jax.random.key(0), (3, 400, 2))
    >>> res = pairwise_epsilon(zs, ("rigid", "linear"), key=jax.random.key(1))
    >>> res["rigid"]["mean"].shape
    (3, 3)
  """
  kinds = checks.check_kinds(kinds)
  checks.check_options(fit_fraction, diameter, "pad", ridge, diameter_rows)
  zs = checks.as_stack("zs", zs)
  r, n, d = zs.shape
  n_fit = checks.n_fit_rows(n, d, fit_fraction, "zs")
  concrete = validation.is_concrete(zs)
  e = stats.scale_exponent(zs)

  def prep(z):
    return stats.prepare(z, key, e, n_fit=n_fit, diameter=diameter,
                         diameter_rows=int(diameter_rows),
                         ridge=float(ridge) if "linear" in kinds else None)
  runs = prep(zs)
  need_rank = _need_rank(kinds, ridge)
  dropped, notes = (), []
  if concrete:
    zs, runs, dropped, notes = checks.screen("zs", zs, runs, prep, need_rank, True)
    d = zs.shape[2]
  valid = runs.valid(need_rank)
  maps = None
  if "ica" in kinds:
    maps, ica_valid = maps_lib.run_ica(runs, key, d, ica_options, "zs",
                                       concrete)
    valid &= ica_valid
  opts = Options(kinds, float(ridge), bool(perm_scale), "pad", n_fit)
  ti, si = np.nonzero(~np.eye(r, dtype=bool))
  out = None
  if len(ti):
    chunk, rows = pairs_lib.chunks(len(ti), n - n_fit, d, d, len(kinds),
                                   pair_chunk)
    out = pairs_lib.pairs(runs, None, maps, None, jnp.asarray(ti, jnp.int32),
                          jnp.asarray(si, jnp.int32), valid, valid,
                          opts=opts, chunk=chunk, rows=rows)
  eps = _pair_matrices(out, valid, kinds=kinds, d=d, dtype=zs.dtype)
  settings = (("kinds", kinds), ("n_fit", n_fit), ("n_eval", n - n_fit),
              ("diameter", diameter), ("diameter_rows", int(diameter_rows)),
              ("perm_scale", bool(perm_scale)), ("ridge", float(ridge)),
              ("dropped_columns", dropped), ("notes", tuple(notes)),
              ("convention", "epsilon[i, j]: source run j mapped onto target "
               "run i, divided by the diameter of run i"))
  return PairwiseEpsilon(epsilon=eps, diameter=stats.unscale(runs.diameter, e),
                         valid=valid, settings=settings)

